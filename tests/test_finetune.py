"""The family-agnostic fine-tuning runner, on the toy family and its synthetic recipe."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tests.toy  # noqa: F401  (registers the toy family and recipe)
from zoo.finetune import RecipeOptions, finetune, get_recipe, list_recipes

TOY_CARD = Path(__file__).resolve().parent / "toy" / "card.md"
REPO = Path(__file__).resolve().parent.parent


def test_finetune_learns_and_writes_a_publishable_folder(tmp_path):
    out = tmp_path / "run"
    metrics = finetune("toy_tiny", "toy_halves", out, card_template=TOY_CARD, epochs=4)
    assert metrics["eval"]["eval_accuracy"] >= 0.9  # a random classifier scores ~0.5 on balanced halves
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["eval"]["eval_accuracy"] == metrics["eval"]["eval_accuracy"]
    losses = [value for _, value in saved["curves"]["loss"]]
    assert losses[-1] < losses[0]
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (out / "README.md").read_text()
    assert "model-index" in card and "accuracy" in card and "model.safetensors" in card
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out)
    logits = model(input_ids=torch.tensor([[1], [30]])).logits
    assert logits.argmax(-1).tolist() == [1, 0]


def test_finetune_refuses_to_overwrite(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        finetune("toy_tiny", "toy_halves", out, card_template=TOY_CARD, max_steps=1)
    assert (out / "keep.txt").read_text() == "x"


def test_unknown_recipe_lists_known_ones():
    assert "toy_halves" in list_recipes("toy")
    with pytest.raises(KeyError, match="toy_halves"):
        get_recipe("no_such_recipe")


def test_quick_option_reaches_the_loader():
    data = get_recipe("toy_halves").load(RecipeOptions(max_train_samples=7, max_eval_samples=3))
    assert (len(data.train), len(data.eval)) == (7, 3)


_DDP_SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
import tests.toy
from zoo.finetune import finetune
metrics = finetune("toy_tiny", "toy_halves", {out!r}, card_template={card!r}, max_steps=2, batch_size=4)
print("WORLD", metrics["world_size"], metrics["train"]["train_loss"] > 0)
"""


def test_two_process_gloo_run(tmp_path):
    out = tmp_path / "ddp"
    script = tmp_path / "ddp_run.py"
    script.write_text(_DDP_SCRIPT.format(repo=str(REPO), out=str(out), card=str(TOY_CARD)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("WORLD 2 True") == 2
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["world_size"] == 2
    assert (out / "model.safetensors").is_file()
