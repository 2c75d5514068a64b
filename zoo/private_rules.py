"""Per-example gradient rules the zoo's families need beyond Opacus' own grad samplers, and DP refusals.

Opacus computes per-example gradients in hooks on the modules that own parameters, from what each call
of the module saw (inputs, gradient of its output) with the batch in dimension 0. Three kinds of
parameter escape that and get a rule here, each checked against per-example autograd in
tests/test_private.py:

- read directly instead of through a module call: Graphormer's graph token and graph-token virtual
  distance (closed form: the gradient of the output slots they fill), the multi-hop edge tables
  (closed form through the module's own `_multi_hop`: embedding-bag rows, then its hop-table einsum), DMP's output projection, shared by
  both branches and applied as product + sum (routed through the module during DP runs: same math),
  NAS-BERT's pointwise convolutions, applied as F.linear on the conv weight (closed form);
- a parameter directly on a module without an Opacus rule: Graphormer head's learned bias (the sum
  of the gradient over outputs);
- DMP's GNN, whose layers see atoms and bonds, not molecules: during a DP run its Linear, Embedding and
  GroupNorm modules become same-behaviour subclasses whose Opacus grad samplers group the rows by
  molecule (never materialising one gradient per atom), with Opacus' batch size set to the molecules.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn

from .private import PrivacyError

__all__ = ["DpAdapter", "SparseEmbeddingClipping", "dp_adapter", "sparse_clipped_sum", "sparse_optimizer_class",
           "sparse_per_sample_norms"]

_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _add_grad_sample(param: nn.Parameter, sample: torch.Tensor) -> None:
    if not param.requires_grad:
        return
    sample = sample.detach()
    existing = getattr(param, "grad_sample", None)
    param.grad_sample = sample if existing is None else existing + sample


class DpAdapter:
    """Base adapter: refuses BatchNorm; families with extra rules subclass it."""

    swap_overrides: dict[str, Any] | None = None  # config overrides that replace BatchNorm, where allowed
    rules: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._handles: list[Any] = []
        self._sparse: list[nn.Module] = []
        self.sparse_names: list[str] = []  # embeddings the last use_sparse_embeddings switched

    def refuse_or_overrides(self, family: str, swap_batchnorm: bool) -> dict[str, Any]:
        if swap_batchnorm and self.swap_overrides is None:
            raise PrivacyError(f"--dp-swap-batchnorm: the {family} family has no GroupNorm variant to swap to")
        return dict(self.swap_overrides or {}) if swap_batchnorm else {}

    def check_model(self, model: nn.Module, family: str) -> None:
        batchnorms = [name for name, module in model.named_modules() if isinstance(module, _BATCHNORM)]
        if not batchnorms:
            return
        offer = ("pass --dp-swap-batchnorm to train with GroupNorm instead (per-example; its affine weights "
                 "are kept from the checkpoint, the running statistics are dropped)"
                 if self.swap_overrides is not None else f"the {family} family has no GroupNorm variant")
        raise PrivacyError(
            f"refused: the model has BatchNorm ({', '.join(batchnorms[:4])}{', ...' if len(batchnorms) > 4 else ''}), "
            "which normalises each example with statistics of the whole batch, so one example changes every "
            f"other example's gradient and per-example clipping no longer bounds its influence; {offer}")

    def attach(self, model: nn.Module) -> None:
        """Install the rules (hooks, DP-mode routing) on the unwrapped model."""

    def after_backward(self, model: nn.Module, batch: dict[str, Any]) -> None:
        """Fix up per-example gradients after `loss.backward()`, before the DP optimizer's step."""

    def use_sparse_embeddings(self, model: nn.Module, optimizer: Any) -> list[str]:
        """Give the model's trainable nn.Embedding tables the sparse per-example rule and `optimizer` (an
        Opacus DP optimizer over the model) the clipping that reads it; call after `attach`. Returns the
        embeddings switched; none where the optimizer clips elsewhere (DDP per-layer: Opacus' dense rule stays).
        A table a rule above reads directly (Graphormer's graph token, its multi-hop edge tables) is never
        called, so its dense per-example gradient from that rule goes through the same clipping unchanged.
        Unlike Opacus' own Embedding rule, the padding row gets no per-example gradient, as in torch."""
        sparse_class = sparse_optimizer_class(type(optimizer))
        if sparse_class is None:
            return []
        counts: dict[int, int] = {}
        for _, param in model.named_parameters(remove_duplicate=False):
            counts[id(param)] = counts.get(id(param), 0) + 1
        names = []
        for name, module in model.named_modules():
            if (type(module) is nn.Embedding and module.weight.requires_grad and module.max_norm is None
                    and not module.sparse and counts.get(id(module.weight)) == 1):
                module.__class__ = _SparseEmbedding  # same forward; Opacus picks the sparse rule
                self._sparse.append(module)
                names.append(name)
        self.sparse_names = names
        if names:
            optimizer.__class__ = sparse_class
            self._handles.append(model.register_forward_pre_hook(self._clear_sparse_rows))
        return names

    def _clear_sparse_rows(self, model: nn.Module, args: tuple) -> None:
        for module in self._sparse:
            module.weight.__dict__.pop("dp_sparse_rows", None)

    def detach(self, model: nn.Module) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for module in self._sparse:
            module.__class__ = nn.Embedding
            module.weight.__dict__.pop("dp_sparse_rows", None)
        self._sparse.clear()

    def describe(self) -> list[str]:
        rules = list(self.rules)
        if self.sparse_names:
            rules.append(f"nn.Embedding tables ({', '.join(self.sparse_names)}): per-example norms and clipped sums from the looked-up rows "
                         "(no dense per-example [vocabulary x width] gradient)")
        return rules


