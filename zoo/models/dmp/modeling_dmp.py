"""DMP: a Transformer over SMILES and a GNN over the molecular graph, trained to agree.

Zhu et al., "Dual-view Molecular Pre-training" (KDD 2023, arXiv:2106.10234); original code microsoft/DVMP.

    from zoo.models.dmp import DmpConfig, DmpForSequenceClassification
    model = DmpForSequenceClassification(DmpConfig(num_labels=2))
    logits = model(**batch).logits   # batch from DmpDataCollator: input_ids + the PyG-style graph tensors
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from .configuration_dmp import DmpConfig

__all__ = [
    "DmpForPreTraining", "DmpForPreTrainingOutput", "DmpForSequenceClassification", "DmpModel", "DmpModelOutput",
    "DmpPreTrainedModel", "DmpSequenceClassifierOutput", "consistency_loss",
]


@dataclass
class DmpModelOutput(ModelOutput):
    """Both views of a batch of molecules.

    last_hidden_state: [B, T, H] last Transformer layer (left-padded positions hold meaningless values).
    sequence_embedding: [B, H] the Transformer sentence vector, read at the final `</s>` position.
    node_embeddings: [N, G] GNN node outputs; graph_embedding: [B, 2G] max-pool and mean-pool concatenated.
    """

    last_hidden_state: torch.Tensor | None = None
    sequence_embedding: torch.Tensor | None = None
    node_embeddings: torch.Tensor | None = None
    graph_embedding: torch.Tensor | None = None


@dataclass
class DmpForPreTrainingOutput(ModelOutput):
    """Pre-training outputs: the loss (when labels are given), its terms, the head logits and projections.

    loss = consistency_loss + batch_size * (mlm_loss + atom_loss), as the original `dmp` criterion.
    """

    loss: torch.Tensor | None = None
    consistency_loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    atom_loss: torch.Tensor | None = None
    mlm_logits: torch.Tensor | None = None
    atom_logits: torch.Tensor | None = None
    sequence_embedding: torch.Tensor | None = None
    graph_embedding: torch.Tensor | None = None
    sequence_projection: torch.Tensor | None = None
    graph_projection: torch.Tensor | None = None
    sequence_prediction: torch.Tensor | None = None
    graph_prediction: torch.Tensor | None = None


@dataclass
class DmpSequenceClassifierOutput(ModelOutput):
    """Property-prediction outputs: logits = coeff_transformer * transformer_logits + coeff_gnn * gnn_logits."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    transformer_logits: torch.Tensor | None = None
    gnn_logits: torch.Tensor | None = None
    sequence_embedding: torch.Tensor | None = None
    graph_embedding: torch.Tensor | None = None


class _GradMultiply(torch.autograd.Function):
    """Identity forward, gradient scaled by `scale` (fairseq's GradMultiply, used by `--gradmultiply`)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def _require_batch_statistics(module: nn.Module, rows: int, what: str) -> None:
    if module.training and rows < 2:
        raise ValueError(
            f"DMP's {what} uses BatchNorm, which needs at least 2 rows in training mode but got {rows}; "
            "train with batches of 2 or more molecules (the original drops batches of size 1), or call model.eval()"
        )


def consistency_loss(
    prediction0: torch.Tensor, projection1: torch.Tensor, prediction1: torch.Tensor, projection0: torch.Tensor
) -> torch.Tensor:
    """DMP's symmetric consistency loss: -(sum_b cos(pred0, proj1) + sum_b cos(pred1, proj0)).

    Targets are the other branch's projections under stop-gradient (BYOL-style).

        loss = consistency_loss(pred0, proj1, pred1, proj0)
    """
    def direction(anchor: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        anchor = anchor / torch.norm(anchor, dim=-1, keepdim=True)
        target = target.detach()
        target = target / torch.norm(target, dim=-1, keepdim=True)
        return -(anchor * target).sum()

    return direction(prediction0, projection1) + direction(prediction1, projection0)


# ------------------------------------------------------------------------------------------------------------------
# Transformer branch
# ------------------------------------------------------------------------------------------------------------------


class DmpSelfAttention(nn.Module):
    def __init__(self, config: DmpConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_probs_dropout_prob
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

        query, key, value = heads(self.q_proj(hidden)), heads(self.k_proj(hidden)), heads(self.v_proj(hidden))
        dropout = self.dropout if self.training else 0.0
        keep = ~padding_mask[:, None, None, :]
        if self.config._attn_implementation == "sdpa":
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=keep, dropout_p=dropout)
        else:
            scores = torch.matmul(query * self.scaling, key.transpose(-1, -2))
            scores = scores.masked_fill(~keep, float("-inf"))
            probs = F.dropout(torch.softmax(scores.float(), dim=-1).type_as(scores), p=dropout, training=self.training)
            context = torch.matmul(probs, value)
        return self.out_proj(context.transpose(1, 2).reshape(batch, length, width))


class DmpTransformerLayer(nn.Module):
    """fairseq's post-LN TransformerEncoderLayer (RoBERTa)."""

    def __init__(self, config: DmpConfig):
        super().__init__()
        self.self_attn = DmpSelfAttention(config)
        self.self_attn_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.activation = ACT2FN[config.hidden_act]
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.activation_dropout = nn.Dropout(config.activation_dropout)

    def forward(self, hidden: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.self_attn_layer_norm(hidden + self.dropout(self.self_attn(hidden, padding_mask)))
        update = self.fc2(self.activation_dropout(self.activation(self.fc1(hidden))))
        return self.final_layer_norm(hidden + self.dropout(update))


# ------------------------------------------------------------------------------------------------------------------
# GNN branch
# ------------------------------------------------------------------------------------------------------------------


class DmpFeatureEmbedding(nn.Module):
    """Sum of one embedding per integer feature column (atoms: 9 columns, bonds: 3)."""

    def __init__(self, feature_dims: list[int], width: int):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(dim, width) for dim in feature_dims)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 2 or features.shape[1] != len(self.embeddings):
            raise ValueError(f"expected integer features of shape [rows, {len(self.embeddings)}], got {tuple(features.shape)}")
        total = 0
        for column, embedding in enumerate(self.embeddings):
            total = total + embedding(features[:, column])
        return total


