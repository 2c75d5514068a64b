"""NAS-BERT tokenizer: GPT-2 byte-level BPE (the `tokenizers` library) remapped through fairseq's dict.txt.

Model ids are the RoBERTa vocabulary: `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, dict.txt line n -> n + 4,
`<mask>` last. Framing: `framing="fairseq"` (default) gives `<s> A </s>` / `<s> A </s> </s> B </s>`;
`framing="mlnet"` gives ML.NET's `<s> A` / `<s> A </s> B` (no closing `</s>`), and
`mlnet_bug_compat=True` additionally reproduces ML.NET's pass-through of GPT-2 ids 0-4.
With `framing="mlnet"`, truncation is ML.NET's: the whole framed sequence is built, then its first
`max_length` ids are kept (nothing is appended after the cut), instead of transformers' longest-first.

    tok = NasBertTokenizer.from_files("encoder.json", "vocab.bpe", "dict.txt")
    tok("Hello world!")["input_ids"]              # [0, 31414, 232, 328, 2]
"""

from __future__ import annotations

import json
import os
import re
import shutil

from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import BPE
from transformers.tokenization_utils_base import BatchEncoding, TruncationStrategy
from transformers.tokenization_utils_tokenizers import TokenizersBackend
from transformers.utils import PaddingStrategy

__all__ = ["NasBertTokenizer", "load_dictionary"]

VOCAB_FILES_NAMES = {"vocab_file": "encoder.json", "merges_file": "vocab.bpe", "dict_file": "dict.txt"}
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
FRAMINGS = ("fairseq", "mlnet")
# ML.NET looks a GPT-2 id up in its dictionary only when it is above 4, so the standalone tokens
# '!', '"', '#', '$', '%' (GPT-2 ids 0..4) reach the model as ids 0..4 (<s>, <pad>, </s>, <unk>, ',').
MLNET_PASSTHROUGH_GPT2_IDS = range(5)
_SURROGATE = re.compile("[\ud800-\udfff]")


