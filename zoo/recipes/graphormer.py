"""Graphormer fine-tuning recipes on B3DB (blood–brain barrier), and the Graphormer demo.

B3DB (Meng et al., Scientific Data 2021) ships offline in the `qc-b3db` package, CC0-1.0:
`b3db_bbb` classifies BBB+ / BBB- (7,807 molecules), `b3db_logbb` regresses logBB (1,058 molecules).
Both use a Bemis–Murcko scaffold split (80 / 20, largest scaffold groups to training), so evaluation
molecules have scaffolds never seen in training.

    zoo finetune graphormer_slim_classifier --dataset b3db_bbb --out runs/bbb
    zoo finetune graphormer_base_pcqm4mv2 --dataset b3db_logbb --pretrained --out runs/logbb  # released weights
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
from transformers import EvalPrediction

from ..demo import DemoResult, register_demo
from ..finetune import Recipe, RecipeData, RecipeOptions, register_recipe
from ..models.graphormer import GraphormerFeaturizer
from .metrics import roc_auc

__all__ = ["b3db_rows", "roc_auc", "scaffold_split"]

logger = logging.getLogger(__name__)

DATASET = ("B3DB (Meng et al., Sci. Data 8, 289 (2021); CC0-1.0), loaded offline from the qc-b3db package")
QUICK_MOLECULES = 600
FIXTURE_CHECKPOINT = Path(__file__).resolve().parents[2] / "tests/fixtures/graphormer/public_postln/checkpoint.pt"


def b3db_rows(table: str) -> list[dict[str, str]]:
    """Rows of a B3DB TSV (`B3DB_classification.tsv` or `B3DB_regression.tsv`) from the installed package."""
    spec = importlib.util.find_spec("B3DB")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the B3DB recipes need the qc-b3db package: pip install qc-b3db")
    path = Path(list(spec.submodule_search_locations)[0]) / table
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed qc-b3db package")
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def scaffold_split(smiles: list[str], eval_fraction: float = 0.2) -> tuple[list[int], list[int]]:
    """Bemis–Murcko scaffold split: whole scaffold groups, largest first, fill training to 1 - eval_fraction."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem.Scaffolds import MurckoScaffold

    RDLogger.DisableLog("rdApp.*")
    groups: dict[str, list[int]] = defaultdict(list)
    for index, text in enumerate(smiles):
        mol = Chem.MolFromSmiles(text)
        scaffold = MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False) if mol is not None else text
        groups[scaffold].append(index)
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    train, evaluation = [], []
    limit = (1 - eval_fraction) * len(smiles)
    for _, members in ordered:
        (train if len(train) + len(members) <= limit else evaluation).extend(members)
    return sorted(train), sorted(evaluation)


def _subset(indices: list[int], limit: int | None, seed: int) -> list[int]:
    if limit is None or limit >= len(indices):
        return indices
    return sorted(random.Random(seed).sample(indices, limit))


def _prepare(smiles: list[str], labels: list[float], options: RecipeOptions):
    if options.quick:
        keep = _subset(list(range(len(smiles))), QUICK_MOLECULES, options.seed)
        smiles, labels = [smiles[i] for i in keep], [labels[i] for i in keep]
    train_idx, eval_idx = scaffold_split(smiles)
    train_idx = _subset(train_idx, options.max_train_samples, options.seed)
    eval_idx = _subset(eval_idx, options.max_eval_samples, options.seed)
    featurizer = GraphormerFeaturizer()
    parts = []
    for name, indices in (("train", train_idx), ("eval", eval_idx)):
        items, skipped = featurizer.featurize(
            [smiles[i] for i in indices], labels=np.asarray([labels[i] for i in indices], dtype=np.float32),
            on_error="skip", progress=not options.quick,
        )
        if skipped:
            logger.warning("B3DB %s: %d molecule(s) left out: %s", name, len(skipped),
                           "; ".join(f"{s.input!r} ({s.reason})" for s in skipped))
        parts.append(items)
    return parts[0], parts[1], featurizer


def load_bbb(options: RecipeOptions) -> RecipeData:
    """B3DB classification: label 1 for BBB+, 0 for BBB-; ROC-AUC and accuracy against the majority class."""
    rows = b3db_rows("B3DB_classification.tsv")
    smiles = [row["SMILES"] for row in rows]
    labels = [1.0 if row["BBB+/BBB-"] == "BBB+" else 0.0 for row in rows]
    train, evaluation, featurizer = _prepare(smiles, labels, options)
    majority = float(np.mean([item["labels"] for item in train]) >= 0.5)

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = np.asarray(prediction.predictions).reshape(-1)
        truth = np.asarray(prediction.label_ids).reshape(-1)
        return {
            "roc_auc": roc_auc(truth, logits), "accuracy": float(np.mean((logits > 0) == (truth > 0.5))),
            "baseline_accuracy": float(np.mean(truth == majority)), "baseline_roc_auc": 0.5,
        }

    return RecipeData(
        train=train, eval=evaluation, collator=featurizer.collate,
        # one logit: its sigmoid is P(BBB+) (label 1 in B3DB's BBB+/BBB- column)
        model_overrides={"num_classes": 1, "id2label": {0: "BBB+"}, "label2id": {"BBB+": 0}},
        compute_metrics=compute_metrics, metric_for_best_model="roc_auc", processor=featurizer,
        results_spec={"task_type": "graph-classification", "dataset_type": "b3db", "dataset_name": "B3DB BBB+/-",
                      "dataset_split": "scaffold 20%", "metrics": {"roc_auc": "roc_auc", "accuracy": "accuracy"}},
        datasets=["theochem/B3DB"],
    )


