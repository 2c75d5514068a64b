"""NAS-BERT (Xu et al., KDD 2021): subnet encoder, task heads, and the supernet with subnet extraction.

The network follows ML.NET's TorchSharp port (the only released implementation) for inference:
learned positions counted from 1 (0 = padding), embedding LayerNorm, an embedding-to-hidden transfer,
24 post-norm ops in 4 equal-width blocks with hidden transfers between blocks, exact (erf) GELU.

    from zoo.models.nasbert import NasBertConfig, NasBertModel
    model = NasBertModel(NasBertConfig())
    hidden = model(input_ids=torch.tensor([[0, 31414, 232, 328]])).last_hidden_state   # [1, 4, 192]
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput, TokenClassifierOutput

from .configuration_nasbert import NasBertConfig, NasBertOp, block_hidden_sizes

__all__ = [
    "NasBertForSequenceClassification", "NasBertForTokenClassification", "NasBertModel", "NasBertPreTrainedModel",
    "NasBertSupernet",
]


class NasBertIdentity(nn.Module):
    """The identity op: the layer is skipped."""

    def forward(self, hidden: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        return hidden


class NasBertAttention(nn.Module):
    """Multi-head self-attention op, post-norm: LN(x + OutProj(attention(x)))."""

    def __init__(self, width: int, head_dim: int, eps: float):
        super().__init__()
        self.num_heads = width // head_dim
        self.head_dim = head_dim
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)
        self.layer_norm = nn.LayerNorm(width, eps=eps)

    def forward(self, hidden: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

        keep = ~padding_mask[:, None, None, :]  # key padding masked out (-inf before the softmax)
        attended = F.scaled_dot_product_attention(
            heads(self.q_proj(hidden)), heads(self.k_proj(hidden)), heads(self.v_proj(hidden)), attn_mask=keep
        )
        attended = attended.transpose(1, 2).reshape(batch, length, width)
        return self.layer_norm(hidden + self.out_proj(attended))


class NasBertFeedForward(nn.Module):
    """Feed-forward op, post-norm: LN(x + fc2(GELU(fc1 x)))."""

    def __init__(self, width: int, inner: int, eps: float):
        super().__init__()
        self.fc1 = nn.Linear(width, inner)
        self.fc2 = nn.Linear(inner, width)
        self.layer_norm = nn.LayerNorm(width, eps=eps)

    def forward(self, hidden: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(hidden + self.fc2(F.gelu(self.fc1(hidden))))


class NasBertSeparableConv(nn.Module):
    """Depthwise (kernel k, 'same' padding) then pointwise convolution over the sequence."""

    def __init__(self, width: int, kernel: int):
        super().__init__()
        self.depthwise = nn.Conv1d(width, width, kernel, padding=kernel // 2, groups=width)
        self.pointwise = nn.Conv1d(width, width, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        mixed = self.depthwise(hidden.transpose(1, 2)).transpose(1, 2)
        # the kernel-1 pointwise conv is a Linear over channels; PyTorch's CPU conv has no fast path for it
        return F.linear(mixed, self.pointwise.weight.squeeze(-1), self.pointwise.bias)


class NasBertSepConvOp(nn.Module):
    """Separable-convolution op, applied twice: y = LN(x + GELU(sepconv(x with padding zeroed)))."""

    def __init__(self, width: int, kernel: int, eps: float):
        super().__init__()
        self.conv1 = NasBertSeparableConv(width, kernel)
        self.layer_norm1 = nn.LayerNorm(width, eps=eps)
        self.conv2 = NasBertSeparableConv(width, kernel)
        self.layer_norm2 = nn.LayerNorm(width, eps=eps)

    def forward(self, hidden: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        keep = (~padding_mask).unsqueeze(-1).to(hidden.dtype)
        hidden = self.layer_norm1(hidden + F.gelu(self.conv1(hidden * keep)))
        return self.layer_norm2(hidden + F.gelu(self.conv2(hidden * keep)))


def build_op(op: NasBertOp, config: NasBertConfig) -> nn.Module:
    """The module for one candidate op."""
    eps = config.layer_norm_eps
    if op.kind == "identity":
        return NasBertIdentity()
    if op.kind == "mha":
        return NasBertAttention(op.width, config.attention_head_dim, eps)
    if op.kind == "ffn":
        return NasBertFeedForward(op.width, config.ffn_ratio * op.width, eps)
    if op.kind == "sepconv":
        return NasBertSepConvOp(op.width, op.kernel, eps)
    raise ValueError(f"unknown op kind '{op.kind}'")


def _transfer(in_width: int, out_width: int) -> nn.Module:
    return nn.Linear(in_width, out_width) if in_width != out_width else nn.Identity()


class NasBertEmbeddings(nn.Module):
    """Token + learned position embeddings (positions 1..n, padding position 0), then LayerNorm."""

    def __init__(self, config: NasBertConfig):
        super().__init__()
        self.pad_token_id = config.pad_token_id
        self.max_positions = config.max_position_embeddings
        self.embed_tokens = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        # ML.NET sizes the table maxSeqLen + 2 with row 0 as padding; tokens use rows 1..n (no fairseq offset).
        self.embed_positions = nn.Embedding(config.max_position_embeddings + 2, config.embedding_size, padding_idx=0)
        self.layer_norm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape [batch, length], got {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.max_positions:
            raise ValueError(
                f"input of {input_ids.shape[1]} tokens is longer than max_position_embeddings "
                f"({self.max_positions}); truncate it (the tokenizer does with truncation=True)"
            )
        not_pad = input_ids != self.pad_token_id
        if attention_mask is not None:
            not_pad = not_pad & attention_mask.bool()
        positions = torch.cumsum(not_pad, dim=1) * not_pad
        hidden = self.layer_norm(self.embed_tokens(input_ids) + self.embed_positions(positions))
        return hidden, ~not_pad


class NasBertPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading for every NAS-BERT class."""

    config_class = NasBertConfig
    base_model_prefix = "nasbert"
    _no_split_modules = ["NasBertAttention", "NasBertFeedForward", "NasBertSepConvOp"]


