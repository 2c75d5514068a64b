"""The fairseq-train converter: complete folders, and clear errors for checkpoints it cannot map."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig

from conversion.convert_dmp import ConversionError, convert, main
from conversion.safe_checkpoint import CheckpointReadError, read_checkpoint
from tests.models.dmp._fixtures import first, shape_tables

# one checkpoint of each kind, as inputs for the converter's own checks (parity: test_parity_dmp.py)
PRETRAIN_CASE = first("pretrain")
FINETUNE_CASE = first("finetune")
PRETRAIN = PRETRAIN_CASE.folder / PRETRAIN_CASE.meta["checkpoint"]["file"]
FINETUNE = FINETUNE_CASE.folder / FINETUNE_CASE.meta["checkpoint"]["file"]


def test_cli_writes_a_complete_folder(tmp_path, capsys):
    out = tmp_path / "dmp_tiny"
    assert main([str(PRETRAIN), str(out), "--variant", "dmp_base"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "dict.txt", "tokenizer_config.json", "README.md",
            "conversion.json", "modeling_dmp.py", "tokenization_dmp.py"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl"))]
    record = json.loads((out / "conversion.json").read_text())
    assert record["architecture"] == "DmpForPreTraining" and record["variant"] == "dmp_base"
    assert record["original_task"] == "dmp" and record["forward_check"]["max_abs_diff_after_reload"] == 0.0
    assert len(record["source_sha256"]) == 64 and record["command"].startswith("python conversion/convert_dmp.py")
    card = (out / "README.md").read_text()
    assert "dmp_tiny" in card and "Dual-view Molecular Pre-training" in card and "@inproceedings" in card
    config = json.loads((out / "config.json").read_text())
    cfg_model = PRETRAIN_CASE.meta["checkpoint"]["cfg_model"]
    assert config["hidden_size"] == cfg_model["encoder_embed_dim"]
    assert config["gnn_hidden_size"] == cfg_model["gnn_embed_dim"]
    assert config["projection_ratio"] == cfg_model["bottleneck_ratio"]
    assert main([str(PRETRAIN), str(out)]) == 1
    assert "exists and is not empty" in capsys.readouterr().err


def test_finetune_checkpoint_options(tmp_path):
    out = convert(FINETUNE, tmp_path / "cls")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["DmpForSequenceClassification"]
    assert AutoConfig.from_pretrained(out).num_labels == FINETUNE_CASE.meta["checkpoint"]["cfg_task"]["num_classes"]
    # fairseq-train --gradmultiply scales the Transformer's gradient by 0.1 (DVMP doublemodel.py)
    assert config["gradient_multiplier"] == (0.1 if FINETUNE_CASE.meta["checkpoint"]["cfg_model"]["gradmultiply"] else 1.0)
    with pytest.raises(ConversionError, match="variant dmp_base is a DmpForPreTraining"):
        convert(FINETUNE, tmp_path / "wrong", variant="dmp_base")


def test_tokenizer_loads_as_remote_code_without_zoo(tmp_path):
    out = convert(FINETUNE, tmp_path / "cls")
    script = (
        "import sys; sys.modules['zoo'] = None\n"
        "from transformers import AutoTokenizer, AutoModelForSequenceClassification\n"
        f"tok = AutoTokenizer.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
        "assert type(tok).__module__.startswith('transformers_modules'), type(tok).__module__\n"
        "print(tok(['OCC', 'CC(=O)[O-].[Na+]'], padding=True)['input_ids'])\n"
        f"AutoModelForSequenceClassification.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "HF_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str([[1, 1, 1, 1, 1, 1, 5, 5, 9, 2], [5, 5, 6, 10, 9, 7, 31, 25, 48, 2]])


def edited_checkpoint(tmp_path, edit):
    checkpoint = read_checkpoint(FINETUNE)
    edit(checkpoint)
    path = tmp_path / "edited.pt"
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("edit,message", [
    (lambda c: c["model"].pop("encoder1.gcns.1.mlp.bias"), r"does not fill: \['dmp.gnn.layers.1.mlp.bias'\]"),
    (lambda c: c["model"].__setitem__("encoder1.extra.weight", torch.zeros(2)), r"no place .*encoder1.extra.weight"),
    (lambda c: c["cfg"]["model"].__setitem__("encoder_normalize_before", True), "encoder_normalize_before"),
    (lambda c: c["cfg"]["model"].__setitem__("gnn_aggr", "add"), "gnn_aggr"),
    (lambda c: c["model"].__setitem__("encoder0.lm_head.weight", torch.zeros(2353, 32)), "zoo ties them"),
    (lambda c: c["model"].__setitem__("encoder1.gcns.0.mlp.weight", torch.zeros(24, 25)), "shape mismatches"),
], ids=["missing-key", "extra-key", "pre-ln", "aggregation", "untied-lm-head", "wrong-shape"])
def test_bad_checkpoints_are_named(tmp_path, edit, message):
    with pytest.raises(ConversionError, match=message):
        convert(edited_checkpoint(tmp_path, edit), tmp_path / "out")
    assert not (tmp_path / "out").exists(), "nothing may be left behind by a failed conversion"


def test_truncated_checkpoint(tmp_path):
    data = PRETRAIN.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointReadError, match="truncated"):
        convert(path, tmp_path / "out")
    assert main([str(path), str(tmp_path / "out")]) == 1


@pytest.mark.parametrize("shapes", shape_tables())
def test_released_configuration_maps_onto_zoo(shapes):
    """The original classes' state dict at the paper size (a release shape table, no weights) maps key for key and
    shape for shape onto zoo's pre-training and classification models built from DmpConfig's defaults, and the
    catalog's parameter counts are the original's."""
    from conversion.convert_dmp import config_from_fairseq, convert_state_dict
    from zoo.catalog import dmp as catalog
    from zoo.models.dmp import DmpConfig, DmpForPreTraining, DmpForSequenceClassification

    tied = {copy: source for copy, source in shapes["tied"]}
    for copy, source in tied.items():
        assert shapes["state_dict_shapes"][copy] == shapes["state_dict_shapes"][source]
    state = {key: torch.empty(shape, device="meta") for key, shape in shapes["state_dict_shapes"].items()
             if key not in tied}  # tied copies are checked for equal values by the converter; shapes above
    counted = {group: sum(int(torch.tensor(shape).prod()) for key, shape in shapes["state_dict_shapes"].items()
                          if key.startswith(group + ".") and key not in tied)
               for group in shapes["param_counts_by_group"]}
    assert counted == shapes["param_counts_by_group"]
    assert catalog._ORIGINAL_GROUPS == shapes["param_counts_by_group"]
    config = config_from_fairseq(shapes["model_cfg"], {"regression_target": False}, state)
    defaults = DmpConfig(num_labels=config.num_labels)
    for field in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "max_position_embeddings", "gnn_num_layers", "gnn_hidden_size", "projection_ratio",
                  "projection_layers"):
        assert getattr(defaults, field) == getattr(config, field), field
    for model_class in (DmpForPreTraining, DmpForSequenceClassification):
        with torch.device("meta"):
            model = model_class(config)
        converted, dropped = convert_state_dict(state, model)  # raises naming any key or shape that does not fit
        assert set(converted) == set(model.state_dict())
