"""PriorGrad converter: round trip, CLI, and refusal of mismatched or damaged checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoFeatureExtractor, AutoModelForTextToWaveform

from conversion.convert_priorgrad import ConversionError, convert, key_table, main
from conversion.safe_checkpoint import read_checkpoint
from zoo.models.priorgrad import PriorGradConfig, PriorGradVocoder

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "priorgrad"


def _global_conditioning_case() -> tuple[Path, dict]:
    """The converter is exercised on the richest layout: a case trained with condition_prior_global."""
    for meta_path in sorted(FIXTURES.glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        if meta["params"]["condition_prior_global"]:
            return meta_path.parent, meta
    raise AssertionError(f"no case under {FIXTURES} was trained with condition_prior_global")


CASE, META = _global_conditioning_case()
CHECKPOINT = CASE / META["checkpoint"]["file"]


def test_round_trip_writes_a_complete_folder(tmp_path):
    out = convert(CHECKPOINT, tmp_path / "out", variant="priorgrad_vocoder_ljspeech")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "conversion.json", "README.md"} <= names
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    record = json.loads((out / "conversion.json").read_text())
    assert record["step"] == META["checkpoint"]["step"] and record["format"] == "priorgrad-learner"
    assert record["stats"]["energy_min"] == pytest.approx(META["stats"]["energy_min_train"])
    assert f"Converted from the original PriorGrad-vocoder checkpoint `{CHECKPOINT.name}`" in (out / "README.md").read_text()
    vocoder = AutoModelForTextToWaveform.from_pretrained(out)
    assert isinstance(vocoder, PriorGradVocoder) and vocoder.config.condition_prior_global
    original = read_checkpoint(CHECKPOINT)["model"]
    state = vocoder.state_dict()
    for source, target in key_table(vocoder.config).items():
        torch.testing.assert_close(state[target], original[source], atol=0, rtol=0)
    fe = AutoFeatureExtractor.from_pretrained(out)
    assert fe.energy_max == pytest.approx(META["stats"]["energy_max_train"])
    assert fe.max_energy_override == META["params"]["max_energy_override"]


def test_cli_and_overwrite(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main([str(CHECKPOINT), str(out), "--stats", str(CASE / "stats_priorgrad")]) == 0
    assert main([str(CHECKPOINT), str(out)]) == 1
    assert "exists and is not empty" in capsys.readouterr().err
    assert main([str(CHECKPOINT), str(out), "--overwrite"]) == 0


def test_key_table_covers_the_released_layout():
    import json as _json

    released = _json.loads((FIXTURES / "released_config.json").read_text())["state_dict"]
    assert set(key_table(PriorGradConfig())) == set(released)


def _damaged(tmp_path: Path, edit) -> Path:
    checkpoint = read_checkpoint(CHECKPOINT)
    edit(checkpoint)
    folder = tmp_path / "damaged"
    folder.mkdir()
    shutil.copytree(CASE / "stats_priorgrad", folder / "stats_priorgrad")
    torch.save(checkpoint, folder / CHECKPOINT.name)
    return folder / CHECKPOINT.name


def test_missing_and_extra_keys_are_named(tmp_path):
    def edit(ckpt):
        ckpt["model"].pop("residual_layers.1.dilated_conv.bias")
        ckpt["model"]["extra.weight"] = torch.zeros(1)

    with pytest.raises(ConversionError, match=r"not used \['extra.weight'\].*\['residual_layers.1.dilated_conv.bias'\]"):
        convert(_damaged(tmp_path, edit), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_wrong_shape_and_params_are_named(tmp_path):
    def edit(ckpt):
        ckpt["params"]["residual_channels"] = 16

    with pytest.raises(ConversionError, match="input_projection.weight has shape"):
        convert(_damaged(tmp_path, edit), tmp_path / "out")


def test_truncated_file_and_missing_stats(tmp_path):
    truncated = tmp_path / "weights-1.pt"
    truncated.write_bytes(CHECKPOINT.read_bytes()[:5000])
    with pytest.raises(ConversionError, match="weights-1.pt"):
        convert(truncated, tmp_path / "out")
    lonely = tmp_path / "alone" / CHECKPOINT.name
    lonely.parent.mkdir()
    shutil.copy(CHECKPOINT, lonely)
    with pytest.raises(ConversionError, match="--stats"):
        convert(lonely, tmp_path / "out2")
