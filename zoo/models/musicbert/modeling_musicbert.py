"""MusicBERT (Zeng et al., ACL Findings 2021): a RoBERTa-style encoder over OctupleMIDI notes.

Each note is 8 element tokens. Their embeddings are concatenated and projected down to one vector
per note (octuple), the encoder (post-LN, as fairseq's TransformerSentenceEncoder with
`encoder_normalize_before=True`: a LayerNorm on the embeddings and none at the end) runs over
octuples, and a Linear projects every octuple back up to 8 element positions, so that heads see one
vector per element token, as in the original `OctupleEncoder`.

    model = MusicBertForMaskedLM.from_pretrained("path/to/musicbert_base")
    logits = model(input_ids).logits          # [batch, 8 * notes, vocab]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import MaskedLMOutput, SequenceClassifierOutput
from transformers.utils import ModelOutput

from .configuration_musicbert import MusicBertConfig


@dataclass
class MusicBertModelOutput(ModelOutput):
    """`last_hidden_state` has one vector per element token [B, 8T, D] (the original `features`);
    `octuple_hidden_state` one per note [B, T, D] (the last layer, before up-projection);
    `hidden_states` (when asked) the embedding output and every layer's output, per note."""

    last_hidden_state: torch.FloatTensor | None = None
    octuple_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class MusicBertSelfAttention(nn.Module):
    def __init__(self, config: MusicBertConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_probs_dropout_prob
        self.config = config
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor, keep: torch.Tensor | None, output_attentions: bool):
        batch, length, width = hidden.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

        query, key, value = heads(self.q_proj(hidden)), heads(self.k_proj(hidden)), heads(self.v_proj(hidden))
        mask = None if keep is None else keep[:, None, None, :]
        dropout = self.dropout if self.training else 0.0
        weights = None
        if output_attentions or self.config._attn_implementation == "eager":
            scores = torch.matmul(query * self.head_dim ** -0.5, key.transpose(-1, -2))
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = torch.softmax(scores.float(), dim=-1).type_as(scores)
            context = torch.matmul(F.dropout(weights, dropout, self.training), value)
        else:
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout)
        context = context.transpose(1, 2).reshape(batch, length, width)
        return self.out_proj(context), weights


class MusicBertLayer(nn.Module):
    """fairseq's TransformerSentenceEncoderLayer: post-LN attention and feed-forward blocks."""

    def __init__(self, config: MusicBertConfig) -> None:
        super().__init__()
        self.self_attn = MusicBertSelfAttention(config)
        self.self_attn_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.activation = ACT2FN[config.hidden_act]
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.activation_dropout = nn.Dropout(config.activation_dropout)

    def forward(self, hidden: torch.Tensor, keep: torch.Tensor | None, output_attentions: bool = False):
        attended, weights = self.self_attn(hidden, keep, output_attentions)
        hidden = self.self_attn_layer_norm(hidden + self.dropout(attended))
        fed = self.fc2(self.activation_dropout(self.activation(self.fc1(hidden))))
        hidden = self.final_layer_norm(hidden + self.dropout(fed))
        return hidden, weights


class MusicBertPreTrainedModel(PreTrainedModel):
    config_class = MusicBertConfig
    base_model_prefix = "musicbert"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _supports_sdpa = True
    _no_split_modules = ["MusicBertLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        # fairseq's init_bert_params: N(0, 0.02) weights, zero biases, zero padding rows.
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, MusicBertLMHead):
            init.normal_(module.weight, mean=0.0, std=std)
            init.zeros_(module.bias)


class MusicBertModel(MusicBertPreTrainedModel):
    """The OctupleMIDI encoder; `input_ids` [B, 8T] (8 element ids per note, `<pad>` octuples at the end).

        model = MusicBertModel.from_pretrained("path/to/musicbert_base")
        features = model(input_ids).last_hidden_state          # [B, 8T, D]
    """

    # a head checkpoint loaded as the base model: its head weights are dropped on purpose, not reported
    # (transformers matches these with re.search; any other unexpected key is still reported)
    _keys_to_ignore_on_load_unexpected = [r"^(lm_head|classifier)\."]

    def __init__(self, config: MusicBertConfig) -> None:
        super().__init__(config)
        width, ratio = config.hidden_size, config.octuple_size
        self.embed_tokens = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        self.embed_positions = nn.Embedding(config.max_positions + config.pad_token_id + 1, width,
                                            padding_idx=config.pad_token_id)
        self.downsampling = nn.Linear(width * ratio, width)
        self.emb_layer_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(MusicBertLayer(config) for _ in range(config.num_hidden_layers))
        self.upsampling = nn.Linear(width, width * ratio)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def _octuple_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        ratio = self.config.octuple_size
        if input_ids.dim() != 2 or input_ids.shape[1] % ratio:
            raise ValueError(f"input_ids must be [batch, 8 * notes]; got shape {tuple(input_ids.shape)}")
        octuples = input_ids.shape[1] // ratio
        if octuples > self.config.max_positions:
            raise ValueError(f"{octuples} octuples exceed max_positions={self.config.max_positions}")
        keep = input_ids[:, ::ratio].ne(self.config.pad_token_id)
        if attention_mask is not None:
            keep = keep & attention_mask[:, ::ratio].bool()
        return keep

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MusicBertModelOutput:
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        keep = self._octuple_mask(input_ids, attention_mask)
        batch, octuples = keep.shape
        hidden = self.downsampling(self.embed_tokens(input_ids).view(batch, octuples, -1))
        # fairseq's make_positions: 1-based positions after the padding index, padding keeps the pad row.
        positions = torch.cumsum(keep.long(), dim=1) * keep + self.config.pad_token_id
        hidden = self.emb_layer_norm(hidden + self.embed_positions(positions))
        hidden = self.dropout(hidden)
        all_keep = bool(keep.all())
        if not all_keep:
            hidden = hidden * keep.unsqueeze(-1).type_as(hidden)
        mask = None if all_keep else keep
        states = (hidden,) if output_hidden_states else None
        attentions = () if output_attentions else None
        for layer in self.layers:
            hidden, weights = layer(hidden, mask, output_attentions)
            if output_hidden_states:
                states = states + (hidden,)
            if output_attentions:
                attentions = attentions + (weights,)
        features = self.upsampling(hidden).view(batch, octuples * self.config.octuple_size, -1)
        return MusicBertModelOutput(
            last_hidden_state=features, octuple_hidden_state=hidden, hidden_states=states, attentions=attentions
        )


