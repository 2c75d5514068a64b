"""MusicBERT (microsoft/muzic): Auto-class registration and the named variants."""

from __future__ import annotations

from typing import Any

from zoo.auto import register_family
from zoo.models.musicbert import (
    MusicBertConfig,
    MusicBertForMaskedLM,
    MusicBertForPairClassification,
    MusicBertForSequenceClassification,
    MusicBertModel,
    OctupleMidiTokenizer,
)
from zoo.registry import ModelEntry, OriginalCheckpoint, register_model

PAPER = "MusicBERT: Symbolic Music Understanding with Large-Scale Pre-Training (Zeng et al., ACL Findings 2021)"
PAPER_URL = "https://arxiv.org/abs/2106.05630"
RELEASE_URL = "https://github.com/microsoft/muzic/tree/main/musicbert"


def musicbert_dummy_inputs(config: MusicBertConfig, model_class: type) -> dict[str, Any]:
    """Two short OctupleMIDI sequences (the second padded) with labels fitting the head."""
    import torch

    tokenizer = OctupleMidiTokenizer()
    notes = [(0, 4 * i, 0, 60 + i, 8, 20, 9, 31) for i in range(3)]
    rows = [tokenizer.octuples_to_ids(notes), tokenizer.octuples_to_ids(notes[:1])]
    batch = tokenizer.pad({"input_ids": rows}, return_tensors="pt")
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if model_class is MusicBertForMaskedLM:
        labels = torch.full_like(inputs["input_ids"], -100)
        labels[:, 11] = inputs["input_ids"][:, 11]
        inputs["labels"] = labels
    elif model_class in (MusicBertForSequenceClassification, MusicBertForPairClassification):
        if config.problem_type == "multi_label_classification":
            inputs["labels"] = torch.tensor([[1.0] + [0.0] * (config.num_labels - 1)] * 2)
        else:
            inputs["labels"] = torch.tensor([0, config.num_labels - 1])
    return inputs


register_family(
    "musicbert", MusicBertConfig, MusicBertModel,
    {
        "AutoModelForMaskedLM": MusicBertForMaskedLM,
        "AutoModelForSequenceClassification": MusicBertForSequenceClassification,
        "AutoModelForNextSentencePrediction": MusicBertForPairClassification,
    },
    processors={"AutoTokenizer": OctupleMidiTokenizer},
    dummy_inputs=musicbert_dummy_inputs,
)

_TINY = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64,
         "max_positions": 256}
_COMMON = dict(
    family="musicbert", converter="conversion/convert_musicbert.py", card="cards/musicbert.md",
    paper=PAPER, paper_url=PAPER_URL, license="mit", recipe="music21_dance", test_config=_TINY,
)

register_model(ModelEntry(
    name="musicbert_base", task="fill-mask", architecture="MusicBertForMaskedLM",
    config={"num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072,
            "max_positions": 8192},
    description="MusicBERT base (12 layers, width 768), pre-trained with bar-level masking on the "
                "Million MIDI Dataset (OctupleMIDI, 1000-note windows).",
    original=OriginalCheckpoint(
        filename="checkpoint_last_musicbert_base.pt", url=RELEASE_URL, format="fairseq",
        notes="fairseq @ 336942734 checkpoint; cfg.model is an argparse Namespace inside omegaconf, args is None "
              "(fairseq 0.10.0 fails on it: muzic issue #37). Linked from the muzic README (OneDrive; later a "
              "Google Drive folder).",
    ),
    metrics={"genre_topmagd_f1_micro": 0.784, "style_masd_f1_micro": 0.645},
    params=103_300_000, **_COMMON,
))
register_model(ModelEntry(
    name="musicbert_small", task="fill-mask", architecture="MusicBertForMaskedLM",
    config={"num_hidden_layers": 4, "hidden_size": 512, "num_attention_heads": 8, "intermediate_size": 2048,
            "max_positions": 8192},
    description="MusicBERT small (4 layers, width 512), pre-trained like musicbert_base.",
    original=OriginalCheckpoint(
        filename="checkpoint_last_musicbert_small.pt", url=RELEASE_URL, format="fairseq",
        notes="Same format as checkpoint_last_musicbert_base.pt.",
    ),
    params=22_500_000, **_COMMON,
))
register_model(ModelEntry(
    name="musicbert_tiny", task="text-classification", architecture="MusicBertForSequenceClassification",
    config={"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 512,
            "max_positions": 8192},
    description="The original code's musicbert_tiny architecture (2 layers, width 128), without released "
                "weights: a CPU-sized model for the fine-tuning recipe and tests.",
    params=None, **_COMMON,
))
