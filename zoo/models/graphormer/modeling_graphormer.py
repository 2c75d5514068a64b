"""Graphormer (Ying et al., NeurIPS 2021, "Do Transformers Really Perform Bad for Graph Representation?").

A faithful re-implementation of microsoft/Graphormer's 2D model (fairseq `graphormer_base` family):
centrality encoding (in/out degree), spatial encoding (shortest-path distance), multi-hop edge
encoding, a graph token with a learned virtual distance, and post-LN ("Graphormer-V2" release) or
pre-LN layers. Inputs are what `GraphormerFeaturizer` produces (the original collator's batch).

    from zoo.models.graphormer import GraphormerFeaturizer, GraphormerForGraphRegression
    model = GraphormerForGraphRegression.from_pretrained("converted/graphormer_base_pcqm4mv2")
    prediction = model(**GraphormerFeaturizer()(["CCO"])).logits
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

from .configuration_graphormer import GraphormerConfig

__all__ = [
    "GraphormerForGraphClassification", "GraphormerForGraphRegression", "GraphormerModel", "GraphormerModelOutput",
    "GraphormerPreTrainedModel", "GraphPredictionOutput",
]


@dataclass
class GraphormerModelOutput(ModelOutput):
    """Encoder output. `last_hidden_state` [B, 1 + nodes, hidden]: position 0 is the graph token.

    `node_mask` [B, 1 + nodes] is True for the graph token and real atoms (padding is False).
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    node_mask: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class GraphPredictionOutput(ModelOutput):
    """Graph-level prediction: `logits` [B, num_classes] read at the graph token, and `loss` with labels."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class GraphormerNodeFeature(nn.Module):
    """Atom features summed over the 9 columns + degree (centrality) encodings, graph token prepended."""

    def __init__(self, config: GraphormerConfig) -> None:
        super().__init__()
        self.atom_encoder = nn.Embedding(config.num_atoms + 1, config.hidden_size, padding_idx=0)
        self.in_degree_encoder = nn.Embedding(config.num_in_degree, config.hidden_size, padding_idx=0)
        self.out_degree_encoder = nn.Embedding(config.num_out_degree, config.hidden_size, padding_idx=0)
        self.graph_token = nn.Embedding(1, config.hidden_size)

    def forward(self, input_nodes: torch.Tensor, in_degree: torch.Tensor, out_degree: torch.Tensor) -> torch.Tensor:
        nodes = self.atom_encoder(input_nodes).sum(dim=-2)
        nodes = nodes + self.in_degree_encoder(in_degree) + self.out_degree_encoder(out_degree)
        token = self.graph_token.weight.unsqueeze(0).expand(nodes.size(0), -1, -1)
        return torch.cat([token, nodes], dim=1)


class GraphormerAttnBias(nn.Module):
    """Per-head attention bias: spatial encoding, graph-token virtual distance and edge encoding."""

    def __init__(self, config: GraphormerConfig) -> None:
        super().__init__()
        heads = config.num_attention_heads
        self.num_heads = heads
        self.edge_type = config.edge_type
        self.multi_hop_max_dist = config.multi_hop_max_dist
        self.edge_encoder = nn.Embedding(config.num_edges + 1, heads, padding_idx=0)
        if config.edge_type == "multi_hop":
            self.edge_dis_encoder = nn.Embedding(config.num_edge_dis * heads * heads, 1)
        self.spatial_pos_encoder = nn.Embedding(config.num_spatial, heads, padding_idx=0)
        self.graph_token_virtual_distance = nn.Embedding(1, heads)

    def forward(
        self, attn_bias: torch.Tensor, spatial_pos: torch.Tensor, input_edges: torch.Tensor,
        attn_edge_type: torch.Tensor,
    ) -> torch.Tensor:
        heads = self.num_heads
        if self.edge_type == "multi_hop":
            edge = self._multi_hop(spatial_pos, input_edges)
        else:
            edge = self.edge_encoder(attn_edge_type).mean(-2).permute(0, 3, 1, 2)
        batch, nodes = spatial_pos.shape[:2]
        virtual = self.graph_token_virtual_distance.weight.view(1, heads, 1).to(edge.dtype)
        bias = edge.new_empty(batch, heads, nodes + 1, nodes + 1)
        bias[:, :, 1:, 1:] = self.spatial_pos_encoder(spatial_pos).permute(0, 3, 1, 2) + edge
        bias[:, :, 0, :] = virtual
        bias[:, :, 1:, 0] = virtual
        # The original starts from the input bias and adds it once more at the end ("reset"): twice in all.
        return bias + (attn_bias + attn_bias).unsqueeze(1)

    def _multi_hop(self, spatial_pos: torch.Tensor, input_edges: torch.Tensor) -> torch.Tensor:
        """Mean over the path of (edge embedding x per-hop matrix), divided by the clamped hop count.

        The original embeds every (pair, hop, feature), averages the features, multiplies each hop by its
        matrix and sums the hops. Matrix products distribute over the sums, so zoo folds each hop's matrix
        into the embedding table once (vocabulary x heads per hop) and sums table rows with one
        `embedding_bag` per atom pair: the same result without the [B, N, N, hops, features, heads] tensor.
        """
        heads = self.num_heads
        batch, nodes = spatial_pos.shape[:2]
        # shifted distance: padding (0) and self (1) -> 1, d -> d - 1; clamp to the hops kept
        hops_count = spatial_pos.masked_fill(spatial_pos == 0, 1)
        hops_count = torch.where(hops_count > 1, hops_count - 1, hops_count)
        if self.multi_hop_max_dist > 0:
            hops_count = hops_count.clamp(0, self.multi_hop_max_dist)
            input_edges = input_edges[:, :, :, : self.multi_hop_max_dist, :]
        hops, features = input_edges.shape[-2:]
        table = self.edge_encoder.weight
        if self.edge_encoder.padding_idx is not None:  # as nn.Embedding(padding_idx=0) in the original: the
            # padding row (padded hops and features) stays zero and gets no gradient, so an example's bias
            # does not depend on how far the other examples of its batch padded the hop dimension
            table = table.index_fill(0, torch.tensor([self.edge_encoder.padding_idx], device=table.device), 0.0)
        if hops == 0:
            return table.new_zeros(batch, heads, nodes, nodes)
        vocab = table.size(0)
        per_hop = self.edge_dis_encoder.weight.reshape(-1, heads, heads)[:hops]
        hop_tables = torch.einsum("vh,dhg->dvg", table, per_hop).reshape(hops * vocab, heads)
        offsets = torch.arange(hops, device=input_edges.device).mul_(vocab).view(1, 1, 1, hops, 1)
        bags = (input_edges + offsets).reshape(batch * nodes * nodes, hops * features)
        edge = F.embedding_bag(bags, hop_tables, mode="sum").view(batch, nodes, nodes, heads) / features
        edge = edge / hops_count.to(edge.dtype).unsqueeze(-1)
        return edge.permute(0, 3, 1, 2)


class GraphormerSelfAttention(nn.Module):
    """Multi-head self-attention with an additive float bias; eager and SDPA paths give the same result."""

    def __init__(self, config: GraphormerConfig) -> None:
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(
        self, hidden: torch.Tensor, bias: torch.Tensor, output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, width = hidden.shape

        def split(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

        query, key, value = split(self.q_proj(hidden)), split(self.k_proj(hidden)), split(self.v_proj(hidden))
        dropout = self.dropout if self.training else 0.0
        weights = None
        if self.config._attn_implementation == "sdpa" and not output_attentions:
            context = F.scaled_dot_product_attention(
                query, key, value, attn_mask=bias.to(query.dtype), dropout_p=dropout, scale=self.scaling
            )
        else:
            scores = torch.matmul(query * self.scaling, key.transpose(-1, -2)) + bias
            weights = torch.softmax(scores.float(), dim=-1).type_as(scores)
            context = torch.matmul(F.dropout(weights, p=dropout, training=self.training), value)
        context = context.transpose(1, 2).reshape(batch, length, width)
        return self.out_proj(context), weights


class GraphormerLayer(nn.Module):
    """One encoder layer: post-LN (original default) or pre-LN (`pre_layernorm=True`)."""

    def __init__(self, config: GraphormerConfig) -> None:
        super().__init__()
        self.pre_layernorm = config.pre_layernorm
        self.dropout = config.dropout
        self.activation_dropout = config.activation_dropout
        self.self_attn = GraphormerSelfAttention(config)
        self.self_attn_layer_norm = nn.LayerNorm(config.hidden_size)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size)
        self.activation = ACT2FN[config.activation_fn]

    def forward(
        self, hidden: torch.Tensor, bias: torch.Tensor, output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        residual = hidden
        if self.pre_layernorm:
            hidden = self.self_attn_layer_norm(hidden)
        hidden, weights = self.self_attn(hidden, bias, output_attentions)
        hidden = residual + F.dropout(hidden, p=self.dropout, training=self.training)
        if not self.pre_layernorm:
            hidden = self.self_attn_layer_norm(hidden)
        residual = hidden
        if self.pre_layernorm:
            hidden = self.final_layer_norm(hidden)
        hidden = F.dropout(self.activation(self.fc1(hidden)), p=self.activation_dropout, training=self.training)
        hidden = residual + F.dropout(self.fc2(hidden), p=self.dropout, training=self.training)
        if not self.pre_layernorm:
            hidden = self.final_layer_norm(hidden)
        return hidden, weights


class GraphormerGraphEncoder(nn.Module):
    """Embeddings, attention bias and the layer stack (the original `GraphormerGraphEncoder`)."""

    def __init__(self, config: GraphormerConfig) -> None:
        super().__init__()
        self.dropout = config.dropout
        self.graph_node_feature = GraphormerNodeFeature(config)
        self.graph_attn_bias = GraphormerAttnBias(config)
        self.emb_layer_norm = nn.LayerNorm(config.hidden_size) if config.encoder_normalize_before else None
        # Built but never applied by the original pre-LN model (kept so its checkpoints load strictly).
        self.final_layer_norm = nn.LayerNorm(config.hidden_size) if config.pre_layernorm else None
        self.layers = nn.ModuleList(GraphormerLayer(config) for _ in range(config.num_hidden_layers))


class GraphormerPreTrainedModel(PreTrainedModel):
    config_class = GraphormerConfig
    base_model_prefix = "graphormer"
    main_input_name = "input_nodes"
    _supports_sdpa = True
    _no_split_modules = ["GraphormerLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        """The original `init_graphormer_params`: N(0, 0.02) weights, zero biases and padding rows."""
        std = self.config.init_std
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
        elif isinstance(module, GraphormerGraphHead):
            init.zeros_(module.lm_output_learned_bias)


class GraphormerModel(GraphormerPreTrainedModel):
    """The Graphormer encoder: collated graph batch -> hidden states (position 0 is the graph token).

        model = GraphormerModel(GraphormerConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4))
        out = model(**GraphormerFeaturizer()(["CCO"]))
        graph_embedding = out.pooler_output            # [1, 32]
    """

    # a head checkpoint loaded as the base model: its head weights are dropped on purpose, not reported
    # (transformers matches these with re.search; any other unexpected key is still reported)
    _keys_to_ignore_on_load_unexpected = [r"^(head)\."]

    def __init__(self, config: GraphormerConfig) -> None:
        super().__init__(config)
        self.graph_encoder = GraphormerGraphEncoder(config)
        self.post_init()

    def forward(
        self,
        input_nodes: torch.LongTensor,
        input_edges: torch.LongTensor,
        attn_bias: torch.Tensor,
        in_degree: torch.LongTensor,
        out_degree: torch.LongTensor,
        spatial_pos: torch.LongTensor,
        attn_edge_type: torch.LongTensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> GraphormerModelOutput:
        output_hidden_states = output_hidden_states if output_hidden_states is not None else (
            self.config.output_hidden_states)
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        encoder = self.graph_encoder
        # padded atoms have every feature index 0 (the collator's +1 shift keeps real ones >= 1)
        node_mask = torch.cat([
            torch.ones_like(input_nodes[:, :1, 0], dtype=torch.bool), input_nodes[:, :, 0].ne(0)
        ], dim=1)
        hidden = encoder.graph_node_feature(input_nodes, in_degree, out_degree)
        bias = encoder.graph_attn_bias(attn_bias, spatial_pos, input_edges, attn_edge_type)
        bias = bias.masked_fill(~node_mask[:, None, None, :], float("-inf")).to(hidden.dtype)
        if encoder.emb_layer_norm is not None:
            hidden = encoder.emb_layer_norm(hidden)
        hidden = F.dropout(hidden, p=encoder.dropout, training=self.training)
        all_hidden = [hidden] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for layer in encoder.layers:
            hidden, weights = layer(hidden, bias, output_attentions)
            if output_hidden_states:
                all_hidden.append(hidden)
            if output_attentions:
                all_attentions.append(weights)
        return GraphormerModelOutput(
            last_hidden_state=hidden, pooler_output=hidden[:, 0], node_mask=node_mask,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
        )


class GraphormerGraphHead(nn.Module):
    """The original LM-style output head: layer_norm(act(transform(h))) -> linear (no bias) + learned bias.

    The learned bias is one scalar shared by every output, as in the original.
    """

    def __init__(self, config: GraphormerConfig) -> None:
        super().__init__()
        self.lm_head_transform_weight = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = ACT2FN[config.activation_fn]
        self.layer_norm = nn.LayerNorm(config.hidden_size)
        self.embed_out = nn.Linear(config.hidden_size, config.num_classes, bias=False)
        self.lm_output_learned_bias = nn.Parameter(torch.zeros(1))

    def transform(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.activation(self.lm_head_transform_weight(hidden)))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.embed_out(self.transform(hidden)) + self.lm_output_learned_bias


class _GraphormerForGraphPrediction(GraphormerPreTrainedModel):
    def __init__(self, config: GraphormerConfig) -> None:
        super().__init__(config)
        self.graphormer = GraphormerModel(config)
        self.head = GraphormerGraphHead(config)
        self.post_init()

    def _encode(self, inputs: dict, output_hidden_states, output_attentions) -> tuple[torch.Tensor, GraphormerModelOutput]:
        encoded = self.graphormer(
            **inputs, output_hidden_states=output_hidden_states, output_attentions=output_attentions
        )
        # the head reads only the graph token (the original computes every position, then takes [:, 0])
        return self.head(encoded.last_hidden_state[:, 0]), encoded

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        input_nodes: torch.LongTensor,
        input_edges: torch.LongTensor,
        attn_bias: torch.Tensor,
        in_degree: torch.LongTensor,
        out_degree: torch.LongTensor,
        spatial_pos: torch.LongTensor,
        attn_edge_type: torch.LongTensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> GraphPredictionOutput:
        inputs = {
            "input_nodes": input_nodes, "input_edges": input_edges, "attn_bias": attn_bias, "in_degree": in_degree,
            "out_degree": out_degree, "spatial_pos": spatial_pos, "attn_edge_type": attn_edge_type,
        }
        logits, encoded = self._encode(inputs, output_hidden_states, output_attentions)
        loss = self.loss(logits, labels) if labels is not None else None
        return GraphPredictionOutput(
            loss=loss, logits=logits, hidden_states=encoded.hidden_states, attentions=encoded.attentions
        )


class GraphormerForGraphRegression(_GraphormerForGraphPrediction):
    """Graph-level regression (PCQM4M HOMO–LUMO gap in the released models); L1 loss like the original.

        model = GraphormerForGraphRegression(GraphormerConfig(num_hidden_layers=2, hidden_size=32,
                                                              num_attention_heads=4, num_classes=1))
        out = model(**GraphormerFeaturizer()(["CCO"], labels=[0.3]))   # out.loss, out.logits [1, 1]
    """

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.to(logits.dtype).reshape(logits.shape)
        if self.config.regression_loss == "mse":
            return F.mse_loss(logits, labels)
        return F.l1_loss(logits, labels)


class GraphormerForGraphClassification(_GraphormerForGraphPrediction):
    """Graph classification: binary (`num_classes=1`, BCE on the logit, as the original molhiv
    criterion), multi-class (`num_classes>1`, cross-entropy on integer labels) or multi-label
    (`problem_type="multi_label_classification"`, BCE per class on 0/1 label vectors).

        model = GraphormerForGraphClassification(GraphormerConfig(hidden_size=32, num_attention_heads=4,
                                                                  num_hidden_layers=2, num_classes=1))
        out = model(**GraphormerFeaturizer()(["CCO", "CCN"], labels=[0, 1]))
    """

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        classes = self.config.num_classes
        if classes == 1 or self.config.problem_type == "multi_label_classification":
            targets = labels.to(logits.dtype).reshape(logits.shape)
            if torch.isnan(targets).any():  # ogb multi-task sets mark missing labels with NaN
                keep = ~torch.isnan(targets)
                return F.binary_cross_entropy_with_logits(logits[keep], targets[keep])
            return F.binary_cross_entropy_with_logits(logits, targets)
        return F.cross_entropy(logits, labels.reshape(-1).long())

