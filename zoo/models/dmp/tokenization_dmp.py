"""DMP's SMILES tokenizer: RDKit canonical SMILES, the original atom-level regex, the fairseq dictionary.

The dictionary (`dict.txt`, 2,348 tokens) is microsoft/DVMP's `molecule/dict.txt` (MIT licence, see
LICENSE-DVMP.txt). Ids follow fairseq: `<s>`=0 `<pad>`=1 `</s>`=2 `<unk>`=3, dict.txt line n -> n + 4,
then `[MASK]` appended (2352). A molecule is encoded as its tokens + `</s>` (no `<s>`), truncated to
511 + `</s>`, and batches are padded on the LEFT.

    from zoo.models.dmp import DmpTokenizer
    tokenizer = DmpTokenizer()
    batch = tokenizer(["CCO", "c1ccccc1O"], padding=True, return_tensors="pt")
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from transformers import PreTrainedTokenizer
from transformers.utils import logging

logger = logging.get_logger(__name__)

VOCAB_FILES_NAMES = {"vocab_file": "dict.txt"}
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")

# molecule/tokenize_re.py of microsoft/DVMP
SMILES_TOKEN_PATTERN = re.compile(
    r"(\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|\/|:|~|@|\?|>|\*|\$|\%[0-9]{2}|[0-9])"
)
# molecule/canonicalize.py strips atom-map numbers with this pattern before parsing
_ATOM_MAP_PATTERN = re.compile(r":\d*")
# a SMILES longer than this is refused before RDKit parses it (input from outside is bounded; SECURITY.md)
MAX_SMILES_LENGTH = 10_000


def shorten(text: str, limit: int = 80) -> str:
    """`text` for an error message: long inputs are cut, keeping their length."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def check_smiles_text(smiles: str) -> None:
    """ValueError for a SMILES over MAX_SMILES_LENGTH characters or with whitespace or a control character
    inside (RDKit reads 'CC\\nO' as ethane named 'O', silently)."""
    if not isinstance(smiles, str):
        raise ValueError(f"SMILES must be a string, got {type(smiles).__name__}: {shorten(repr(smiles))}")
    if len(smiles) > MAX_SMILES_LENGTH:
        raise ValueError(f"SMILES {shorten(smiles)!r} has {len(smiles)} characters, over the limit of "
                         f"{MAX_SMILES_LENGTH}")
    stripped = smiles.strip()
    bad = next((i for i, char in enumerate(stripped) if char.isspace() or not char.isprintable()), None)
    if bad is not None:
        raise ValueError(f"invalid SMILES {shorten(smiles)!r}: {stripped[bad]!r} at position {bad} is whitespace or a "
                         "control character inside the SMILES (RDKit would read only the text before it)")


def canonicalize_smiles(smiles: str) -> str:
    """RDKit canonical isomeric SMILES with atom-map numbers removed, as DMP's preprocessing writes it.

    Raises ValueError naming the input when RDKit cannot parse it (the original silently drops such lines).

        canonicalize_smiles("OCC")  # 'CCO'
    """
    from rdkit import Chem, RDLogger

    check_smiles_text(smiles)
    stripped = _ATOM_MAP_PATTERN.sub("", smiles.strip())
    RDLogger.DisableLog("rdApp.*")
    try:
        mol = Chem.MolFromSmiles(stripped)
        if mol is None:
            raise ValueError(f"invalid SMILES {shorten(smiles)!r}: RDKit cannot parse it")
        if mol.GetNumAtoms() == 0:
            raise ValueError(f"invalid SMILES {shorten(smiles)!r}: the molecule has no atoms")
        canonical = Chem.MolToSmiles(mol)
        if Chem.MolFromSmiles(canonical) is None:
            raise ValueError(f"SMILES {shorten(smiles)!r}: RDKit cannot re-read its own canonical form {canonical!r}")
    finally:
        RDLogger.EnableLog("rdApp.*")
    return canonical


def split_smiles(smiles: str) -> list[str]:
    """Atom-level regex tokens of a SMILES string; ValueError when they do not rejoin into the input.

        split_smiles("C[C@H](Cl)Br")  # ['C', '[C@H]', '(', 'Cl', ')', 'Br']
    """
    tokens = SMILES_TOKEN_PATTERN.findall(smiles)
    if re.sub(r"\s+", "", smiles) != "".join(tokens):
        joined = "".join(tokens)
        position = next((i for i, (a, b) in enumerate(zip(joined, re.sub(r"\s+", "", smiles))) if a != b), len(joined))
        raise ValueError(
            f"SMILES {shorten(smiles)!r} cannot be split into DMP tokens: the regex tokens rejoin to {shorten(joined)!r} "
            f"(first difference at character {position}); the original pipeline drops such molecules"
        )
    return tokens


