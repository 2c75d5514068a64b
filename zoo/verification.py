"""The verification record every conversion writes, and `zoo verify`, which reruns it anywhere.

A converted folder holds `verification/`:

- `record.json`: the original file (name, size, sha256, URL), the converter (path and sha256 of its source),
  the zoo / torch / transformers versions, the architecture, the tolerance, and the names and shapes of
  the reference inputs and outputs;
- `inputs.safetensors`: a small batch built by the family's `dummy_inputs` for this config;
- `outputs.safetensors`: every tensor the converted model returned for that batch at conversion time.

`verify(folder_or_repo)` loads the folder (or downloads the Hub repo), reruns the recorded inputs and returns
the max |difference| per output against the recorded outputs, so a user can check a download, another torch
version or another device.

    record = verify("org/graphormer_base_pcqm4mv2")
    print(record.max_abs_diff, record.ok)
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .fileio import atomic_write_json, read_json_object, sha256_file

__all__ = ["RECORD_DIR", "VerificationError", "VerifyResult", "card_section", "read_record", "verify",
           "write_record"]

RECORD_DIR = "verification"
RECORD_FILE = "record.json"
INPUTS_FILE = "inputs.safetensors"
OUTPUTS_FILE = "outputs.safetensors"
DEFAULT_ATOL = 1e-4  # another torch version or device reorders float32 reductions; 1e-4 leaves room for that
MAX_RECORD_BYTES = 1 << 20


class VerificationError(RuntimeError):
    """A folder without a usable verification record, or one whose outputs no longer match it."""


def _zoo_version() -> str:
    from . import __version__

    return __version__


def _load_model(folder: Path, device: str = "cpu"):
    import torch  # noqa: F401

    from .auto import families

    config = json.loads((folder / "config.json").read_text())
    architecture = (config.get("architectures") or [None])[0]
    for family in families().values():
        if family.config_class.model_type == config.get("model_type"):
            classes = family.model_classes
            if architecture not in classes:
                raise VerificationError(f"{folder}: architecture {architecture!r} is not a {family.name} class")
            model = classes[architecture].from_pretrained(folder).to(device).eval()
            return family, model
    raise VerificationError(f"{folder}: config.json model_type {config.get('model_type')!r} is no zoo family")


def _run(model, inputs: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.manual_seed(0)  # heads that draw noise (diffusion steps) draw the same noise every run
    with torch.no_grad():
        output = model(**inputs)
    items = output.items() if hasattr(output, "items") else enumerate(output if isinstance(output, tuple) else [output])
    return {str(k): v.detach().float().cpu().contiguous() for k, v in items
            if isinstance(v, torch.Tensor) and v.is_floating_point()}


def write_record(
    folder: str | os.PathLike,
    *,
    original: str | os.PathLike | None,
    converter: str | os.PathLike,
    variant: str | None = None,
    original_url: str | None = None,
    atol: float = DEFAULT_ATOL,
) -> dict[str, Any]:
    """Write `folder/verification/` for a freshly converted folder (config.json + weights present)."""
    import torch
    import transformers
    from safetensors.torch import save_file

    folder = Path(folder)
    family, model = _load_model(folder)
    if family.dummy_inputs is None:
        raise VerificationError(f"the {family.name} family registered no dummy_inputs; cannot record a check")
    inputs = {k: v for k, v in family.dummy_inputs(model.config, type(model)).items()}
    bad = sorted(k for k, v in inputs.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise VerificationError(f"{family.name} dummy inputs {bad} are not tensors; they cannot be recorded")
    outputs = _run(model, inputs)
    if not outputs:
        raise VerificationError(f"{folder}: the model returned no floating-point tensors to record")
    converter = Path(converter)
    if original_url is None and variant is not None:
        from .registry import model_info

        entry_original = model_info(variant).original
        original_url = entry_original.url if entry_original else None
    original_facts = None
    if original is not None:
        original = Path(original)
        original_facts = {"file": original.name, "size": original.stat().st_size if original.is_file() else None,
                          "sha256": sha256_file(original) if original.is_file() else None, "url": original_url}
    record = {
        "variant": variant,
        "original": original_facts,
        "converter": {"file": f"conversion/{converter.name}",
                      "sha256": sha256_file(converter) if converter.is_file() else None},
        "zoo_version": _zoo_version(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "platform": platform.platform(terse=True),
        "architecture": type(model).__name__,
        "model_type": model.config.model_type,
        "atol": atol,
        "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in inputs.items()},
        "outputs": {k: {"shape": list(v.shape), "abs_max": float(v.abs().max()) if v.numel() else 0.0}
                    for k, v in outputs.items()},
    }
    target = folder / RECORD_DIR
    target.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in inputs.items()}, str(target / INPUTS_FILE))
    save_file(outputs, str(target / OUTPUTS_FILE))
    atomic_write_json(target / RECORD_FILE, record)
    return record


def read_record(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The folder's verification record, or None when it has none."""
    path = Path(folder) / RECORD_DIR / RECORD_FILE
    if not path.is_file():
        return None
    record = read_json_object(path, max_bytes=MAX_RECORD_BYTES, error=VerificationError)
    return record