def load_dictionary(dict_file: str | os.PathLike) -> list[str]:
    """Symbols of a fairseq dict.txt (`symbol count` per line), in file order (model id = index + 4)."""
    symbols = []
    with open(dict_file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            parts = line.rstrip("\n").rsplit(" ", 1)
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise ValueError(f"{dict_file}:{number}: expected '<symbol> <count>', got {line.rstrip()!r}")
            symbols.append(parts[0])
    return symbols


def _remapped_vocab(vocab_file: str, dict_file: str) -> tuple[dict[str, int], dict[int, int]]:
    """BPE token -> model id, and GPT-2 id -> model id, through fairseq's dictionary."""
    with open(vocab_file, encoding="utf-8") as handle:
        encoder: dict[str, int] = json.load(handle)
    model_id = {symbol: index + len(SPECIALS) for index, symbol in enumerate(load_dictionary(dict_file))}
    vocab = dict(zip(SPECIALS, range(len(SPECIALS))))
    gpt2_to_model = {}
    for token, gpt2_id in encoder.items():
        # fairseq maps a BPE id missing from dict.txt to <unk>; the RoBERTa dictionary has them all
        gpt2_to_model[gpt2_id] = model_id.get(str(gpt2_id), SPECIALS.index("<unk>"))
        if str(gpt2_id) in model_id:
            vocab[token] = model_id[str(gpt2_id)]
    for symbol, index in model_id.items():
        if not symbol.isdigit():  # fairseq's padding symbols (madeupword0000 ...) keep their ids
            vocab[symbol] = index
    vocab["<mask>"] = len(SPECIALS) + len(model_id)
    return vocab, gpt2_to_model


def _read_merges(merges_file: str) -> list[tuple[str, str]]:
    with open(merges_file, encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    start = 1 if lines and lines[0].startswith("#version") else 0
    return [tuple(line.split(" ")) for line in lines[start:] if line]


class NasBertTokenizer(TokenizersBackend):
    """Tokenizer of the released NAS-BERT checkpoints (RoBERTa's GPT-2 BPE + fairseq dictionary).

        tok = NasBertTokenizer.from_files("encoder.json", "vocab.bpe", "dict.txt", framing="mlnet")
        batch = tok(["a text", "another"], padding=True, truncation=True, return_tensors="pt")
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str | None = None,
        merges_file: str | None = None,
        dict_file: str | None = None,
        framing: str = "fairseq",
        mlnet_bug_compat: bool = False,
        model_max_length: int = 512,
        **kwargs,
    ):
        if framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {FRAMINGS}, got {framing!r}")
        if mlnet_bug_compat and framing != "mlnet":
            raise ValueError("mlnet_bug_compat=True reproduces ML.NET and needs framing='mlnet'")
        missing = [name for name, path in (("vocab_file", vocab_file), ("merges_file", merges_file),
                                           ("dict_file", dict_file)) if not path or not os.path.isfile(path)]
        if missing:
            raise ValueError(f"NasBertTokenizer needs encoder.json, vocab.bpe and dict.txt; missing {missing}")
        for key in ("tokenizer_file", "tokenizer_object", "vocab", "merges"):
            kwargs.pop(key, None)  # always rebuilt from the three original files
        self.vocab_file, self.merges_file, self.dict_file = vocab_file, merges_file, dict_file
        self.framing = framing
        self.mlnet_bug_compat = mlnet_bug_compat
        vocab, self.gpt2_to_model = _remapped_vocab(vocab_file, dict_file)
        backend = Tokenizer(BPE(vocab=vocab, merges=_read_merges(merges_file), fuse_unk=False))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        if framing == "fairseq":
            backend.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=False)
        else:
            backend.post_processor = processors.TemplateProcessing(
                single="<s> $A", pair="<s> $A </s> $B:1", special_tokens=[("<s>", 0), ("</s>", 2)]
            )
        kwargs.setdefault("bos_token", "<s>")
        kwargs.setdefault("eos_token", "</s>")
        kwargs.setdefault("sep_token", "</s>")
        kwargs.setdefault("cls_token", "<s>")
        kwargs.setdefault("unk_token", "<unk>")
        kwargs.setdefault("pad_token", "<pad>")
        kwargs.setdefault("mask_token", "<mask>")
        super().__init__(
            tokenizer_object=backend, vocab_file=vocab_file, merges_file=merges_file, dict_file=dict_file,
            framing=framing, mlnet_bug_compat=mlnet_bug_compat, model_max_length=model_max_length, **kwargs,
        )
        self._passthrough = {self.gpt2_to_model[i]: i for i in MLNET_PASSTHROUGH_GPT2_IDS} if mlnet_bug_compat else {}

    @classmethod
    def from_files(cls, vocab_file: str | os.PathLike, merges_file: str | os.PathLike,
                   dict_file: str | os.PathLike, **kwargs) -> NasBertTokenizer:
        """Build from GPT-2's encoder.json + vocab.bpe and fairseq's dict.txt."""
        return cls(vocab_file=os.fspath(vocab_file), merges_file=os.fspath(merges_file),
                   dict_file=os.fspath(dict_file), **kwargs)

    def update_post_processor(self):
        """Keep the framing chosen at construction (fairseq or ML.NET)."""

    def _encode_plus(self, text=None, text_pair=None, **kwargs):
        for name, value in (("text", text), ("text_pair", text_pair)):
            for where, piece in _strings(value, name):
                self._check_text(where, piece)
        truncation = kwargs.get("truncation_strategy", TruncationStrategy.DO_NOT_TRUNCATE)
        if self.framing == "mlnet" and truncation != TruncationStrategy.DO_NOT_TRUNCATE:
            encode = self._encode_mlnet_cut
        else:
            encode = super()._encode_plus
        batched = isinstance(text, (list, tuple)) and (not kwargs.get("is_split_into_words") or
                                                       (bool(text) and isinstance(text[0], (list, tuple))))
        if not batched and text_pair is not None and len(text_pair) == 0:
            # transformers drops an empty second text of a single pair (`if text_pair`), and with it the
            # separator the original framing writes (`<s> A </s> </s> </s>`): encode it as a batch of one
            encoding = encode([text], text_pair=[text_pair], **kwargs)
            if kwargs.get("return_tensors") is None and not kwargs.get("return_overflowing_tokens"):
                encoding = BatchEncoding({key: value[0] if value and isinstance(value[0], list) else value
                                          for key, value in encoding.items()}, encoding.encodings)
        else:
            encoding = encode(text, text_pair=text_pair, **kwargs)
        if self._passthrough:
            encoding["input_ids"] = self._apply_passthrough(encoding["input_ids"])
        return encoding

    def _check_text(self, where: str, text: str) -> None:
        surrogate = _SURROGATE.search(text)
        if surrogate:
            raise ValueError(
                f"{where}: {text[:40]!r} has a lone surrogate (U+{ord(surrogate.group()):04X}) at position "
                f"{surrogate.start()}, which is not valid Unicode text; decode the source with errors='replace' first"
            )
        if self._passthrough and not text.isascii():
            raise ValueError(
                f"mlnet_bug_compat=True only reproduces ML.NET on ASCII text; {where} {text[:40]!r} has non-ASCII "
                "characters, which ML.NET mangles (Latin-1 bytes, characters above U+00FF dropped)"
            )

    def _encode_mlnet_cut(self, *args, **kwargs) -> BatchEncoding:
        """ML.NET's truncation (NasBertTrainer.PrepareRowTensor / PrepAndRunModel in dotnet/machinelearning):
        frame `[0] + A (+ [2] + B)` in full, then keep its first `max_length` ids; the separator and B go
        first, and no `</s>` is appended after the cut."""
        strategy = kwargs["truncation_strategy"]
        if strategy != TruncationStrategy.LONGEST_FIRST:
            raise ValueError(f"framing='mlnet' truncates as ML.NET does (keep the first max_length ids of the "
                             f"framed sequence); truncation={strategy.value!r} is not supported, use truncation=True")
        if kwargs.get("return_overflowing_tokens") or kwargs.get("stride"):
            raise ValueError("framing='mlnet' truncation drops the tail as ML.NET does; it returns no overflowing "
                             "tokens and takes no stride")
        max_length = kwargs.get("max_length")
        if max_length is None:
            max_length = self.model_max_length
        padding = {"padding": kwargs.get("padding_strategy", PaddingStrategy.DO_NOT_PAD), "max_length": max_length,
                   "pad_to_multiple_of": kwargs.get("pad_to_multiple_of"), "padding_side": kwargs.get("padding_side"),
                   "return_attention_mask": kwargs.get("return_attention_mask"),
                   "return_tensors": kwargs.get("return_tensors")}
        full = super()._encode_plus(*args, **{
            **kwargs, "truncation_strategy": TruncationStrategy.DO_NOT_TRUNCATE,
            "padding_strategy": PaddingStrategy.DO_NOT_PAD, "return_tensors": None, "verbose": False,
        })
        batched = bool(full["input_ids"]) and isinstance(full["input_ids"][0], list)
        cut = {key: ([row[:max_length] for row in value] if batched else value[:max_length])
               for key, value in full.items()}
        return self.pad(BatchEncoding(cut), **padding)

    def _apply_passthrough(self, ids):
        if hasattr(ids, "apply_"):
            return ids.clone().apply_(lambda value: self._passthrough.get(value, value))
        if ids and isinstance(ids[0], list):
            return [self._apply_passthrough(row) for row in ids]
        return [self._passthrough.get(value, value) for value in ids]

    def _save_pretrained(self, save_directory, file_names, legacy_format=None, filename_prefix=None):
        file_names = super()._save_pretrained(save_directory, file_names, legacy_format, filename_prefix)
        return file_names + self.save_vocabulary(str(save_directory), filename_prefix)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        written = []
        for attribute, name in VOCAB_FILES_NAMES.items():
            target = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + name)
            source = getattr(self, attribute)
            if os.path.abspath(source) != os.path.abspath(target):
                shutil.copyfile(source, target)
            written.append(target)
        return tuple(written)


def _strings(value, name: str, depth: int = 0):
    """(where, text) for every string in a text argument: a str, a batch, or pre-tokenized words (nested once)."""
    if isinstance(value, str):
        yield name, value
    elif isinstance(value, (list, tuple)) and depth < 2:
        for index, item in enumerate(value):
            yield from _strings(item, f"{name}[{index}]", depth + 1)