def _segment_max_min_mean(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Per-segment max, min and mean of `values` rows grouped by `index`; empty segments give 0 (as torch_scatter)."""
    values = values.float()
    expanded = index.unsqueeze(-1).expand_as(values)
    zeros = values.new_zeros(size, values.shape[-1])
    maximum = zeros.scatter_reduce(0, expanded, values, "amax", include_self=False)
    minimum = zeros.scatter_reduce(0, expanded, values, "amin", include_self=False)
    counts = torch.bincount(index, minlength=size).clamp(min=1).unsqueeze(-1).to(values.dtype)
    mean = zeros.index_add(0, index, values) / counts
    return torch.cat([maximum, minimum, mean], dim=-1)


class DmpGraphConvolution(nn.Module):
    """Residual message passing: h' = W (h + aggr_mlp([max, min, mean] of (h_src + e) over incoming edges))."""

    def __init__(self, config: DmpConfig):
        super().__init__()
        width = config.gnn_hidden_size
        self.edge_encoder = DmpFeatureEmbedding(config.bond_feature_dims, width)
        self.aggregate_proj = nn.Linear(3 * width, width)
        self.mlp = nn.Linear(width, width)

    def forward(self, hidden: torch.Tensor, edge_index: torch.Tensor, bond_features: torch.Tensor) -> torch.Tensor:
        source, target = edge_index[0], edge_index[1]
        messages = hidden.index_select(0, source) + self.edge_encoder(bond_features)
        aggregated = _segment_max_min_mean(messages, target, hidden.shape[0]).type_as(hidden)
        return self.mlp(hidden + self.aggregate_proj(aggregated))


def _gnn_norm(config: DmpConfig) -> nn.Module:
    # GroupNorm normalises each atom on its own, so one molecule's output never depends on the others in its batch
    if getattr(config, "gnn_norm", "batch") == "group":
        return nn.GroupNorm(config.gnn_norm_groups, config.gnn_hidden_size, eps=config.batch_norm_eps)
    return nn.BatchNorm1d(config.gnn_hidden_size, eps=config.batch_norm_eps, momentum=config.batch_norm_momentum)


class DmpGraphEncoder(nn.Module):
    """DMP's DeeperGCN branch: atom embedding, residual convolutions with pre-activation BatchNorm."""

    def __init__(self, config: DmpConfig):
        super().__init__()
        self.dropout = config.gnn_dropout
        self.atom_encoder = DmpFeatureEmbedding(config.atom_feature_dims, config.gnn_hidden_size)
        self.layers = nn.ModuleList(DmpGraphConvolution(config) for _ in range(config.gnn_num_layers))
        self.norms = nn.ModuleList(_gnn_norm(config) for _ in range(config.gnn_num_layers))

    def forward(self, atom_features, edge_index, bond_features) -> torch.Tensor:
        if getattr(self.norms[0], "track_running_stats", False):
            _require_batch_statistics(self, atom_features.shape[0], "GNN branch (normalising over atoms)")
        hidden = self.layers[0](self.atom_encoder(atom_features), edge_index, bond_features)
        for layer, norm in zip(self.layers[1:], self.norms[1:]):
            update = F.dropout(F.relu(norm(hidden)), p=self.dropout, training=self.training)
            hidden = hidden + layer(update, edge_index, bond_features)
        # the original closes with norms[0], the norm left unused by the first layer
        return F.dropout(F.relu(self.norms[0](hidden)), p=self.dropout, training=self.training)


def _graph_readout(node_embeddings: torch.Tensor, atom_batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    nodes = node_embeddings.float()
    expanded = atom_batch.unsqueeze(-1).expand_as(nodes)
    zeros = nodes.new_zeros(num_graphs, nodes.shape[-1])
    maximum = zeros.scatter_reduce(0, expanded, nodes, "amax", include_self=False)
    counts = torch.bincount(atom_batch, minlength=num_graphs).clamp(min=1).unsqueeze(-1).to(nodes.dtype)
    mean = zeros.index_add(0, atom_batch, nodes) / counts
    return torch.cat([maximum, mean], dim=-1).type_as(node_embeddings)


# ------------------------------------------------------------------------------------------------------------------
# Base model
# ------------------------------------------------------------------------------------------------------------------


class DmpPreTrainedModel(PreTrainedModel):
    config_class = DmpConfig
    base_model_prefix = "dmp"
    main_input_name = "input_ids"
    _supports_sdpa = True

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, DmpFeatureEmbedding):
            # the original initialises every atom/bond feature embedding with xavier_uniform_
            for embedding in module.embeddings:
                init.xavier_uniform_(embedding.weight)
        elif isinstance(module, (DmpLMHead, DmpAtomHead)):
            init.zeros_(module.bias)


class DmpModel(DmpPreTrainedModel):
    """Both DMP encoders. Either view may be omitted: pass only `input_ids` or only the graph tensors.

    Inputs: `input_ids` [B, T] LEFT-padded dictionary ids ending in `</s>` (DmpTokenizer), optional
    `attention_mask`; `atom_features` [N, 9], `edge_index` [2, E] (batch offsets applied), `bond_features`
    [E, 3], `atom_batch` [N] (molecule index of each atom), as built by DmpDataCollator.

        model = DmpModel.from_pretrained("path/to/dmp")
        out = model(**batch)
        out.sequence_embedding, out.graph_embedding
    """

    # a head checkpoint loaded as the base model: its head weights are dropped on purpose, not reported
    # (transformers matches these with re.search; any other unexpected key is still reported)
    _keys_to_ignore_on_load_unexpected = [r"^(atom_head|lm_head|prediction_heads|projection_heads|classifier)\."]

    def __init__(self, config: DmpConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.embed_positions = nn.Embedding(
            config.max_position_embeddings, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.layernorm_embedding = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.embedding_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layers = nn.ModuleList(DmpTransformerLayer(config) for _ in range(config.num_hidden_layers))
        self.gnn = DmpGraphEncoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def encode_sequence(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The Transformer branch: [B, T] left-padded ids -> [B, T, H]."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        padding_mask = input_ids.eq(self.config.pad_token_id)
        if attention_mask is not None:
            padding_mask = padding_mask | attention_mask.eq(0)
        if padding_mask[:, -1].any():
            rows = padding_mask[:, -1].nonzero().flatten().tolist()
            raise ValueError(
                f"input_ids rows {rows} end in padding: DMP reads the molecule vector at the final position, so "
                "sequences must be LEFT-padded and end with </s> (use DmpTokenizer / DmpDataCollator)"
            )
        if input_ids.shape[1] > self.config.max_position_embeddings - self.config.pad_token_id - 1:
            raise ValueError(
                f"input_ids has length {input_ids.shape[1]}; this model has positions for at most "
                f"{self.config.max_position_embeddings - self.config.pad_token_id - 1} tokens (truncate to 511 + </s>)"
            )
        # fairseq's learned positions count only non-pad tokens, so left padding does not shift them
        keep = (~padding_mask).long()
        positions = torch.cumsum(keep, dim=1) * keep + self.config.pad_token_id
        hidden = self.embed_tokens(input_ids) + self.embed_positions(positions)
        hidden = self.embedding_dropout(self.layernorm_embedding(hidden))
        hidden = hidden * keep.unsqueeze(-1).type_as(hidden)
        for layer in self.layers:
            hidden = layer(hidden, padding_mask)
        return hidden

    def encode_graph(self, atom_features, edge_index, bond_features, atom_batch, num_graphs: int | None = None):
        """The GNN branch: returns (node embeddings [N, G], graph embedding [B, 2G])."""
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must be [2, num_edges], got shape {tuple(edge_index.shape)}")
        if edge_index.shape[1] != bond_features.shape[0]:
            raise ValueError(f"edge_index has {edge_index.shape[1]} edges but bond_features has {bond_features.shape[0]} rows")
        if atom_batch.shape[0] != atom_features.shape[0]:
            raise ValueError(f"atom_batch has {atom_batch.shape[0]} entries for {atom_features.shape[0]} atoms")
        graphs_in_batch = int(atom_batch.max()) + 1 if atom_batch.numel() else 0
        if num_graphs is None:
            num_graphs = graphs_in_batch
        elif graphs_in_batch > num_graphs:
            raise ValueError(f"{num_graphs} sequences but {graphs_in_batch} graphs in the batch (atom_batch)")
        nodes = self.gnn(atom_features, edge_index, bond_features)
        return nodes, _graph_readout(nodes, atom_batch, num_graphs)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        atom_features: torch.Tensor | None = None,
        edge_index: torch.Tensor | None = None,
        bond_features: torch.Tensor | None = None,
        atom_batch: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> DmpModelOutput:
        graph_inputs = (atom_features, edge_index, bond_features, atom_batch)
        has_graph = all(x is not None for x in graph_inputs)
        if input_ids is None and not has_graph:
            raise ValueError("DmpModel needs input_ids and/or the graph (atom_features, edge_index, bond_features, atom_batch)")
        if not has_graph and any(x is not None for x in graph_inputs):
            raise ValueError("pass all four graph tensors (atom_features, edge_index, bond_features, atom_batch) or none")
        hidden = sequence = nodes = graph = None
        if input_ids is not None:
            hidden = self.encode_sequence(input_ids, attention_mask)
            sequence = hidden[:, -1]
        if has_graph:
            num_graphs = input_ids.shape[0] if input_ids is not None else None
            nodes, graph = self.encode_graph(*graph_inputs, num_graphs=num_graphs)
        return DmpModelOutput(
            last_hidden_state=hidden, sequence_embedding=sequence, node_embeddings=nodes, graph_embedding=graph
        )


# ------------------------------------------------------------------------------------------------------------------
# Heads
# ------------------------------------------------------------------------------------------------------------------


class DmpLMHead(nn.Module):
    """RoBERTa's masked-LM head; the output matrix is the token embedding (tied by construction)."""

    def __init__(self, config: DmpConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = ACT2FN[config.hidden_act]
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor, output_weight: torch.Tensor) -> torch.Tensor:
        return F.linear(self.layer_norm(self.activation(self.dense(hidden))), output_weight) + self.bias


class DmpAtomHead(nn.Module):
    """Masked-atom head: dense, ReLU, BatchNorm, then the atomic-number embedding as output matrix."""

    def __init__(self, config: DmpConfig):
        super().__init__()
        self.dense = nn.Linear(config.gnn_hidden_size, config.gnn_hidden_size)
        self.norm = nn.BatchNorm1d(config.gnn_hidden_size, eps=config.batch_norm_eps, momentum=config.batch_norm_momentum)
        self.bias = nn.Parameter(torch.zeros(config.atom_feature_dims[0]))

    def forward(self, nodes: torch.Tensor, output_weight: torch.Tensor) -> torch.Tensor:
        _require_batch_statistics(self, nodes.shape[0], "masked-atom head")
        return F.linear(self.norm(F.relu(self.dense(nodes))), output_weight) + self.bias


class DmpBottleneck(nn.Module):
    """Projection / prediction MLP: (Linear, BatchNorm, ReLU) x (layers - 1), then Linear."""

    def __init__(self, in_dim: int, inner_dim: int, out_dim: int, num_layers: int, config: DmpConfig):
        super().__init__()
        dims = [in_dim] + [inner_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(inner_dim, eps=config.batch_norm_eps, momentum=config.batch_norm_momentum)
            for _ in range(num_layers - 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _require_batch_statistics(self, x.shape[0], "projection/prediction head (normalising over molecules)")
        for layer, norm in zip(self.layers[:-1], self.norms):
            x = F.relu(norm(layer(x)))
        return self.layers[-1](x)


class DmpForPreTraining(DmpPreTrainedModel):
    """DMP pre-training: dual-view consistency + masked-token (MLM) and masked-atom prediction.

    `mlm_labels` [B, T] hold the original id at masked positions and -100 elsewhere; `atom_labels` [N] the
    atomic-number index at masked atoms and -100 elsewhere (DmpDataCollator(mlm=True) builds both with the
    original masking). The loss is returned when either is given or `return_loss=True`.

        model = DmpForPreTraining(DmpConfig())
        out = model(**collator(features))          # collator = DmpDataCollator(tokenizer, mlm=True)
        out.loss.backward()
    """

    def __init__(self, config: DmpConfig):
        super().__init__(config)
        self.dmp = DmpModel(config)
        self.lm_head = DmpLMHead(config)
        self.atom_head = DmpAtomHead(config)
        inner = int(config.hidden_size * config.projection_ratio)
        in_dims = (config.hidden_size, config.graph_embedding_size)
        self.projection_heads = nn.ModuleList(
            DmpBottleneck(d, inner, config.hidden_size, config.projection_layers, config) for d in in_dims
        )
        # the original builds the prediction heads with exactly two layers whatever bottleneck_layer says
        self.prediction_heads = nn.ModuleList(
            DmpBottleneck(config.hidden_size, inner, config.hidden_size, 2, config) for _ in in_dims
        )
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        atom_features: torch.Tensor,
        edge_index: torch.Tensor,
        bond_features: torch.Tensor,
        atom_batch: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        atom_labels: torch.Tensor | None = None,
        return_loss: bool | None = None,
        **kwargs,
    ) -> DmpForPreTrainingOutput:
        base = self.dmp(input_ids, atom_features, edge_index, bond_features, atom_batch, attention_mask)
        x0, x1 = base.sequence_embedding, base.graph_embedding
        # each projection head runs twice, as in the original (once as anchor, once as no-grad target),
        # so BatchNorm running statistics advance the same way during training
        proj0 = self.projection_heads[0](x0)
        pred0 = self.prediction_heads[0](proj0)
        with torch.no_grad():
            target1 = self.projection_heads[1](x1)
        proj1 = self.projection_heads[1](x1)
        pred1 = self.prediction_heads[1](proj1)
        with torch.no_grad():
            target0 = self.projection_heads[0](x0)
        consistency = consistency_loss(pred0, target1, pred1, target0)
        mlm_logits = self.lm_head(base.last_hidden_state, self.dmp.embed_tokens.weight)
        atom_logits = self.atom_head(base.node_embeddings, self.dmp.gnn.atom_encoder.embeddings[0].weight)

        loss = mlm_loss = atom_loss = None
        if mlm_labels is not None or atom_labels is not None or return_loss:
            batch_size = input_ids.shape[0]
            loss = consistency
            if mlm_labels is not None:
                mlm_loss = _masked_cross_entropy(mlm_logits, mlm_labels)
                loss = loss + batch_size * mlm_loss
            if atom_labels is not None:
                atom_loss = _masked_cross_entropy(atom_logits, atom_labels)
                loss = loss + batch_size * atom_loss
        return DmpForPreTrainingOutput(
            loss=loss, consistency_loss=consistency, mlm_loss=mlm_loss, atom_loss=atom_loss,
            mlm_logits=mlm_logits, atom_logits=atom_logits, sequence_embedding=x0, graph_embedding=x1,
            sequence_projection=proj0, graph_projection=proj1, sequence_prediction=pred0, graph_prediction=pred1,
        )


def _masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over labelled items (label != -100); 0 when nothing is masked."""
    logits = logits.reshape(-1, logits.shape[-1])
    labels = labels.reshape(-1).long()
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {logits.shape[0]} predicted items")
    if not labels.ne(-100).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=-100)


class DmpClassificationHead(nn.Module):
    """The original TwoInputClassificationHead: one dense layer per branch, a shared output projection."""

    def __init__(self, config: DmpConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dense1 = nn.Linear(config.graph_embedding_size, config.hidden_size)
        self.activation = ACT2FN[config.classifier_activation]
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def branch(self, x: torch.Tensor, dense: nn.Linear) -> torch.Tensor:
        hidden = self.dropout(self.activation(dense(self.dropout(x))))
        # product + sum rather than F.linear: with few outputs BLAS takes a gemv path whose rounding depends on
        # the weight's memory alignment, which differs once weights are loaded from safetensors
        return (hidden.unsqueeze(-2) * self.out_proj.weight).sum(-1) + self.out_proj.bias


class DmpForSequenceClassification(DmpPreTrainedModel):
    """Molecular property head over both branches (binary / multi-class, multi-label, or regression).

    `config.problem_type` picks the loss ("single_label_classification", "multi_label_classification",
    "regression"); when unset: regression if num_labels == 1, multi-label if labels are [B, num_labels],
    else single-label. A branch whose coefficient is 0 is not run at all.

        model = DmpForSequenceClassification(DmpConfig(num_labels=2))
        out = model(**batch, labels=torch.tensor([0, 1]))
    """

    def __init__(self, config: DmpConfig):
        super().__init__(config)
        self.dmp = DmpModel(config)
        self.classifier = DmpClassificationHead(config)
        self.post_init()

    def _branch_weights(self) -> tuple[float, float]:
        c0, c1, p = self.config.coeff_transformer, self.config.coeff_gnn, self.config.use_dropnet
        if self.training and p > 0:
            draw = float(torch.rand(()))
            if draw < p:
                return c0, 0.0
            if draw > 1 - p:
                return 0.0, c1
        return c0, c1

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        atom_features: torch.Tensor | None = None,
        edge_index: torch.Tensor | None = None,
        bond_features: torch.Tensor | None = None,
        atom_batch: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> DmpSequenceClassifierOutput:
        use_tf, use_gnn = self.config.coeff_transformer > 0, self.config.coeff_gnn > 0
        if use_tf and input_ids is None:
            raise ValueError("coeff_transformer > 0 needs input_ids")
        if use_gnn and any(x is None for x in (atom_features, edge_index, bond_features, atom_batch)):
            raise ValueError("coeff_gnn > 0 needs atom_features, edge_index, bond_features and atom_batch")
        base = self.dmp(
            input_ids if use_tf else None,
            *((atom_features, edge_index, bond_features, atom_batch) if use_gnn else (None,) * 4),
            attention_mask=attention_mask if use_tf else None,
        )
        if use_tf and use_gnn and base.graph_embedding.shape[0] != base.sequence_embedding.shape[0]:
            raise ValueError(
                f"{base.sequence_embedding.shape[0]} sequences but {base.graph_embedding.shape[0]} graphs in the batch"
            )
        scale = self.config.gradient_multiplier
        w0, w1 = self._branch_weights()
        logits = tf_logits = gnn_logits = None
        if use_tf:
            x0 = base.sequence_embedding
            x0 = _GradMultiply.apply(x0, scale) if scale != 1.0 else x0
            tf_logits = self.classifier.branch(x0, self.classifier.dense)
            logits = w0 * tf_logits
        if use_gnn:
            x1 = base.graph_embedding
            gnn_scale = scale * self.config.gnn_gradient_multiplier
            x1 = _GradMultiply.apply(x1, gnn_scale) if gnn_scale != 1.0 else x1
            gnn_logits = self.classifier.branch(x1, self.classifier.dense1)
            logits = w1 * gnn_logits if logits is None else logits + w1 * gnn_logits
        loss = self._loss(logits, labels) if labels is not None else None
        return DmpSequenceClassifierOutput(
            loss=loss, logits=logits, transformer_logits=tf_logits, gnn_logits=gnn_logits,
            sequence_embedding=base.sequence_embedding, graph_embedding=base.graph_embedding,
        )

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        problem = self.config.problem_type
        if problem is None:
            if self.config.num_labels == 1:
                problem = "regression"
            elif labels.dim() == 2 and labels.shape[-1] == self.config.num_labels:
                problem = "multi_label_classification"
            else:
                problem = "single_label_classification"
        if problem == "regression":
            return F.mse_loss(logits.float().reshape(labels.shape[0], -1), labels.float().reshape(labels.shape[0], -1))
        if problem == "multi_label_classification":
            # NaN marks a missing label (as in the MoleculeNet multi-task sets): those entries do not count
            present = ~torch.isnan(labels.float())
            targets = torch.nan_to_num(labels.float())
            per_item = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
            return (per_item * present).sum() / present.sum().clamp(min=1)
        # the original graph_sp criterion: log_softmax + nll_loss, a mean over the batch
        return F.cross_entropy(logits.float(), labels.reshape(-1).long())
