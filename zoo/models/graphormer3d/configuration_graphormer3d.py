"""Configuration of Graphormer-3D, the 3D Graphormer used for OC20 IS2RE (Shi et al., arXiv:2203.04810).

from zoo.models.graphormer3d import Graphormer3DConfig
config = Graphormer3DConfig(num_layers=2, num_blocks=2, hidden_size=32, num_attention_heads=4)
config.pair_kernel   # "gaussian" (current original code) or "rbf" (the released OC20 checkpoint)
"""

from __future__ import annotations

from transformers import PretrainedConfig

# Normalisation of the IS2RE targets in the original criterion (graphormer/criterions/mae_deltapos.py).
OC20_ENERGY_MEAN = -1.4729953244844094
OC20_ENERGY_STD = 2.2707848125378405
OC20_DELTA_POS_MEAN = (0.1353900283575058, 0.06877671927213669, 0.08111362904310226)
OC20_DELTA_POS_STD = (1.7862379550933838, 1.78688645362854, 0.8023099899291992)

PAIR_KERNELS = ("gaussian", "rbf")


class Graphormer3DConfig(PretrainedConfig):
    """Hyper-parameters of Graphormer-3D; defaults are the original `graphormer3d_base` architecture.

    Original argument names (fairseq `graphormer3d`) in brackets:
        num_layers [layers], num_blocks [blocks]: `num_layers` distinct layers, the stack applied
            `num_blocks` times with shared weights.
        hidden_size [embed_dim], intermediate_size [ffn_embed_dim], num_attention_heads [attention_heads],
        num_kernels [num_kernel]: number of distance kernels per atom pair.
        pair_kernel: "gaussian" (`GaussianLayer`, code since Feb 2022) or "rbf" (`RBF`, the kernel of the
            released OC20 IS2RE checkpoint): exp(-|temp| * (mul * d + bias - mean)^2).
        input_dropout, dropout, attention_dropout, activation_dropout: as the original.
        energy_dropout, node_attention_dropout: hard-coded 0.1 in the original (dropout before the energy
            projection and on the node head's attention weights).
        num_atom_types (64), num_tags (3): embedding rows; pair types are num_atom_types ** 2.
        energy_mean/energy_std, delta_pos_mean/delta_pos_std: target normalisation of the original
            criterion; outputs are in these normalised units, `energy_ev`/`delta_pos` undo it.
        node_loss_weight, min_node_loss_weight: weight of the delta-position L1 loss next to the energy L1
            loss; the original decays it linearly from the first to the second over training
            (`Graphormer3DNodeLossDecay`, a Trainer callback, does the same).
    The default dropout is 0.0 as in the published OC20 recipe (`--dropout 0.0`); the architecture default
    of the original is 0.1.
    """

    model_type = "graphormer3d"

    def __init__(
        self,
        num_layers: int = 12,
        num_blocks: int = 4,
        hidden_size: int = 768,
        intermediate_size: int = 768,
        num_attention_heads: int = 48,
        num_kernels: int = 128,
        pair_kernel: str = "gaussian",
        num_atom_types: int = 64,
        num_tags: int = 3,
        input_dropout: float = 0.0,
        dropout: float = 0.0,
        attention_dropout: float = 0.1,
        activation_dropout: float = 0.0,
        energy_dropout: float = 0.1,
        node_attention_dropout: float = 0.1,
        layer_norm_eps: float = 1e-5,
        energy_mean: float = OC20_ENERGY_MEAN,
        energy_std: float = OC20_ENERGY_STD,
        delta_pos_mean: tuple[float, float, float] | list[float] = OC20_DELTA_POS_MEAN,
        delta_pos_std: tuple[float, float, float] | list[float] = OC20_DELTA_POS_STD,
        node_loss_weight: float = 15.0,
        min_node_loss_weight: float = 1.0,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        kwargs.setdefault(
            "auto_map",
            {
                "AutoConfig": "configuration_graphormer3d.Graphormer3DConfig",
                "AutoModel": "modeling_graphormer3d.Graphormer3DModel",
                "AutoModelForSequenceClassification": "modeling_graphormer3d.Graphormer3DForIS2RE",
            },
        )
        if pair_kernel not in PAIR_KERNELS:
            raise ValueError(f"pair_kernel must be one of {PAIR_KERNELS}, got {pair_kernel!r}")
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by "
                f"num_attention_heads ({num_attention_heads})"
            )
        for name, value in (("delta_pos_mean", delta_pos_mean), ("delta_pos_std", delta_pos_std)):
            if len(value) != 3:
                raise ValueError(f"{name} needs one value per axis (3), got {list(value)}")
        super().__init__(**kwargs)
        self.num_layers = num_layers
        self.num_blocks = num_blocks
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_attention_heads = num_attention_heads
        self.num_kernels = num_kernels
        self.pair_kernel = pair_kernel
        self.num_atom_types = num_atom_types
        self.num_tags = num_tags
        self.input_dropout = input_dropout
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation_dropout = activation_dropout
        self.energy_dropout = energy_dropout
        self.node_attention_dropout = node_attention_dropout
        self.layer_norm_eps = layer_norm_eps
        self.energy_mean = float(energy_mean)
        self.energy_std = float(energy_std)
        self.delta_pos_mean = [float(v) for v in delta_pos_mean]
        self.delta_pos_std = [float(v) for v in delta_pos_std]
        self.node_loss_weight = node_loss_weight
        self.min_node_loss_weight = min_node_loss_weight
        self.initializer_range = initializer_range


__all__ = ["Graphormer3DConfig"]
