"""The B3DB recipes, the branch comparison helpers and the DMP demo."""

from __future__ import annotations

import json

import numpy as np

from zoo.demo import run_demos
from zoo.finetune import RecipeOptions, finetune
from zoo.recipes.dmp import b3db_molecules, binary_roc_auc, scaffold_split


def test_roc_auc_closed_form():
    assert binary_roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert binary_roc_auc(np.array([0.5, 0.5, 0.5]), np.array([0, 1, 1])) == 0.5
    assert binary_roc_auc(np.array([0.2, 0.9]), np.array([0, 1])) == 1.0
    assert np.isnan(binary_roc_auc(np.array([0.2, 0.9]), np.array([1, 1])))


def test_scaffold_split_keeps_scaffolds_apart():
    from rdkit.Chem.Scaffolds import MurckoScaffold

    smiles = [s for s, _ in b3db_molecules()[:300]]
    train, evaluation = scaffold_split(smiles)
    assert sorted(train + evaluation) == list(range(len(smiles)))
    assert 0.15 < len(evaluation) / len(smiles) <= 0.25
    scaffold = {i: MurckoScaffold.MurckoScaffoldSmiles(smiles=smiles[i], includeChirality=False) for i in range(300)}
    assert not {scaffold[i] for i in train} & {scaffold[i] for i in evaluation}


def test_quick_finetune_writes_metrics_plot_and_card(tmp_path):
    options = RecipeOptions(quick=True, max_train_samples=64, max_eval_samples=32)
    metrics = finetune("dmp_small_molecule_cls", "dmp_b3db_bbb_gnn", tmp_path / "run", max_steps=2, batch_size=16,
                       options=options)
    assert 0.0 <= metrics["eval"]["eval_roc_auc"] <= 1.0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["coeff_transformer"] == 0.0 and saved["coeff_gnn"] == 1.0
    assert (tmp_path / "run" / "training_curves.png").is_file() and (tmp_path / "run" / "dict.txt").is_file()
    assert "eval_roc_auc"[5:] in (tmp_path / "run" / "README.md").read_text()


def test_demo_converts_the_fixture_and_predicts(tmp_path):
    (row,) = run_demos(tmp_path, families=["dmp"], quick=True)
    assert row.ok, row.error
    assert row.summary["parity_max_abs_diff_vs_original"] < 1e-4
    assert row.prediction.startswith("caffeine: P(BBB+) = ")
    assert row.prediction.count("P(BBB+)") == 2
    assert (row.folder / "metrics.json").is_file() and 0.0 <= row.summary["eval_roc_auc"] <= 1.0
