"""`zoo demo` publishes each family's demo folder to a local hub and predicts from the published repo."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.hub.helpers import INPUT_IDS, make_toy_folder, toy_logits
from zoo import cli, demo
from zoo.hub_server.storage import HubStore


def test_zoo_demo_publishes_reloads_and_predicts(tmp_path, monkeypatch, capsys):
    loaded_from: list[str] = []

    def predict(target: str) -> str:
        from transformers import AutoModelForSequenceClassification

        loaded_from.append(target)
        model = AutoModelForSequenceClassification.from_pretrained(target, cache_dir=tmp_path / "cache")
        with torch.no_grad():
            labels = model.eval()(input_ids=INPUT_IDS).logits.argmax(-1).tolist()
        return f"labels {labels}"

    def toy_demo(workdir: Path, quick: bool) -> demo.DemoResult:
        folder = make_toy_folder(workdir / "folder", repo_id="zoo-demo/toy")
        return demo.DemoResult(folder=folder, predict=predict)

    monkeypatch.setitem(demo._DEMOS, "toy", toy_demo)
    assert cli.main(["demo", "--family", "toy", "--workdir", str(tmp_path / "out"), "--quick"]) == 0
    out = capsys.readouterr().out
    expected = toy_logits(tmp_path / "out" / "toy" / "folder").argmax(-1).tolist()
    assert loaded_from == ["zoo-demo/toy"]  # from_pretrained got the repo id, not the local folder
    row = next(line for line in out.splitlines() if line.startswith("toy "))
    assert " ok " in row and "zoo-demo/toy" in row and f"labels {expected}" in row
    assert "browse: http://127.0.0.1:" in out
    store = HubStore(tmp_path / "out" / "hub")
    commit = store.read_commit(store.resolve("zoo-demo/toy", "main"))
    assert commit["title"] == "zoo demo: toy" and "model.safetensors" in commit["files"]
