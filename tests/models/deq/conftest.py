"""Shared helpers for the DEQ family tests: fixture discovery (tests/fixture_cases.py) and case facts."""

from __future__ import annotations

import re
from pathlib import Path

from tests.fixture_cases import FIXTURES as ALL_FIXTURES
from tests.fixture_cases import BrokenCase, Case, Family, Unhandled, expect_one_of

FIXTURES = ALL_FIXTURES / "deq"
# the `model` string of each original model the tests handle -> the kind of case it makes
MODELS = {
    "MDEQ image classifier (MDEQClsNet, v2 MDEQ-Vision code)": "MDEQ",
    "DEQ-Transformer language model (DEQTransformerLM, DEQ-Sequence v2 code)": "DEQ-Transformer",
}
# the expected-output files the tests know how to check, per kind
OUTPUT_FILES = {
    "MDEQ": {"expected_forward.safetensors", "expected_forward_float32.safetensors", "expected_grad_ift.safetensors",
             "expected_grad_phantom.safetensors", "expected_jacobian.safetensors"},
    "DEQ-Transformer": {"expected_forward.safetensors", "expected_forward_float32.safetensors",
                        "expected_grad_ift.safetensors", "expected_jacobian.safetensors"},
}


def classify(folder: Path, meta: dict) -> str:
    kind = MODELS[expect_one_of(meta["model"], MODELS, "model")]
    unknown = sorted(set(meta["outputs"]) - OUTPUT_FILES[kind])
    if unknown:
        raise Unhandled(f"meta.json outputs declare {unknown}, which no {kind} test checks")
    return kind


FAMILY = Family("deq", classify)


def declaring(kind: str, output_file: str) -> list:
    """The cases of `kind` whose meta.json `outputs` declare `output_file` (broken cases stay in, so they
    fail); a declared file that is missing fails the test through `case.file`."""
    params = FAMILY.cases(kind)
    chosen = []
    for param in params:
        value = param.values[0]
        if isinstance(value, BrokenCase) or output_file in value.meta["outputs"]:
            chosen.append(param)
    return chosen or params  # a kind with no case keeps its failing "no case" entry


def original_checkpoint(case: Case) -> Path:
    """The original-format file of a case: the v1 file when the case has one, else its state dict."""
    if "v1_checkpoint" in case.meta:
        return case.file(case.meta["v1_checkpoint"]["file"])
    return case.file(next(iter(case.meta["checkpoint"])))


def unrolled_steps(expected: dict, prefix: str = "logits_unrolled_K") -> list[int]:
    """The unrolled step counts K that the expected file holds (keys `<prefix><K>`)."""
    return sorted(int(m.group(1)) for key in expected if (m := re.fullmatch(re.escape(prefix) + r"(\d+)", key)))


def numbered(expected: dict, prefix: str) -> list[str]:
    """Keys `<prefix>0`, `<prefix>1`, ... in order (e.g. the branches of an equilibrium state)."""
    found = sorted((int(m.group(1)), key) for key in expected if (m := re.fullmatch(re.escape(prefix) + r"(\d+)", key)))
    return [key for _, key in found]
