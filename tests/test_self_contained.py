"""Family folders are copied into saved folders for trust_remote_code: they may import only torch,
transformers, numpy, the standard library and files of their own folder (anything else lazily, inside
functions of processing code)."""

import ast
import sys
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parent.parent / "zoo" / "models"
ALLOWED_TOP = {"torch", "transformers", "numpy", "safetensors", "huggingface_hub", "tokenizers"}


def family_files():
    return sorted(p for p in MODELS.glob("*/*.py") if p.name != "__init__.py")


def top_level_imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield "." * node.level + (node.module or "")


@pytest.mark.parametrize("path", family_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_family_file_imports_only_allowed_modules(path):
    for name in top_level_imports(path):
        if name.startswith("."):
            assert not name.startswith(".."), f"{path.name}: {name} leaves the family folder"
            continue
        top = name.split(".")[0]
        assert top in ALLOWED_TOP or top in sys.stdlib_module_names, f"{path}: top-level import of {name}"
