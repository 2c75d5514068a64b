"""A learnable synthetic task for testing the fine-tuning runner (real recipes use real data sets)."""

import numpy as np
import torch

from zoo.finetune import Recipe, RecipeData, RecipeOptions, register_recipe


def _examples(count: int, seed: int, vocab: int = 32) -> list[dict]:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, size=(count, 1))
    return [{"input_ids": row.tolist(), "labels": int(row[0] < vocab // 2)} for row in tokens]


def collate(items: list[dict]) -> dict:
    return {
        "input_ids": torch.tensor([item["input_ids"] for item in items]),
        "labels": torch.tensor([item["labels"] for item in items]),
    }


def accuracy(prediction) -> dict:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def load(options: RecipeOptions) -> RecipeData:
    train_count = options.max_train_samples or 256
    return RecipeData(
        train=_examples(train_count, options.seed), eval=_examples(options.max_eval_samples or 64, options.seed + 1),
        collator=collate, model_overrides={"num_labels": 2}, compute_metrics=accuracy,
        metric_for_best_model="accuracy",
        results_spec={"task_type": "text-classification", "dataset_type": "synthetic", "dataset_name": "toy halves",
                      "metrics": {"accuracy": "accuracy"}},
    )


RECIPE = register_recipe(Recipe(
    name="toy_halves", family="toy", variant="toy_tiny", description="is the token in the lower half?",
    dataset="synthetic (tests only)", load=load, learning_rate=5e-2, epochs=3, batch_size=16,
))
