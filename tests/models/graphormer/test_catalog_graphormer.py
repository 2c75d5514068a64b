"""Graphormer registry entries, the B3DB recipes and the demo."""

import math
from pathlib import Path

import numpy as np

import zoo
from zoo.finetune import RecipeOptions, finetune, get_recipe
from zoo.recipes.graphormer import roc_auc, scaffold_split


def test_released_checkpoints_are_listed():
    pretrained = zoo.list_models("graphormer*", pretrained=True, family="graphormer")
    assert pretrained == ["graphormer_base_pcqm4mv1", "graphormer_base_pcqm4mv1_for_molhiv", "graphormer_base_pcqm4mv2"]
    molhiv = zoo.model_info("graphormer_base_pcqm4mv1_for_molhiv")
    assert molhiv.config["pre_layernorm"] and molhiv.original.filename == "checkpoint_base_preln_pcqm4mv1_for_hiv.pt"
    assert zoo.model_info("graphormer_base_pcqm4mv2").metrics == {"pcqm4mv2_valid_mae": 0.0865}


def test_roc_auc_closed_forms():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert roc_auc([0, 1, 1], [0.1, 0.1, 0.9]) == 0.75  # one tie: counts half
    assert math.isnan(roc_auc([1, 1], [0.1, 0.2]))


def test_scaffold_split_keeps_scaffolds_apart():
    from rdkit import Chem
    from rdkit.Chem.Scaffolds import MurckoScaffold

    smiles = ["c1ccccc1C", "c1ccccc1CC", "c1ccccc1O", "C1CCCCC1N", "C1CCCCC1O", "c1ccncc1", "CCO", "CCN", "CCCl", "CC"]
    train, evaluation = scaffold_split(smiles, eval_fraction=0.3)
    assert sorted(train + evaluation) == list(range(len(smiles)))
    scaffold = [MurckoScaffold.MurckoScaffoldSmiles(mol=Chem.MolFromSmiles(s)) for s in smiles]
    assert not {scaffold[i] for i in train} & {scaffold[i] for i in evaluation}
    assert len(train) <= 7


def test_bbb_recipe_data_and_two_training_steps(tmp_path):
    recipe = get_recipe("b3db_bbb")
    options = RecipeOptions(max_train_samples=24, max_eval_samples=16, quick=True)
    data = recipe.load(options)
    assert len(data.train) == 24 and len(data.eval) == 16
    assert set(np.unique([float(item["labels"]) for item in data.train])) <= {0.0, 1.0}
    batch = data.collator(data.train[:4])
    assert batch["labels"].shape == (4,) and batch["input_nodes"].shape[0] == 4
    tiny = {"num_hidden_layers": 1, "hidden_size": 16, "intermediate_size": 16, "num_attention_heads": 2}
    metrics = finetune("graphormer_slim_classifier", "b3db_bbb", tmp_path / "run", max_steps=2, batch_size=8,
                       options=options, model_overrides=tiny)
    assert {"eval_roc_auc", "eval_accuracy", "eval_baseline_accuracy"} <= set(metrics["eval"])
    assert (tmp_path / "run" / "training_curves.png").is_file()
    assert (tmp_path / "run" / "preprocessor_config.json").is_file()
    assert "b3db_bbb" in (tmp_path / "run" / "README.md").read_text()


def test_logbb_recipe_metrics_against_baseline():
    data = get_recipe("b3db_logbb").load(RecipeOptions(max_train_samples=20, max_eval_samples=10, quick=True))
    from transformers import EvalPrediction

    truth = np.array([float(item["labels"]) for item in data.eval])
    perfect = data.compute_metrics(EvalPrediction(predictions=truth[:, None], label_ids=truth))
    assert perfect["mae"] == 0.0 and perfect["rmse"] == 0.0 and perfect["baseline_mae"] > 0


def test_demo_converts_fixture_and_predicts(tmp_path):
    from zoo.demo import list_demos, run_demos

    assert "graphormer" in list_demos()
    [row] = run_demos(tmp_path, families=["graphormer"], quick=True)
    assert row.ok, row.error
    assert row.prediction.startswith("P(BBB+): caffeine") and (row.folder / "model.safetensors").is_file()
    assert (row.folder / "metrics.json").is_file() and (row.folder / "README.md").is_file()
    assert (Path(row.summary["converted"]) / "conversion.json").is_file()
    assert 0.0 <= row.summary["eval_roc_auc"] <= 1.0
