"""Converter: the fixture checkpoint, both kernel layouts, key errors, bad files, CLI and folder contents."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

import zoo  # noqa: F401
from conversion.convert_graphormer3d import (
    ConversionError,
    build_model,
    config_from_checkpoint,
    convert,
    main,
    rename_state_dict,
)
from conversion.safe_checkpoint import CheckpointReadError, read_checkpoint
from tests.models.graphormer3d._fixtures import first

# a reference case's checkpoint as input for the converter's own checks (parity: test_parity_graphormer3d.py)
CASE = first().folder
BASE_KEYS = Path(__file__).resolve().parents[2] / "fixtures" / "graphormer3d" / "base_state_dict_keys.json"


def write_variant(tmp_path: Path, edit) -> Path:
    """A copy of the fixture checkpoint with its state dict edited (torch.save, read back safely)."""
    checkpoint = read_checkpoint(CASE / "checkpoint.pt")
    state = dict(checkpoint["model"])
    edit(state)
    path = tmp_path / "edited.pt"
    torch.save({"args": None, "cfg": {"model": checkpoint["cfg"]["model"]}, "model": state}, path)
    return path


def to_rbf(state: dict) -> None:
    """Replace the gbf.* tensors with the older RBF layout (means/temps [K], mul/bias [4096, 1])."""
    generator = torch.Generator().manual_seed(0)
    k = state.pop("gbf.means.weight").shape[1]
    state.pop("gbf.stds.weight")
    state["rbf.means"] = (torch.rand(k, generator=generator) * 4).half()
    state["rbf.temps"] = (torch.rand(k, generator=generator) * 2 - 1).half()
    state["rbf.mul.weight"] = state.pop("gbf.mul.weight")
    state["rbf.bias.weight"] = state.pop("gbf.bias.weight")


def test_folder_contents_and_conversion_record(tmp_path):
    folder = convert(
        CASE / "checkpoint.pt", tmp_path / "out", reference_dir=CASE, variant="graphormer3d_base_oc20_is2re"
    )
    names = {p.name for p in folder.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "conversion.json",
        "README.md",
        "modeling_graphormer3d.py",
        "configuration_graphormer3d.py",
        "processing_graphormer3d.py",
    } <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl"))]
    record = json.loads((folder / "conversion.json").read_text())
    assert record["source_sha256"] == json.loads((CASE / "meta.json").read_text())["checkpoint"]["sha256"]
    assert record["source_dtypes"] == ["float16"] and record["pair_kernel"] == "gaussian"
    assert record["check"]["passed"] and record["check"]["max_abs_energy_error"] < 1e-5
    # the tiny fixture is not the base architecture: the record says so, field by field
    assert any(
        d.startswith("num_layers: checkpoint 2, variant 12") for d in record["differences_from_variant"]
    )
    assert any(
        d.startswith("pair_kernel: checkpoint 'gaussian', variant 'rbf'")
        for d in record["differences_from_variant"]
    )
    config = json.loads((folder / "config.json").read_text())
    assert (config["num_layers"], config["num_blocks"], config["hidden_size"], config["num_kernels"]) == (
        2,
        2,
        32,
        16,
    )
    card = (folder / "README.md").read_text()
    assert "pipeline_tag: graph-ml" in card
    assert "0.4722" in card and "engergy_proj" in card and "model.safetensors" in card


def test_weights_are_the_original_values_in_float32(tmp_path):
    model, checkpoint = build_model(CASE / "checkpoint.pt")
    original = checkpoint["model"]
    ours = model.state_dict()
    assert all(t.dtype == torch.float32 for t in ours.values())
    assert torch.equal(ours["energy_head.tag_weight.weight"], original["energe_agg_factor.weight"].float())
    assert torch.equal(ours["energy_head.proj.fc1.weight"], original["engergy_proj.layer1.weight"].float())
    assert torch.equal(ours["graphormer3d.pair_kernel.widths"], original["gbf.stds.weight"].float().view(-1))
    assert torch.equal(ours["node_head.proj_z.bias"], original["node_proc.force_proj3.bias"].float())


def test_rbf_checkpoint_converts_to_rbf_kernel(tmp_path):
    path = write_variant(tmp_path, to_rbf)
    model, checkpoint = build_model(path)
    assert model.config.pair_kernel == "rbf"
    state = checkpoint["model"]
    atom_ids = torch.tensor([[3, 7]])
    distance = torch.tensor([[[0.0, 2.1], [2.1, 0.0]]])
    with torch.no_grad():
        features = model.graphormer3d.pair_kernel(distance, atom_ids)
    pair = 3 * 64 + 7
    x = (
        state["rbf.mul.weight"][pair, 0].float().item() * 2.1
        + state["rbf.bias.weight"][pair, 0].float().item()
    )
    for k in range(state["rbf.means"].shape[0]):
        mean, temp = state["rbf.means"][k].float().item(), state["rbf.temps"][k].float().item()
        assert features[0, 0, 1, k].item() == pytest.approx(
            math.exp(-abs(temp) * (x - mean) ** 2), rel=1e-4, abs=1e-6
        )
    folder = convert(path, tmp_path / "rbf_out")
    reloaded = AutoModelForSequenceClassification.from_pretrained(folder)
    assert reloaded.config.pair_kernel == "rbf"


def test_base_key_layouts_map_onto_the_base_model():
    """Both key layouts of graphormer3d_base (gbf, rbf) map one-to-one, same shapes, onto our model."""
    from zoo.registry import build_config, model_class

    listing = json.loads(BASE_KEYS.read_text())
    gbf = {row["key"]: row["shape"] for row in listing["state_dict"]}
    rbf = {k: v for k, v in gbf.items() if k not in listing["rbf_variant"]["replaces"]}
    rbf.update({row["key"]: row["shape"] for row in listing["rbf_variant"]["keys"]})
    for layout, kernel in ((gbf, "gaussian"), (rbf, "rbf")):
        with torch.device("meta"):
            state = {k: torch.empty(shape) for k, shape in layout.items()}
            renamed = rename_state_dict(state)
            model = model_class("graphormer3d_base_oc20_is2re")(
                build_config("graphormer3d_base_oc20_is2re", pair_kernel=kernel)
            )
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert {k: tuple(v.shape) for k, v in renamed.items()} == expected
        assert sum(math.prod(s) for s in layout.values()) == listing["n_params"]
        fake = {"cfg": {"model": listing["config"]}}
        assert config_from_checkpoint(fake, state)["pair_kernel"] == kernel


def test_extra_key_is_an_error_naming_it(tmp_path):
    path = write_variant(tmp_path, lambda s: s.__setitem__("node_proc.extra.weight", torch.zeros(1)))
    with pytest.raises(ConversionError, match=r"node_proc\.extra\.weight"):
        build_model(path)


def test_missing_key_is_an_error_naming_it(tmp_path):
    path = write_variant(tmp_path, lambda s: s.pop("engergy_proj.layer2.bias"))
    with pytest.raises(ConversionError, match=r"energy_head\.proj\.fc2\.bias"):
        build_model(path)


def test_wrong_shape_is_an_error(tmp_path):
    path = write_variant(tmp_path, lambda s: s.__setitem__("final_ln.weight", torch.zeros(7)))
    with pytest.raises(ConversionError, match=r"graphormer3d\.final_norm\.weight"):
        build_model(path)


def test_both_kernels_is_an_error(tmp_path):
    path = write_variant(tmp_path, lambda s: s.__setitem__("rbf.means", torch.zeros(16)))
    with pytest.raises(ConversionError, match="both gbf.* and rbf.*"):
        build_model(path)


def test_truncated_file_is_a_read_error(tmp_path):
    data = (CASE / "checkpoint.pt").read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointReadError):
        build_model(path)


def test_failed_conversion_leaves_no_folder(tmp_path):
    path = write_variant(tmp_path, lambda s: s.pop("tag_encoder.weight"))
    with pytest.raises(ConversionError):
        convert(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_errors_and_overwrite(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main([str(CASE / "checkpoint.pt"), str(out)]) == 0
    assert main([str(CASE / "checkpoint.pt"), str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main([str(CASE / "checkpoint.pt"), str(out), "--overwrite"]) == 0
    assert main([str(tmp_path / "missing.pt"), str(tmp_path / "x")]) == 1


REMOTE_SCRIPT = """
import json, sys
sys.modules["zoo"] = None
sys.modules["conversion"] = None
import torch
from safetensors.torch import load_file
from transformers import AutoFeatureExtractor, AutoModelForSequenceClassification
folder, case = sys.argv[1], sys.argv[2]
model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
featurizer = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)
assert type(featurizer).__module__.startswith("transformers_modules"), type(featurizer).__module__
systems = json.load(open(case + "/systems.json"))
with torch.no_grad():
    out = model(**featurizer(systems))
expected = load_file(case + "/expected.safetensors")
torch.testing.assert_close(out.energy_ev, expected["energy_eV"], atol=1e-5, rtol=1e-4)
print("ok", out.energy_ev.tolist())
"""


def test_converted_folder_loads_with_remote_code_without_zoo(tmp_path):
    """Model and featurizer load from the folder's own code, featurize raw records, reproduce the original."""
    import os
    import subprocess
    import sys

    folder = convert(CASE / "checkpoint.pt", tmp_path / "remote")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "HF_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), TRANSFORMERS_VERBOSITY="error")
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(folder), str(CASE)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok")