@dataclass
class VerifyResult:
    """What `verify` found: per-output max |difference|, the tolerance and the verdict."""

    folder: Path
    record: dict[str, Any]
    diffs: dict[str, float] = field(default_factory=dict)
    atol: float = DEFAULT_ATOL
    device: str = "cpu"

    @property
    def max_abs_diff(self) -> float:
        return max(self.diffs.values()) if self.diffs else float("inf")

    @property
    def ok(self) -> bool:
        return bool(self.diffs) and self.max_abs_diff <= self.atol


def _folder_of(folder_or_repo: str | os.PathLike, revision: str | None) -> Path:
    path = Path(folder_or_repo)
    if path.is_dir():
        return path
    text = os.fspath(folder_or_repo)
    if text.count("/") != 1 or text.startswith((".", "/")):
        raise VerificationError(f"{text}: neither a folder nor a Hub repo id (ORG/NAME)")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(text, revision=revision))


def verify(folder_or_repo: str | os.PathLike, *, revision: str | None = None, device: str = "cpu",
           atol: float | None = None) -> VerifyResult:
    """Rerun the recorded inputs of a folder or Hub repo and compare with the recorded outputs."""
    from safetensors.torch import load_file

    folder = _folder_of(folder_or_repo, revision)
    record = read_record(folder)
    if record is None:
        raise VerificationError(f"{folder_or_repo}: no {RECORD_DIR}/{RECORD_FILE}; it was not written by a zoo "
                                f"conversion (run `zoo pull VARIANT` or a converter to make one)")
    for name in (INPUTS_FILE, OUTPUTS_FILE):
        if not (folder / RECORD_DIR / name).is_file():
            raise VerificationError(f"{folder_or_repo}: {RECORD_DIR}/{name} is missing")
    inputs = {k: v.to(device) for k, v in load_file(str(folder / RECORD_DIR / INPUTS_FILE)).items()}
    expected = load_file(str(folder / RECORD_DIR / OUTPUTS_FILE))
    _, model = _load_model(folder, device)
    got = _run(model, inputs)
    missing = sorted(set(expected) - set(got))
    if missing:
        raise VerificationError(f"{folder_or_repo}: the model no longer returns {missing}")
    diffs = {}
    for name, want in expected.items():
        if tuple(got[name].shape) != tuple(want.shape):
            raise VerificationError(f"{folder_or_repo}: output {name} has shape {tuple(got[name].shape)}, "
                                    f"recorded {tuple(want.shape)}")
        diffs[name] = float((got[name] - want).abs().max()) if want.numel() else 0.0
    return VerifyResult(folder, record, diffs, atol if atol is not None else float(record.get("atol", DEFAULT_ATOL)),
                        device)


def card_section(folder: str | os.PathLike, *, base_model: str | None = None) -> str:
    """Markdown for the card: the lineage (original -> converted -> fine-tuned) and the verification record."""
    folder = Path(folder)
    try:
        record = read_record(folder)
    except VerificationError:
        record = None
    metrics_path = folder / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    base = base_model or metrics.get("base_model")
    lines: list[str] = []
    original = (record or {}).get("original") or {}
    if original or base:
        lines += ["", "## Lineage", ""]
        if original:
            where = f"[`{original['file']}`]({original['url']})" if original.get("url") else f"`{original['file']}`"
            lines.append(f"1. original release: {where}, {original.get('size')} bytes, sha256 "
                         f"`{original.get('sha256')}`")
            lines.append(f"2. converted by zoo {record.get('zoo_version')} with `{record['converter']['file']}`"
                         + (f" (variant `{record['variant']}`)" if record.get("variant") else ""))
        if base:
            lines.append(f"{3 if original else 1}. fine-tuned from [`{base}`](../{base})"
                         + (f" with the recipe `{metrics['recipe']}`" if metrics.get("recipe") else ""))
    if record:
        lines += ["", "## Verification", "",
                  f"`{RECORD_DIR}/` holds {len(record.get('inputs', {}))} reference input tensor(s) and the "
                  f"outputs this model gave for them when it was written (torch {record.get('torch_version')}, "
                  f"transformers {record.get('transformers_version')}). Rerun them on your machine:", "",
                  "```", "zoo verify REPO_OR_FOLDER   # prints the max |difference| per output; "
                  f"passes at <= {record.get('atol')}", "```", "",
                  "| output | shape | max abs value |", "| --- | --- | --- |"]
        for name, facts in (record.get("outputs") or {}).items():
            lines.append(f"| {name} | {facts.get('shape')} | {facts.get('abs_max'):.4g} |")
    return "\n".join(lines) + ("\n" if lines else "")