def _read_fairseq_dictionary(path: str | os.PathLike) -> list[tuple[str, int]]:
    entries, seen = [], set()
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            token, _, count = line.rstrip().rpartition(" ")
            if not token or not count.lstrip("-").isdigit():
                raise ValueError(f"{path}:{number}: expected '<token> <count>', got {line!r}")
            if token in seen:
                raise ValueError(f"{path}:{number}: duplicate token {token!r}")
            seen.add(token)
            entries.append((token, int(count)))
    return entries


class DmpTokenizer(PreTrainedTokenizer):
    """SMILES -> DMP dictionary ids, exactly as fairseq-preprocess + the DMP task built them.

    Args:
        vocab_file: a fairseq `dict.txt` (default: the original DMP dictionary shipped with zoo).
        canonicalize: canonicalize with RDKit first (the original pipeline always does; turn off for
            already-canonical input or for strings with `[MASK]` tokens).
        unknown_tokens: "warn" (map to `<unk>` as the original does, and log the tokens) or "error".

        tokenizer = DmpTokenizer()
        tokenizer("N[C@@H](Cc1ccc(O)cc1)C(=O)O")["input_ids"][-1] == tokenizer.eos_token_id  # True
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "left"

    def __init__(
        self,
        vocab_file: str | None = None,
        canonicalize: bool = True,
        unknown_tokens: str = "warn",
        bos_token: str = "<s>",
        pad_token: str = "<pad>",
        eos_token: str = "</s>",
        unk_token: str = "<unk>",
        mask_token: str = "[MASK]",
        model_max_length: int = 512,
        **kwargs,
    ):
        if unknown_tokens not in ("warn", "error"):
            raise ValueError(f"unknown_tokens must be 'warn' or 'error', got {unknown_tokens!r}")
        if vocab_file is None:
            vocab_file = str(Path(__file__).resolve().parent / VOCAB_FILES_NAMES["vocab_file"])
        self.vocab_file = vocab_file
        self.canonicalize = canonicalize
        self.unknown_tokens = unknown_tokens
        self._file_entries = _read_fairseq_dictionary(vocab_file)
        tokens = list(SPECIAL_TOKENS) + [token for token, _ in self._file_entries]
        if str(mask_token) not in tokens:
            tokens.append(str(mask_token))
        self._reported_unknown: set[str] = set()
        self._id_to_token = tokens
        self._token_to_id = {token: index for index, token in enumerate(tokens)}
        kwargs.setdefault("special_tokens_pattern", "eos")
        kwargs.setdefault("padding_side", "left")
        super().__init__(
            bos_token=bos_token, pad_token=pad_token, eos_token=eos_token, unk_token=unk_token,
            mask_token=mask_token, model_max_length=model_max_length, canonicalize=canonicalize,
            unknown_tokens=unknown_tokens, **kwargs,
        )

    @property
    def vocab_size(self) -> int:
        return len(self._id_to_token)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._token_to_id)

    def __call__(self, text=None, *args, truncation=True, **kwargs):
        """Encode SMILES; truncation to `model_max_length` (511 tokens + `</s>`) is on by default, as in DMP."""
        return super().__call__(text, *args, truncation=truncation, **kwargs)

    def encode_smiles(self, smiles: str, canonical: bool = False) -> list[int]:
        """Ids of one molecule: tokens (truncated to model_max_length - 1) + `</s>`; the fast path for datasets.

        `canonical=True` skips RDKit canonicalization (the input is already canonical).

            DmpTokenizer().encode_smiles("CCO")  # [5, 5, 9, 2]
        """
        text = smiles if canonical or not self.canonicalize else canonicalize_smiles(smiles)
        ids = [self._convert_token_to_id(token) for token in self._tokenize(text)]
        return ids[: self.model_max_length - 1] + [self.eos_token_id]

    def prepare_for_tokenization(self, text: str, is_split_into_words: bool = False, **kwargs):
        if self.canonicalize and not is_split_into_words:
            text = canonicalize_smiles(text)
        return text, kwargs

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        tokens = split_smiles(text)
        unknown = sorted({token for token in tokens if token not in self._token_to_id})
        if unknown:
            message = f"SMILES {text!r} has tokens missing from the DMP dictionary: {unknown}"
            if self.unknown_tokens == "error":
                raise ValueError(message)
            if not self._reported_unknown.issuperset(unknown):
                self._reported_unknown.update(unknown)
                logger.warning(message + " (encoded as <unk>, as the original does; each token is reported once)")
        return tokens

    def _convert_token_to_id(self, token: str) -> int:
        return self._token_to_id.get(token, self._token_to_id[self.unk_token])

    def _convert_id_to_token(self, index: int) -> str:
        return self._id_to_token[index]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return "".join(tokens)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        name = (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILES_NAMES["vocab_file"]
        path = os.path.join(save_directory, name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(f"{token} {count}\n" for token, count in self._file_entries)
        return (path,)
