"""Clear errors before work starts, and the help a new user reaches for first.

- a recipe of another family, or a --pretrained folder of another family, stops `zoo finetune` before any
  data is loaded, naming both sides;
- `zoo convert --help` lists the families, `zoo convert FAMILY --help` prints that converter's options;
- `zoo hub serve` on an existing root shows its write token;
- a head checkpoint loaded as its base model reports no UNEXPECTED keys, while a base checkpoint with a
  foreign key still does.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel

import zoo
from zoo import cli
from zoo import finetune as finetune_module
from zoo.finetune import FinetuneInputError, Recipe, finetune

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def untouchable_recipe(monkeypatch):
    """A nasbert recipe whose data loader fails the test if anything calls it."""
    def load(options):
        raise AssertionError("the recipe's data was loaded although the run could not work")

    recipe = Recipe(name="nasbert_guard", family="nasbert", variant="nasbert5_mlnet_text_classification",
                    description="guard", dataset="none", load=load)
    monkeypatch.setitem(finetune_module._RECIPES, "nasbert_guard", recipe)
    return recipe


def test_recipe_of_another_family_fails_before_loading(untouchable_recipe, tmp_path, capsys):
    with pytest.raises(FinetuneInputError, match="'nasbert_guard' is a nasbert recipe.*graphormer model"):
        finetune("graphormer_slim_classifier", "nasbert_guard", tmp_path / "out")
    code = cli.main(["finetune", "graphormer_slim_classifier", "--dataset", "nasbert_guard",
                     "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "zoo finetune: error:" in err and "graphormer recipes: b3db_bbb, b3db_logbb" in err
    assert not (tmp_path / "out").exists()


def test_pretrained_folder_of_another_family_fails_before_loading(tmp_path):
    entry = zoo.model_info("nasbert5_mlnet_text_classification")
    zoo.create_model(entry.name, **entry.test_config).save_pretrained(tmp_path / "nasbert")
    nasbert_type = zoo.get_family("nasbert").config_class.model_type
    with pytest.raises(FinetuneInputError, match=f"holds a '{nasbert_type}' model, but variant 'graphormer_slim_"):
        finetune("graphormer_slim_classifier", "b3db_bbb", tmp_path / "out", pretrained=tmp_path / "nasbert")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FinetuneInputError, match="no config.json"):
        finetune("graphormer_slim_classifier", "b3db_bbb", tmp_path / "out", pretrained=tmp_path / "empty")


def test_convert_help_lists_families_and_forwards(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["convert", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    converters = sorted(p.stem.removeprefix("convert_") for p in (REPO_ROOT / "conversion").glob("convert_*.py"))
    assert converters and all(name in out for name in converters)
    assert cli.main(["convert", "graphormer", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: zoo convert graphormer") and "original" in out and "out_dir" in out
    assert cli.main(["convert", "no_such_family", "x", "y"]) == 2
    assert "available: " in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve_banner(root: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "zoo.hub_cli", "serve", "--root", str(root), "--port",
                                str(_free_port())], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env, cwd=REPO_ROOT)
    lines = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "tokens in" in line:
                break
    finally:
        process.terminate()
        process.wait(timeout=30)
    return "".join(lines)


def test_hub_serve_shows_the_token_of_an_existing_root(tmp_path):
    first = _serve_banner(tmp_path / "root")
    assert "new write token: hf_local_" in first
    token = next(line.split()[0] for line in (tmp_path / "root" / "tokens.txt").read_text().splitlines()
                 if line.startswith("hf_local_"))
    again = _serve_banner(tmp_path / "root")
    assert f"(write token: {token})" in again


def test_head_checkpoint_as_base_model_is_quiet_but_foreign_keys_are_not(tmp_path):
    entry = zoo.model_info("dmp_small_molecule_cls")
    zoo.create_model(entry.name, **entry.test_config).save_pretrained(tmp_path / "head")
    base, info = AutoModel.from_pretrained(tmp_path / "head", output_loading_info=True)
    assert type(base).__name__ == "DmpModel" and not info["unexpected_keys"] and not info["missing_keys"]

    base.save_pretrained(tmp_path / "base")  # a base-model checkpoint with one key nobody knows
    weights = load_file(tmp_path / "base" / "model.safetensors")
    weights["stray.weight"] = torch.zeros(2)
    save_file(weights, tmp_path / "base" / "model.safetensors", metadata={"format": "pt"})
    assert json.loads((tmp_path / "base" / "config.json").read_text())["architectures"] == ["DmpModel"]
    _, info = AutoModel.from_pretrained(tmp_path / "base", output_loading_info=True)
    assert "stray.weight" in info["unexpected_keys"]


REMOTE_BASE_LOAD = """
import json, sys
sys.modules["zoo"] = None          # remote code only: zoo/auto.py's quieting must not be what helps
sys.modules["conversion"] = None
import torch
from safetensors.torch import load_file
from transformers import AutoModel
for folder in sys.argv[1:]:
    print("LOADING " + folder, flush=True)
    base, info = AutoModel.from_pretrained(folder, trust_remote_code=True, output_loading_info=True)
    assert type(base).__module__.startswith("transformers_modules"), type(base).__module__
    saved = load_file(folder + "/model.safetensors")
    prefix = base.base_model_prefix + "."
    same = all(torch.equal(tensor, saved[prefix + name]) for name, tensor in base.state_dict().items()
               if prefix + name in saved)
    print("INFO " + json.dumps({"folder": folder, "type": type(base).__name__, "same": same,
                                **{k: sorted(map(str, info[k])) for k in ("missing_keys", "unexpected_keys")}}),
          flush=True)
