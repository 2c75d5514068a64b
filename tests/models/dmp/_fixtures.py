"""The DMP reference cases (tests/fixtures/dmp/<case>/meta.json), the facts the tests read from them, and fixture
batches as model inputs.

Kinds: a case with a `checkpoint` is "pretrain" (task `dmp`) or "finetune" (task `graph_sp`), by the task recorded
in the checkpoint's cfg; its criterion and arch must be ones the tests know. A case without a checkpoint that
describes the preprocessing `pipeline` is "featurize". Anything else fails, naming what it declares.
Shared, non-case folders: `vocab/` (the original dictionary) and any folder without meta.json that holds a
`shapes.json` (an original release's state-dict shape table, found by content: `shape_tables()`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from tests.fixture_cases import FIXTURES, BrokenCase, Family, Unhandled, expect_one_of

TASKS = {"dmp": "pretrain", "graph_sp": "finetune"}  # fairseq task -> kind
CRITERIA = {"dmp": "dmp", "graph_sp": "graph_sp"}  # task -> the criterion the tests reproduce with it
ARCHS = ["dmp"]
# the input file of a kind that holds the clean (unmasked) collated batch
CLEAN_INPUTS = {"pretrain": "inputs_clean.safetensors", "finetune": "inputs.safetensors"}
SHAPE_TABLE_KEYS = ("state_dict_shapes", "tied", "param_counts_by_group", "model_cfg")
RESOURCES = {"vocab"} | {path.parent.name for path in (FIXTURES / "dmp").glob("*/shapes.json")
                         if not (path.parent / "meta.json").exists()}


def classify(folder: Path, meta: dict) -> str:
    checkpoint = meta.get("checkpoint")
    if checkpoint is None:
        if "pipeline" in meta and "atom_feature_dims" in meta:
            return "featurize"
        raise Unhandled("meta.json declares neither a checkpoint nor a featurization pipeline")
    task = expect_one_of(checkpoint["cfg_task"]["_name"], TASKS, "task")
    expect_one_of(checkpoint["cfg_model"]["_name"], ARCHS, "arch")
    expect_one_of(checkpoint["cfg_criterion"]["_name"], [CRITERIA[task]], f"criterion (with task {task!r})")
    if task == "graph_sp":
        problem_type(meta)
    return TASKS[task]


def problem_type(meta: dict) -> str:
    """The loss the original graph_sp criterion used: MSE for a regression target, else cross-entropy."""
    task = meta["checkpoint"]["cfg_task"]
    regression = expect_one_of(task["regression_target"], [True, False], "regression_target")
    if regression and task["num_classes"] != 1:
        raise Unhandled(f"regression_target with num_classes {task['num_classes']} (the original's regression "
                        "criterion flattens the logits: one output per molecule)")
    return "regression" if regression else "single_label_classification"


FAMILY = Family("dmp", classify, resources=RESOURCES)
FIXTURES_DMP = FIXTURES / "dmp"


def cases(*kinds: str) -> list:
    return FAMILY.cases(*kinds)


def shape_tables() -> list:
    """pytest params: every release shape table (`<folder>/shapes.json` beside no meta.json), each of which must
    declare SHAPE_TABLE_KEYS; none at all is one failing param."""
    import json

    import pytest

    params = []
    for name in sorted(RESOURCES - {"vocab"}):
        path = FIXTURES_DMP / name / "shapes.json"
        table = json.loads(path.read_text())
        missing = [key for key in SHAPE_TABLE_KEYS if key not in table]
        params.append(pytest.param(BrokenCase("dmp", f"tests/fixtures/dmp/{name}", f"shapes.json lacks {missing}")
                                   if missing else table, id=name))
    return params or [pytest.param(BrokenCase("dmp", "tests/fixtures/dmp", "no release shape table (shapes.json)"),
                                   id="no-shape-table")]


def first(kind: str):
    """One case of a kind, for tests that need a real checkpoint as input rather than a parity check."""
    found = [c for c in FAMILY.all() if c.kind == kind]
    assert found, f"no dmp case of kind {kind!r}"
    return found[0]


def dictionary(meta: dict) -> dict[str, int]:
    """token -> id as fairseq's Dictionary.load builds it from the shared dict.txt: the specials, the file's
    tokens from `first_file_token_id` on, then [MASK]; the file's hash and length are checked against meta."""
    facts = meta["dictionary"]
    path = FIXTURES_DMP / "vocab" / "dict.txt"
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == facts["sha256"], f"{path} is not the dictionary meta.json names"
    lines = data.decode().splitlines()
    assert len(lines) == facts["lines"]
    vocab = dict(facts["specials"])
    for offset, line in enumerate(lines):
        vocab.setdefault(line.split()[0], facts["first_file_token_id"] + offset)
    vocab["[MASK]"] = facts["[MASK]"]
    assert len(vocab) == facts["vocab_size_with_mask"]
    return vocab


def model_inputs(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original collated batch (fairseq src_tokens + PyG batch) under zoo's input names."""
    return {
        "input_ids": tensors["src_tokens"], "atom_features": tensors["graph_x"],
        "edge_index": tensors["graph_edge_index"], "bond_features": tensors["graph_edge_attr"],
        "atom_batch": tensors["graph_batch"],
    }