class NasBertModel(NasBertPreTrainedModel):
    """A NAS-BERT subnet encoder: `config.arches` picks one op per layer. Returns [B, T, config.hidden_size].

        model = NasBertModel(NasBertConfig(arches=[15, 16, 14, 0, 0, 0] * 4, embedding_size=128))
        out = model(input_ids=ids).last_hidden_state
    """

    # a head checkpoint loaded as the base model: its head weights are dropped on purpose, not reported
    # (transformers matches these with re.search; any other unexpected key is still reported)
    _keys_to_ignore_on_load_unexpected = [r"^(classifier)\."]

    def __init__(self, config: NasBertConfig):
        super().__init__(config)
        widths = config.block_hidden_sizes
        self.embeddings = NasBertEmbeddings(config)
        self.embed_transfer = _transfer(config.embedding_size, widths[0])
        self.layers = nn.ModuleList(build_op(op, config) for op in config.layer_ops())
        # After the last layer of block b (ML.NET's HiddenTransferList[b]); the last block has none.
        self.hidden_transfers = nn.ModuleList(_transfer(widths[b], widths[b + 1]) for b in range(len(widths) - 1))
        self.post_init()

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> BaseModelOutput:
        hidden, padding_mask = self.embeddings(input_ids, attention_mask)
        hidden = self.embed_transfer(hidden) * (~padding_mask).unsqueeze(-1).to(hidden.dtype)
        per_block = len(self.layers) // self.config.num_blocks
        for index, layer in enumerate(self.layers):
            hidden = layer(hidden, padding_mask)
            block, last = divmod(index + 1, per_block)
            if last == 0 and block - 1 < len(self.hidden_transfers):
                hidden = self.hidden_transfers[block - 1](hidden)
        return BaseModelOutput(last_hidden_state=hidden)


def _classification_loss(config: NasBertConfig, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if config.problem_type is None:
        if config.num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).view(-1)) if config.num_labels == 1 \
            else F.mse_loss(logits, labels.to(logits.dtype))
    if config.problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, config.num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


class NasBertForSequenceClassification(NasBertPreTrainedModel):
    """Classification / regression on the first token (`<s>`): Linear(hidden, num_labels), no pooler.

    ML.NET's text classification (num_labels = classes) and sentence similarity (num_labels = 1,
    regression on a `<s> A </s> B` pair) both use this head.

        model = NasBertForSequenceClassification(NasBertConfig(num_labels=3))
        logits = model(input_ids=ids).logits   # [B, 3]
    """

    def __init__(self, config: NasBertConfig):
        super().__init__(config)
        self.nasbert = NasBertModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        hidden = self.nasbert(input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = hidden[:, 0]
        if self.config.num_labels == 1:
            # A one-row matmul goes through BLAS gemv, whose rounding depends on the weight's memory alignment
            # (weights loaded from safetensors are not 64-byte aligned); this sum does not.
            logits = (pooled * self.classifier.weight[0]).sum(-1, keepdim=True) + self.classifier.bias
        else:
            logits = self.classifier(pooled)
        loss = _classification_loss(self.config, logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=None)


class NasBertForTokenClassification(NasBertPreTrainedModel):
    """Per-token classification (ML.NET's NER head): Linear(hidden, num_labels) at every position.

    Labels of -100 (padding, sub-tokens you do not score) are ignored by the loss.

        model = NasBertForTokenClassification(NasBertConfig(num_labels=5))
        logits = model(input_ids=ids).logits   # [B, T, 5]
    """

    def __init__(self, config: NasBertConfig):
        super().__init__(config)
        self.nasbert = NasBertModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        hidden = self.nasbert(input_ids, attention_mask=attention_mask).last_hidden_state
        logits = self.classifier(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, self.config.num_labels), labels.view(-1), ignore_index=-100)
        return TokenClassifierOutput(loss=loss, logits=logits)


