"""The fixture-usage check and case discovery themselves (tests/fixture_usage.py, tests/fixture_cases.py), run as
separate pytest sessions (with and without pytest-xdist) on a throw-away fixtures tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CONFTEST = """
from pathlib import Path
from tests.fixture_usage import FixtureUsage

def pytest_configure(config):
    here = Path(__file__).resolve().parent / "suite"
    config.pluginmanager.register(FixtureUsage(config, here / "fixtures", here), "usage-under-test")
"""

READ_ALL = """
import shutil
from pathlib import Path
from safetensors.numpy import load_file

FIX = Path(__file__).resolve().parent / "fixtures" / "fam"

def test_meta():
    assert (FIX / "case1" / "meta.json").read_text()

def test_tensors():
    assert list(load_file(FIX / "case1" / "expected.safetensors")) == ["x"]

def test_copy_then_read(tmp_path):
    shutil.copytree(FIX / "case1" / "sub", tmp_path / "sub")
    assert (tmp_path / "sub" / "data.txt").read_text() == "a"
"""


def make_tree(root: Path, *, copy_only: bool = False, extra: str | None = None) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    case = root / "suite" / "fixtures" / "fam" / "case1"
    (case / "sub").mkdir(parents=True)
    (case / "meta.json").write_text(json.dumps({"kind": "k"}))
    (case / "README.md").write_text("for people")
    (case / "sub" / "data.txt").write_text("a")
    save_file({"x": np.zeros(2)}, str(case / "expected.safetensors"))
    if extra:
        (case / extra).write_text("nobody reads me")
    (root / "conftest.py").write_text(CONFTEST)
    body = READ_ALL
    if copy_only:  # the copy is never read: copying must not count as reading
        body = body.replace('assert (tmp_path / "sub" / "data.txt").read_text() == "a"',
                            'assert (tmp_path / "sub").is_dir()')
    (root / "suite" / "test_reads.py").write_text(body)
    (root / "suite" / "test_other.py").write_text("def test_nothing():\n    pass\n")


def run_pytest(root: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ZOO_FIXTURE_USAGE"}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **extra_env)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly",
                           "--rootdir", str(root), *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


def test_all_read_passes(tmp_path):
    make_tree(tmp_path)
    result = run_pytest(tmp_path, "-n", "2", "suite")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every data file under fixtures/ was read" in result.stdout


@pytest.mark.parametrize("workers", [["-n", "2"], ["-p", "no:xdist"]], ids=["xdist", "serial"])
def test_unread_file_fails_naming_it(tmp_path, workers):
    make_tree(tmp_path, extra="orphan.bin")
    result = run_pytest(tmp_path, *workers, "suite")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "UNREAD suite/fixtures/fam/case1/orphan.bin" in result.stdout
    assert "README.md" not in result.stdout.split("fixture files read by no test")[1]
    assert "4 passed" in result.stdout  # the tests themselves passed: only the usage check failed


def test_copy_is_not_a_read(tmp_path):
    make_tree(tmp_path, copy_only=True)
    result = run_pytest(tmp_path, "-n", "2", "suite")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "UNREAD suite/fixtures/fam/case1/sub/data.txt" in result.stdout
    assert "UNREAD suite/fixtures/fam/case1/expected.safetensors" not in result.stdout


@pytest.mark.parametrize("selection", [["suite/test_other.py"], ["suite/test_reads.py::test_meta"],
                                       ["-k", "meta", "suite"], ["-x", "suite"]],
                         ids=["one-file", "node-id", "keyword", "exitfirst-ok"])
def test_partial_runs_are_not_checked(tmp_path, selection):
    make_tree(tmp_path, extra="orphan.bin")
    result = run_pytest(tmp_path, "-p", "no:xdist", *selection)
    if selection[0] == "-x":  # -x that did not stop: the whole tree ran, so the check runs and fails
        assert result.returncode == 1 and "UNREAD" in result.stdout, result.stdout
    else:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "UNREAD" not in result.stdout


def test_forced_family_check_on_a_partial_run(tmp_path):
    make_tree(tmp_path, extra="orphan.bin")
    result = run_pytest(tmp_path, "-p", "no:xdist", "suite/test_reads.py", ZOO_FIXTURE_USAGE="fam")
    assert result.returncode == 1 and "UNREAD suite/fixtures/fam/case1/orphan.bin" in result.stdout, result.stdout
    assert "UNREAD suite/fixtures/fam/case1/meta.json" not in result.stdout


def test_stopped_run_is_not_checked(tmp_path):
    make_tree(tmp_path, extra="orphan.bin")
    (tmp_path / "suite" / "test_fail.py").write_text("def test_a_fails():\n    assert False\n")
    result = run_pytest(tmp_path, "-p", "no:xdist", "-x", "suite")
    assert result.returncode == 1 and "UNREAD" not in result.stdout, result.stdout


DISCOVERY = """
import pytest
from tests.fixture_cases import Family, Unhandled, expect_one_of

