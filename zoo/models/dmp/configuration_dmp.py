"""Configuration of DMP, the dual-view molecule pre-training model (Zhu et al., KDD 2023).

    from zoo.models.dmp import DmpConfig, DmpModel
    config = DmpConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, gnn_hidden_size=24)
    model = DmpModel(config)
"""

from __future__ import annotations

from transformers import PretrainedConfig

# Index lists of DMP's own molecule/features.py (not ogb's: the atom list ends with [MASK], misc and the
# bond-type list with [MASK], [SELF], misc).
ATOM_FEATURE_DIMS = (120, 4, 12, 12, 10, 6, 6, 2, 2)
BOND_FEATURE_DIMS = (7, 6, 2)


class DmpConfig(PretrainedConfig):
    """Hyper-parameters of both DMP branches and of its heads.

    Transformer branch (RoBERTa-like, post-LN, learned positions): `vocab_size`, `hidden_size`,
    `num_hidden_layers`, `num_attention_heads`, `intermediate_size`, `hidden_act`, `hidden_dropout_prob`,
    `attention_probs_dropout_prob`, `activation_dropout`, `max_position_embeddings` (= max positions + 2,
    fairseq offsets positions by the padding index), `layer_norm_eps`.
    GNN branch (DeeperGCN-style residual message passing with max/min/mean aggregation and BatchNorm):
    `gnn_num_layers`, `gnn_hidden_size`, `gnn_dropout`, `atom_feature_dims`, `bond_feature_dims`,
    `batch_norm_eps`, `batch_norm_momentum`; `gnn_norm` "batch" (the original) or "group" (GroupNorm with
    `gnn_norm_groups` groups per atom: per-molecule independent, as differentially private training needs).
    Pre-training heads: `projection_ratio` (bottleneck width = ratio x hidden_size), `projection_layers`.
    Downstream head: `coeff_transformer` / `coeff_gnn` weight the two branches' logits (0 switches a branch
    off entirely), `use_dropnet` (probability of dropping one branch per training step), `classifier_activation`,
    `classifier_dropout`, `gradient_multiplier` (scales the gradient reaching the encoders, 0.1 for the
    original `--gradmultiply`), `gnn_gradient_multiplier` (extra factor for the GNN branch).

        config = DmpConfig(num_labels=1, problem_type="regression", coeff_gnn=0.0)  # Transformer-only regression
    """

    model_type = "dmp"

    def __init__(
        self,
        vocab_size: int = 2353,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        activation_dropout: float = 0.0,
        max_position_embeddings: int = 514,
        layer_norm_eps: float = 1e-5,
        gnn_num_layers: int = 12,
        gnn_hidden_size: int = 384,
        gnn_dropout: float = 0.1,
        atom_feature_dims: list[int] | tuple[int, ...] = ATOM_FEATURE_DIMS,
        bond_feature_dims: list[int] | tuple[int, ...] = BOND_FEATURE_DIMS,
        batch_norm_eps: float = 1e-5,
        batch_norm_momentum: float = 0.1,
        gnn_norm: str = "batch",
        gnn_norm_groups: int = 8,
        projection_ratio: float = 4.0,
        projection_layers: int = 2,
        coeff_transformer: float = 1.0,
        coeff_gnn: float = 1.0,
        use_dropnet: float = 0.0,
        classifier_activation: str = "tanh",
        classifier_dropout: float = 0.0,
        gradient_multiplier: float = 1.0,
        gnn_gradient_multiplier: float = 1.0,
        initializer_range: float = 0.02,
        pad_token_id: int = 1,
        bos_token_id: int = 0,
        eos_token_id: int = 2,
        mask_token_id: int = 2352,
        **kwargs,
    ):
        kwargs.setdefault("auto_map", {
            "AutoConfig": "configuration_dmp.DmpConfig",
            "AutoModel": "modeling_dmp.DmpModel",
            "AutoModelForPreTraining": "modeling_dmp.DmpForPreTraining",
            "AutoModelForSequenceClassification": "modeling_dmp.DmpForSequenceClassification",
        })
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}")
        if coeff_transformer < 0 or coeff_gnn < 0 or coeff_transformer + coeff_gnn <= 0:
            raise ValueError(
                f"coeff_transformer={coeff_transformer} and coeff_gnn={coeff_gnn}: both must be >= 0 and at least "
                "one > 0 (a coefficient of 0 switches that branch off)"
            )
        if projection_layers < 2:
            raise ValueError(f"projection_layers must be >= 2, got {projection_layers}")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.activation_dropout = activation_dropout
        self.max_position_embeddings = max_position_embeddings
        self.layer_norm_eps = layer_norm_eps
        self.gnn_num_layers = gnn_num_layers
        self.gnn_hidden_size = gnn_hidden_size
        self.gnn_dropout = gnn_dropout
        self.atom_feature_dims = list(atom_feature_dims)
        self.bond_feature_dims = list(bond_feature_dims)
        self.batch_norm_eps = batch_norm_eps
        self.batch_norm_momentum = batch_norm_momentum
        if gnn_norm not in ("batch", "group"):
            raise ValueError(f"gnn_norm must be 'batch' or 'group', got {gnn_norm!r}")
        self.gnn_norm = gnn_norm
        self.gnn_norm_groups = gnn_norm_groups
        self.projection_ratio = projection_ratio
        self.projection_layers = projection_layers
        self.coeff_transformer = coeff_transformer
        self.coeff_gnn = coeff_gnn
        self.use_dropnet = use_dropnet
        self.classifier_activation = classifier_activation
        self.classifier_dropout = classifier_dropout
        self.gradient_multiplier = gradient_multiplier
        self.gnn_gradient_multiplier = gnn_gradient_multiplier
        self.initializer_range = initializer_range
        self.mask_token_id = mask_token_id

    @property
    def graph_embedding_size(self) -> int:
        """Width of the GNN sentence vector: max-pool and mean-pool concatenated."""
        return 2 * self.gnn_hidden_size
