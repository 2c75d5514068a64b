"""Fine-tune a small MDEQ on scikit-learn's bundled handwritten digits with phantom-gradient training.

The data: `sklearn.datasets.load_digits()` (1,797 greyscale 8x8 images of the digits 0-9, shipped inside
scikit-learn, BSD-3; a copy of the UCI "Optical Recognition of Handwritten Digits" test set). Pixels
(0..16) are scaled to [0, 1] and standardised with the training-split mean and standard deviation; a
fixed, stratified 80/20 split (seed 0) gives 1,438 training and 359 evaluation images.

The recipe `mdeq_digits` plugs into `zoo finetune` and reports, at every evaluation (each epoch),
accuracy, the solver's evaluations of f per batch, the mean / max relative residual ||f(z)-z||/||f(z)||
and the fraction of converged samples; `zoo finetune` plots them next to the loss:

    zoo finetune mdeq_tiny_cifar10 --dataset mdeq_digits --out runs/mdeq_digits
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import EvalPrediction

from zoo.demo import register_demo
from zoo.finetune import Recipe, RecipeData, RecipeOptions, register_recipe

__all__ = ["RECIPE_NAME", "collate_images", "digits_metrics", "load_digits_recipe", "MODEL_OVERRIDES"]

RECIPE_NAME = "mdeq_digits"
# The tiny CIFAR MDEQ adapted to 1-channel 8x8 digits, trained with a 5-step phantom gradient (tau 0.6)
# and the Anderson forward solver; no dropout (the data set is small and the runs are short).
MODEL_OVERRIDES: dict[str, Any] = {
    "num_input_channels": 1, "image_size": [8, 8], "dropout": 0.0,
    "num_channels": [8, 16], "head_channels": [4, 8], "final_chansize": 64, "expansion_factor": 2,
    "num_groups": 4, "f_solver": "anderson", "f_max_iter": 12, "f_tol": 1e-3, "backward": "phantom",
    "phantom_steps": 5, "phantom_tau": 0.6,
    "id2label": {i: str(i) for i in range(10)}, "label2id": {str(i): i for i in range(10)},
}


def _split(n: int, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified 80/20 split, the same for a given seed."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == label))
        cut = int(round(0.8 * len(index)))
        train.extend(index[:cut])
        test.extend(index[cut:])
    return np.sort(np.array(train)), np.sort(np.array(test))


def collate_images(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack feature dicts {"pixel_values": (1, 8, 8) float tensor, "labels": int} into a batch."""
    return {
        "pixel_values": torch.stack([item["pixel_values"] for item in items]),
        "labels": torch.tensor([int(item["labels"]) for item in items], dtype=torch.long),
    }


def digits_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Accuracy plus the equilibrium solver statistics carried in the MDEQ output tuple
    (..., abs_residual, rel_residual, solver_steps, converged) at its end."""
    outputs = prediction.predictions
    logits = outputs[0] if isinstance(outputs, tuple) else outputs
    labels = np.asarray(prediction.label_ids)
    metrics = {"accuracy": float((np.asarray(logits).argmax(-1) == labels).mean())}
    if isinstance(outputs, tuple) and len(outputs) >= 5:
        rel, steps, converged = (np.asarray(x, dtype=float) for x in outputs[-3:])
        metrics.update(
            solver_steps=float(steps.mean()), rel_residual_mean=float(rel.mean()),
            rel_residual_max=float(rel.max()), converged_fraction=float(converged.mean()),
        )
    return metrics


def load_digits_recipe(options: RecipeOptions) -> RecipeData:
    """The digits split as feature dicts, with the collator and metrics for `zoo finetune`."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    labels = digits.target.astype(np.int64)
    train_index, eval_index = _split(len(labels), labels, seed=0)
    mean, std = float(images[train_index].mean()), float(images[train_index].std())
    images = (images - mean) / std  # the same normalisation is saved in the config (image_mean / image_std)
    if options.quick:
        train_index, eval_index = train_index[:320], eval_index[:120]
    if options.max_train_samples:
        train_index = train_index[: options.max_train_samples]
    if options.max_eval_samples:
        eval_index = eval_index[: options.max_eval_samples]

    def features(index: np.ndarray) -> list[dict[str, Any]]:
        return [{"pixel_values": torch.from_numpy(images[i][None].copy()), "labels": int(labels[i])} for i in index]

    return RecipeData(
        train=features(train_index), eval=features(eval_index), collator=collate_images,
        model_overrides={**MODEL_OVERRIDES, "image_mean": mean, "image_std": std}, compute_metrics=digits_metrics, metric_for_best_model="accuracy",
        processor=digits_processor(mean, std),
        results_spec={"task_type": "image-classification", "dataset_type": "sklearn-digits",
                      "dataset_name": "scikit-learn digits (UCI optdigits, 8x8)", "dataset_split": "20% held out",
                      "metrics": {"accuracy": "accuracy"}},
        datasets=[],
    )


