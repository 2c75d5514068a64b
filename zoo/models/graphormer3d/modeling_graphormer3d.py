"""Graphormer-3D (OC20 IS2RE): pair-distance kernels, attention bias, shared-weight pre-LN blocks, energy and
delta-position heads. Reproduces microsoft/Graphormer `graphormer/models/graphormer_3d.py`.

    from zoo.models.graphormer3d import Graphormer3DForIS2RE, Graphormer3DFeaturizer
    batch = Graphormer3DFeaturizer()([{"atomic_numbers": z, "positions": pos, "tags": tags, "cell": cell}])
    energy_ev = Graphormer3DForIS2RE.from_pretrained("path/to/folder")(**batch).energy_ev
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, TrainerCallback
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_graphormer3d import Graphormer3DConfig

# The original normalises pair directions with this epsilon and writes pi as 3.14159 in its Gaussian.
DIRECTION_EPS = 1e-5
STD_EPS = 1e-5
ORIGINAL_PI = 3.14159


@dataclass
class Graphormer3DModelOutput(ModelOutput):
    """Base model output.

    last_hidden_state: [B, N, D] after the final LayerNorm.
    hidden_states: with `output_hidden_states`, the input embedding and the output of every layer
        application (num_layers * num_blocks of them, before the final LayerNorm).
    attention_bias: with `output_pair_features`, the per-head pair bias [B, H, N, N] (-inf on padded keys).
    pair_direction: with `output_pair_features`, unit vectors (pos_j - pos_i) / (|pos_j - pos_i| + 1e-5)
        at [b, i, j], shape [B, N, N, 3].
    """

    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attention_bias: torch.Tensor | None = None
    pair_direction: torch.Tensor | None = None


@dataclass
class Graphormer3DIS2REOutput(ModelOutput):
    """IS2RE head output (energies and displacements in the original's normalised units unless noted).

    loss: energy L1 + node_loss_weight * per-system mean displacement L1 (the original `mae_deltapos`
        criterion, averaged over systems), when `labels` are given.
    energy: [B] predicted relaxed energy, normalised; energy_ev: [B] in eV.
    node_output: [B, N, 3] predicted relaxation displacement, normalised; delta_pos: [B, N, 3] in Å.
    node_target_mask: [B, N, 1] bool, atoms the displacement is trained on (real atoms with tag 1 or 2).
    """

    loss: torch.Tensor | None = None
    energy: torch.Tensor | None = None
    energy_ev: torch.Tensor | None = None
    node_output: torch.Tensor | None = None
    delta_pos: torch.Tensor | None = None
    node_target_mask: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class Graphormer3DMLP(nn.Module):
    """Linear -> GELU -> Linear (the original `NonLinear`)."""

    def __init__(self, in_features: int, out_features: int, hidden: int | None = None):
        super().__init__()
        hidden = in_features if hidden is None else hidden
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Graphormer3DPairKernel(nn.Module):
    """Expands each pair distance with K kernels after a learned per-pair-type affine map.

    "gaussian" (original `GaussianLayer`): N(scale * d + shift; mean_k, |std_k| + 1e-5), evaluated in float32
    with the original's pi = 3.14159. "rbf" (original `RBF`, pre-Feb-2022 code and the released OC20
    checkpoint): exp(-|temperature_k| * (scale * d + shift - mean_k)^2), without normalisation.
    """

    def __init__(self, config: Graphormer3DConfig):
        super().__init__()
        self.kind = config.pair_kernel
        self.num_atom_types = config.num_atom_types
        num_pair_types = config.num_atom_types**2
        self.pair_scale = nn.Embedding(num_pair_types, 1)
        self.pair_shift = nn.Embedding(num_pair_types, 1)
        self.means = nn.Parameter(torch.empty(config.num_kernels))
        # Gaussian: standard deviations; RBF: inverse temperatures; both used through their absolute value.
        self.widths = nn.Parameter(torch.empty(config.num_kernels))

    def pair_types(self, atom_ids: torch.Tensor) -> torch.Tensor:
        """Ordered pair type id_i * num_atom_types + id_j at [b, i, j]."""
        return atom_ids.unsqueeze(2) * self.num_atom_types + atom_ids.unsqueeze(1)

    def forward(self, distance: torch.Tensor, atom_ids: torch.Tensor) -> torch.Tensor:
        pair_types = self.pair_types(atom_ids)
        x = self.pair_scale(pair_types) * distance.unsqueeze(-1) + self.pair_shift(pair_types)
        x = x.float()
        means = self.means.float()
        if self.kind == "rbf":
            return torch.exp(-self.widths.float().abs() * (x - means).square()).type_as(self.means)
        std = self.widths.float().abs() + STD_EPS
        normaliser = (2 * ORIGINAL_PI) ** 0.5
        return (torch.exp(-0.5 * ((x - means) / std) ** 2) / (normaliser * std)).type_as(self.means)


class Graphormer3DSelfAttention(nn.Module):
    """Multi-head self-attention with a fused q/k/v projection and an additive per-head pair bias."""

    def __init__(self, config: Graphormer3DConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor, attention_bias: torch.Tensor) -> torch.Tensor:
        batch, length, dim = hidden.shape
        q, k, v = (
            t.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
            for t in self.qkv_proj(hidden).chunk(3, dim=-1)
        )
        attended = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attention_bias,
            dropout_p=self.dropout if self.training else 0.0,
            scale=self.scaling,
        )
        return self.out_proj(attended.transpose(1, 2).reshape(batch, length, dim))


class Graphormer3DLayer(nn.Module):
    """Pre-LN transformer layer: x + Attn(LN(x)), then x + FFN(LN(x)) with exact GELU."""

    def __init__(self, config: Graphormer3DConfig):
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = Graphormer3DSelfAttention(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = config.dropout
        self.activation_dropout = config.activation_dropout

    def forward(self, hidden: torch.Tensor, attention_bias: torch.Tensor) -> torch.Tensor:
        attended = self.attention(self.attention_norm(hidden), attention_bias)
        hidden = hidden + F.dropout(attended, p=self.dropout, training=self.training)
        ffn = F.dropout(
            F.gelu(self.fc1(self.ffn_norm(hidden))), p=self.activation_dropout, training=self.training
        )
        return hidden + F.dropout(self.fc2(ffn), p=self.dropout, training=self.training)


class Graphormer3DEnergyHead(nn.Module):
    """Per-atom energy MLP times a learned factor per tag, summed over real tag-1/2 atoms."""

    def __init__(self, config: Graphormer3DConfig):
        super().__init__()
        self.dropout = config.energy_dropout
        self.proj = Graphormer3DMLP(config.hidden_size, 1)
        self.tag_weight = nn.Embedding(config.num_tags, 1)

    def forward(self, hidden: torch.Tensor, tags: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
        hidden = F.dropout(hidden, p=self.dropout, training=self.training)
        per_atom = (self.proj(hidden) * self.tag_weight(tags)).squeeze(-1)
        return (per_atom * target_mask).sum(dim=-1)


class Graphormer3DNodeHead(nn.Module):
    """Displacement head (the original `NodeTaskHead`).

    Attention weights (with the same pair bias as the encoder) are multiplied by the unit pair directions
    before aggregating values, giving one D-dim vector per axis; a separate projection per axis maps it to
    the predicted displacement component (so the output is rotation-equivariant only when the three
    projections coincide).
    """

    def __init__(self, config: Graphormer3DConfig):
        super().__init__()
        dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.scaling = (dim // config.num_attention_heads) ** -0.5
        self.dropout = config.node_attention_dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.proj_x = nn.Linear(dim, 1)
        self.proj_y = nn.Linear(dim, 1)
        self.proj_z = nn.Linear(dim, 1)

    def forward(
        self, hidden: torch.Tensor, attention_bias: torch.Tensor, direction: torch.Tensor
    ) -> torch.Tensor:
        batch, length, _ = hidden.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.num_heads, -1).transpose(1, 2)

        q = heads(self.q_proj(hidden)) * self.scaling
        k, v = heads(self.k_proj(hidden)), heads(self.v_proj(hidden))
        probs = F.dropout(
            torch.softmax(q @ k.transpose(-1, -2) + attention_bias, dim=-1), self.dropout, self.training
        )
        # [B, H, 3, N, N] @ [B, H, 1, N, d] -> [B, H, 3, N, d]
        rotated = (probs.unsqueeze(-1) * direction.unsqueeze(1).type_as(probs)).permute(0, 1, 4, 2, 3)
        per_axis = (rotated @ v.unsqueeze(2)).permute(0, 3, 2, 1, 4).reshape(batch, length, 3, -1)
        out = [
            proj(per_axis[:, :, axis]) for axis, proj in enumerate((self.proj_x, self.proj_y, self.proj_z))
        ]
        return torch.cat(out, dim=-1).float()


class Graphormer3DPreTrainedModel(PreTrainedModel):
    config_class = Graphormer3DConfig
    base_model_prefix = "graphormer3d"
    main_input_name = "atom_ids"
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        """Initialisation of the original code: PyTorch-style linears, N(0, 1) embeddings with a zero padding
        row, kernel means/widths U(0, 3) (RBF temperatures U(0.1, 10)), pair scale 1, shift 0, tag energy
        factors N(0, 0.01)."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=1.0)
            # the slice loses the loaded-weight flag, so check it on the whole weight
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        # parents are initialised after their children: these override the embedding default above
        elif isinstance(module, Graphormer3DPairKernel):
            init.ones_(module.pair_scale.weight)
            init.zeros_(module.pair_shift.weight)
            init.uniform_(module.means, 0.0, 3.0)
            if module.kind == "rbf":
                init.uniform_(module.widths, 0.1, 10.0)
            else:
                init.uniform_(module.widths, 0.0, 3.0)
        elif isinstance(module, Graphormer3DEnergyHead):
            init.normal_(module.tag_weight.weight, mean=0.0, std=0.01)