class GraphormerAdapter(DpAdapter):
    rules = (
        "graph_token: gradient of the graph-token slot (closed form)",
        "graph_token_virtual_distance: gradient of the graph-token row and column of the bias (closed form)",
        "multi-hop edge tables: closed form through GraphormerAttnBias._multi_hop's folded hop tables",
        "head lm_output_learned_bias: sum of the output gradient (closed form, Opacus grad sampler)",
    )

    def attach(self, model: nn.Module) -> None:
        from .models.graphormer.modeling_graphormer import GraphormerAttnBias, GraphormerNodeFeature

        for module in model.modules():
            if isinstance(module, GraphormerNodeFeature):
                self._handles.append(module.register_forward_hook(_graph_token_rule))
            elif isinstance(module, GraphormerAttnBias):
                self._handles.append(module.register_forward_hook(_attn_bias_rule, with_kwargs=True))


def _graph_token_rule(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
    if not (module.training and torch.is_grad_enabled() and output.requires_grad):
        return
    weight = module.graph_token.weight

    def hook(grad: torch.Tensor) -> None:
        # Opacus' "mean" convention: the loss is a batch mean, per-example gradients are batch-size times it
        _add_grad_sample(weight, grad[:, :1, :] * grad.shape[0])

    output.register_hook(hook)


def _attn_bias_rule(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
    if not (module.training and torch.is_grad_enabled() and output.requires_grad):
        return
    names = ("attn_bias", "spatial_pos", "input_edges", "attn_edge_type")
    inputs = {**dict(zip(names, args)), **kwargs}
    virtual = module.graph_token_virtual_distance.weight

    def hook(grad: torch.Tensor) -> None:
        batch = grad.shape[0]
        per_example = grad[:, :, 0, :].sum(-1) + grad[:, :, 1:, 0].sum(-1)  # [B, heads]
        _add_grad_sample(virtual, per_example.unsqueeze(1) * batch)
        if module.edge_type == "multi_hop":
            _multi_hop_rule(module, inputs["spatial_pos"], inputs["input_edges"], grad[:, :, 1:, 1:] * batch)

    output.register_hook(hook)


def _multi_hop_rule(module: nn.Module, spatial_pos: torch.Tensor, input_edges: torch.Tensor,
                    grad_edge: torch.Tensor) -> None:
    """Closed form, all examples at once. `_multi_hop` sums rows of hop_tables[d, v] = table[v] @ per_hop[d]
    (embedding_bag over each pair's hop x feature edge ids), scaled by 1 / (features * hop count); so example
    b's gradient of hop_tables is the scaled output gradient added at the ids it looked up, and the chain rule
    through the einsum gives d table = sum_d dH[d] @ per_hop[d]^T and d per_hop[d] = table^T @ dH[d]."""
    table_weight, distance_weight = module.edge_encoder.weight, module.edge_dis_encoder.weight
    if not (table_weight.requires_grad or distance_weight.requires_grad):
        return
    heads = module.num_heads
    batch, nodes = spatial_pos.shape[:2]
    hops_count = spatial_pos.masked_fill(spatial_pos == 0, 1)  # as in _multi_hop
    hops_count = torch.where(hops_count > 1, hops_count - 1, hops_count)
    if module.multi_hop_max_dist > 0:
        hops_count = hops_count.clamp(0, module.multi_hop_max_dist)
        input_edges = input_edges[:, :, :, : module.multi_hop_max_dist, :]
    hops, features = input_edges.shape[-2:]
    vocab = table_weight.shape[0]
    d_table = grad_edge.new_zeros((batch, *table_weight.shape))
    d_distance = grad_edge.new_zeros((batch, *distance_weight.shape))
    if hops > 0 and features > 0:
        scaled = grad_edge.permute(0, 2, 3, 1) / (features * hops_count.to(grad_edge.dtype).unsqueeze(-1))
        offsets = torch.arange(hops, device=input_edges.device).mul_(vocab).view(1, 1, 1, hops, 1)
        example = torch.arange(batch, device=input_edges.device).view(batch, 1, 1, 1, 1) * (hops * vocab)
        keys = (input_edges + offsets + example).reshape(-1)
        rows = scaled.reshape(batch, nodes, nodes, 1, heads).expand(-1, -1, -1, hops * features, -1)
        d_hop = grad_edge.new_zeros((batch * hops * vocab, heads)).index_add_(0, keys, rows.reshape(-1, heads))
        d_hop = d_hop.view(batch, hops, vocab, heads)
        per_hop = distance_weight.detach().reshape(-1, heads, heads)[:hops].to(grad_edge.dtype)
        table = table_weight.detach().to(grad_edge.dtype)
        padding = module.edge_encoder.padding_idx
        if padding is not None:  # _multi_hop reads the table with its padding row zeroed
            table = table.index_fill(0, torch.tensor([padding], device=table.device), 0.0)
        d_table = torch.einsum("bdvg,dhg->bvh", d_hop, per_hop)
        if padding is not None:
            d_table[:, padding] = 0
        d_distance.view(batch, -1, heads, heads)[:, :hops] = torch.einsum("bdvg,vh->bdhg", d_hop, table)
    _add_grad_sample(table_weight, d_table)
    _add_grad_sample(distance_weight, d_distance)


class DmpAdapter(DpAdapter):
    swap_overrides = {"gnn_norm": "group"}
    rules = (
        "classifier.out_proj: called as a module during DP runs (the same linear map as the product + sum)",
        "GNN atom- and bond-level Linear / Embedding / GroupNorm: per-molecule gradients straight from the "
        "atom (bond) rows grouped by molecule (segment grad samplers registered with Opacus)",
    )

    def attach(self, model: nn.Module) -> None:
        classifier = getattr(model, "classifier", None)
        if classifier is not None and hasattr(classifier, "out_proj"):
            classifier.branch = types.MethodType(_branch_through_module, classifier)
        self._swapped: list[tuple[nn.Module, type]] = []
        gnn = model.dmp.gnn
        for name, module in gnn.named_modules():
            segment_class = _SEGMENT_CLASSES.get(type(module))
            if segment_class is not None:
                self._swapped.append((module, type(module)))
                module.__class__ = segment_class  # same forward; only Opacus' choice of grad sampler changes
                module.dp_rows = "bonds" if ".edge_encoder." in f".{name}." else "atoms"
        self._handles.append(model.register_forward_pre_hook(self._set_segments, with_kwargs=True))

    def _set_segments(self, model: nn.Module, args: tuple, kwargs: dict) -> None:
        if not (model.training and torch.is_grad_enabled()) or kwargs.get("atom_batch") is None:
            return
        atom_graph = kwargs["atom_batch"]
        bond_graph = atom_graph[kwargs["edge_index"][0]]
        reference = kwargs.get("labels") if kwargs.get("labels") is not None else kwargs.get("input_ids")
        graphs = int(reference.shape[0]) if reference is not None else int(atom_graph.max()) + 1
        for module, _ in self._swapped:
            module.dp_segments = (atom_graph if module.dp_rows == "atoms" else bond_graph, graphs)
            module.max_batch_len = graphs  # Opacus' batch size for this module: molecules, not rows

    def detach(self, model: nn.Module) -> None:
        super().detach(model)
        classifier = getattr(model, "classifier", None)
        if classifier is not None and "branch" in vars(classifier):
            del classifier.branch
        for module, original in getattr(self, "_swapped", []):
            module.__class__ = original
            for attribute in ("dp_rows", "dp_segments", "max_batch_len"):
                module.__dict__.pop(attribute, None)
        self._swapped = []


class _SegmentLinear(nn.Linear):
    """nn.Linear over atom / bond rows; Opacus gives it the per-molecule rule below."""


class _SegmentEmbedding(nn.Embedding):
    """nn.Embedding over atom / bond rows; per-molecule rule below."""


class _SegmentGroupNorm(nn.GroupNorm):
    """nn.GroupNorm over atom rows; per-molecule rule below."""


_SEGMENT_CLASSES = {nn.Linear: _SegmentLinear, nn.Embedding: _SegmentEmbedding, nn.GroupNorm: _SegmentGroupNorm}


def _padded_by_segment(rows: torch.Tensor, segment: torch.Tensor, count: int) -> torch.Tensor:
    """[R, F] rows -> [count, longest segment, F], zero-padded (rows need not be sorted by segment)."""
    sizes = torch.bincount(segment, minlength=count)
    order = torch.argsort(segment, stable=True)
    starts = torch.cumsum(sizes, 0) - sizes
    position = torch.empty_like(segment)
    position[order] = torch.arange(segment.numel(), device=segment.device) - starts[segment[order]]
    padded = rows.new_zeros((count, int(sizes.max()) if sizes.numel() else 0, rows.shape[-1]))
    padded[segment, position] = rows
    return padded


def _segment_linear_rule(layer: nn.Linear, activations: list, backprops: torch.Tensor) -> dict:
    segment, count = layer.dp_segments
    inputs = activations[0].reshape(-1, layer.in_features)
    grads = backprops.reshape(-1, layer.out_features)
    result = {}
    if layer.weight.requires_grad:
        result[layer.weight] = torch.einsum("gno,gni->goi", _padded_by_segment(grads, segment, count),
                                            _padded_by_segment(inputs, segment, count))
    if layer.bias is not None and layer.bias.requires_grad:
        result[layer.bias] = grads.new_zeros((count, layer.out_features)).index_add_(0, segment, grads)
    return result


def _segment_embedding_rule(layer: nn.Embedding, activations: list, backprops: torch.Tensor) -> dict:
    if not layer.weight.requires_grad:
        return {}
    segment, count = layer.dp_segments
    indices = activations[0].reshape(-1)
    grads = backprops.reshape(-1, layer.embedding_dim)
    if layer.padding_idx is not None:
        grads = grads * (indices != layer.padding_idx).unsqueeze(-1).to(grads.dtype)
    flat = segment * layer.num_embeddings + indices
    table = grads.new_zeros((count * layer.num_embeddings, layer.embedding_dim)).index_add_(0, flat, grads)
    return {layer.weight: table.view(count, layer.num_embeddings, layer.embedding_dim)}


def _segment_group_norm_rule(layer: nn.GroupNorm, activations: list, backprops: torch.Tensor) -> dict:
    import torch.nn.functional as F

    segment, count = layer.dp_segments
    normalised = F.group_norm(activations[0], layer.num_groups, eps=layer.eps)
    result = {}
    if layer.weight is not None and layer.weight.requires_grad:
        result[layer.weight] = backprops.new_zeros((count, layer.num_channels)).index_add_(
            0, segment, normalised * backprops)
    if layer.bias is not None and layer.bias.requires_grad:
        result[layer.bias] = backprops.new_zeros((count, layer.num_channels)).index_add_(0, segment, backprops)
    return result


def _branch_through_module(self: nn.Module, x: torch.Tensor, dense: nn.Linear) -> torch.Tensor:
    hidden = self.dropout(self.activation(dense(self.dropout(x))))
    return self.out_proj(hidden)


class NasBertAdapter(DpAdapter):
    rules = ("separable conv pointwise (applied as F.linear on its weight): closed form from the depthwise "
             "output and the gradient of the block's output",)

    def attach(self, model: nn.Module) -> None:
        from .models.nasbert.modeling_nasbert import NasBertSeparableConv

        for module in model.modules():
            if isinstance(module, NasBertSeparableConv):
                self._handles.append(module.depthwise.register_forward_hook(_remember_output))
                self._handles.append(module.register_forward_hook(_pointwise_rule))


def _remember_output(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
    module.dp_last_output = output.detach()


def _pointwise_rule(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
    mixed = module.depthwise.__dict__.pop("dp_last_output", None)
    if not (module.training and torch.is_grad_enabled() and output.requires_grad) or mixed is None:
        return
    weight, bias = module.pointwise.weight, module.pointwise.bias

    def hook(grad: torch.Tensor) -> None:
        scale = grad.shape[0]  # Opacus' "mean" convention, as in its own samplers
        _add_grad_sample(weight, torch.einsum("blo,bil->boi", grad, mixed).unsqueeze(-1) * scale)
        if bias is not None:
            _add_grad_sample(bias, grad.sum(1) * scale)

    output.register_hook(hook)


class RefusedAdapter(DpAdapter):
    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason

    def refuse_or_overrides(self, family: str, swap_batchnorm: bool) -> dict[str, Any]:
        raise PrivacyError(f"DP fine-tuning of the {family} family is refused: {self.reason}")


_MDEQ_REASON = (
    "its equilibrium solver (Anderson / Broyden / fixed-point) stops when every example of the batch has "
    "converged, so the iterate that one example's gradient comes from depends on the other examples in its "
    "batch, and per-example clipping would not bound one example's influence; its stem and head also use "
    "BatchNorm, for which the family has no GroupNorm variant (the GroupNorm inside the equilibrium block is "
    "per-example safe). Solve each example to its own tolerance first, then DP-SGD applies"
)


def _graphormer_head_rule(layer: nn.Module, activations: list, backprops: torch.Tensor) -> dict:
    if not layer.lm_output_learned_bias.requires_grad:
        return {}
    return {layer.lm_output_learned_bias: backprops.reshape(backprops.shape[0], -1).sum(1, keepdim=True)}


def _register_opacus_rules() -> None:
    from opacus.grad_sample import register_grad_sampler

    from .models.graphormer.modeling_graphormer import GraphormerGraphHead

    register_grad_sampler(GraphormerGraphHead)(_graphormer_head_rule)
    register_grad_sampler(_SegmentLinear)(_segment_linear_rule)
    register_grad_sampler(_SegmentEmbedding)(_segment_embedding_rule)
    register_grad_sampler(_SegmentGroupNorm)(_segment_group_norm_rule)
    register_grad_sampler(_SparseEmbedding)(_sparse_embedding_rule)


def dp_adapter(family: str) -> DpAdapter:
    """A fresh adapter with the family's per-example rules (or its refusal)."""
    _register_opacus_rules()
    if family == "graphormer":
        return GraphormerAdapter()
    if family == "dmp":
        return DmpAdapter()
    if family == "nasbert":
        return NasBertAdapter()
    if family == "mdeq":
        return RefusedAdapter(_MDEQ_REASON)
    return DpAdapter()


# --------------------------------------------------------------------------------------------- sparse embeddings
# Opacus' nn.Embedding rule writes example i's gradient as a dense [V, D] table, [B, V, D] for the batch:
# for NAS-BERT's 50,265 x 64 word table that is ~206 MB and most of a DP step's time at batch 16. Example
# i's gradient is really sum_t onehot(ids[i, t]) g[i, t]: only its own token rows. Its squared norm is the
# sum over the distinct ids v of ||sum_{t: ids[i, t] = v} g[i, t]||^2 (rows of one id add up first), and the
# clipped sum over the batch is one index_add of c_i * g[i, t] into the [V, D] table. Both are exact and need
# O(B T D) memory, never O(B V D). The rows live on the weight (`dp_sparse_rows`); p.grad_sample holds a
# [B, 0] placeholder so Opacus' book-keeping (batch size, accumulation checks) is unchanged, and the DP
# optimizer's class gets the mixin below, which clips dense and sparse per-example gradients together.


class _SparseEmbedding(nn.Embedding):
    """nn.Embedding whose per-example gradients stay as the rows it looked up (rule below)."""


def _sparse_embedding_rule(layer: nn.Embedding, activations: list, backprops: torch.Tensor) -> dict:
    weight = layer.weight
    if not weight.requires_grad:
        return {}
    batch = backprops.shape[0]
    indices = activations[0].reshape(batch, -1)
    rows = backprops.reshape(batch, -1, layer.embedding_dim)
    if layer.padding_idx is not None:  # torch's embedding backward gives the padding row no gradient
        rows = rows * (indices != layer.padding_idx).unsqueeze(-1).to(rows.dtype)
    previous = weight.__dict__.get("dp_sparse_rows")
    if previous is not None and previous[0].shape[0] == batch:  # a second call in the same step
        indices, rows = torch.cat([previous[0], indices], 1), torch.cat([previous[1], rows], 1)
    weight.dp_sparse_rows = (indices.detach(), rows.detach())
    return {weight: rows.new_zeros((batch, 0))}


def sparse_per_sample_norms(indices: torch.Tensor, rows: torch.Tensor, num_embeddings: int) -> torch.Tensor:
    """[B] norms of the per-example embedding gradients sum_t onehot(indices[i, t]) rows[i, t], without [B, V, D]."""
    batch = indices.shape[0]
    if batch == 0 or indices.shape[1] == 0:
        return rows.new_zeros((batch,))
    example = torch.arange(batch, device=indices.device).unsqueeze(1)
    keys, inverse = torch.unique((example * num_embeddings + indices).reshape(-1), return_inverse=True)
    summed = rows.new_zeros((keys.numel(), rows.shape[-1])).index_add_(0, inverse, rows.reshape(-1, rows.shape[-1]))
    squares = rows.new_zeros((batch,)).index_add_(0, keys // num_embeddings, summed.pow(2).sum(-1))
    return squares.sqrt()


def sparse_clipped_sum(indices: torch.Tensor, rows: torch.Tensor, factors: torch.Tensor,
                       shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """sum_i factors[i] * (example i's embedding gradient), as one dense [V, D] table."""
    scaled = (rows.to(dtype) * factors.to(device=rows.device, dtype=dtype).view(-1, 1, 1)).reshape(-1, shape[-1])
    return torch.zeros(shape, dtype=dtype, device=rows.device).index_add_(0, indices.reshape(-1), scaled)


def dense_from_sparse(param: nn.Parameter) -> torch.Tensor:
    """The [B, V, D] per-example gradients a sparse embedding stands for (for tests; this is what it avoids)."""
    indices, rows = param.dp_sparse_rows
    dense = rows.new_zeros((indices.shape[0], *param.shape))
    for example in range(indices.shape[0]):
        dense[example].index_add_(0, indices[example], rows[example])
    return dense


def _sparse_norms(param: nn.Parameter, dense: torch.Tensor) -> torch.Tensor:
    sparse = param.__dict__.get("dp_sparse_rows")
    norms = dense.reshape(len(dense), -1).norm(2, dim=-1)
    if sparse is None:
        return norms
    return (norms.pow(2) + sparse_per_sample_norms(*sparse, param.shape[0]).pow(2).to(norms.device)).sqrt()


class SparseEmbeddingClipping:
    """Mixin for Opacus' DPOptimizer, DistributedDPOptimizer, DPPerLayerOptimizer and AdaClipDPOptimizer:
    the same clipping, with per-example embedding gradients taken from their rows (never [B, V, D])."""

    def clip_and_accumulate(self) -> None:
        from opacus.optimizers import AdaClipDPOptimizer, DPPerLayerOptimizer
        from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

        params = self.params
        dense = [self._get_flat_grad_sample(p) for p in params]
        norms = [_sparse_norms(p, g) for p, g in zip(params, dense)]
        if isinstance(self, DPPerLayerOptimizer):
            factors = [(bound / (n + 1e-6)).clamp(max=1.0) for n, bound in zip(norms, self.max_grad_norms)]
        else:
            device = norms[0].device
            total = torch.stack([n.to(device) for n in norms], dim=1).norm(2, dim=1)
            factor = (self.max_grad_norm / (total + 1e-6)).clamp(max=1.0)
            if isinstance(self, AdaClipDPOptimizer):
                self.sample_size += len(factor)
                self.unclipped_num += len(factor) - (factor < 1).sum()
            factors = [factor] * len(params)
        for p, grad_sample, factor in zip(params, dense, factors):
            _check_processed_flag(p.grad_sample)
            sparse = p.__dict__.pop("dp_sparse_rows", None)
            if sparse is None:
                grad = torch.einsum("i,i...", factor.to(grad_sample.device, p.dtype), grad_sample.to(p.dtype))
            else:
                grad = sparse_clipped_sum(*sparse, factor, p.shape, p.dtype)
            p.summed_grad = grad if p.summed_grad is None else p.summed_grad + grad
            _mark_as_processed(p.grad_sample)

    def zero_grad(self, set_to_none: bool = False) -> None:
        for p in self.params:
            p.__dict__.pop("dp_sparse_rows", None)
        super().zero_grad(set_to_none)


_SPARSE_OPTIMIZERS: dict[type, type] = {}


def sparse_optimizer_class(base: type) -> type | None:
    """`base` with SparseEmbeddingClipping, or None where the clipping happens elsewhere (DDP per-layer hooks)."""
    from opacus.optimizers import AdaClipDPOptimizer, DistributedDPOptimizer, DPOptimizer, DPPerLayerOptimizer

    if base not in (DPOptimizer, DistributedDPOptimizer, DPPerLayerOptimizer, AdaClipDPOptimizer):
        return None
    if base not in _SPARSE_OPTIMIZERS:
        _SPARSE_OPTIMIZERS[base] = type(f"SparseEmbedding{base.__name__}", (SparseEmbeddingClipping, base), {})
    return _SPARSE_OPTIMIZERS[base]