def digits_processor(mean: float, std: float):
    """The image processor saved with a digits MDEQ: raw 0..16 digits -> /16, minus mean, over std."""
    from zoo.models.deq import MdeqImageProcessor

    return MdeqImageProcessor(rescale_factor=1 / 16, image_mean=mean, image_std=std, size=[8, 8], num_channels=1)


def held_out_digits() -> tuple[np.ndarray, np.ndarray]:
    """The evaluation split's raw images (0..16) and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = digits.target.astype(np.int64)
    _, eval_index = _split(len(labels), labels, seed=0)
    return digits.images[eval_index].astype(np.float32), labels[eval_index]


def classify_digit(model_path: str, index: int = 0) -> str:
    """Load a fine-tuned folder (path or repo id) and classify one held-out digit; one line of text."""
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(model_path).eval()
    images, labels = held_out_digits()
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(model_path)
    with torch.no_grad():
        out = model(**processor([images[index]]))
    predicted = int(out.logits.argmax(-1))
    return (f"held-out digit #{index} (true {labels[index]}): predicted {predicted}, "
            f"{int(out.solver_steps[0])} solver evaluations, relative residual {float(out.rel_residual[0]):.2e}")


def run_demo(workdir, quick: bool):
    """Convert the bundled v1-layout MDEQ fixture (parity against the original's float32 logits), then
    briefly fine-tune a digits MDEQ with phantom gradients; the folder returned is the fine-tuned one."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    from conversion.convert_deq import convert
    from zoo.demo import DemoResult
    from zoo.finetune import finetune

    workdir = Path(workdir)
    fixture = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "deq" / "mdeq_tiny_v1format_public"
    summary: dict[str, Any] = {}
    if fixture.is_dir():
        meta = json.loads((fixture / "meta.json").read_text())
        converted = convert(fixture / "v1_format_state_dict.pkl", workdir / "mdeq_tiny_v1_converted",
                            config=meta["original_config_yaml"], overwrite=True)
        from transformers import AutoModelForImageClassification

        model = AutoModelForImageClassification.from_pretrained(converted).eval()
        model.config.f_tol, model.config.f_max_iter = 1e-6, 100
        with torch.no_grad():
            logits = model(pixel_values=load_file(fixture / "inputs.safetensors")["images"]).logits
        expected = load_file(fixture / "expected_forward_float32.safetensors")["logits_float32_tight"]
        summary["v1_conversion_max_abs_logit_diff"] = float((logits - expected).abs().max())
    out = workdir / "mdeq_digits"
    metrics = finetune("mdeq_tiny_cifar10", RECIPE_NAME, out, options=RecipeOptions(quick=quick),
                       epochs=15 if quick else 8, learning_rate=5e-3, batch_size=32, overwrite=True)
    summary.update({k.removeprefix("eval_"): round(v, 4) for k, v in metrics["eval"].items()
                    if k in ("eval_accuracy", "eval_solver_steps", "eval_rel_residual_mean")})
    return DemoResult(folder=out, predict=classify_digit, summary=summary)


register_recipe(Recipe(
    name="mdeq_digits", family="mdeq", variant="mdeq_tiny_cifar10",
    description="A small MDEQ (1-channel 8x8 input, 2 branches) trained with a 5-step phantom gradient and the "
                "Anderson solver; reports accuracy, solver evaluations and residuals at every epoch.",
    dataset="scikit-learn load_digits (1,797 8x8 handwritten digits, UCI optdigits; BSD-3 via scikit-learn), "
            "stratified 80/20 split",
    load=load_digits_recipe, learning_rate=5e-3, epochs=8, batch_size=32,
))
register_demo("mdeq", run_demo)