class NasBertSupernet(NasBertPreTrainedModel):
    """The search-space supernet: every candidate op in every layer, run along any valid `arches`.

    Embeddings are shared; there is an embedding transfer to each width and, between blocks, a hidden
    transfer for each pair of widths. `extract_subnet(arches)` copies the chosen path into a standalone
    `NasBertModel` (ML.NET keeps `Operations.{arches[i]}` as layer i's `Operation`; no slicing).

        supernet = NasBertSupernet(NasBertConfig(op_widths=[32, 64], attention_head_dim=16))
        subnet = supernet.extract_subnet([1, 2, 0, 0, 0, 0] * 4)
    """

    def __init__(self, config: NasBertConfig):
        super().__init__(config)
        ops = config.ops
        widths = sorted({op.width for op in ops if op.kind != "identity"} | {config.default_hidden_size})
        self.widths = widths
        self.embeddings = NasBertEmbeddings(config)
        self.embed_transfers = nn.ModuleDict(
            {str(w): nn.Linear(config.embedding_size, w) for w in widths if w != config.embedding_size}
        )
        self.layers = nn.ModuleList(
            nn.ModuleList(build_op(op, config) for op in ops) for _ in range(config.num_hidden_layers)
        )
        self.hidden_transfers = nn.ModuleList(
            nn.ModuleDict({f"{a}_{b}": nn.Linear(a, b) for a in widths for b in widths if a != b})
            for _ in range(config.num_blocks - 1)
        )
        self.post_init()

    def _path_config(self, arches: list[int] | None) -> NasBertConfig:
        config = copy.deepcopy(self.config)
        config.arches = list(arches) if arches is not None else list(self.config.arches)
        if len(config.arches) != self.config.num_hidden_layers:
            raise ValueError(f"arches has {len(config.arches)} entries; this supernet has "
                             f"{self.config.num_hidden_layers} layers")
        config.block_hidden_sizes = block_hidden_sizes(
            config.arches, config.ops, config.num_blocks, config.default_hidden_size
        )
        config.hidden_size = config.block_hidden_sizes[-1]
        return config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        arches: list[int] | None = None,
        **kwargs,
    ) -> BaseModelOutput:
        config = self._path_config(arches)
        widths = config.block_hidden_sizes
        hidden, padding_mask = self.embeddings(input_ids, attention_mask)
        if widths[0] != config.embedding_size:
            hidden = self.embed_transfers[str(widths[0])](hidden)
        hidden = hidden * (~padding_mask).unsqueeze(-1).to(hidden.dtype)
        per_block = config.num_hidden_layers // config.num_blocks
        for index, op_index in enumerate(config.arches):
            hidden = self.layers[index][op_index](hidden, padding_mask)
            block, last = divmod(index + 1, per_block)
            if last == 0 and block < config.num_blocks and widths[block - 1] != widths[block]:
                hidden = self.hidden_transfers[block - 1][f"{widths[block - 1]}_{widths[block]}"](hidden)
        return BaseModelOutput(last_hidden_state=hidden)

    def extract_subnet(self, arches: list[int]) -> NasBertModel:
        """A standalone `NasBertModel` for `arches` holding copies of the supernet's weights on that path."""
        path = self._path_config(arches)
        subnet_config = copy.deepcopy(self.config)
        subnet_config.arches = path.arches
        subnet_config.block_hidden_sizes = path.block_hidden_sizes
        subnet_config.hidden_size = path.hidden_size
        subnet = NasBertModel(subnet_config)
        widths = path.block_hidden_sizes
        state = {f"embeddings.{k}": v for k, v in self.embeddings.state_dict().items()}
        if widths[0] != self.config.embedding_size:
            state.update({f"embed_transfer.{k}": v
                          for k, v in self.embed_transfers[str(widths[0])].state_dict().items()})
        for index, op_index in enumerate(path.arches):
            state.update({f"layers.{index}.{k}": v for k, v in self.layers[index][op_index].state_dict().items()})
        for block in range(len(widths) - 1):
            if widths[block] != widths[block + 1]:
                linear = self.hidden_transfers[block][f"{widths[block]}_{widths[block + 1]}"]
                state.update({f"hidden_transfers.{block}.{k}": v for k, v in linear.state_dict().items()})
        subnet.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True)
        return subnet
