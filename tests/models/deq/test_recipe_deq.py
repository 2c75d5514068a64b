"""The `mdeq_digits` fine-tuning recipe: data, metrics, a short `zoo finetune` run, and the demo's predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from zoo.finetune import RecipeOptions, finetune, get_recipe
from zoo.recipes.deq import classify_digit, collate_images, digits_metrics, load_digits_recipe


def test_split_is_stratified_and_normalised():
    data = load_digits_recipe(RecipeOptions())
    assert len(data.train) == 1438 and len(data.eval) == 359
    pixels = torch.stack([item["pixel_values"] for item in data.train])
    assert pixels.shape == (1438, 1, 8, 8)
    assert float(pixels.mean()) == pytest.approx(0.0, abs=1e-5) and float(pixels.std()) == pytest.approx(1.0, abs=1e-3)
    counts = np.bincount([item["labels"] for item in data.eval], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    batch = collate_images(data.train[:4])
    assert batch["pixel_values"].shape == (4, 1, 8, 8) and batch["labels"].dtype == torch.long


def test_metrics_read_the_solver_statistics():
    logits = np.array([[0.1, 2.0], [3.0, 0.0], [0.0, 1.0]])
    outputs = (logits, (np.zeros((3, 2)),), np.zeros(3), np.array([1e-3, 2e-3, 6e-3]), np.array([12, 12, 12]),
               np.array([True, False, True]))
    metrics = digits_metrics(EvalPrediction(predictions=outputs, label_ids=np.array([1, 0, 0])))
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["solver_steps"] == 12 and metrics["rel_residual_max"] == pytest.approx(6e-3)
    assert metrics["rel_residual_mean"] == pytest.approx(3e-3) and metrics["converged_fraction"] == pytest.approx(2 / 3)


def test_short_finetune_writes_a_folder_that_predicts(tmp_path):
    recipe = get_recipe("mdeq_digits")
    assert recipe.family == "mdeq"
    out = tmp_path / "digits"
    metrics = finetune("mdeq_tiny_cifar10", "mdeq_digits", out, max_steps=3, batch_size=8,
                       options=RecipeOptions(max_train_samples=24, max_eval_samples=16))
    for key in ("eval_accuracy", "eval_solver_steps", "eval_rel_residual_mean", "eval_converged_fraction"):
        assert key in metrics["eval"]
    saved = json.loads((out / "metrics.json").read_text())
    assert "eval_rel_residual_mean" in saved["curves"]
    assert (out / "training_curves.png").is_file() and (out / "README.md").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["backward"] == "phantom" and config["num_input_channels"] == 1 and "image_mean" in config
    line = classify_digit(str(out), index=3)
    assert line.startswith("held-out digit #3 (true ") and "solver evaluations" in line
