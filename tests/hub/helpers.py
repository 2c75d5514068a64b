"""Shared helpers of the hub tests: a toy model folder ready to publish, and a client session."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import tests.toy  # noqa: F401  (registers the toy family)
from tests.toy.configuration_toy import ToyConfig
from tests.toy.modeling_toy import ToyForSequenceClassification
from zoo.hub import write_card

CARDS = Path(__file__).resolve().parent / "cards"
# metrics.json of a "fine-tuned" toy: the card gets base_model and model-index from it
METRICS = {
    "base_model": "org/toy-base",
    "datasets": ["glue"],
    "results": [{"task_type": "text-classification", "dataset_type": "glue", "dataset_name": "GLUE SST-2",
                 "dataset_split": "validation", "metric_type": "accuracy", "metric_value": 0.5}],
}

INPUT_IDS = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])


def make_toy_folder(path: Path, *, seed: int = 0, hidden_size: int = 8, repo_id: str = "org/toy",
                    metrics: dict | None = None) -> Path:
    """Save a seeded toy classifier (with its remote code) and render its card into `path`."""
    torch.manual_seed(seed)
    config = ToyConfig(hidden_size=hidden_size, num_layers=2, num_labels=3)
    model = ToyForSequenceClassification(config).eval()
    model.save_pretrained(path)
    if metrics is not None:
        (path / "metrics.json").write_text(json.dumps(metrics))
    write_card(path, variant="toy_tiny", repo_id=repo_id, template_dir=CARDS)
    return path


def toy_logits(folder_or_model) -> torch.Tensor:
    model = folder_or_model
    if not isinstance(model, torch.nn.Module):
        model = ToyForSequenceClassification.from_pretrained(folder_or_model)
    with torch.no_grad():
        return model.eval()(input_ids=INPUT_IDS).logits
