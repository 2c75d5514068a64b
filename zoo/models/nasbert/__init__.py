"""NAS-BERT: search space, subnet encoder, heads, supernet and the RoBERTa/GPT-2 BPE tokenizer."""

from .configuration_nasbert import NasBertConfig, NasBertOp, block_hidden_sizes, build_op_table
from .modeling_nasbert import (
    NasBertForSequenceClassification,
    NasBertForTokenClassification,
    NasBertModel,
    NasBertPreTrainedModel,
    NasBertSupernet,
)
from .tokenization_nasbert import NasBertTokenizer

__all__ = [
    "NasBertConfig", "NasBertForSequenceClassification", "NasBertForTokenClassification", "NasBertModel",
    "NasBertOp", "NasBertPreTrainedModel", "NasBertSupernet", "NasBertTokenizer", "block_hidden_sizes", "build_op_table",
]
