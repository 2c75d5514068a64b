"""Folder validation before publishing, card rendering/metadata, and the hub's storage rules (no server)."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file

import hub_upload
from tests.hub.helpers import CARDS, METRICS, make_toy_folder
from zoo.hub import FolderValidationError, pipeline_tag_for, render_card, validate_folder
from zoo.hub_server.app import validate_card_metadata
from zoo.hub_server.storage import BlobMissingError, FileChange, HubStore, InvalidRequest


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_folder(tmp_path_factory.mktemp("valid") / "toy")


@pytest.fixture
def broken(toy, tmp_path):
    folder = tmp_path / "toy"
    shutil.copytree(toy, folder)
    return folder


def _problems(folder) -> list[str]:
    with pytest.raises(FolderValidationError) as err:
        validate_folder(folder)
    return err.value.problems


def test_valid_folder_passes(toy):
    check = validate_folder(toy)
    assert check.ok and check.model_class == "ToyForSequenceClassification"
    assert check.remote_code_files == ["configuration_toy.py", "modeling_toy.py"]
    assert {"README.md", "config.json", "model.safetensors", "modeling_toy.py"} <= {f["name"] for f in check.files}
    assert check.card_metadata["pipeline_tag"] == "text-classification"


def test_pickle_files_are_refused(broken):
    (broken / "pytorch_model.bin").write_bytes(pickle.dumps({"weights": [1, 2]}, protocol=4))
    (broken / "extra.dat").write_bytes(pickle.dumps([1], protocol=2))
    problems = _problems(broken)
    assert any("pytorch_model.bin" in p and "pickle" in p for p in problems)
    assert any("extra.dat" in p and "pickle" in p for p in problems)


def test_missing_remote_code_is_refused(broken):
    (broken / "modeling_toy.py").unlink()
    config = json.loads((broken / "config.json").read_text())
    config["auto_map"]["AutoModelForTokenClassification"] = "configuration_toy.NotThere"
    (broken / "config.json").write_text(json.dumps(config))
    problems = _problems(broken)
    assert any("modeling_toy.py is not in the folder" in p for p in problems)
    assert any("NotThere" in p for p in problems)


def test_weights_must_be_safetensors_and_load_strictly(broken):
    state = load_file(broken / "model.safetensors")
    state["classifier.extra"] = torch.zeros(2)
    del state["classifier.bias"]
    save_file(state, broken / "model.safetensors", metadata={"format": "pt"})
    problems = _problems(broken)
    assert any("unexpected" in p and "classifier.extra" in p for p in problems)
    assert any("missing" in p and "classifier.bias" in p for p in problems)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    assert any("not a readable safetensors file" in p for p in _problems(broken))
    (broken / "model.safetensors").unlink()
    assert any("no model.safetensors" in p for p in _problems(broken))


def test_card_must_exist_with_complete_metadata(broken):
    text = (broken / "README.md").read_text().replace("pipeline_tag: text-classification\n", "")
    (broken / "README.md").write_text(text)
    assert any("lacks pipeline_tag" in p for p in _problems(broken))
    (broken / "README.md").unlink()
    assert any("no README.md" in p for p in _problems(broken))


def test_card_with_metrics_has_base_model_and_model_index(tmp_path):
    folder = make_toy_folder(tmp_path / "tuned", metrics=METRICS, repo_id="org/toy-sst2")
    check = validate_folder(folder)
    assert check.card_metadata["base_model"] == "org/toy-base"
    card = ModelCard.load(folder / "README.md")
    result = card.data.eval_results[0]
    assert (result.metric_type, result.metric_value, result.dataset_name) == ("accuracy", 0.5, "GLUE SST-2")
    assert "| accuracy | 0.5 |" in card.text and "## Citation" in card.text
    assert validate_card_metadata(str(card)) == ([], [])
    (folder / "README.md").write_text(str(render_card(folder, repo_id="org/toy-sst2", template_dir=CARDS))
                                      .replace("base_model: org/toy-base\n", ""))
    assert any("lacks base_model" in p for p in _problems(folder))


def test_card_file_table_lists_sizes_and_hashes(toy):
    text = (toy / "README.md").read_text()
    for row in validate_folder(toy).files:
        if row["name"] != "README.md":
            assert f"| {row['name']} | {row['size']} | `{row['sha256']}` |" in text


def test_pipeline_tag_rules():
    config = {"architectures": ["ToyModel"], "auto_map": {"AutoModel": "modeling_toy.ToyModel"}}
    assert pipeline_tag_for(config) == "feature-extraction"
    assert pipeline_tag_for(config, "graph-regression") == "graph-ml"
    assert pipeline_tag_for(config, "fill-mask") == "fill-mask"
    assert pipeline_tag_for({"architectures": ["X"]}) is None


def test_hub_upload_dry_run_and_refusal_send_nothing(toy, broken, capsys, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: any request would fail
    assert hub_upload.main([str(toy), "--repo-id", "org/toy", "--tag", "v1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "model.safetensors" in out and "tag v1" in out
    (broken / "weights.pt").write_bytes(b"\x80\x04K\x01.")
    assert hub_upload.main([str(broken), "--repo-id", "org/toy"]) == 1
    assert "weights.pt" in capsys.readouterr().err
    assert hub_upload.main([str(toy), "--repo-id", "no-namespace"]) == 2


def test_validate_yaml_rules():
    assert validate_card_metadata("---\nlicense: [1\n---\ntext")[0]
    assert validate_card_metadata("---\ntags: 3\n---\n")[0] == ['"tags" must be a string or a list of strings']
    assert validate_card_metadata("no metadata")[1]
    bad_index = "---\nmodel-index:\n- name: x\n  results:\n  - task: 3\n---\n"
    assert any("model-index" in e for e in validate_card_metadata(bad_index)[0])


def test_store_commits_are_all_or_nothing(tmp_path):
    store = HubStore(tmp_path)
    store.create_repo("org/a")
    head = store.resolve("org/a", "main")
    with pytest.raises(BlobMissingError):
        store.commit("org/a", "main", {"x.txt": FileChange(content=b"x"), "w.safetensors": FileChange(sha256="0" * 64)},
                     title="half")
    with pytest.raises(InvalidRequest):
        store.commit("org/a", "main", {"../escape": FileChange(content=b"x")}, title="escape")
    with pytest.raises(InvalidRequest):
        store.commit("org/a", "main", {"a": FileChange(content=b"1"), "a/b": FileChange(content=b"2")}, title="clash")
    assert store.resolve("org/a", "main") == head
    new = store.commit("org/a", "main", {"dir/x.txt": FileChange(content=b"x")}, title="ok")
    assert store.read_commit(new)["parents"] == [head]
    assert store.read_commit(new)["files"]["dir/x.txt"]["oid"] == "c1b0730e0133447badcfd47fd144e254807b06e1"  # git hash-object
    assert not any(store.tmp.iterdir())
