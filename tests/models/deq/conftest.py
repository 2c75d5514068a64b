"""Shared helpers for the DEQ family tests: fixture discovery and one conversion per fixture case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "deq"


def fixture_cases(kind: str) -> list:
    """Every case folder holding a meta.json whose `model` names `kind` ("MDEQ" or "DEQ-Transformer")."""
    cases = []
    for folder in sorted(p for p in FIXTURES.iterdir() if (p / "meta.json").is_file()):
        meta = json.loads((folder / "meta.json").read_text())
        if meta["model"].startswith(kind):
            cases.append(pytest.param(folder, id=folder.name))
    return cases


def original_checkpoint(folder: Path, meta: dict) -> Path:
    """The original-format file of a case: the v1 file when the case has one, else its state dict."""
    if "v1_checkpoint" in meta:
        return folder / meta["v1_checkpoint"]["file"]
    return folder / next(iter(meta["checkpoint"]))
