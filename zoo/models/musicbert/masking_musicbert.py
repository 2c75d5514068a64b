"""Bar-level masking for MusicBERT pre-training (the original `OctupleMaskTokensDataset`, strategy `bar`).

All notes of one (bar, instrument) share their per-field decisions, so the model cannot copy a masked
element from a neighbouring note of the same bar and instrument. Decisions: with probability
`mask_prob` an element is a target; a target becomes `<mask>` (80%), a random token (10%) or stays
(10%). The random draws follow the original's order exactly, so with `original_seed(seed, epoch,
index)` the masks equal fairseq's.

    collator = DataCollatorForOctupleMasking(tokenizer)
    batch = collator([{"input_ids": ids_a}, {"input_ids": ids_b}])   # input_ids, attention_mask, labels
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

OCTUPLE = 8
MAX_BARS = 256
MAX_INSTRUMENTS = 256
FIELD_OFFSET = 4  # dictionary ids of the first field token (after <s>, <pad>, </s>, <unk>)


def original_seed(seed: int, epoch: int, index: int) -> int:
    """fairseq's `numpy_seed(seed, epoch, index)`: `int(hash((seed, epoch, index)) % 1e6)`."""
    return int(hash((seed, epoch, index)) % 1e6)


def _decisions(uniform: np.ndarray, prob: float, random_prob: float, keep_prob: float) -> np.ndarray:
    # 0: not a target, 1: <mask>, 2: keep the original, 3: random token (the original's encoding).
    return ((uniform < prob * random_prob).astype(np.int8) + (uniform < prob * (random_prob + keep_prob))
            + (uniform < prob)).astype(np.int8)


def bar_mask(
    ids: np.ndarray,
    rng: np.random.RandomState,
    vocab_size: int,
    mask_token_id: int,
    mask_prob: float = 0.15,
    leave_unmasked_prob: float = 0.1,
    random_token_prob: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Mask one unpadded id sequence (8 `<s>`, notes, 8 `</s>`); returns (masked ids, decisions).

    Draws from `rng` in the original's order: the `<s>` octuple, the `</s>` octuple, the strategy
    choice, the (bar, instrument) decision table, then replacement tokens for every position.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1 or ids.size % OCTUPLE or ids.size < 2 * OCTUPLE:
        raise ValueError(f"expected one OctupleMIDI sequence (8 <s>, notes, 8 </s>), got shape {ids.shape}")
    if (ids == mask_token_id).any():
        raise ValueError("the sequence already contains <mask>; mask the original ids")
    decide = lambda size: _decisions(rng.rand(size), mask_prob, random_token_prob, leave_unmasked_prob)  # noqa: E731
    mask = np.zeros_like(ids, dtype=np.int8)
    mask[:OCTUPLE] = np.repeat(decide(1), OCTUPLE)
    mask[-OCTUPLE:] = np.repeat(decide(1), OCTUPLE)
    rng.choice(["bar"])  # the original draws its strategy even when there is only one
    table = decide((MAX_BARS * MAX_INSTRUMENTS + vocab_size) * OCTUPLE).reshape(-1, OCTUPLE)
    bars = ids[OCTUPLE:-OCTUPLE:OCTUPLE] - FIELD_OFFSET
    programs = ids[OCTUPLE + 2:-OCTUPLE + 2:OCTUPLE] - FIELD_OFFSET
    mask[OCTUPLE:-OCTUPLE] = table[bars * MAX_INSTRUMENTS + programs].reshape(-1)
    masked = rng.choice(vocab_size, ids.size)
    original = np.isin(mask, [0, 2])
    masked[original] = ids[original]
    masked[mask == 1] = mask_token_id
    return masked, mask


class DataCollatorForOctupleMasking:
    """Pad OctupleMIDI sequences and apply bar-level masking; labels are -100 where nothing is predicted.

    Each item gets its own `numpy.random.RandomState`, seeded from torch's generator (so the Trainer's
    seed controls it), or pass `seeds` / use `bar_mask` with `original_seed` to replay fairseq exactly.

        collator = DataCollatorForOctupleMasking(tokenizer, mask_prob=0.15)
        batch = collator(features)
    """

    def __init__(
        self,
        tokenizer: Any = None,
        *,
        vocab_size: int | None = None,
        pad_token_id: int | None = None,
        mask_token_id: int | None = None,
        mask_prob: float = 0.15,
        leave_unmasked_prob: float = 0.1,
        random_token_prob: float = 0.1,
    ) -> None:
        self.vocab_size = vocab_size or (len(tokenizer) if tokenizer is not None else 1237)
        self.pad_token_id = pad_token_id if pad_token_id is not None else (tokenizer.pad_token_id if tokenizer else 1)
        self.mask_token_id = mask_token_id if mask_token_id is not None else (
            tokenizer.mask_token_id if tokenizer else self.vocab_size - 1)
        self.mask_prob = mask_prob
        self.leave_unmasked_prob = leave_unmasked_prob
        self.random_token_prob = random_token_prob

    def __call__(self, features: Sequence[dict[str, Any]], seeds: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        rows = [np.asarray(f["input_ids"].tolist() if hasattr(f["input_ids"], "tolist") else f["input_ids"],
                           dtype=np.int64) for f in features]
        length = max(row.size for row in rows)
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), length), -100, dtype=torch.long)
        attention = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            seed = seeds[i] if seeds is not None else int(torch.randint(0, 2 ** 31 - 1, ()).item())
            masked, decisions = bar_mask(
                row, np.random.RandomState(seed), self.vocab_size, self.mask_token_id,
                self.mask_prob, self.leave_unmasked_prob, self.random_token_prob,
            )
            input_ids[i, :row.size] = torch.from_numpy(masked)
            target = torch.from_numpy(np.where(decisions > 0, row, -100))
            labels[i, :row.size] = target
            attention[i, :row.size] = 1
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


__all__ = ["DataCollatorForOctupleMasking", "bar_mask", "original_seed"]
