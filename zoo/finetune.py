"""Trainer-based fine-tuning recipes shared by every family.

A family registers recipes (a data set adapter, a collator and metrics); the runner does the rest:
builds or loads the variant, trains with the transformers Trainer (tqdm progress, multi-process when
started with `torchrun` / `accelerate launch`), evaluates, and writes a complete Hub folder: weights,
config, processor files, metrics.json, a PNG of the training curves and the model card.

    from zoo.finetune import finetune
    metrics = finetune("graphormer_base_pcqm4mv2", "b3db_bbb", "runs/bbb", pretrained="converted/pcqm4mv2")
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .fileio import atomic_write_json, staged_folder
from .registry import create_model, model_info

if TYPE_CHECKING:  # the Trainer stack is imported when a run starts, not on `import zoo`
    from transformers import EvalPrediction

__all__ = ["FinetuneInputError", "Recipe", "RecipeData", "RecipeOptions", "build_model", "check_finetune_inputs", "finetune",
           "get_recipe", "list_recipes", "register_recipe"]


@dataclass
class RecipeOptions:
    """What a recipe's loader may be asked for."""

    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    seed: int = 0
    cache_dir: Path = field(default_factory=lambda: Path(os.environ.get("ZOO_CACHE", Path.home() / ".cache" / "zoo")))
    quick: bool = False  # a small subset, for the demo and tests


@dataclass
class RecipeData:
    """A recipe's prepared data: feature dicts, the collator that batches them, and how to score them."""

    train: Sequence[dict[str, Any]]
    eval: Sequence[dict[str, Any]]
    collator: Callable[[list[dict[str, Any]]], dict[str, Any]]
    model_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. num_labels, problem_type
    compute_metrics: Callable[[EvalPrediction], dict[str, float]] | None = None
    metric_for_best_model: str | None = None  # e.g. "roc_auc"; reported first in the card
    processor: Any = None  # tokenizer / featurizer saved next to the weights
    # For the card's model-index: {"task_type", "dataset_type", "dataset_name", "dataset_split",
    # "metrics": {metric key in eval results without "eval_": card metric type}}
    results_spec: dict[str, Any] | None = None
    datasets: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Recipe:
    name: str
    family: str
    variant: str  # the registry variant this recipe starts from by default
    description: str
    dataset: str  # the data set, its source and licence, for the card
    load: Callable[[RecipeOptions], RecipeData]
    learning_rate: float = 5e-5
    epochs: float = 3.0
    batch_size: int = 16
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0


_RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    if recipe.name in _RECIPES and _RECIPES[recipe.name] != recipe:
        raise ValueError(f"recipe '{recipe.name}' is already registered")
    _RECIPES[recipe.name] = recipe
    return recipe


def list_recipes(family: str | None = None) -> list[str]:
    return sorted(name for name, r in _RECIPES.items() if family is None or r.family == family)


def get_recipe(name: str) -> Recipe:
    try:
        return _RECIPES[name]
    except KeyError:
        known = ", ".join(list_recipes()) or "none registered"
        raise KeyError(f"no fine-tuning recipe named '{name}' (known: {known})") from None


class FinetuneInputError(ValueError):
    """A fine-tuning run asked for parts that do not fit together (found before any work starts)."""


def check_finetune_inputs(variant: str, recipe: str, pretrained: str | os.PathLike | None = None) -> None:
    """Raise FinetuneInputError when the recipe belongs to another family than the variant, or when a local
    `pretrained` folder holds another family's model; unknown names raise the registry's LookupErrors."""
    from .auto import get_family

    entry = model_info(variant)
    spec = get_recipe(recipe)
    if spec.family != entry.family:
        fitting = ", ".join(list_recipes(entry.family)) or "none registered"
        raise FinetuneInputError(
            f"recipe '{recipe}' is a {spec.family} recipe, but variant '{variant}' is a {entry.family} model; "
            f"{entry.family} recipes: {fitting} (or pick a {spec.family} variant, e.g. '{spec.variant}')")
    if pretrained is None:
        return
    folder = Path(pretrained)
    if folder.exists() and not (folder / "config.json").is_file():
        raise FinetuneInputError(f"--pretrained {folder}: no config.json there; pass a zoo folder or a Hub repo id")
    if folder.is_dir():
        try:
            model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        except (OSError, ValueError) as err:
            raise FinetuneInputError(f"--pretrained {folder}: config.json does not parse ({err})") from None
        expected = get_family(entry.family).config_class.model_type
        if model_type != expected:
            raise FinetuneInputError(
                f"--pretrained {folder} holds a '{model_type}' model, but variant '{variant}' is a {entry.family} "
                f"model ('{expected}'); pick the variant of that folder's family")


def _curves(log_history: list[dict[str, Any]]) -> dict[str, list[list[float]]]:
    curves: dict[str, list[list[float]]] = {}
    for row in log_history:
        step = row.get("step")
        for key, value in row.items():
            if key in ("loss", "eval_loss") or (key.startswith("eval_") and isinstance(value, (int, float))):
                if key.endswith(("_runtime", "_samples_per_second", "_steps_per_second")) or key == "epoch":
                    continue
                curves.setdefault(key, []).append([step, float(value)])
    return curves


