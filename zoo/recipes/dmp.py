"""DMP fine-tuning recipes on B3DB blood-brain-barrier permeability, the branch comparison, and the DMP demo.

B3DB (Meng et al., Scientific Data 8, 289 (2021); CC0-1.0) ships offline in the `qc-b3db` package:
7,807 molecules labelled BBB+ / BBB-. The split is Bemis-Murcko scaffold based (80 / 20, larger scaffold
groups to training), as in DMP's MoleculeNet experiments. Three recipes differ only in the branches the
property head uses: `dmp_b3db_bbb` (both), `dmp_b3db_bbb_transformer` (SMILES only), `dmp_b3db_bbb_gnn`
(graph only).

    zoo finetune dmp_small_molecule_cls --dataset dmp_b3db_bbb --out runs/dmp_bbb
    python -c "from zoo.recipes.dmp import compare_branches; compare_branches('runs/dmp_branches')"
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import EvalPrediction

from ..demo import DemoResult, register_demo
from ..fileio import atomic_write_json
from ..finetune import Recipe, RecipeData, RecipeOptions, finetune, register_recipe
from ..models.dmp import DmpDataCollator, DmpFeaturizer, DmpProcessor, DmpTokenizer
from .metrics import roc_auc

__all__ = ["b3db_molecules", "binary_roc_auc", "compare_branches", "scaffold_split"]

logger = logging.getLogger(__name__)

DATASET = "B3DB classification (Meng et al., Sci. Data 8, 289 (2021); CC0-1.0), offline from the qc-b3db package"
QUICK_MOLECULES = 500
BRANCHES = {"both": (1.0, 1.0), "transformer": (1.0, 0.0), "gnn": (0.0, 1.0)}
FIXTURE_CHECKPOINT = Path(__file__).resolve().parents[2] / "tests/fixtures/dmp/finetune_tiny_cls/checkpoint.pt"


def b3db_molecules() -> list[tuple[str, int]]:
    """(SMILES, 1 for BBB+ / 0 for BBB-) for every row of `B3DB_classification.tsv`."""
    spec = importlib.util.find_spec("B3DB")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the B3DB data set is not installed: pip install qc-b3db")
    path = Path(list(spec.submodule_search_locations)[0]) / "B3DB_classification.tsv"
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    labels = {"BBB+": 1, "BBB-": 0}
    unknown = {row["BBB+/BBB-"] for row in rows} - labels.keys()
    if unknown:
        raise ValueError(f"{path}: unexpected labels {sorted(unknown)}")
    return [(row["SMILES"], labels[row["BBB+/BBB-"]]) for row in rows]


def scaffold_split(smiles: Sequence[str], eval_fraction: float = 0.2) -> tuple[list[int], list[int]]:
    """Indices of a Bemis-Murcko scaffold split: whole scaffold groups, largest first, go to training.

    Unparsable SMILES get their own group (the featurizer reports them later).
    """
    from rdkit import Chem, RDLogger
    from rdkit.Chem.Scaffolds import MurckoScaffold

    groups: dict[str, list[int]] = defaultdict(list)
    RDLogger.DisableLog("rdApp.*")
    try:
        for index, text in enumerate(smiles):
            mol = Chem.MolFromSmiles(text)
            key = MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False) if mol else f"invalid:{index}"
            groups[key].append(index)
    finally:
        RDLogger.EnableLog("rdApp.*")
    ordered = sorted(groups.values(), key=lambda g: (len(g), g[0]), reverse=True)
    limit = len(smiles) * (1 - eval_fraction)
    train: list[int] = []
    evaluation: list[int] = []
    for group in ordered:
        (train if len(train) + len(group) <= limit else evaluation).extend(group)
    return sorted(train), sorted(evaluation)


def binary_roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN with one class only."""
    return roc_auc(labels, scores)


def _compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    labels = np.asarray(prediction.label_ids).reshape(-1)
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float32)
    probabilities = logits.softmax(-1)[:, 1].numpy()
    accuracy = float((logits.argmax(-1).numpy() == labels).mean())
    return {"roc_auc": binary_roc_auc(probabilities, labels), "accuracy": accuracy}


def _loader(branch: str):
    coeff_transformer, coeff_gnn = BRANCHES[branch]

    def load(options: RecipeOptions) -> RecipeData:
        molecules = b3db_molecules()
        if options.quick:
            molecules = random.Random(options.seed).sample(molecules, QUICK_MOLECULES)
        train_index, eval_index = scaffold_split([s for s, _ in molecules])
        sampler = random.Random(options.seed)
        if options.max_train_samples and options.max_train_samples < len(train_index):
            train_index = sorted(sampler.sample(train_index, options.max_train_samples))
        if options.max_eval_samples and options.max_eval_samples < len(eval_index):
            eval_index = sorted(sampler.sample(eval_index, options.max_eval_samples))
        tokenizer, featurizer = DmpTokenizer(), DmpFeaturizer()

        def encode(indices: list[int]):
            features = featurizer.encode_molecules(
                [molecules[i][0] for i in indices], tokenizer, labels=[molecules[i][1] for i in indices], errors="skip"
            )
            for index, text, reason in features.skipped:
                logger.warning("B3DB molecule %s (%s) left out: %s", indices[index], text, reason)
            return features

        return RecipeData(
            train=encode(train_index), eval=encode(eval_index),
            collator=DmpDataCollator(label_dtype=torch.long),
            model_overrides={
                "num_labels": 2, "problem_type": "single_label_classification",
                "id2label": {0: "BBB-", 1: "BBB+"}, "label2id": {"BBB-": 0, "BBB+": 1},
                "coeff_transformer": coeff_transformer, "coeff_gnn": coeff_gnn,
            },
            compute_metrics=_compute_metrics, metric_for_best_model="roc_auc", processor=DmpProcessor(tokenizer),
            results_spec={
                "task_type": "graph-classification", "dataset_type": "b3db", "dataset_name": "B3DB (BBB+/BBB-)",
                "dataset_split": "scaffold 20%", "metrics": {"roc_auc": "roc_auc", "accuracy": "accuracy"},
            },
            datasets=["b3db"],
        )

    return load