class MusicBertLMHead(nn.Module):
    """fairseq's RobertaLMHead with its own output matrix (not tied to the input embeddings)."""

    def __init__(self, config: MusicBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = ACT2FN[config.hidden_act]
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.weight = nn.Parameter(torch.empty(config.vocab_size, config.hidden_size))
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(self.layer_norm(self.activation(self.dense(features))), self.weight) + self.bias


class MusicBertForMaskedLM(MusicBertPreTrainedModel):
    """MusicBERT with its masked-element head; `labels` [B, 8T] hold target ids and -100 elsewhere.

        model = MusicBertForMaskedLM.from_pretrained("path/to/musicbert_base")
        loss = model(input_ids, labels=labels).loss
    """

    def __init__(self, config: MusicBertConfig) -> None:
        super().__init__(config)
        self.musicbert = MusicBertModel(config)
        self.lm_head = MusicBertLMHead(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MaskedLMOutput:
        outputs = self.musicbert(input_ids, attention_mask, output_hidden_states, output_attentions)
        logits = self.lm_head(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                              attentions=outputs.attentions)


class MusicBertClassificationHead(nn.Module):
    """fairseq's RobertaClassificationHead on the first element token (`<s>`) of the features."""

    def __init__(self, config: MusicBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = ACT2FN[config.pooler_activation]
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = self.activation(self.dense(self.dropout(features[:, 0])))
        return self.out_proj(self.dropout(hidden))


def classification_loss(config: MusicBertConfig, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Single-label cross entropy, multi-label sigmoid BCE (genre, style) or MSE, by `problem_type`."""
    problem = config.problem_type
    if problem is None:
        if config.num_labels == 1:
            problem = "regression"
        elif labels.dtype in (torch.long, torch.int) and labels.dim() == 1:
            problem = "single_label_classification"
        else:
            problem = "multi_label_classification"
    if problem == "regression":
        return F.mse_loss(logits.squeeze(-1).float(), labels.float().view(-1))
    if problem == "single_label_classification":
        return F.cross_entropy(logits.float(), labels.view(-1).long())
    if problem == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
    raise ValueError(f"unknown problem_type {problem!r}")


class MusicBertForSequenceClassification(MusicBertPreTrainedModel):
    """A piece-level classifier (genre, style, composer). `problem_type="multi_label_classification"`
    with multi-hot float `labels` gives the original genre/style setup (sigmoid + BCE).

        model = MusicBertForSequenceClassification.from_pretrained("path/to/musicbert_genre")
        probabilities = model(input_ids).logits.sigmoid()
    """

    def __init__(self, config: MusicBertConfig) -> None:
        super().__init__(config)
        self.musicbert = MusicBertModel(config)
        self.classifier = MusicBertClassificationHead(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        outputs = self.musicbert(input_ids, attention_mask, output_hidden_states, output_attentions)
        logits = self.classifier(outputs.last_hidden_state)
        loss = classification_loss(self.config, logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                        attentions=outputs.attentions)


class MusicBertForPairClassification(MusicBertForSequenceClassification):
    """Two pieces in one input (`OctupleMidiTokenizer.encode_midi_pair`): does the second continue or
    accompany the first (melody completion, accompaniment suggestion). Single-label softmax.

        batch = tokenizer.encode_midi_pair("melody.mid", "candidate.mid", return_tensors="pt")
        match = model(**batch).logits.softmax(-1)[:, 1]
    """

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs) -> SequenceClassifierOutput:
        output = super().forward(input_ids, attention_mask, None, **kwargs)
        if labels is not None:
            output.loss = F.cross_entropy(output.logits.float(), labels.view(-1).long())
        return output


__all__ = [
    "MusicBertForMaskedLM", "MusicBertForPairClassification", "MusicBertForSequenceClassification",
    "MusicBertModel", "MusicBertModelOutput", "MusicBertPreTrainedModel",
]
