"""Model cards for zoo folders (the rest of the Hub tooling builds on these).

    from zoo.hub import write_card
    write_card("converted/musicbert_base", variant="musicbert_base")
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .auto import families
from .fileio import atomic_write_text, sha256_file
from .registry import model_info

__all__ = ["CARDS_DIR", "card_template", "folder_files", "render_card", "write_card"]

CARDS_DIR = Path(__file__).resolve().parent.parent / "cards"
CONVERSION_FILE = "conversion.json"  # written by converters: source checkpoint, command, parity check
METRICS_FILE = "metrics.json"  # written by `zoo finetune`: dataset, split, metric values


def card_template(family: str) -> Path:
    path = CARDS_DIR / f"{family}.md"
    if not path.is_file():
        raise FileNotFoundError(f"no card template for family '{family}' (expected {path})")
    return path


def folder_files(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Name, size and sha256 of every file in a folder (README.md excluded: it is being written)."""
    folder = Path(folder)
    rows = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel == "README.md" or rel.startswith("."):
            continue
        rows.append({"name": rel, "size": path.stat().st_size, "sha256": sha256_file(path)})
    return rows


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _family_of(config: dict[str, Any]) -> str:
    model_type = config.get("model_type")
    for name, family in families().items():
        if family.config_class.model_type == model_type:
            return name
    raise ValueError(f"config.json model_type '{model_type}' belongs to no registered zoo family")


def _eval_results(metrics: dict[str, Any], model_name: str) -> list[EvalResult] | None:
    results = []
    for row in metrics.get("results", []):
        results.append(
            EvalResult(
                task_type=row["task_type"], dataset_type=row["dataset_type"], dataset_name=row["dataset_name"],
                metric_type=row["metric_type"], metric_value=row["metric_value"],
                dataset_split=row.get("dataset_split"), metric_name=row.get("metric_name"),
                source_name=row.get("source_name"), source_url=row.get("source_url"),
            )
        )
    return results or None


def render_card(
    folder: str | os.PathLike,
    *,
    variant: str | None = None,
    repo_id: str | None = None,
    base_model: str | None = None,
    extra: dict[str, Any] | None = None,
    template: str | os.PathLike | None = None,
) -> ModelCard:
    """Render the family's card template for a zoo folder (config.json present, weights written).

    The template (cards/<family>.md, Jinja2) receives: repo_id, variant, entry (the registry entry as a
    dict, or None), family, config (config.json), architecture, conversion (conversion.json),
    metrics (metrics.json), files (name/size/sha256 rows) and everything in `extra`. `template`
    replaces the family's template file.
    """
    folder = Path(folder)
    config = _read_json(folder / "config.json")
    if not config:
        raise FileNotFoundError(f"{folder}: no config.json; render the card after saving the model")
    family = _family_of(config)
    entry = model_info(variant) if variant else None
    conversion = _read_json(folder / CONVERSION_FILE)
    metrics = _read_json(folder / METRICS_FILE)
    repo_id = repo_id or folder.name
    architecture = (config.get("architectures") or [None])[0]
    tags = ["zoo", family, *(metrics.get("tags", []))]
    card_data = ModelCardData(
        library_name="transformers",
        license=entry.license if entry else "mit",
        tags=tags,
        pipeline_tag=(extra or {}).get("pipeline_tag"),
        base_model=base_model or metrics.get("base_model"),
        datasets=metrics.get("datasets"),
        model_name=repo_id,
        eval_results=_eval_results(metrics, repo_id),
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template or card_template(family)),
        repo_id=repo_id,
        variant=variant,
        entry=entry.to_dict() if entry else None,
        family=family,
        config=config,
        architecture=architecture,
        conversion=conversion,
        metrics=metrics,
        files=folder_files(folder),
        **(extra or {}),
    )


def write_card(folder: str | os.PathLike, **kwargs: Any) -> Path:
    """Render the card (see `render_card`) and write it atomically to `folder/README.md`."""
    card = render_card(folder, **kwargs)
    return atomic_write_text(Path(folder) / "README.md", str(card))
