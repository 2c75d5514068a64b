"""The Graphormer reference cases (tests/fixtures/graphormer/<case>/meta.json) and the facts tests read from them.

Kinds, from what meta.json declares:
- "fairseq": a `checkpoint` written by microsoft/Graphormer's fairseq-train; its `model_args.arch` must be one the
  original registers. Its head comes from the criterion recorded in the checkpoint (CRITERION_HEADS).
- "transformers-4.x": `produced_by.library == "transformers"`: a folder saved by transformers 4.x's port; its
  config.json `architectures` must be one the port had.
- "featurize": no model, `per_item_keys` of the original's preprocess_item.
"""

from __future__ import annotations

from pathlib import Path

from tests.fixture_cases import Family, Unhandled, expect_one_of

ARCHS = ["graphormer", "graphormer_base", "graphormer_slim", "graphormer_large"]  # graphormer/models/graphormer.py
HF4X_ARCHITECTURES = ["GraphormerForGraphClassification", "GraphormerModel"]
# microsoft/Graphormer graphormer/criterions -> the zoo head whose loss is the criterion's
CRITERION_HEADS = {
    "l1_loss": "regression", "l1_loss_with_flag": "regression",
    "binary_logloss": "classification", "binary_logloss_with_flag": "classification",
    "multiclass_cross_entropy": "classification", "multiclass_cross_entropy_with_flag": "classification",
}
ITEM_KEYS = ["x", "attn_edge_type", "spatial_pos", "in_degree", "edge_input", "attn_bias"]
# every output an expected.safetensors can hold (see public_postln/README.md); each present one is compared
EXPECTED_OUTPUTS = ["node_feature", "attn_bias_full", "inner_states", "last_hidden_state", "graph_rep", "head_hidden",
                    "logits_all_nodes", "graph_prediction"]


def classify(folder: Path, meta: dict) -> str:
    if "checkpoint" in meta:
        expect_one_of(meta["model_args"]["arch"], ARCHS, "arch")
        return "fairseq"
    produced_by = meta.get("produced_by", {})
    if "library" in produced_by:
        expect_one_of(produced_by["library"], ["transformers"], "producing library")
        return "transformers-4.x"
    if "per_item_keys" in meta:
        unknown = sorted(set(meta["per_item_keys"]) - set(ITEM_KEYS))
        if unknown:
            raise Unhandled(f"per_item_keys {unknown} are not ones the tests compare ({ITEM_KEYS})")
        return "featurize"
    raise Unhandled("meta.json declares no checkpoint, no producing library and no per_item_keys")


FAMILY = Family("graphormer", classify)


def cases(*kinds: str) -> list:
    return FAMILY.cases(*kinds)


def first(kind: str):
    found = [c for c in FAMILY.all() if c.kind == kind]
    assert found, f"no graphormer case of kind {kind!r}"
    return found[0]


def source(case) -> Path:
    """What the converter reads for a model case: the fairseq file, or the transformers-4.x folder."""
    return case.file(case.meta["checkpoint"]["file"]) if case.kind == "fairseq" else case.folder


def expected_head(case) -> str:
    """The head whose loss the original trained: the fairseq criterion, or the 4.x port's architecture."""
    if case.kind == "fairseq":
        from conversion.safe_checkpoint import read_checkpoint

        cfg = read_checkpoint(source(case))["cfg"]
        return CRITERION_HEADS[expect_one_of(cfg["criterion"]["_name"], CRITERION_HEADS, f"{case.where}: criterion")]
    import json

    architectures = json.loads(case.file("config.json").read_text())["architectures"]
    assert len(architectures) == 1, f"{case.where}: config.json architectures {architectures}"
    arch = expect_one_of(architectures[0], HF4X_ARCHITECTURES, f"{case.where}: architecture")
    return "classification" if arch == "GraphormerForGraphClassification" else "none"