def classify(folder, meta):
    return expect_one_of(meta.get("kind"), ["good"], "kind")

FAM = Family("fam", classify, root=__import__("pathlib").Path(__file__).resolve().parent / "fixtures")

@pytest.mark.parametrize("case", FAM.cases("good"))
def test_case(case):
    assert case.meta["kind"] == "good"
    case.file("meta.json").read_text()
"""


def discovery_run(tmp_path, cases: dict) -> subprocess.CompletedProcess:
    (tmp_path / "suite" / "fixtures" / "fam").mkdir(parents=True)
    for name, meta in cases.items():
        (tmp_path / "suite" / "fixtures" / "fam" / name).mkdir()
        if meta is not None:
            (tmp_path / "suite" / "fixtures" / "fam" / name / "meta.json").write_text(meta)
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "suite" / "test_discovery.py").write_text(DISCOVERY)
    return run_pytest(tmp_path, "-p", "no:xdist", "-rA", "suite")


def test_discovery_zero_cases_fails(tmp_path):
    result = discovery_run(tmp_path, {})
    assert result.returncode == 1, result.stdout
    assert "no case of kind 'good'" in result.stdout and "skipped" not in result.stdout


def test_discovery_bad_cases_fail_naming_them(tmp_path):
    bad = {
        "b": (json.dumps({"kind": "goodish"}), "kind 'goodish' is not one the tests handle (they handle: 'good')"),
        "c": ("{not json", "meta.json cannot be read"),
        "d": ("[1, 2]", "meta.json holds a list, not a JSON object"),
        "e": (None, "case folder has no meta.json"),
    }
    result = discovery_run(tmp_path, {"a": json.dumps({"kind": "good"}), **{k: v[0] for k, v in bad.items()}})
    assert result.returncode == 1, result.stdout
    assert "4 failed, 1 passed" in result.stdout, result.stdout
    for name, (_, message) in bad.items():
        assert f"fixture case suite/fixtures/fam/{name}: {message}" in result.stdout, result.stdout


def test_family_fixture_folders_exist():
    """The real tree: no family's fixtures folder is empty (the per-family discovery fails too; this names it)."""
    root = REPO / "tests" / "fixtures"
    families = sorted(p for p in root.iterdir() if p.is_dir())
    assert families, f"{root} holds no family"
    for family in families:
        assert any(p.is_dir() for p in family.iterdir()), f"{family} holds no case folder"


def test_readme_and_license_are_exempt(tmp_path):
    from tests.fixture_usage import data_files

    (tmp_path / "a").mkdir()
    for name in ["README.md", "readme.txt", "LICENSE-x.txt", "data.json", ".hidden"]:
        (tmp_path / "a" / name).write_text("x")
    assert [p.name for p in data_files(tmp_path)] == ["data.json"]

