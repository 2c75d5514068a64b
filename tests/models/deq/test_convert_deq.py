"""conversion/convert_deq.py: layouts, training checkpoints, CLI, and checkpoints that do not fit."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from conversion.convert_deq import ConversionError, convert, main
from conversion.safe_checkpoint import CheckpointReadError, read_state_dict
from tests.models.deq.conftest import FAMILY


def _first(what, accept):
    found = [c.folder for c in FAMILY.all() if accept(c)]
    assert found, f"no DEQ case {what}"
    return found[0]


# converter behaviour is checked on real original files: a v2 MDEQ case that also ships the training checkpoint
# dict, a case whose weights are in the v1 layout, and a DEQ-Transformer case
V2 = _first("with an MDEQ training checkpoint", lambda c: c.kind == "MDEQ" and "training_checkpoint" in c.meta)
V1 = _first("with a v1-layout checkpoint", lambda c: c.kind == "MDEQ" and "v1_checkpoint" in c.meta)
LM = _first("of the DEQ-Transformer", lambda c: c.kind == "DEQ-Transformer")


def _meta(folder):
    return json.loads((folder / "meta.json").read_text())


TRAINING_CHECKPOINT = V2 / next(iter(_meta(V2)["training_checkpoint"]))
V1_FILE = V1 / _meta(V1)["v1_checkpoint"]["file"]
LM_FILE = LM / next(iter(_meta(LM)["checkpoint"]))
V2_STATE = V2 / next(iter(_meta(V2)["checkpoint"]))
V1_TWIN = V1 / next(iter(_meta(V1)["checkpoint"]))  # the same weights as V1_FILE in the v2 layout


def lm_args():
    meta = json.loads((LM / "meta.json").read_text())
    args = dict(meta["original_args (train_transformer.py argparse names)"])
    args.update(cutoffs=meta["derived_constructor_args"]["cutoffs"], tie_projs=meta["derived_constructor_args"]["tie_projs"])
    return args


def yaml_of(folder):
    return json.loads((folder / "meta.json").read_text())["original_config_yaml"]


def weights(folder):
    return load_file(folder / "model.safetensors")


def test_training_checkpoint_and_state_dict_give_the_same_weights(tmp_path):
    a = convert(V2_STATE, tmp_path / "a", config=yaml_of(V2))
    b = convert(TRAINING_CHECKPOINT, tmp_path / "b", config=yaml_of(V2))
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    info = json.loads((a / "conversion.json").read_text())
    assert info["layout"] == "v2" and len(info["source_sha256"]) == 64
    card = (a / "README.md").read_text()
    assert card.startswith("---") and "model.safetensors" in card and "Multiscale Deep Equilibrium" in card


def test_v1_layout_equals_its_v2_twin(tmp_path):
    v1 = convert(V1_FILE, tmp_path / "v1", config=yaml_of(V1))
    v2 = convert(V1_TWIN, tmp_path / "v2", config=yaml_of(V1))
    w1, w2 = weights(v1), weights(v2)
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    assert json.loads((v1 / "conversion.json").read_text())["dropped_v1_keys"] is True


def test_v1_checkpoint_forced_as_v2_is_refused(tmp_path):
    with pytest.raises(ConversionError, match="v1 .*layout.*--layout v1"):
        convert(V1_FILE, tmp_path / "x", config=yaml_of(V1), layout="v2")
    with pytest.raises(ConversionError, match="not in the v1 layout"):
        convert(V2_STATE, tmp_path / "y", config=yaml_of(V2), layout="v1")


def test_v1_checkpoint_with_a_non_affine_config_is_refused(tmp_path):
    with pytest.raises(ConversionError, match="post_gn_affine=False"):
        convert(V1_FILE, tmp_path / "x", config=yaml_of(V2))


def test_v2_checkpoint_with_wrong_affine_config_names_the_keys(tmp_path):
    with pytest.raises(ConversionError, match=r"model keys with no original entry: \['mdeq.fullstage.post_fuse"):
        convert(V2_STATE, tmp_path / "x", config=yaml_of(V1))


def test_extra_and_missing_keys(tmp_path):
    state = read_state_dict(V2_STATE)
    state["extra.weight"] = torch.zeros(1)
    del state["classifier.bias"]
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    with pytest.raises(ConversionError, match=r"classifier.bias.*original keys not used: \['extra.weight'\]"):
        convert(path, tmp_path / "x", config=yaml_of(V2))


def test_wrong_shape(tmp_path):
    state = read_state_dict(V2_STATE)
    state["classifier.weight"] = torch.zeros(11, 32)
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    with pytest.raises(ConversionError, match=r"classifier.weight has shape \(11, 32\)"):
        convert(path, tmp_path / "x", config=yaml_of(V2))


def test_inconsistent_v1_duplicates(tmp_path):
    state = read_state_dict(V1_FILE)
    key = next(k for k in state if k.startswith("deq.func.") and k.endswith("weight_v"))
    state[key] = state[key] + 1
    path = tmp_path / "edited.pkl"
    torch.save(state, path)
    with pytest.raises(ConversionError, match="does not match"):
        convert(path, tmp_path / "x", config=yaml_of(V1))


def test_truncated_file(tmp_path):
    path = tmp_path / "truncated.pth.tar"
    data = (V2_STATE).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointReadError):
        convert(path, tmp_path / "x", config=yaml_of(V2))
    assert not (tmp_path / "x").exists()


def test_missing_config(tmp_path):
    with pytest.raises(ConversionError, match="--variant NAME or --config"):
        convert(V2_STATE, tmp_path / "x")


def test_cli_with_yaml_and_overwrite(tmp_path, capsys):
    import yaml

    cfg = tmp_path / "cls_mdeq_tiny.yaml"
    cfg.write_text(yaml.safe_dump(yaml_of(V2)))
    out = tmp_path / "out"
    assert main([str(V2_STATE), str(out), "--config", str(cfg)]) == 0
    assert main([str(V2_STATE), str(out), "--config", str(cfg)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main([str(V2_STATE), str(out), "--config", str(cfg), "--overwrite"]) == 0
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    shutil.rmtree(out)


def test_deq_transformer_conversion_keeps_the_ties(tmp_path):
    out = convert(LM_FILE, tmp_path / "lm", config=lm_args())
    info = json.loads((out / "conversion.json").read_text())
    assert info["family"] == "deq_transformer" and info["forward_check"]["reload_max_abs_diff"] == 0.0
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.crit.out_layers[2].weight is model.transformer.word_emb.emb_layers[2].weight
    assert model.crit.out_projs[3].weight is model.transformer.word_emb.emb_projs[3].weight
    assert "DEQ-Transformer" in (out / "README.md").read_text()


def test_deq_transformer_mixups(tmp_path):
    with pytest.raises(ConversionError, match="deq_transformer checkpoint but variant 'mdeq_tiny_cifar10'"):
        convert(LM_FILE, tmp_path / "a", variant="mdeq_tiny_cifar10")
    with pytest.raises(ConversionError, match="mdeq checkpoint but variant 'deq_transformer_wt103'"):
        convert(V2_STATE, tmp_path / "b", variant="deq_transformer_wt103")
    with pytest.raises(ConversionError, match="--layout v1 applies to MDEQ only"):
        convert(LM_FILE, tmp_path / "c", config=lm_args(), layout="v1")


def test_deq_transformer_untied_weights_with_a_tied_config(tmp_path):
    state = {k: v.clone() for k, v in read_state_dict(LM_FILE).items()}
    state["crit.out_layers.1.weight"] += 1.0
    path = tmp_path / "untied.pth"
    torch.save(state, path)
    with pytest.raises(ConversionError, match="crit.out_layers.1.weight and word_emb.emb_layers.1.weight differ"):
        convert(path, tmp_path / "x", config=lm_args())
