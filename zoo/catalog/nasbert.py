"""NAS-BERT in the zoo: Auto-class registration and the subnets ML.NET released."""

from __future__ import annotations

import torch

from zoo.auto import register_family
from zoo.models.nasbert import (
    NasBertConfig,
    NasBertForSequenceClassification,
    NasBertForTokenClassification,
    NasBertModel,
    NasBertTokenizer,
)
from zoo.registry import ModelEntry, OriginalCheckpoint, register_model

MLNET_RESOURCES = "https://aka.ms/mlnet-resources/"
PAPER = "NAS-BERT: Task-Agnostic and Adaptive-Size BERT Compression with Neural Architecture Search"
PAPER_URL = "https://arxiv.org/abs/2105.14444"
# ML.NET's NasBert2000000.tsm: the paper's NAS-BERT5 (Table 10), embedding 64, hidden 192.
NASBERT5_ARCHES = [9, 11, 7, 0, 0, 0, 11, 11, 7, 0, 0, 0, 9, 7, 11, 0, 0, 0, 10, 7, 9, 0, 0, 0]
# ML.NET's pretrained_NasBert_14M_encoder.tsm (NER): embedding 128, hidden 384, no attention.
NER14M_ARCHES = [15, 16, 14, 0, 0, 0, 15, 16, 14, 0, 0, 0, 17, 14, 15, 0, 0, 0, 17, 14, 15, 0, 0, 0]
# Registry-walk shrink: same arches, a small vocabulary and position table.
_TEST_SHRINK = {"vocab_size": 96, "max_position_embeddings": 32}


def nasbert_dummy_inputs(config: NasBertConfig, model_class: type) -> dict[str, torch.Tensor]:
    """Two sequences, the second right-padded, in ML.NET framing (`<s>` first, pad id 1)."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(4, config.vocab_size, (2, 7), generator=generator)
    ids[:, 0] = config.bos_token_id
    ids[1, 5:] = config.pad_token_id
    return {"input_ids": ids, "attention_mask": (ids != config.pad_token_id).long()}


FAMILY = register_family(
    "nasbert", NasBertConfig, NasBertModel,
    {
        "AutoModelForSequenceClassification": NasBertForSequenceClassification,
        "AutoModelForTokenClassification": NasBertForTokenClassification,
    },
    processors={"AutoTokenizer": NasBertTokenizer},
    dummy_inputs=nasbert_dummy_inputs,
)

_COMMON = {
    "family": "nasbert", "converter": "conversion/convert_nasbert.py", "card": "cards/nasbert.md",
    "paper": PAPER, "paper_url": PAPER_URL, "license": "mit", "test_config": _TEST_SHRINK,
}
_NASBERT5 = OriginalCheckpoint(
    filename="NasBert2000000.tsm", url=MLNET_RESOURCES + "models/NasBert2000000.tsm", format="torchsharp",
    size_bytes=None, sha256=None, dtype="float32",
    notes="Downloaded by ML.NET's TextClassification / SentenceSimilarity trainers at run time; 142 tensors. "
          "A float32 file in this layout is 17,907,563 bytes; the real file's size and hash are unverified.",
)
_NER14M = OriginalCheckpoint(
    filename="pretrained_NasBert_14M_encoder.tsm",
    url=MLNET_RESOURCES + "models/pretrained_NasBert_14M_encoder.tsm", format="torchsharp",
    size_bytes=None, sha256=None, dtype="float32",
    notes="Downloaded by ML.NET's NER trainer at run time; 126 tensors. A float32 file in this layout is "
          "54,767,471 bytes; the real file's size and hash are unverified.",
)
_PAPER_GLUE = {"glue_dev_avg_nasbert5": 72.3, "glue_dev_avg_nasbert5_kd": 72.7, "cpu_speedup_vs_bert_base": 23.6}

register_model(ModelEntry(
    name="nasbert5_mlnet", task="feature-extraction", architecture="NasBertModel",
    config={"arches": NASBERT5_ARCHES, "embedding_size": 64},
    description="ML.NET's released NAS-BERT encoder (the paper's NAS-BERT5 arches: SepConv/MHA, hidden 192).",
    original=_NASBERT5, metrics=_PAPER_GLUE, params=4_475_136, recipe="nasbert_fortunes", **_COMMON,
))
register_model(ModelEntry(
    name="nasbert5_mlnet_text_classification", task="text-classification",
    architecture="NasBertForSequenceClassification",
    config={"arches": NASBERT5_ARCHES, "embedding_size": 64, "num_labels": 2},
    description="NasBert2000000.tsm encoder with ML.NET's text-classification head (Linear on <s>).",
    original=_NASBERT5, metrics=_PAPER_GLUE, params=4_475_136 + 192 * 2 + 2, recipe="nasbert_fortunes",
    **_COMMON,
))
register_model(ModelEntry(
    name="nasbert5_mlnet_sentence_similarity", task="sentence-similarity",
    architecture="NasBertForSequenceClassification",
    config={"arches": NASBERT5_ARCHES, "embedding_size": 64, "num_labels": 1, "problem_type": "regression"},
    description="NasBert2000000.tsm encoder with ML.NET's sentence-similarity head (one regression output "
                "on a '<s> A </s> B' pair).",
    original=_NASBERT5, metrics=_PAPER_GLUE, params=4_475_136 + 192 + 1, **_COMMON,
))
register_model(ModelEntry(
    name="nasbert_14m_mlnet_ner", task="token-classification", architecture="NasBertForTokenClassification",
    config={"arches": NER14M_ARCHES, "embedding_size": 128, "num_labels": 10},
    description="ML.NET's 14M NAS-BERT NER encoder (SepConv + FFN, hidden 384) with a token-classification "
                "head; 10 labels as in ML.NET's example (label keys + 1).",
    original=_NER14M, params=13_690_368 + 384 * 10 + 10, **_COMMON,
))
register_model(ModelEntry(
    name="nasbert_14m_mlnet", task="feature-extraction", architecture="NasBertModel",
    config={"arches": NER14M_ARCHES, "embedding_size": 128},
    description="ML.NET's 14M NAS-BERT NER encoder alone (no head).",
    original=_NER14M, params=13_690_368, **_COMMON,
))
