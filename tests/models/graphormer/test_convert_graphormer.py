"""The Graphormer converter: folder contents, dtype handling, and errors for checkpoints that do not fit."""

import json

import pytest
import torch
from safetensors.torch import load_file

from conversion.convert_graphormer import ConversionError, convert, main
from conversion.safe_checkpoint import CheckpointReadError, read_checkpoint
from tests.models.graphormer._fixtures import first, source

# a fairseq case's checkpoint, as input for the converter's own checks (parity: test_modeling_graphormer.py)
CASE = first("fairseq")
CHECKPOINT = source(CASE)
ARGS = CASE.meta["model_args"]


def write_checkpoint(tmp_path, edit):
    checkpoint = read_checkpoint(CHECKPOINT)
    edit(checkpoint)
    path = tmp_path / "edited.pt"
    torch.save(checkpoint, path)
    return path


def test_fairseq_folder_contents(tmp_path):
    out = convert(CHECKPOINT, tmp_path / "out", variant=None)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "conversion.json", "README.md",
            "modeling_graphormer.py", "configuration_graphormer.py", "featurization_graphormer.py"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl"))]
    weights = load_file(out / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}  # fp16 release tensors widened
    original = read_checkpoint(CHECKPOINT)["model"]
    torch.testing.assert_close(weights["head.embed_out.weight"], original["encoder.embed_out.weight"].float(),
                               atol=0, rtol=0)
    record = json.loads((out / "conversion.json").read_text())
    assert record["format"] == "fairseq"
    assert record["original_dtypes"] == [CASE.meta["checkpoint"]["model_tensor_dtype"]]
    assert record["source_sha256"] == CASE.meta["checkpoint"]["sha256"]
    # the original's masked_lm_pooler is built but never used in its forward pass
    assert record["dropped_keys"] == sorted(entry["key"] for entry in CASE.meta["checkpoint"]["state_dict"]
                                            if entry["key"].startswith("encoder.masked_lm_pooler."))
    assert record["forward_check"]["reload_max_abs_diff"] == 0.0
    card = (out / "README.md").read_text()
    assert "arxiv.org/abs/2106.05234" in card and "masked_lm_pooler" in card and "model.safetensors" in card


def test_float16_output_and_base_model_only(tmp_path):
    out = convert(CHECKPOINT, tmp_path / "half", dtype="float16")
    assert {t.dtype for t in load_file(out / "model.safetensors").values()} == {torch.float16}
    with pytest.raises(ConversionError, match="original keys not used.*encoder.embed_out.weight"):
        convert(CHECKPOINT, tmp_path / "base", head="none")


def test_missing_key_is_named(tmp_path):
    path = write_checkpoint(tmp_path, lambda c: c["model"].pop("encoder.graph_encoder.layers.1.fc2.bias"))
    with pytest.raises(ConversionError, match=r"model keys not filled: \['graphormer.graph_encoder.layers.1.fc2.bias'\]"):
        convert(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extra_key_is_named(tmp_path):
    path = write_checkpoint(tmp_path, lambda c: c["model"].__setitem__("encoder.extra.weight", torch.zeros(2)))
    with pytest.raises(ConversionError, match=r"original keys not used: \['encoder.extra.weight'\]"):
        convert(path, tmp_path / "out")


def test_wrong_shape_is_named(tmp_path):
    def edit(checkpoint):
        checkpoint["model"]["encoder.embed_out.weight"] = torch.zeros(3, ARGS["encoder_embed_dim"], dtype=torch.float16)

    width, classes = ARGS["encoder_embed_dim"], ARGS["num_classes"]
    with pytest.raises(ConversionError, match=rf"head.embed_out.weight: \(3, {width}\) vs model \({classes}, {width}\)"):
        convert(write_checkpoint(tmp_path, edit), tmp_path / "out")


def test_variant_mismatch_is_refused(tmp_path):
    with pytest.raises(ConversionError, match="does not match variant graphormer_base_pcqm4mv2"):
        convert(CHECKPOINT, tmp_path / "out", variant="graphormer_base_pcqm4mv2")


@pytest.mark.parametrize("criterion,head", [("binary_logloss", "GraphormerForGraphClassification"),
                                            ("multiclass_cross_entropy_with_flag", "GraphormerForGraphClassification"),
                                            ("l1_loss_with_flag", "GraphormerForGraphRegression")])
def test_default_head_follows_the_criterion(tmp_path, criterion, head):
    path = write_checkpoint(tmp_path, lambda c: c["cfg"]["criterion"].__setitem__("_name", criterion))
    out = convert(path, tmp_path / "out")
    assert json.loads((out / "config.json").read_text())["architectures"] == [head]


def test_unknown_criterion_needs_a_head(tmp_path):
    path = write_checkpoint(tmp_path, lambda c: c["cfg"]["criterion"].__setitem__("_name", "focal_loss"))
    with pytest.raises(ConversionError, match="criterion 'focal_loss', not one of .*choose the head"):
        convert(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert convert(path, tmp_path / "out", head="regression").is_dir()


def test_truncated_file(tmp_path):
    path = tmp_path / "truncated.pt"
    path.write_bytes(CHECKPOINT.read_bytes()[:5000])
    with pytest.raises(CheckpointReadError):
        convert(path, tmp_path / "out")
    assert main([str(path), str(tmp_path / "out")]) == 1


def test_cli_and_overwrite(tmp_path, capsys):
    assert main([str(CHECKPOINT), str(tmp_path / "out")]) == 0
    assert main([str(CHECKPOINT), str(tmp_path / "out")]) == 1
    assert "exists and is not empty" in capsys.readouterr().err
    assert main([str(CHECKPOINT), str(tmp_path / "out"), "--overwrite", "--head", "classification"]) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == ["GraphormerForGraphClassification"]


def test_transformers_4x_folder_missing_weights(tmp_path):
    folder = tmp_path / "hf4x"
    folder.mkdir()
    (folder / "config.json").write_text(first("transformers-4.x").file("config.json").read_text())
    with pytest.raises(ConversionError, match="no model.safetensors or pytorch_model.bin"):
        convert(folder, tmp_path / "out")


def test_remote_code_folder_with_featurizer(tmp_path):
    """A converted folder loads with trust_remote_code (model + featurizer) where zoo is not importable."""
    import os
    import subprocess
    import sys

    out = convert(CHECKPOINT, tmp_path / "out")
    script = (
        "import sys; sys.modules['zoo'] = None; sys.modules['conversion'] = None\n"
        "from transformers import AutoFeatureExtractor, AutoModelForPreTraining\n"
        f"model = AutoModelForPreTraining.from_pretrained({str(out)!r}, trust_remote_code=True).eval()\n"
        f"featurizer = AutoFeatureExtractor.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
        "print(float(model(**featurizer(['CC(=O)Oc1ccccc1C(=O)O'])).logits[0, 0]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "HF_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), TRANSFORMERS_VERBOSITY="error")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = json.loads((out / "conversion.json").read_text())["forward_check"]["outputs"][0][0]
    assert abs(float(result.stdout.strip().splitlines()[-1]) - expected) < 1e-6
