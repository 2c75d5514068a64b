"""OctupleMidiTokenizer: MIDI files <-> MusicBERT token ids, byte-exact with the original pipeline.

The original pipeline is `preprocess.py` (MIDI -> OctupleMIDI line) followed by fairseq's dictionary
(`dict.txt` plus `<mask>`, `append_eos=True`). A sequence is 8 `<s>`, 8 tokens per note, 8 `</s>`.

    tokenizer = OctupleMidiTokenizer()
    batch = tokenizer.encode_midi("song.mid", return_tensors="pt")   # input_ids [1, 8 * (notes + 2)]
    tokenizer.decode_midi(batch["input_ids"][0]).dump("round_trip.mid")
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from transformers import BatchEncoding, PreTrainedTokenizer

from .octuple import (
    BAR_MAX,
    FIELD_SIZES,
    READERS,
    SAMPLE_LEN_MAX,
    OctupleError,
    _source_name,
    decode_octuples,
    encode_octuple_array,
    read_midi,
    window_octuples,
)

VOCAB_FILES_NAMES = {"vocab_file": "dict.txt"}
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")  # fairseq Dictionary ids 0..3
OCTUPLE = 8
OVERFLOW_MODES = ("truncate", "window", "error")
_FIELD_SIZES = np.asarray(FIELD_SIZES, dtype=np.int64)
_FIELD_OFFSETS = len(SPECIAL_TOKENS) + np.concatenate([[0], np.cumsum(_FIELD_SIZES)[:-1]])


def build_field_tokens() -> list[str]:
    """The original `gen_dictionary` entries, in order: `<field-value>` for the 8 fields (1232 tokens)."""
    return [f"<{index}-{value}>" for index, size in enumerate(FIELD_SIZES) for value in range(size)]


def build_vocab() -> list[str]:
    """The full fairseq id -> token table: specials, `dict.txt` entries from id 4, `<mask>` last (1237)."""
    return [*SPECIAL_TOKENS, *build_field_tokens(), "<mask>"]


class MidiBatchEncoding(BatchEncoding):
    """A `BatchEncoding` that also says which inputs failed and which input each row came from."""

    def __init__(self, data: dict, *, source_index: list[int], failures: list[tuple[str, str]],
                 tensor_type: str | None = None) -> None:
        super().__init__(data, tensor_type=tensor_type)
        self.source_index = source_index
        self.failures = failures


class OctupleMidiTokenizer(PreTrainedTokenizer):
    """MIDI -> OctupleMIDI 8-tuples -> token ids (and back), reproducing MusicBERT's preprocessing.

    Args:
        vocab_file: a saved `dict.txt`; it must equal the table built in code (the encoder is table-driven).
        note_pairing: `"legacy"` (default) pairs note-on/off like miditoolkit 0.1.14, which the released
            checkpoints saw; `"fifo"` like miditoolkit >= 1.0.
        midi_reader: `"fast"` (default) reads MIDI bytes in one pass of its own (files it does not read
            exactly like mido go to the reference reader); `"mido"` is the reference reader. Same ids.
        max_notes: notes per sequence (the original's 1000).
        overflow: what to do with a piece longer than `max_notes` notes or 256 bars: `"truncate"` keeps
            the original's selection and warns, `"window"` returns several overlapping sequences,
            `"error"` raises.

        tokenizer = OctupleMidiTokenizer()
        ids = tokenizer.encode_midi("song.mid")["input_ids"]
        octuples = tokenizer.ids_to_octuples(ids)

    An original OctupleMIDI text line (which already holds its `<s>` / `</s>` tokens) goes through the
    text path with `tokenizer(line, add_special_tokens=False)`; fairseq appends one more `</s>`.
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str | None = None,
        note_pairing: str = "legacy",
        max_notes: int = SAMPLE_LEN_MAX,
        overflow: str = "truncate",
        midi_reader: str = "fast",
        bos_token: str = "<s>",
        pad_token: str = "<pad>",
        eos_token: str = "</s>",
        unk_token: str = "<unk>",
        mask_token: str = "<mask>",
        **kwargs: Any,
    ) -> None:
        if overflow not in OVERFLOW_MODES:
            raise ValueError(f"overflow must be one of {OVERFLOW_MODES}, got {overflow!r}")
        if note_pairing not in ("legacy", "fifo"):
            raise ValueError(f"note_pairing must be 'legacy' or 'fifo', got {note_pairing!r}")
        if midi_reader not in READERS:
            raise ValueError(f"midi_reader must be one of {READERS}, got {midi_reader!r}")
        self._tokens = build_vocab()
        if vocab_file is not None:
            saved = _read_dict_file(vocab_file)
            if saved != build_field_tokens():
                raise ValueError(
                    f"{vocab_file}: this dict.txt is not the OctupleMIDI dictionary (expected the 1232 "
                    "entries of preprocess.py's gen_dictionary, in order)"
                )
        self._ids = {token: index for index, token in enumerate(self._tokens)}
        self.note_pairing = note_pairing
        self.max_notes = max_notes
        self.overflow = overflow
        self.midi_reader = midi_reader
        super().__init__(
            bos_token=bos_token, pad_token=pad_token, eos_token=eos_token, unk_token=unk_token,
            mask_token=mask_token, note_pairing=note_pairing, max_notes=max_notes, overflow=overflow,
            midi_reader=midi_reader, special_tokens_pattern="none", **kwargs,
        )

    # -- vocabulary ------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._ids)

    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        return text.split()

    def _convert_token_to_id(self, token: str) -> int:
        return self._ids.get(token, self._ids["<unk>"])

    def _convert_id_to_token(self, index: int) -> str:
        return self._tokens[index]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return " ".join(tokens)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        """Write `dict.txt` in fairseq's format (`<token> 0` per line, specials and `<mask>` implicit)."""
        name = (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILES_NAMES["vocab_file"]
        path = os.path.join(save_directory, name)
        text = "".join(f"{token} 0\n" for token in build_field_tokens())
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
        return (path,)

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None) -> list[int]:
        """8 `<s>` + notes + 8 `</s>`; a pair concatenates two such lines (the original sentence-pair task)."""
        first = [self.bos_token_id] * OCTUPLE + list(token_ids_0) + [self.eos_token_id] * OCTUPLE
        if token_ids_1 is None:
            return first
        return first + [self.bos_token_id] * OCTUPLE + list(token_ids_1) + [self.eos_token_id] * OCTUPLE

    # -- octuples <-> ids ------------------------------------------------------------------------------------
    def octuples_to_tokens(self, octuples: Iterable[Sequence[int]]) -> list[str]:
        """Note tokens only (no `<s>` / `</s>`), `<field-value>` per element."""
        return [f"<{field}-{value}>" for octuple in octuples for field, value in enumerate(octuple)]

    def octuples_to_ids(self, octuples: Iterable[Sequence[int]], add_special_tokens: bool = True) -> list[int]:
        """Ids of a note sequence; with special tokens, exactly fairseq's `encode_line(append_eos=True)`."""
        values = np.asarray(octuples if isinstance(octuples, np.ndarray) else list(octuples), dtype=np.int64)
        if values.size == 0:
            values = values.reshape(0, OCTUPLE)
        if values.ndim != 2 or values.shape[1] != OCTUPLE:
            raise ValueError(f"octuples must be a sequence of 8-field tuples, got an array of shape {values.shape}")
        bad = (values < 0) | (values >= _FIELD_SIZES)
        if bad.any():
            row, field = map(int, np.argwhere(bad)[0])
            raise ValueError(f"octuple {tuple(values[row].tolist())}: field {field} value {values[row, field]} "
                             f"outside 0..{FIELD_SIZES[field] - 1}")
        # Field tokens are laid out field after field from id 4, so an id is an offset plus the value.
        ids = (values + _FIELD_OFFSETS).reshape(-1).tolist()
        return self.build_inputs_with_special_tokens(ids) if add_special_tokens else ids

    def ids_to_octuples(self, ids: Sequence[int] | Any) -> list[tuple[int, ...]]:
        """The notes of an id sequence (specials and padding octuples dropped), like `str_to_encoding`."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        if len(ids) % OCTUPLE:
            raise ValueError(f"an OctupleMIDI id sequence has a multiple of 8 ids, got {len(ids)}")
        outside = [(position, i) for position, i in enumerate(ids) if not 0 <= i < len(self._tokens)]
        if outside:
            raise OctupleError(f"ids: {len(outside)} id(s) outside the vocabulary 0..{len(self._tokens) - 1}, "
                               f"first {outside[0][1]} at position {outside[0][0]}")
        octuples = []
        for start in range(0, len(ids), OCTUPLE):
            tokens = [self._tokens[i] for i in ids[start:start + OCTUPLE]]
            if all(token in SPECIAL_TOKENS for token in tokens):
                continue
            values = []
            for field, token in enumerate(tokens):
                if not token.startswith(f"<{field}-"):
                    raise ValueError(f"octuple {start // OCTUPLE}: element {field} is {token}, expected <{field}-*>")
                values.append(int(token[3:-1]))
            octuples.append(tuple(values))
        return octuples

    # -- MIDI ------------------------------------------------------------------------------------------------
    def midi_to_octuples(self, source: Any, note_pairing: str | None = None) -> list[tuple[int, ...]]:
        """All notes of a MIDI path / bytes / `miditoolkit.MidiFile` as sorted 8-tuples (no length limit)."""
        return [tuple(row) for row in self._octuple_array(source, note_pairing).tolist()]

    def _octuple_array(self, source: Any, note_pairing: str | None) -> np.ndarray:
        parsed = read_midi(source, note_pairing=note_pairing or self.note_pairing,
                           reader=getattr(self, "midi_reader", "fast"))
        octuples = encode_octuple_array(parsed)
        if not len(octuples):
            raise OctupleError(f"{parsed.source}: the MIDI file has no notes to encode")
        return octuples

    def _sequences(self, source: Any, note_pairing: str | None, overflow: str | None) -> list[Any]:
        octuples = self._octuple_array(source, note_pairing)
        overflow = overflow or self.overflow
        # select_for_input on the array: the first max_notes notes, then those in bars < 256.
        selected = octuples[:self.max_notes]
        selected = selected[selected[:, 0] < BAR_MAX]
        if len(selected) == len(octuples):
            return [selected]
        name = source if isinstance(source, (str, os.PathLike)) else (
            getattr(source, "name", None) if hasattr(source, "read") else None) or _source_name(source)
        message = (f"{name}: {len(octuples)} notes, of which {len(selected)} fit one sequence "
                   f"(first {self.max_notes} notes, bars < 256)")
        if overflow == "error":
            raise OctupleError(message + "; use overflow='truncate' or 'window'")
        if overflow == "window":
            return window_octuples([tuple(row) for row in octuples.tolist()], self.max_notes)
        warnings.warn(message + "; the rest is dropped (overflow='window' keeps it)", stacklevel=3)
        return [selected]

    def encode_midi(
        self,
        source: Any,
        *,
        note_pairing: str | None = None,
        overflow: str | None = None,
        return_tensors: str | None = None,
    ) -> BatchEncoding:
        """Encode one MIDI file; returns `input_ids` / `attention_mask` with one row per sequence
        (several only with `overflow="window"`).

            tokenizer.encode_midi("song.mid", return_tensors="pt")["input_ids"].shape  # [1, 8 * (n + 2)]
        """
        rows = [self.octuples_to_ids(seq) for seq in self._sequences(source, note_pairing, overflow)]
        return self.pad({"input_ids": rows}, return_tensors=return_tensors)

    def encode_midi_pair(self, first: Any, second: Any, *, return_tensors: str | None = None) -> BatchEncoding:
        """Two pieces as one input for pair classification (melody completion, accompaniment suggestion)."""
        ids = [self.octuples_to_ids(self._sequences(src, None, "truncate")[0], add_special_tokens=False)
               for src in (first, second)]
        return self.pad({"input_ids": [self.build_inputs_with_special_tokens(*ids)]}, return_tensors=return_tensors)

    def batch_encode_midi(
        self,
        sources: Sequence[Any],
        *,
        errors: str = "raise",
        note_pairing: str | None = None,
        overflow: str | None = None,
        return_tensors: str | None = None,
    ) -> MidiBatchEncoding:
        """Encode several MIDI files into one padded batch.

        `errors="raise"` stops at the first bad file; `errors="skip"` warns, records `(source, message)`
        in `.failures` and goes on. `.source_index[i]` is the input that row i came from.

            batch = tokenizer.batch_encode_midi(paths, errors="skip", return_tensors="pt")
        """
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
        rows: list[list[int]] = []
        index: list[int] = []
        failures: list[tuple[str, str]] = []
        for position, source in enumerate(sources):
            try:
                sequences = self._sequences(source, note_pairing, overflow)
            except (OctupleError, OSError) as err:
                if errors == "raise":
                    raise
                failures.append((str(source) if isinstance(source, (str, os.PathLike)) else f"#{position}", str(err)))
                warnings.warn(f"skipping input {position}: {err}", stacklevel=2)
                continue
            rows.extend(self.octuples_to_ids(seq) for seq in sequences)
            index.extend([position] * len(sequences))
        if not rows:
            raise OctupleError(f"no input could be encoded ({len(failures)} failures: {failures[:3]})")
        padded = self.pad({"input_ids": rows})
        return MidiBatchEncoding(dict(padded), source_index=index, failures=failures, tensor_type=return_tensors)

    def decode_midi(self, ids: Sequence[int] | Any, ticks_per_beat: int = 480) -> Any:
        """Ids (or a tensor row) back to a `miditoolkit.MidiFile`, like the original `encoding_to_MIDI`."""
        return decode_octuples(self.ids_to_octuples(ids), ticks_per_beat=ticks_per_beat)


def _read_dict_file(path: str) -> list[str]:
    tokens = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            parts = line.split()
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise ValueError(f"{path}:{number}: expected '<token> <count>', got {line.rstrip()!r}")
            tokens.append(parts[0])
    return tokens


__all__ = ["MidiBatchEncoding", "OctupleMidiTokenizer", "build_field_tokens", "build_vocab"]
