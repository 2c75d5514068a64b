"""NAS-BERT fine-tuning recipe (fortune topics) and the `zoo demo` entry.

Data: the Debian `fortunes` package (`apt-get install fortunes`; BSD licence, see
/usr/share/doc/fortunes/copyright), `/usr/share/games/fortunes/<topic>`, items separated by `%` lines.
The recipe classifies an item into one of six topic files.

    zoo finetune nasbert5_mlnet_text_classification --dataset nasbert_fortunes --out runs/fortunes
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.demo import DemoResult, register_demo
from zoo.finetune import Recipe, RecipeData, RecipeOptions, finetune, register_recipe
from zoo.models.nasbert.resources import mlnet_tokenizer
from zoo.recipes.metrics import macro_f1

__all__ = ["FORTUNE_TOPICS", "load_fortunes", "nasbert_fortunes"]

FORTUNES_DIR = Path(os.environ.get("ZOO_FORTUNES_DIR", "/usr/share/games/fortunes"))
FORTUNE_TOPICS = ("computers", "food", "law", "politics", "science", "sports")
MAX_LENGTH = 96
EVAL_FRACTION = 0.2


def load_fortunes(directory: Path = FORTUNES_DIR, topics: tuple[str, ...] = FORTUNE_TOPICS) -> list[tuple[str, int]]:
    """(text, topic index) for every distinct item of the topic files; errors name a missing file."""
    items: dict[str, int] = {}
    for label, topic in enumerate(topics):
        path = directory / topic
        if not path.is_file():
            raise FileNotFoundError(f"fortune topic file {path} not found; install it with "
                                    "`apt-get install fortunes` or set ZOO_FORTUNES_DIR")
        text = path.read_text(encoding="utf-8", errors="replace")
        for item in text.split("\n%\n"):
            item = " ".join(item.replace("%", " ").split())
            if item and item not in items:  # an item in two topic files keeps its first topic
                items[item] = label
    return sorted(items.items())


def _is_eval(text: str) -> bool:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return digest[0] < 256 * EVAL_FRACTION


class FortuneCollator:
    """Pads tokenized items (pad id 1) into a batch with `labels`."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), length), self.pad_token_id, dtype=torch.long)
        for row, feature in enumerate(features):
            ids[row, :len(feature["input_ids"])] = torch.tensor(feature["input_ids"])
        return {"input_ids": ids, "attention_mask": (ids != self.pad_token_id).long(),
                "labels": torch.tensor([f["labels"] for f in features])}


def _subsample(rows: list, limit: int | None, seed: int) -> list:
    if limit is None or limit >= len(rows):
        return rows
    order = np.random.default_rng(seed).permutation(len(rows))[:limit]
    return [rows[i] for i in sorted(order)]


def nasbert_fortunes(options: RecipeOptions) -> RecipeData:
    """Six-topic classification of fortune items, with a majority-class baseline in the metrics."""
    tokenizer = mlnet_tokenizer(framing="mlnet", model_max_length=MAX_LENGTH)
    items = load_fortunes()
    train = [(t, y) for t, y in items if not _is_eval(t)]
    evaluation = [(t, y) for t, y in items if _is_eval(t)]
    train_limit = options.max_train_samples or (320 if options.quick else None)
    eval_limit = options.max_eval_samples or (128 if options.quick else None)
    train = _subsample(train, train_limit, options.seed)
    evaluation = _subsample(evaluation, eval_limit, options.seed + 1)

    def features(rows):
        encoded = tokenizer([t for t, _ in rows], truncation=True, max_length=MAX_LENGTH)["input_ids"]
        return [{"input_ids": ids, "labels": label} for ids, (_, label) in zip(encoded, rows)]

    majority = Counter(y for _, y in train).most_common(1)[0][0]
    baseline = float(np.mean([y == majority for _, y in evaluation]))

    def compute_metrics(prediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predicted = np.asarray(logits).argmax(-1)
        labels = np.asarray(prediction.label_ids)
        return {"accuracy": float(np.mean(predicted == labels)),
                "macro_f1": macro_f1(predicted, labels, len(FORTUNE_TOPICS)),
                "majority_baseline_accuracy": baseline}

    id2label = dict(enumerate(FORTUNE_TOPICS))
    return RecipeData(
        train=features(train), eval=features(evaluation), collator=FortuneCollator(tokenizer.pad_token_id),
        model_overrides={"num_labels": len(FORTUNE_TOPICS), "id2label": id2label,
                         "label2id": {v: k for k, v in id2label.items()},
                         "max_position_embeddings": 512},
        compute_metrics=compute_metrics, metric_for_best_model="accuracy", processor=tokenizer,
        results_spec={"task_type": "text-classification", "dataset_type": "debian-fortunes",
                      "dataset_name": "Debian fortunes, 6 topics", "dataset_split": "hash 20% eval",
                      "metrics": {"accuracy": "accuracy", "macro_f1": "f1"}},
    )


register_recipe(Recipe(
    name="nasbert_fortunes", family="nasbert", variant="nasbert5_mlnet_text_classification",
    description="Topic of a fortune-cookie item (computers, food, law, politics, science, sports).",
    dataset="Debian `fortunes` package topic files (BSD licence), 6 classes, hashed 80/20 split",
    load=nasbert_fortunes, learning_rate=5e-4, epochs=4.0, batch_size=32, warmup_ratio=0.1,
))


def _convert_fixture(workdir: Path) -> dict[str, Any]:
    """Convert the bundled tiny ML.NET model stream (.tsm) and check every tensor arrived bit-exact."""
    from transformers import AutoModelForSequenceClassification

    from conversion.convert_nasbert import convert, key_table
    from conversion.torchsharp import read_tsm

    source = (Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "nasbert"
              / "tsm_fullmodel_textclassification_tiny" / "tsmodel.bin")
    if not source.is_file():
        raise FileNotFoundError(f"{source}: the bundled .tsm fixture is missing (run the demo from a zoo checkout)")
    folder = convert(source, workdir / "converted_tiny_tsm", overwrite=True)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    state, loaded = read_tsm(source), model.state_dict()
    table = key_table(model.config, "PredictionHead.Classifier.dense")
    exact = sum(torch.equal(loaded[table[k]], v) for k, v in state.items())
    return {"tsm_tensors_bit_exact": f"{exact}/{len(state)}", "tsm_converted_folder": str(folder)}


def _demo(workdir: Path, quick: bool) -> DemoResult:
    summary = _convert_fixture(workdir)
    folder = workdir / "fortunes"
    metrics = finetune(
        "nasbert5_mlnet_text_classification", "nasbert_fortunes", folder, overwrite=True,
        epochs=2.0 if quick else 4.0, options=RecipeOptions(quick=quick),
    )
    summary.update({k: round(metrics["eval"][f"eval_{k}"], 3)
                    for k in ("accuracy", "majority_baseline_accuracy")})

    def predict(path_or_repo_id: str) -> str:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path_or_repo_id)
        model = AutoModelForSequenceClassification.from_pretrained(path_or_repo_id).eval()
        text = "The compiler crashed again, so the program never ran on the new computer."
        with torch.no_grad():
            probs = model(**tokenizer(text, return_tensors="pt")).logits.softmax(-1)[0]
        label = model.config.id2label[int(probs.argmax())]
        return f"topic '{label}' (p={float(probs.max()):.2f}) for {text!r}"

    return DemoResult(folder=folder, predict=predict, summary=summary)


register_demo("nasbert", _demo)
