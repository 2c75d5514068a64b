import json
import subprocess
import sys

import pytest

from zoo.cli import main


def test_list_prints_a_table(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["name", "family", "task", "original", "checkpoint", "params"]


def test_info_unknown_name_is_a_clean_error(capsys):
    assert main(["info", "no_such_model_anywhere"]) == 2
    assert "no model named 'no_such_model_anywhere'" in capsys.readouterr().err


def test_convert_unknown_family(capsys):
    assert main(["convert", "nosuchfamily", "a.pt", "out"]) == 2
    assert "no converter for family 'nosuchfamily'" in capsys.readouterr().err


def test_info_prints_json_for_every_entry(capsys):
    import zoo

    for name in zoo.list_models():
        assert main(["info", name]) == 0
        assert json.loads(capsys.readouterr().out)["name"] == name


def test_console_script_entry_point():
    result = subprocess.run([sys.executable, "-m", "zoo.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for command in ("list", "info", "recipes", "finetune", "convert", "demo", "hub"):
        assert command in result.stdout


def test_demo_rejects_unknown_family():
    from pathlib import Path

    from zoo.demo import run_demos

    with pytest.raises(KeyError, match="no demo registered"):
        run_demos(Path("unused"), families=["no_such_family"])


def test_recipes_lists_every_registered_recipe(capsys):
    from zoo.finetune import list_recipes

    assert main(["recipes"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]]
    assert names == list_recipes()
