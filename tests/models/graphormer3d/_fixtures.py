"""The Graphormer-3D reference cases (tests/fixtures/graphormer3d/<case>/meta.json) and the facts tests read.

Every case holds an original checkpoint ("is2re"): its arch must be one microsoft/Graphormer registers, its data
pipeline settings ones the featurizer takes, its tolerance rules ones the tests apply. The family-level
base_state_dict_keys.json (the base-size key list) is not a case.
"""

from __future__ import annotations

from pathlib import Path

from tests.fixture_cases import Family, Unhandled, expect_fields, expect_one_of

ARCHS = ["graphormer3d_base"]  # graphormer/models/graphormer_3d.py
PIPELINE_FIELDS = ["cell_offsets", "cutoff", "filter_by_tag", "pad_multiple", "atom_list", "unknown_atom_id",
                   "padding_atom_id", "min_cutoff_margin_A"]
OUTPUT_POSITIONS = ["all systems", "atoms != 0"]
# expected.safetensors entries compared under tolerance.intermediates, by the positions they are compared at
PER_ATOM = ["graph_node_feature", "edge_feature_sum", "final_hidden", "energy_proj", "energy_agg_factor",
            "layer_outputs"]
PAIRS = ["gbf_feature", "delta_pos_unit"]
BIAS = ["graph_attn_bias"]


def classify(folder: Path, meta: dict) -> str:
    if "checkpoint" not in meta:
        raise Unhandled("meta.json declares no checkpoint")
    expect_one_of(meta["model_args"]["arch"], ARCHS, "arch")
    expect_fields(meta["data_pipeline"], PIPELINE_FIELDS, "data_pipeline")
    expect_one_of(meta["data_pipeline"]["padding_atom_id"], [0], "padding_atom_id")
    for name, rule in meta["tolerance"]["outputs"].items():
        if not rule.get("exact"):
            expect_one_of(rule["positions"], OUTPUT_POSITIONS, f"tolerance positions of {name}")
    return "is2re"


FAMILY = Family("graphormer3d", classify)


def cases() -> list:
    return FAMILY.cases("is2re")


def first():
    assert FAMILY.all(), "no graphormer3d case"
    return FAMILY.all()[0]


def featurizer_for(meta: dict):
    """The featurizer with the case's data-pipeline settings (not the defaults)."""
    from zoo.models.graphormer3d import Graphormer3DFeaturizer

    pipeline = meta["data_pipeline"]
    return Graphormer3DFeaturizer(
        atom_list=pipeline["atom_list"], unknown_atom_id=pipeline["unknown_atom_id"], cutoff=pipeline["cutoff"],
        cell_offsets=pipeline["cell_offsets"], filter_by_tag=pipeline["filter_by_tag"],
        pad_to_multiple_of=pipeline["pad_multiple"],
    )
