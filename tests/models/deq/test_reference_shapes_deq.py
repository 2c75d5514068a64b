"""tests/fixtures/deq/reference_state_dict_shapes.json: the ORIGINAL models built from the repository's yaml /
shell configs (key -> shape, parameter counts). Every catalogued variant must have exactly those keys and
shapes (through the converter's key table) and that parameter count."""

from __future__ import annotations

import json

import pytest
import torch

import zoo
from conversion.convert_deq import mdeq_state_dict
from tests.models.deq.conftest import FIXTURES
from zoo.catalog.deq import _VARIANTS

SHAPES = json.loads((FIXTURES / "reference_state_dict_shapes.json").read_text())
BUILT = {name: entry for name, entry in SHAPES["mdeq_v2_yaml_configs"].items() if "state_dict_shapes" in entry}


def test_reference_file_is_consistent():
    """Configs zoo does not catalogue (the *_reg yaml files) are only checked for consistency here."""
    catalogued = {variant["yaml"] for variant in _VARIANTS}
    assert BUILT and catalogued & set(BUILT)
    for name, entry in BUILT.items():
        assert len(entry["state_dict_shapes"]) == entry["n_state_dict_keys"], name
    for name, entry in SHAPES["mdeq_v2_yaml_configs"].items():
        assert name in BUILT or entry["error"], name  # the segmentation configs the original could not build


@pytest.mark.parametrize("variant", [v for v in _VARIANTS if v["yaml"] in BUILT], ids=lambda v: v["name"])
def test_catalogued_mdeq_matches_the_original_layout(variant):
    reference = BUILT[variant["yaml"]]
    with torch.device("meta"):
        model = zoo.create_model(variant["name"])
    original = {key: torch.empty(shape, device="meta") for key, shape in reference["state_dict_shapes"].items()}
    assert len(original) == reference["n_state_dict_keys"]
    mapped = mdeq_state_dict(model, original, variant["yaml"])  # raises on a missing / unused key or a shape
    assert len(mapped) == len(original)
    assert sum(p.numel() for p in model.parameters()) == reference["n_params"] == variant["params"]


def test_deq_transformer_layout():
    reference = SHAPES["deq_transformer_wt103"]["wt103_deq_transformer.sh"]
    assert len(reference["state_dict_shapes"]) == reference["n_state_dict_keys"]
    with torch.device("meta"):
        model = zoo.create_model("deq_transformer_wt103")
    zoo_keys = {k.removeprefix("transformer."): list(v.shape) for k, v in model.state_dict().items()}
    for key, shape in reference["state_dict_shapes"].items():
        assert zoo_keys.get(key) == shape, key
    # the original count includes the storage-shared softmax projections once per name; zoo ties them
    assert sum(p.numel() for p in model.parameters()) <= reference["n_params_unique"]
