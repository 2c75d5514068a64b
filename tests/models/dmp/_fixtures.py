"""Helpers shared by the DMP tests: fixture discovery and fixture batches as model inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "dmp"


def cases(kind: str) -> list:
    """Every case folder (with meta.json) of a kind: 'featurize' (featurization.json), 'pretrain', 'finetune'."""
    params = []
    for folder in sorted(p for p in FIXTURES.iterdir() if (p / "meta.json").is_file()):
        meta = json.loads((folder / "meta.json").read_text())
        task = ((meta.get("checkpoint") or {}).get("cfg_task") or {}).get("_name")
        found = (
            "featurize" if (folder / "featurization.json").is_file()
            else "pretrain" if task == "dmp" else "finetune" if task == "graph_sp" else None
        )
        if found == kind:
            params.append(pytest.param(folder, meta, id=folder.name))
    return params


def model_inputs(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original collated batch (fairseq src_tokens + PyG batch) under zoo's input names."""
    return {
        "input_ids": tensors["src_tokens"], "atom_features": tensors["graph_x"],
        "edge_index": tensors["graph_edge_index"], "bond_features": tensors["graph_edge_attr"],
        "atom_batch": tensors["graph_batch"],
    }


def load(folder: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(folder / name)