def load_logbb(options: RecipeOptions) -> RecipeData:
    """B3DB regression of logBB; MAE / RMSE against predicting the training mean."""
    rows = b3db_rows("B3DB_regression.tsv")
    smiles = [row["SMILES"] for row in rows]
    labels = [float(row["logBB"]) for row in rows]
    train, evaluation, featurizer = _prepare(smiles, labels, options)
    mean = float(np.mean([item["labels"] for item in train]))

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        predicted = np.asarray(prediction.predictions).reshape(-1)
        truth = np.asarray(prediction.label_ids).reshape(-1)
        return {
            "mae": float(np.abs(predicted - truth).mean()), "rmse": float(np.sqrt(((predicted - truth) ** 2).mean())),
            "baseline_mae": float(np.abs(mean - truth).mean()),
            "baseline_rmse": float(np.sqrt(((mean - truth) ** 2).mean())),
        }

    return RecipeData(
        train=train, eval=evaluation, collator=featurizer.collate, model_overrides={"num_classes": 1},
        compute_metrics=compute_metrics, metric_for_best_model="mae", processor=featurizer,
        results_spec={"task_type": "graph-regression", "dataset_type": "b3db", "dataset_name": "B3DB logBB",
                      "dataset_split": "scaffold 20%", "metrics": {"mae": "mae", "rmse": "rmse"}},
        datasets=["theochem/B3DB"],
    )


register_recipe(Recipe(
    name="b3db_bbb", family="graphormer", variant="graphormer_slim_classifier",
    description="Blood–brain-barrier permeability (BBB+ / BBB-), binary classification, scaffold split.",
    dataset=DATASET, load=load_bbb, learning_rate=2e-4, epochs=3.0, batch_size=32, weight_decay=0.01,
    warmup_ratio=0.06,
))
register_recipe(Recipe(
    name="b3db_logbb", family="graphormer", variant="graphormer_slim",
    description="logBB (brain/blood concentration ratio) regression, scaffold split.",
    dataset=DATASET, load=load_logbb, learning_rate=2e-4, epochs=10.0, batch_size=32, weight_decay=0.01,
    warmup_ratio=0.06,
))


# Known BBB classes (B3DB): caffeine crosses the blood-brain barrier, sulfasalazine does not.
DEMO_MOLECULES = {"caffeine": "Cn1c(=O)c2c(ncn2C)n(C)c1=O", "sulfasalazine": "OC(=O)c1cc(N=Nc2ccc(cc2)S(=O)(=O)Nc2ccccn2)ccc1O"}


def demo(workdir: Path, quick: bool) -> DemoResult:
    """Convert the bundled original-format checkpoint, then fine-tune briefly on B3DB and predict BBB+.

    The conversion shows the converter on the original format (the fixture holds tiny random weights);
    the published folder is the fine-tuned classifier, so the prediction means something.
    """
    from conversion.convert_graphormer import convert

    from ..finetune import finetune

    if not FIXTURE_CHECKPOINT.is_file():
        raise FileNotFoundError(f"the Graphormer demo needs the bundled fixture {FIXTURE_CHECKPOINT}")
    workdir = Path(workdir)
    converted = convert(FIXTURE_CHECKPOINT, workdir / "graphormer_tiny_fixture", overwrite=True,
                        command=f"python conversion/convert_graphormer.py {FIXTURE_CHECKPOINT} graphormer_tiny_fixture")
    options = RecipeOptions(quick=quick, max_train_samples=None if quick else 2000,
                            max_eval_samples=None if quick else 500)
    metrics = finetune("graphormer_slim_classifier", "b3db_bbb", workdir / "graphormer_slim_b3db_bbb", epochs=6,
                       learning_rate=1e-3,
                       options=options, overwrite=True)

    def predict(path_or_repo_id: str) -> str:
        import torch
        from transformers import AutoFeatureExtractor, AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(path_or_repo_id).eval()
        featurizer = AutoFeatureExtractor.from_pretrained(path_or_repo_id)
        with torch.no_grad():
            logits = model(**featurizer(list(DEMO_MOLECULES.values()))).logits.reshape(-1)
        probabilities = torch.sigmoid(logits).tolist()
        shown = ", ".join(f"{name} {p:.2f}" for name, p in zip(DEMO_MOLECULES, probabilities))
        return f"P(BBB+): {shown} (B3DB scaffold-split ROC-AUC {metrics['eval']['eval_roc_auc']:.3f})"

    return DemoResult(
        folder=workdir / "graphormer_slim_b3db_bbb", predict=predict,
        summary={"converted": str(converted), "eval_roc_auc": metrics["eval"]["eval_roc_auc"]},
    )


register_demo("graphormer", demo)
