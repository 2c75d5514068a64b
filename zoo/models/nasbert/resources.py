"""The vocabulary files the released NAS-BERT checkpoints use, shipped with zoo (MIT, from ML.NET).

    from zoo.models.nasbert.resources import mlnet_tokenizer
    tok = mlnet_tokenizer(framing="mlnet")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .tokenization_nasbert import NasBertTokenizer

__all__ = ["VOCAB_DIR", "mlnet_tokenizer"]

# encoder.json + vocab.bpe (GPT-2 BPE) and dict.txt (fairseq dictionary), as in ML.NET's
# src/Microsoft.ML.TorchSharp/Resources/ (see vocab/README.md for hashes, LICENSE-mlnet.txt).
VOCAB_DIR = Path(__file__).resolve().parent / "vocab"


def mlnet_tokenizer(**kwargs: Any) -> NasBertTokenizer:
    """The NAS-BERT tokenizer built from the bundled vocabulary (keyword arguments: framing, ...)."""
    return NasBertTokenizer.from_files(VOCAB_DIR / "encoder.json", VOCAB_DIR / "vocab.bpe", VOCAB_DIR / "dict.txt",
                                       **kwargs)