class Graphormer3DModel(Graphormer3DPreTrainedModel):
    """Graphormer-3D encoder: atom + tag embeddings and summed pair features, `num_layers` pre-LN layers
    applied `num_blocks` times with shared weights, final LayerNorm.

    Inputs (as `Graphormer3DFeaturizer` builds them, N a multiple of 8):
        atom_ids [B, N] long: element ids (0 = padding, see the featurizer's atom list),
        tags [B, N] long: 0 sub-surface, 1 surface, 2 adsorbate,
        positions [B, N, 3] float (Å), real atoms then periodic images then zero padding,
        real_mask [B, N] bool: True for atoms of the unit cell (not images, not padding); unused by the
            encoder, accepted so a featurizer batch can be passed as is.

        model = Graphormer3DModel(Graphormer3DConfig(num_layers=2, num_blocks=2, hidden_size=32,
                                                     num_attention_heads=4, num_kernels=16))
        hidden = model(**batch).last_hidden_state
    """

    # a head checkpoint loaded as the base model: its head weights are dropped on purpose, not reported
    # (transformers matches these with re.search; any other unexpected key is still reported)
    _keys_to_ignore_on_load_unexpected = [r"^(energy_head|node_head)\."]

    def __init__(self, config: Graphormer3DConfig):
        super().__init__(config)
        self.atom_embedding = nn.Embedding(config.num_atom_types, config.hidden_size, padding_idx=0)
        self.tag_embedding = nn.Embedding(config.num_tags, config.hidden_size)
        self.pair_kernel = Graphormer3DPairKernel(config)
        self.pair_feature_proj = nn.Linear(config.num_kernels, config.hidden_size)
        self.attention_bias_proj = Graphormer3DMLP(config.num_kernels, config.num_attention_heads)
        self.layers = nn.ModuleList(Graphormer3DLayer(config) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def check_inputs(self, atom_ids: torch.Tensor, tags: torch.Tensor, positions: torch.Tensor) -> None:
        """Shape and range checks with messages naming the input (instead of an indexing error or NaNs)."""
        if atom_ids.dim() != 2:
            raise ValueError(f"atom_ids must be [batch, atoms], got shape {list(atom_ids.shape)}")
        if tags.shape != atom_ids.shape:
            raise ValueError(f"tags {list(tags.shape)} and atom_ids {list(atom_ids.shape)} differ in shape")
        if positions.shape != (*atom_ids.shape, 3):
            raise ValueError(f"positions must be {[*atom_ids.shape, 3]}, got {list(positions.shape)}")
        if atom_ids.numel() == 0 or not atom_ids.ne(0).any(dim=1).all():
            raise ValueError("every system in the batch needs at least one atom (atom_ids != 0)")
        if atom_ids.min() < 0 or atom_ids.max() >= self.config.num_atom_types:
            raise ValueError(
                f"atom_ids must lie in [0, {self.config.num_atom_types}); use Graphormer3DFeaturizer"
            )
        if tags.min() < 0 or tags.max() >= self.config.num_tags:
            raise ValueError(
                f"tags must lie in [0, {self.config.num_tags}) (0 sub-surface, 1 surface, 2 adsorbate)"
            )
        if not torch.isfinite(positions).all():
            raise ValueError("positions contain NaN or inf")

    def pair_geometry(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distances [B, N, N] and unit directions [B, N, N, 3] from atom i to atom j."""
        delta = positions.unsqueeze(1) - positions.unsqueeze(2)
        distance = delta.norm(dim=-1)
        return distance, delta / (distance.unsqueeze(-1) + DIRECTION_EPS)

    def forward(
        self,
        atom_ids: torch.Tensor,
        tags: torch.Tensor,
        positions: torch.Tensor,
        real_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_pair_features: bool = False,
        **kwargs,
    ) -> Graphormer3DModelOutput:
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        self.check_inputs(atom_ids, tags, positions)
        padding = atom_ids.eq(0)
        distance, direction = self.pair_geometry(positions)
        pair_features = self.pair_kernel(distance, atom_ids)
        summed = pair_features.masked_fill(padding[:, None, :, None], 0.0).sum(dim=-2)
        hidden = self.tag_embedding(tags) + self.atom_embedding(atom_ids) + self.pair_feature_proj(summed)
        hidden = F.dropout(hidden, p=self.config.input_dropout, training=self.training)

        attention_bias = self.attention_bias_proj(pair_features).permute(0, 3, 1, 2)
        attention_bias = attention_bias.masked_fill(padding[:, None, None, :], float("-inf")).contiguous()

        all_hidden = (hidden,) if output_hidden_states else None
        for _ in range(self.config.num_blocks):
            for layer in self.layers:
                hidden = layer(hidden, attention_bias)
                if output_hidden_states:
                    all_hidden = all_hidden + (hidden,)
        return Graphormer3DModelOutput(
            last_hidden_state=self.final_norm(hidden),
            hidden_states=all_hidden,
            attention_bias=attention_bias if output_pair_features else None,
            pair_direction=direction if output_pair_features else None,
        )


class Graphormer3DForIS2RE(Graphormer3DPreTrainedModel):
    """Graphormer-3D with the energy head and the node (delta-position) head, as trained on OC20 IS2RE.

    `labels` [B]: relaxed energies in eV; `delta_pos_labels` [B, N, 3]: relaxed minus initial positions (Å)
    for the real atoms (0 elsewhere). Both are normalised with the config's constants before the L1 losses.

        model = Graphormer3DForIS2RE.from_pretrained("converted/graphormer3d_base_oc20_is2re")
        out = model(**Graphormer3DFeaturizer()([system]))
        out.energy_ev, out.delta_pos
    """

    def __init__(self, config: Graphormer3DConfig):
        super().__init__(config)
        self.graphormer3d = Graphormer3DModel(config)
        self.energy_head = Graphormer3DEnergyHead(config)
        self.node_head = Graphormer3DNodeHead(config)
        # the original decays this during training (see Graphormer3DNodeLossDecay); not saved
        self.node_loss_weight = float(config.node_loss_weight)
        self.post_init()

    def forward(
        self,
        atom_ids: torch.Tensor,
        tags: torch.Tensor,
        positions: torch.Tensor,
        real_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        delta_pos_labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> Graphormer3DIS2REOutput:
        if real_mask is None:  # every non-padding atom counts as real (no periodic images)
            real_mask = atom_ids.ne(0)
        encoded = self.graphormer3d(
            atom_ids, tags, positions, output_hidden_states=output_hidden_states, output_pair_features=True
        )
        target_mask = tags.gt(0) & real_mask.bool()
        energy = self.energy_head(encoded.last_hidden_state, tags, target_mask)
        node_output = self.node_head(
            encoded.last_hidden_state, encoded.attention_bias, encoded.pair_direction
        )
        mean = node_output.new_tensor(self.config.delta_pos_mean)
        std = node_output.new_tensor(self.config.delta_pos_std)
        loss = None
        if labels is not None:
            loss = self.is2re_loss(energy, node_output, target_mask, labels, delta_pos_labels)
        return Graphormer3DIS2REOutput(
            loss=loss,
            energy=energy,
            energy_ev=energy * self.config.energy_std + self.config.energy_mean,
            node_output=node_output,
            delta_pos=node_output * std + mean,
            node_target_mask=target_mask.unsqueeze(-1),
            hidden_states=encoded.hidden_states,
        )

    def is2re_loss(
        self,
        energy: torch.Tensor,
        node_output: torch.Tensor,
        target_mask: torch.Tensor,
        labels: torch.Tensor,
        delta_pos_labels: torch.Tensor | None,
    ) -> torch.Tensor:
        """The original `mae_deltapos` criterion divided by the number of systems (fairseq's sample size)."""
        target = (labels.float().view(-1) - self.config.energy_mean) / self.config.energy_std
        loss = F.l1_loss(energy.float().view(-1), target, reduction="sum")
        if delta_pos_labels is not None:
            mask = target_mask.unsqueeze(-1).to(node_output.dtype)
            mean = node_output.new_tensor(self.config.delta_pos_mean)
            std = node_output.new_tensor(self.config.delta_pos_std)
            normalised = (delta_pos_labels.float() - mean) / std * mask
            per_atom = F.l1_loss(node_output.float() * mask, normalised, reduction="none").mean(dim=-1)
            count = mask.sum(dim=(1, 2)).clamp(min=1)
            loss = loss + self.node_loss_weight * (per_atom.sum(dim=-1) / count).sum()
        return loss / target.numel()


class Graphormer3DNodeLossDecay(TrainerCallback):
    """Decays the node-loss weight linearly from `config.node_loss_weight` to `config.min_node_loss_weight`
    over the run, as the original criterion does with its update count.

        trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[Graphormer3DNodeLossDecay()])
    """

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if model is None or not hasattr(model, "node_loss_weight"):
            return
        start, end = float(model.config.node_loss_weight), float(model.config.min_node_loss_weight)
        progress = state.global_step / max(state.max_steps, 1)
        model.node_loss_weight = start - max(0.0, start - end) * progress


__all__ = [
    "Graphormer3DForIS2RE",
    "Graphormer3DNodeLossDecay",
    "Graphormer3DModel",
    "Graphormer3DPreTrainedModel",
]
