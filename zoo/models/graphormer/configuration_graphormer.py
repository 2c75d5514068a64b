"""Graphormer configuration, reading the fairseq argument names and the transformers-4.x names too.

    from zoo.models.graphormer import GraphormerConfig
    config = GraphormerConfig(num_hidden_layers=12, hidden_size=768, num_attention_heads=32)
    config = GraphormerConfig(encoder_layers=12, encoder_embed_dim=768)   # fairseq names work as well
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

__all__ = ["GraphormerConfig"]

# other name -> our name. fairseq-train argument names (checkpoint cfg["model"]) and the names of the
# transformers 4.26-4.40 port (config.json of e.g. clefourrier/graphormer-base-pcqm4mv2).
ALIASES = {
    "encoder_layers": "num_hidden_layers",
    "num_layers": "num_hidden_layers",  # early versions of the transformers port
    "encoder_embed_dim": "hidden_size",
    "embedding_dim": "hidden_size",
    "encoder_ffn_embed_dim": "intermediate_size",
    "ffn_embedding_dim": "intermediate_size",
    "encoder_attention_heads": "num_attention_heads",
    "act_dropout": "activation_dropout",
    "share_encoder_input_output_embed": "share_input_output_embed",
}

# Options of the original / the port that change nothing at inference or are not implemented by the
# original either: accepted at their defaults, refused otherwise (never silently ignored).
INERT_DEFAULTS = {
    "q_noise": 0.0, "qn_block_size": 8, "kdim": None, "vdim": None, "bias": True, "self_attention": True,
    "traceable": False, "embed_scale": None, "layerdrop": 0.0, "freeze_embeddings": False,
    "num_trans_layers_to_freeze": 0, "share_input_output_embed": False, "export": False,
}


class GraphormerConfig(PretrainedConfig):
    """Configuration of Graphormer (Ying et al., 2021) and its post-LN "Graphormer-V2" variant.

    `pre_layernorm=False` (post-LN, the released PCQM4M models) or True (pre-LN, the molhiv model);
    `encoder_normalize_before` adds the LayerNorm after the embeddings. `num_classes` is the width of
    the graph-level output. Embedding table sizes (`num_atoms`, `num_edges`, ...) and `multi_hop_max_dist`
    must match the featurizer (defaults: the original PCQM4M task). `edge_type="multi_hop"` encodes the
    bonds along shortest paths; any other value, as in the original, uses only direct bonds.

        config = GraphormerConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_classes=1)
    """

    model_type = "graphormer"
    def __init__(
        self,
        num_hidden_layers: int = 12,
        hidden_size: int = 768,
        intermediate_size: int = 768,
        num_attention_heads: int = 32,
        num_classes: int = 1,
        num_atoms: int = 512 * 9,
        num_edges: int = 512 * 3,
        num_in_degree: int = 512,
        num_out_degree: int = 512,
        num_spatial: int = 512,
        num_edge_dis: int = 128,
        edge_type: str = "multi_hop",
        multi_hop_max_dist: int = 5,
        spatial_pos_max: int = 1024,
        max_nodes: int = 128,
        dropout: float = 0.0,
        attention_dropout: float = 0.1,
        activation_dropout: float = 0.1,
        activation_fn: str = "gelu",
        pre_layernorm: bool = False,
        encoder_normalize_before: bool = True,
        apply_graphormer_init: bool = True,
        init_std: float = 0.02,
        regression_loss: str = "l1",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("auto_map", {
            "AutoConfig": "configuration_graphormer.GraphormerConfig",
            "AutoModel": "modeling_graphormer.GraphormerModel",
            "AutoModelForSequenceClassification": "modeling_graphormer.GraphormerForGraphClassification",
            "AutoModelForPreTraining": "modeling_graphormer.GraphormerForGraphRegression",
        })
        named = {
            "num_hidden_layers": num_hidden_layers, "hidden_size": hidden_size,
            "intermediate_size": intermediate_size, "num_attention_heads": num_attention_heads,
            "activation_dropout": activation_dropout,
        }
        defaults = {"num_hidden_layers": 12, "hidden_size": 768, "intermediate_size": 768, "num_attention_heads": 32,
                    "activation_dropout": 0.1}  # the signature's
        for alias, name in ALIASES.items():
            if alias not in kwargs:
                continue
            value = kwargs.pop(alias)
            if name == "share_input_output_embed":
                kwargs[name] = value
            elif named[name] != defaults[name] and named[name] != value:
                raise ValueError(f"GraphormerConfig: {alias}={value!r} contradicts {name}={named[name]!r}")
            else:
                named[name] = value
        for name, default in INERT_DEFAULTS.items():
            value = kwargs.pop(name, default)
            allowed = (default, named["hidden_size"]) if name in ("kdim", "vdim") else (default,)
            if value not in allowed:
                raise ValueError(
                    f"GraphormerConfig: {name}={value!r} is not supported (only {default!r}); the original "
                    "Graphormer graph-prediction models do not use it either"
                )
        if not isinstance(edge_type, str):
            raise ValueError(f"GraphormerConfig: edge_type must be a string ('multi_hop' or another), not {edge_type!r}")
        if regression_loss not in ("l1", "mse"):
            raise ValueError(f"GraphormerConfig: regression_loss must be 'l1' or 'mse', not {regression_loss!r}")
        if named["hidden_size"] % named["num_attention_heads"]:
            raise ValueError(
                f"GraphormerConfig: hidden_size={named['hidden_size']} is not a multiple of "
                f"num_attention_heads={named['num_attention_heads']}"
            )
        self.num_hidden_layers = named["num_hidden_layers"]
        self.hidden_size = named["hidden_size"]
        self.intermediate_size = named["intermediate_size"]
        self.num_attention_heads = named["num_attention_heads"]
        self.activation_dropout = named["activation_dropout"]
        self.num_classes = num_classes
        self.num_atoms = num_atoms
        self.num_edges = num_edges
        self.num_in_degree = num_in_degree
        self.num_out_degree = num_out_degree
        self.num_spatial = num_spatial
        self.num_edge_dis = num_edge_dis
        self.edge_type = edge_type
        self.multi_hop_max_dist = multi_hop_max_dist
        self.spatial_pos_max = spatial_pos_max
        self.max_nodes = max_nodes
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation_fn = activation_fn
        self.pre_layernorm = pre_layernorm
        self.encoder_normalize_before = encoder_normalize_before
        self.apply_graphormer_init = apply_graphormer_init
        self.init_std = init_std
        self.regression_loss = regression_loss
        super().__init__(**kwargs)

    @property
    def embedding_dim(self) -> int:
        """The transformers-4.x name of `hidden_size`."""
        return self.hidden_size

    @property
    def ffn_embedding_dim(self) -> int:
        """The transformers-4.x name of `intermediate_size`."""
        return self.intermediate_size
