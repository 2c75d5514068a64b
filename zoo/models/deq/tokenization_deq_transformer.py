"""DeqTransformerTokenizer: the word-level vocabulary of locuslab/deq's WikiText-103 language model.

The original (DEQ-Sequence/data_utils.py, after Transformer-XL) builds its vocabulary from the training
corpus, for wt103 with `special=['<eos>']` and `lower_case=False`:
- a line is stripped and split on whitespace (no other normalisation; WikiText-103 is pre-tokenised),
  and `<eos>` is appended to every line, so a file is one stream `w w w <eos> w w <eos> ...`;
- ids: the special symbols first (`<eos>` = 0), then every word of the training file by decreasing count,
  ties in order of first appearance (`Counter.most_common`); no minimum count, no size limit;
- WikiText-103 already writes rare words as the literal word `<unk>`, which therefore has an ordinary id.

This class reads that vocabulary (`vocab.txt`: one symbol per line, line n = id n) or builds it from a
corpus with `build_vocabulary`. Text is encoded like one file: each line's words, `<eos>` between lines
and after the last one. Words missing from the vocabulary map to `<unk>`; a vocabulary without `<unk>`
(one not built from WikiText) gets it appended by `build_vocabulary` so that new text can be encoded.
Saved next to the weights (tokenizer_config.json + vocab.txt + this file), so that without zoo installed

    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained("org/deq-transformer-wt103", trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained("org/deq-transformer-wt103", trust_remote_code=True)
    log_probs = model(input_ids=tokenizer("The game began", return_tensors="pt")["input_ids"]).logits
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable

from transformers import PreTrainedTokenizer

__all__ = ["DeqTransformerTokenizer", "build_vocabulary"]

VOCAB_FILES_NAMES = {"vocab_file": "vocab.txt"}
MAX_VOCAB_FILE_BYTES = 64 * 1024 * 1024  # WikiText-103's 267,735 words take about 2.5 MB
MAX_SYMBOL_CHARS = 1000


def _words(line: str, lower_case: bool) -> list[str]:
    line = line.strip()
    return (line.lower() if lower_case else line).split()


def build_vocabulary(
    lines: Iterable[str],
    special: Iterable[str] = ("<eos>",),
    lower_case: bool = False,
    unk_token: str | None = "<unk>",
) -> list[str]:
    """Symbols in id order as the original builds them from a training file: `special` first, then the
    words by decreasing count (ties: first appearance). `unk_token` is appended when the corpus lacks it.

        build_vocabulary(["a b a", "b c"])  # ['<eos>', 'a', 'b', 'c', '<unk>']
    """
    counts: Counter[str] = Counter()
    for line in lines:
        counts.update(_words(line, lower_case))
    symbols = list(dict.fromkeys(special))
    seen = set(symbols)
    for word, _ in counts.most_common():
        if word not in seen:
            symbols.append(word)
            seen.add(word)
    if unk_token is not None and unk_token not in seen:
        symbols.append(unk_token)
    return symbols


def read_vocabulary(path: str | os.PathLike) -> list[str]:
    """Symbols of a vocab file (one per line, the first whitespace-separated field: a count may follow)."""
    size = os.path.getsize(path)
    if size > MAX_VOCAB_FILE_BYTES:
        raise ValueError(f"vocabulary file {path} is {size} bytes; at most {MAX_VOCAB_FILE_BYTES} are read")
    symbols: list[str] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                raise ValueError(f"vocabulary file {path}: line {number} is empty (one symbol per line)")
            symbol = fields[0]
            if len(symbol) > MAX_SYMBOL_CHARS:
                raise ValueError(f"vocabulary file {path}: line {number} has a {len(symbol)}-character symbol")
            if symbol in seen:
                raise ValueError(f"vocabulary file {path}: line {number} repeats the symbol {symbol!r}")
            seen.add(symbol)
            symbols.append(symbol)
    if not symbols:
        raise ValueError(f"vocabulary file {path} has no symbols")
    return symbols


class DeqTransformerTokenizer(PreTrainedTokenizer):
    """Whitespace-split words -> ids of the original word-level vocabulary, `<eos>` after every line.

        tokenizer = DeqTransformerTokenizer("vocab.txt")
        tokenizer("the game\\nit ended")["input_ids"]  # ids of: the game <eos> it ended <eos>
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids"]

    def __init__(
        self,
        vocab_file: str | None = None,
        lower_case: bool = False,
        eos_token: str = "<eos>",
        unk_token: str = "<unk>",
        symbols: list[str] | None = None,
        **kwargs,
    ):
        if (vocab_file is None) == (symbols is None):
            raise ValueError("DeqTransformerTokenizer needs exactly one of vocab_file or symbols")
        self._symbols = list(symbols) if symbols is not None else read_vocabulary(vocab_file)
        if len(set(self._symbols)) != len(self._symbols):
            raise ValueError("DeqTransformerTokenizer: the vocabulary repeats symbols")
        for needed in (str(eos_token), str(unk_token)):
            if needed not in self._symbols:
                raise ValueError(f"the vocabulary has no {needed!r} symbol (build it with build_vocabulary)")
        self.vocab_file = vocab_file
        self.lower_case = bool(lower_case)
        self._ids = {symbol: index for index, symbol in enumerate(self._symbols)}
        kwargs.setdefault("special_tokens_pattern", "eos")
        super().__init__(eos_token=eos_token, unk_token=unk_token, lower_case=lower_case, **kwargs)
        self.init_kwargs.pop("symbols", None)  # saved as vocab.txt, not inside tokenizer_config.json

    @property
    def vocab_size(self) -> int:
        return len(self._symbols)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._ids)

    def prepare_for_tokenization(self, text: str, is_split_into_words: bool = False, **kwargs):
        """Newlines as a text file read line by line sees them; a final newline ends the last line."""
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        if text.endswith("\n"):
            text = text[:-1]
        return text, kwargs

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        """Words of each line, `<eos>` between lines (the final `<eos>` is the added special token)."""
        tokens: list[str] = []
        for index, line in enumerate(text.split("\n")):
            if index:
                tokens.append(str(self.eos_token))
            tokens.extend(_words(line, self.lower_case))
        return tokens

    def _convert_token_to_id(self, token: str) -> int:
        return self._ids.get(token, self._ids[str(self.unk_token)])

    def _convert_id_to_token(self, index: int) -> str:
        return self._symbols[index]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return " ".join(tokens)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        name = (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILES_NAMES["vocab_file"]
        path = os.path.join(save_directory, name)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.writelines(symbol + "\n" for symbol in self._symbols)
        os.replace(tmp, path)
        return (path,)
