"""MusicBERT with OctupleMIDI: configuration, models, tokenizer and the bar-level masking collator."""

from .configuration_musicbert import MusicBertConfig
from .masking_musicbert import DataCollatorForOctupleMasking
from .modeling_musicbert import (
    MusicBertForMaskedLM,
    MusicBertForPairClassification,
    MusicBertForSequenceClassification,
    MusicBertModel,
    MusicBertModelOutput,
    MusicBertPreTrainedModel,
)
from .octuple import OctupleError, decode_octuples, encode_octuples, read_midi
from .tokenization_musicbert import MidiBatchEncoding, OctupleMidiTokenizer

__all__ = [
    "DataCollatorForOctupleMasking", "MidiBatchEncoding", "MusicBertConfig", "MusicBertForMaskedLM",
    "MusicBertForPairClassification", "MusicBertForSequenceClassification", "MusicBertModel",
    "MusicBertModelOutput", "MusicBertPreTrainedModel", "OctupleError", "OctupleMidiTokenizer",
    "decode_octuples", "encode_octuples", "read_midi",
]
