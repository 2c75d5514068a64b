"""Discovery of the MusicBERT reference cases: every folder under tests/fixtures/musicbert with a meta.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "fixtures" / "musicbert"


def cases(kind_prefix: str) -> list:
    """pytest params (id = folder name) of the case folders whose meta.json `kind` starts with the prefix."""
    found = []
    for meta_path in sorted(ROOT.rglob("meta.json")):
        meta = json.loads(meta_path.read_text())
        if str(meta.get("kind", "")).startswith(kind_prefix):
            found.append(pytest.param(meta_path.parent, meta, id=meta_path.parent.name))
    return found