for _branch, _suffix in (("both", ""), ("transformer", "_transformer"), ("gnn", "_gnn")):
    register_recipe(Recipe(
        name=f"dmp_b3db_bbb{_suffix}", family="dmp", variant="dmp_small_molecule_cls",
        description=f"B3DB BBB+/BBB- classification, scaffold split; DMP property head on the {_branch} branch(es)",
        dataset=DATASET, load=_loader(_branch), learning_rate=3e-4, epochs=8.0, batch_size=32, warmup_ratio=0.06,
    ))


def compare_branches(
    out_dir: str | Path,
    variant: str = "dmp_small_molecule_cls",
    epochs: float | None = None,
    quick: bool = False,
    seed: int = 0,
    pretrained: str | Path | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
) -> dict[str, Any]:
    """Fine-tune Transformer-only, GNN-only and both-branch heads; write comparison.json + comparison.png.

        compare_branches("runs/dmp_branches", quick=True)
    """
    out_dir = Path(out_dir)
    results = {}
    for branch, suffix in (("transformer", "_transformer"), ("gnn", "_gnn"), ("both", "")):
        metrics = finetune(
            variant, f"dmp_b3db_bbb{suffix}", out_dir / branch, epochs=epochs, seed=seed, pretrained=pretrained,
            options=RecipeOptions(
                seed=seed, quick=quick, max_train_samples=max_train_samples, max_eval_samples=max_eval_samples
            ),
            overwrite=True,
        )
        results[branch] = {k[5:]: v for k, v in metrics["eval"].items() if k in ("eval_roc_auc", "eval_accuracy")}
        results[branch]["curve"] = metrics["curves"].get("eval_roc_auc", [])
    summary = {
        "variant": variant, "dataset": DATASET, "quick": quick, "epochs": epochs, "seed": seed,
        "max_train_samples": max_train_samples, "max_eval_samples": max_eval_samples, "results": results,
    }
    atomic_write_json(out_dir / "comparison.json", summary)
    _plot_comparison(results, out_dir / "comparison.png", variant)
    return summary


def _plot_comparison(results: dict[str, Any], path: Path, variant: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, curves) = plt.subplots(1, 2, figsize=(9, 3.4))
    names = list(results)
    colors = dict(zip(names, ["#4c72b0", "#55a868", "#c44e52"]))
    bars.bar(names, [results[n]["roc_auc"] for n in names], color=[colors[n] for n in names])
    bars.set_ylim(0.5, 1.0)
    bars.set_ylabel("eval ROC-AUC (scaffold split)")
    for name in names:
        if results[name]["curve"]:
            steps, values = zip(*results[name]["curve"])
            curves.plot(steps, values, marker="o", label=name, color=colors[name])
    curves.set_xlabel("step")
    curves.set_ylabel("eval ROC-AUC")
    curves.legend()
    fig.suptitle(f"DMP branches on B3DB ({variant})")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


# -- demo ------------------------------------------------------------------------------------------------------------

DEMO_MOLECULES = {"caffeine": "Cn1cnc2c1c(=O)n(C)c(=O)n2C", "sulfasalazine": "O=C(O)c1cc(N=Nc2ccc(S(=O)(=O)Nc3ccccn3)cc2)ccc1O"}


def _predict(path_or_repo_id: str) -> str:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path_or_repo_id)
    model = AutoModelForSequenceClassification.from_pretrained(path_or_repo_id).eval()
    features = DmpFeaturizer().encode_molecules(list(DEMO_MOLECULES.values()), tokenizer)
    with torch.no_grad():
        probabilities = model(**DmpDataCollator()(features)).logits.softmax(-1)[:, 1]
    return "; ".join(f"{name}: P(BBB+) = {p:.3f}" for name, p in zip(DEMO_MOLECULES, probabilities.tolist()))


def _demo(workdir: Path, quick: bool) -> DemoResult:
    """Convert the bundled fairseq-train checkpoint (checked against the original's logits), then fine-tune
    briefly on B3DB and publish that classifier, so the prediction (P(BBB+)) means something."""
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    from conversion.convert_dmp import convert

    folder = convert(FIXTURE_CHECKPOINT, Path(workdir) / "dmp_tiny_molecule_cls", overwrite=True)
    fixture = FIXTURE_CHECKPOINT.parent
    inputs, expected = load_file(fixture / "inputs.safetensors"), load_file(fixture / "expected.safetensors")
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(
            input_ids=inputs["src_tokens"], atom_features=inputs["graph_x"], edge_index=inputs["graph_edge_index"],
            bond_features=inputs["graph_edge_attr"], atom_batch=inputs["graph_batch"],
        ).logits
    diff = float((logits - expected["logits_both"]).abs().max())
    options = RecipeOptions(quick=quick, max_train_samples=None if quick else 2000,
                            max_eval_samples=None if quick else 500)
    tuned = Path(workdir) / "dmp_small_b3db_bbb"
    metrics = finetune("dmp_small_molecule_cls", "dmp_b3db_bbb", tuned, epochs=6, options=options, overwrite=True)
    return DemoResult(folder=tuned, predict=_predict, summary={
        "converted": str(folder), "parity_max_abs_diff_vs_original": diff,
        "eval_roc_auc": metrics["eval"]["eval_roc_auc"],
    })


register_demo("dmp", _demo)

