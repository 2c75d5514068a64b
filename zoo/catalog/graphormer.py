"""Graphormer: Auto-class registration, the released checkpoints and the architectures, as data."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig, PreTrainedModel

from ..auto import register_family
from ..models.graphormer import (
    GraphormerConfig,
    GraphormerFeaturizer,
    GraphormerForGraphClassification,
    GraphormerForGraphRegression,
    GraphormerModel,
)
from ..registry import ModelEntry, OriginalCheckpoint, register_model

PAPER = "Do Transformers Really Perform Bad for Graph Representation? (Ying et al., NeurIPS 2021)"
PAPER_URL = "https://arxiv.org/abs/2106.05234"
CKPT_BASE = "https://ml2md.blob.core.windows.net/graphormer-ckpts/"
CONVERTER = "conversion/convert_graphormer.py"
CARD = "cards/graphormer.md"

BASE = {"num_hidden_layers": 12, "hidden_size": 768, "intermediate_size": 768, "num_attention_heads": 32,
        "dropout": 0.0, "attention_dropout": 0.1, "activation_dropout": 0.1}
SLIM = {"num_hidden_layers": 12, "hidden_size": 80, "intermediate_size": 80, "num_attention_heads": 8}
LARGE = {"num_hidden_layers": 24, "hidden_size": 1024, "intermediate_size": 1024, "num_attention_heads": 32}
TINY = {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 32, "num_attention_heads": 4}


def dummy_inputs(config: PretrainedConfig, model_class: type[PreTrainedModel]) -> dict[str, Any]:
    """A collated batch of two small synthetic molecular graphs (a ring and a chain; no rdkit needed)."""
    import numpy as np

    def graph(n: int, ring: bool) -> dict[str, np.ndarray]:
        src = list(range(n - 1)) + ([n - 1] if ring else [])
        dst = list(range(1, n)) + ([0] if ring else [])
        edge_index = np.array([src + dst, dst + src], dtype=np.int64)
        node_feat = np.stack([np.arange(n) % 9, np.zeros(n), np.full(n, 2), np.full(n, 5)] + [np.zeros(n)] * 5, 1)
        return {"node_feat": node_feat, "edge_index": edge_index, "edge_feat": np.zeros((edge_index.shape[1], 3))}

    featurizer = GraphormerFeaturizer(multi_hop_max_dist=config.multi_hop_max_dist,
                                      spatial_pos_max=config.spatial_pos_max, max_nodes=config.max_nodes)
    items, _ = featurizer.featurize([graph(6, True), graph(4, False)])
    return featurizer.collate(items)


register_family(
    "graphormer", GraphormerConfig, GraphormerModel,
    {"AutoModelForSequenceClassification": GraphormerForGraphClassification,
     # graph regression is Graphormer's pre-training task (PCQM4M HOMO-LUMO gap)
     "AutoModelForPreTraining": GraphormerForGraphRegression},
    processors={"AutoFeatureExtractor": GraphormerFeaturizer},
    dummy_inputs=dummy_inputs,
)

_COMMON = {"family": "graphormer", "converter": CONVERTER, "card": CARD, "paper": PAPER, "paper_url": PAPER_URL,
           "license": "mit", "test_config": TINY}
_POOLER_NOTE = ("The reported count includes the original's unused masked_lm_pooler (0.59M), which zoo drops; "
                "zoo's model has 47.7M parameters.")

register_model(ModelEntry(
    name="graphormer_base_pcqm4mv1", task="graph-regression", architecture="GraphormerForGraphRegression",
    config={**BASE, "pre_layernorm": False, "num_classes": 1},
    description="Graphormer base (post-LN, 'Graphormer-V2' release) trained on PCQM4Mv1 HOMO-LUMO gap. " + _POOLER_NOTE,
    original=OriginalCheckpoint(
        filename="checkpoint_best_pcqm4mv1.pt", url=CKPT_BASE + "checkpoint_best_pcqm4mv1.pt", format="fairseq",
        dtype="float16", notes="Older link: szheng.blob.core.windows.net/graphormer/modelzoo/pcqm4mv1/"
        "checkpoint_best_pcqm4mv1_full.pt. transformers-4.x copy: clefourrier/graphormer-base-pcqm4mv1."),
    metrics={"pcqm4mv1_valid_mae": 0.1201}, params=48_300_000, recipe="b3db_logbb", **_COMMON,
))
register_model(ModelEntry(
    name="graphormer_base_pcqm4mv2", task="graph-regression", architecture="GraphormerForGraphRegression",
    config={**BASE, "pre_layernorm": False, "num_classes": 1},
    description="Graphormer base (post-LN) trained on PCQM4Mv2 HOMO-LUMO gap. " + _POOLER_NOTE,
    original=OriginalCheckpoint(
        filename="checkpoint_best_pcqm4mv2.pt", url=CKPT_BASE + "checkpoint_best_pcqm4mv2.pt", format="fairseq",
        dtype="float16", notes="Older link: szheng.blob.core.windows.net/graphormer/modelzoo/pcqm4mv2/"
        "checkpoint_best_pcqm4mv2_full.pt. transformers-4.x copy: clefourrier/graphormer-base-pcqm4mv2."),
    metrics={"pcqm4mv2_valid_mae": 0.0865}, params=48_300_000, recipe="b3db_logbb", **_COMMON,
))
register_model(ModelEntry(
    name="graphormer_base_pcqm4mv1_for_molhiv", task="graph-classification",
    architecture="GraphormerForGraphClassification",
    config={**BASE, "pre_layernorm": True, "num_classes": 1},
    description="Graphormer base, pre-LN, pre-trained on PCQM4Mv1 as the starting point for ogbg-molhiv "
                "fine-tuning (binary classification head). The pre-LN final LayerNorm is built but, as in the "
                "original, not applied. " + _POOLER_NOTE,
    original=OriginalCheckpoint(
        filename="checkpoint_base_preln_pcqm4mv1_for_hiv.pt",
        url=CKPT_BASE + "checkpoint_base_preln_pcqm4mv1_for_hiv.pt", format="fairseq", dtype="float16"),
    metrics={"ogbg_molhiv_test_roc_auc": 80.56}, params=48_300_000, recipe="b3db_bbb", **_COMMON,
))
register_model(ModelEntry(
    name="graphormer_base", task="graph-regression", architecture="GraphormerForGraphRegression",
    config={**BASE, "num_classes": 1},
    description="The `graphormer_base` architecture (12 layers, 768 wide, 32 heads), randomly initialised. "
                "Paper (v1): 47.1M parameters, PCQM4M valid MAE 0.1234.",
    metrics={"pcqm4m_valid_mae": 0.1234}, params=47_100_000, recipe="b3db_logbb", **_COMMON,
))
register_model(ModelEntry(
    name="graphormer_slim", task="graph-regression", architecture="GraphormerForGraphRegression",
    config={**SLIM, "num_classes": 1},
    description="The `graphormer_slim` architecture (12 layers, 80 wide, 8 heads), randomly initialised, with "
                "the ogb molecule vocabulary (0.95M parameters). The paper's ZINC model (MAE 0.122) used "
                "ZINC's smaller atom vocabulary (489K parameters).",
    metrics={"zinc_test_mae": 0.122}, params=None, recipe="b3db_logbb", **_COMMON,
))
register_model(ModelEntry(
    name="graphormer_slim_classifier", task="graph-classification", architecture="GraphormerForGraphClassification",
    config={**SLIM, "num_classes": 1},
    description="The `graphormer_slim` architecture with a binary classification head, randomly initialised; "
                "the starting point of the `b3db_bbb` recipe on CPU.",
    params=None, recipe="b3db_bbb", **_COMMON,
))
register_model(ModelEntry(
    name="graphormer_large", task="graph-regression", architecture="GraphormerForGraphRegression",
    config={**LARGE, "num_classes": 1},
    description="The `graphormer_large` architecture (24 layers, 1024 wide, 32 heads), randomly initialised.",
    params=None, **_COMMON,
))