"""


def _load_base_without_zoo(folders: list[Path]) -> dict[str, tuple[dict, str]]:
    """folder name -> (loading info, what was printed while loading it), all loaded in one clean process."""
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "HF_HOME": str(folders[0].parent / "hf-home"),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", REMOTE_BASE_LOAD, *map(str, folders)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=folders[0].parent, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:]  # stdout and stderr (the LOAD REPORT) interleaved
    out = {}
    for chunk in result.stdout.split("LOADING ")[1:]:
        line = next(li for li in chunk.splitlines() if li.startswith("INFO "))
        info = json.loads(line[len("INFO "):])
        out[Path(info["folder"]).name] = (info, chunk)
    assert len(out) == len(folders), result.stdout[-2000:]
    return out


def test_head_checkpoint_as_base_model_is_quiet_with_remote_code_only(tmp_path):
    """Each family's base class declares the head keys it may drop (`_keys_to_ignore_on_load_unexpected`), so
    the remote code alone is quiet; the DEQ families' weight-normalised weights must load, not re-initialise.
    A key that is no head's (`stray.weight`, added to two head checkpoints) is still reported."""
    folders = {}
    for name, family in zoo.families().items():
        if not family.base_model_class.__module__.startswith("zoo.models."):
            continue  # a family a test registered (tests/toy), not one of zoo's
        heads = [v for v in zoo.list_models(family=name)
                 if zoo.model_info(v).architecture != family.base_model_class.__name__]
        if not heads:
            continue
        entry = zoo.model_info(heads[0])
        torch.manual_seed(0)
        model = zoo.create_model(entry.name, **entry.test_config)
        model.save_pretrained(tmp_path / name)
        folders[name] = family.base_model_class.__name__
        if name in ("graphormer", "deq_transformer"):
            shutil.copytree(tmp_path / name, tmp_path / f"{name}-stray")
            weights = load_file(tmp_path / f"{name}-stray" / "model.safetensors")
            weights["stray.weight"] = torch.zeros(2)
            save_file(weights, tmp_path / f"{name}-stray" / "model.safetensors", metadata={"format": "pt"})
    assert {"graphormer", "dmp", "nasbert", "mdeq", "deq_transformer"} <= set(folders), folders
    loaded = _load_base_without_zoo([tmp_path / n for n in folders] + [tmp_path / "graphormer-stray",
                                                                       tmp_path / "deq_transformer-stray"])
    for name, base_class in folders.items():
        info, output = loaded[name]
        assert info["type"] == base_class, (name, info)
        assert info["unexpected_keys"] == [] and info["missing_keys"] == [], (name, info)
        assert "UNEXPECTED" not in output and "MISSING" not in output, (name, output[-3000:])
        assert info["same"], f"{name}: the base model's weights differ from the checkpoint's"
    for name in ("graphormer-stray", "deq_transformer-stray"):
        info, output = loaded[name]
        assert "stray.weight" in info["unexpected_keys"] and "UNEXPECTED" in output, (name, info)