def plot_curves(curves: dict[str, list[list[float]]], path: Path, title: str) -> None:
    """Training loss and every eval metric against the step, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name in curves if curves[name]]
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(4 * max(len(names), 1), 3.2), squeeze=False)
    for axis, name in zip(axes[0], names):
        steps, values = zip(*curves[name])
        axis.plot(steps, values, marker="o" if len(steps) < 30 else None)
        axis.set_title(name)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def _card_results(data: RecipeData, eval_metrics: dict[str, float], recipe: Recipe) -> list[dict[str, Any]]:
    spec = data.results_spec
    if not spec:
        return []
    rows = []
    for key, metric_type in spec["metrics"].items():
        value = eval_metrics.get(f"eval_{key}")
        if value is None or not math.isfinite(value):
            continue
        rows.append({
            "task_type": spec["task_type"], "dataset_type": spec["dataset_type"],
            "dataset_name": spec["dataset_name"], "dataset_split": spec.get("dataset_split", "validation"),
            "metric_type": metric_type, "metric_value": round(float(value), 6),
            "metric_name": key,
        })
    return rows


def finetune(
    variant: str,
    recipe: str,
    out_dir: str | os.PathLike,
    *,
    pretrained: str | os.PathLike | None = None,
    revision: str | None = None,
    epochs: float | None = None,
    max_steps: int = -1,
    learning_rate: float | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    options: RecipeOptions | None = None,
    overwrite: bool = False,
    eval_steps: int | None = None,
    card_template: str | os.PathLike | None = None,
    model_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fine-tune a registered variant on a recipe and write a publishable folder to `out_dir`.

    Returns the metrics written to `out_dir/metrics.json`. Started under `torchrun` or
    `accelerate launch`, the Trainer trains data-parallel and only the main process writes.
    """
    from transformers import Trainer, TrainingArguments

    from .hub import METRICS_FILE, write_card

    check_finetune_inputs(variant, recipe, pretrained)
    entry = model_info(variant)
    spec = get_recipe(recipe)
    options = options or RecipeOptions(seed=seed)
    data = spec.load(options)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    model = build_model(variant, data, pretrained=pretrained, revision=revision, seed=seed,
                        model_overrides=model_overrides)

    scratch = Path(tempfile.mkdtemp(prefix=".zoo-finetune-"))
    args = TrainingArguments(
        output_dir=str(scratch),
        num_train_epochs=epochs if epochs is not None else spec.epochs,
        max_steps=max_steps,
        learning_rate=learning_rate if learning_rate is not None else spec.learning_rate,
        per_device_train_batch_size=batch_size or spec.batch_size,
        per_device_eval_batch_size=batch_size or spec.batch_size,
        weight_decay=spec.weight_decay,
        warmup_steps=spec.warmup_ratio,  # transformers 5: a float < 1 is a fraction of the total steps
        eval_strategy="steps" if eval_steps else "epoch",
        eval_steps=eval_steps,
        logging_steps=0.05,  # a float < 1 is a fraction of the total steps: about 20 points per curve
        save_strategy="no",
        report_to=[],
        seed=seed,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=data.train, eval_dataset=data.eval,
        data_collator=data.collator, compute_metrics=data.compute_metrics,
    )
    train_result = trainer.train()
    eval_metrics = trainer.evaluate()
    metrics = {
        "variant": variant, "recipe": recipe, "dataset": spec.dataset, "base_model": _base_model(pretrained, variant),
        "train": dict(train_result.metrics), "eval": eval_metrics, "curves": _curves(trainer.state.log_history),
        "metric_for_best_model": data.metric_for_best_model, "datasets": data.datasets or None,
        "results": _card_results(data, eval_metrics, spec), "tags": ["fine-tuned", entry.family, entry.task],
        "train_samples": len(data.train), "eval_samples": len(data.eval),
        "world_size": trainer.args.world_size,
    }
    if trainer.is_world_process_zero():
        with staged_folder(out_dir, overwrite=overwrite) as stage:
            trainer.model.save_pretrained(stage)
            if data.processor is not None:
                data.processor.save_pretrained(stage)
            atomic_write_json(stage / METRICS_FILE, metrics)
            plot_curves(metrics["curves"], stage / "training_curves.png", f"{variant} on {recipe}")
            write_card(stage, variant=variant, repo_id=out_dir.name, template=card_template)
    shutil.rmtree(scratch, ignore_errors=True)
    return metrics


def build_model(variant: str, data: RecipeData, *, pretrained: str | os.PathLike | None = None,
                revision: str | None = None, seed: int = 0, model_overrides: dict[str, Any] | None = None):
    """The variant with the recipe's head overrides: from `pretrained` weights, or freshly initialised (seeded)."""
    overrides = {**data.model_overrides, **(model_overrides or {})}
    if pretrained is not None:
        return create_model(variant, pretrained=pretrained, revision=revision, ignore_mismatched_sizes=True, **overrides)
    torch.manual_seed(seed)
    return create_model(variant, **overrides)


def _base_model(pretrained: bool | str | os.PathLike | None, variant: str | None = None) -> str | None:
    """The Hub repo a run started from (card `base_model`), when there is one."""
    if pretrained is None or pretrained is False:
        return None
    if pretrained is True:  # the variant's released weights: its converted repo, when one is configured
        from .pull import hub_repo_id

        return hub_repo_id(model_info(variant)) if variant else None
    path = Path(pretrained)
    snapshot = [part for part in path.resolve().parts if part.startswith("models--")] if path.is_dir() else []
    if snapshot:  # a folder of the Hub cache: models--ORG--NAME/snapshots/<commit>
        return snapshot[-1].removeprefix("models--").replace("--", "/", 1)
    if path.is_dir():
        config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
        return config.get("_name_or_path") or None
    return str(pretrained)
