"""Graphormer-3D (OC20 IS2RE): Auto-class registration and the released base checkpoint, as data."""

from __future__ import annotations

from typing import Any

from zoo.auto import register_family
from zoo.models.graphormer3d import (
    Graphormer3DConfig,
    Graphormer3DFeaturizer,
    Graphormer3DForIS2RE,
    Graphormer3DModel,
    example_system,
)
from zoo.registry import ModelEntry, OriginalCheckpoint, register_model

PAPER = "Benchmarking Graphormer on Large-Scale Molecular Modeling Datasets (Shi et al., 2022)"
PAPER_URL = "https://arxiv.org/abs/2203.04810"


def graphormer3d_dummy_inputs(config: Graphormer3DConfig, model_class: type) -> dict[str, Any]:
    """One featurized slab + adsorbate system (Cu surface, O adsorbate, periodic images included)."""
    batch = Graphormer3DFeaturizer()([example_system()])
    return {key: batch[key] for key in ("atom_ids", "tags", "positions", "real_mask")}


FAMILY = register_family(
    "graphormer3d",
    Graphormer3DConfig,
    Graphormer3DModel,
    {"AutoModelForSequenceClassification": Graphormer3DForIS2RE},
    processors={"AutoFeatureExtractor": Graphormer3DFeaturizer},
    dummy_inputs=graphormer3d_dummy_inputs,
)

_TEST_CONFIG = {
    "num_layers": 2,
    "num_blocks": 2,
    "hidden_size": 32,
    "intermediate_size": 32,
    "num_attention_heads": 4,
    "num_kernels": 16,
}

# fields every Graphormer-3D entry shares
_COMMON: dict[str, Any] = dict(
    family="graphormer3d", task="is2re-energy-and-displacement", architecture="Graphormer3DForIS2RE",
    converter="conversion/convert_graphormer3d.py", card="cards/graphormer3d.md", paper=PAPER, paper_url=PAPER_URL,
    license="mit", test_config=_TEST_CONFIG,
)

register_model(
    ModelEntry(
        name="graphormer3d_base_oc20_is2re",
        config={"pair_kernel": "rbf"},
        description=(
            "Graphormer-3D base (12 layers x 4 blocks, 768 dims, 48 heads, 128 RBF kernels) trained on "
            "OC20 IS2RE (all): relaxed adsorption energy and relaxation displacement from the initial "
            "structure."
        ),
        original=OriginalCheckpoint(
            filename="checkpoint_last_oc20_is2re.pt",
            url="https://szheng.blob.core.windows.net/graphormer/modelzoo/oc20is2re/checkpoint_last_oc20_is2re.pt",
            format="fairseq",
            dtype="float16",
            notes=(
                "released 5 Jan 2022 (microsoft/Graphormer PR #79, optimizer state stripped in PR #81); "
                "marked temporarily unavailable since Aug 2022 (PR #134, issue #163). Predates the Gaussian "
                "kernel (PR #91), so it most likely holds rbf.* keys (issue #104); trained with --fp16."
            ),
        ),
        # examples/oc20/README.md: IS2RE direct, test split, energy MAE (eV) of the Graphormer-3D
        # ensemble; the repository reports no metric for the single released model.
        metrics={
            "oc20_is2re_test_energy_mae_ev_id_ensemble": 0.3976,
            "oc20_is2re_test_energy_mae_ev_ood_ads_ensemble": 0.5719,
            "oc20_is2re_test_energy_mae_ev_ood_cat_ensemble": 0.4166,
            "oc20_is2re_test_energy_mae_ev_ood_both_ensemble": 0.5029,
            "oc20_is2re_test_energy_mae_ev_average_ensemble": 0.4722,
        },
        params=45_108_151,
        **_COMMON,
    )
)

register_model(
    ModelEntry(
        name="graphormer3d_base",
        config={"pair_kernel": "gaussian"},
        description=(
            "Graphormer-3D base architecture with the Gaussian pair kernel of the current original code "
            "(no released weights; for training from scratch)."
        ),
        params=45_108_151,
        **_COMMON,
    )
)

