"""Configuration of MusicBERT (Zeng et al., 2021), an OctupleMIDI encoder on fairseq's RoBERTa."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig


class MusicBertConfig(PretrainedConfig):
    """Sizes and special ids of a MusicBERT model; defaults are `musicbert_base`.

    `max_positions` counts element tokens as the original's `--max-positions` does (8 per note); the
    learned position table has `max_positions + pad_token_id + 1` rows and is indexed per octuple.

        config = MusicBertConfig(num_hidden_layers=4, hidden_size=512, num_attention_heads=8,
                                 intermediate_size=2048)   # musicbert_small
        model = MusicBertForMaskedLM(config)
    """

    model_type = "musicbert"

    def __init__(
        self,
        vocab_size: int = 1237,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        activation_dropout: float = 0.0,
        max_positions: int = 8192,
        octuple_size: int = 8,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        pooler_activation: str = "tanh",
        classifier_dropout: float = 0.0,
        pad_token_id: int = 1,
        bos_token_id: int = 0,
        eos_token_id: int = 2,
        mask_token_id: int = 1236,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("auto_map", {
            "AutoConfig": "configuration_musicbert.MusicBertConfig",
            "AutoModel": "modeling_musicbert.MusicBertModel",
            "AutoModelForMaskedLM": "modeling_musicbert.MusicBertForMaskedLM",
            "AutoModelForSequenceClassification": "modeling_musicbert.MusicBertForSequenceClassification",
            "AutoModelForNextSentencePrediction": "modeling_musicbert.MusicBertForPairClassification",
        })
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.activation_dropout = activation_dropout
        self.max_positions = max_positions
        self.octuple_size = octuple_size
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.pooler_activation = pooler_activation
        self.classifier_dropout = classifier_dropout
        self.mask_token_id = mask_token_id


__all__ = ["MusicBertConfig"]
