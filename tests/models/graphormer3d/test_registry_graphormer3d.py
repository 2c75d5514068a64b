"""Registry entries of Graphormer-3D: parameter counts at full size, a shrunk forward, the demo."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.registry import build_config, dummy_inputs, model_class

NAMES = zoo.list_models(family="graphormer3d")


def test_released_checkpoint_entry():
    entry = zoo.model_info("graphormer3d_base_oc20_is2re")
    assert entry.pretrained and entry.original.format == "fairseq" and entry.original.dtype == "float16"
    assert entry.config["pair_kernel"] == "rbf"
    assert entry.metrics["oc20_is2re_test_energy_mae_ev_average_ensemble"] == 0.4722
    assert entry.original.sha256 is None and entry.original.size_bytes is None  # not known: file unavailable


@pytest.mark.parametrize("name", NAMES)
def test_full_size_parameter_count(name):
    entry = zoo.model_info(name)
    with torch.device("meta"):
        model = model_class(name)(build_config(name))
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - entry.params) <= 0.02 * entry.params
    config = model.config
    assert (
        config.num_layers,
        config.num_blocks,
        config.hidden_size,
        config.num_attention_heads,
        config.num_kernels,
    ) == (12, 4, 768, 48, 128)


@pytest.mark.parametrize("name", NAMES)
def test_shrunk_variant_runs(name, tmp_path):
    entry = zoo.model_info(name)
    torch.manual_seed(0)
    model = zoo.create_model(name, **entry.test_config).eval()
    with torch.no_grad():
        out = model(**dummy_inputs(name, model.config))
    assert torch.isfinite(out.energy_ev).all() and torch.isfinite(out.delta_pos).all()
    model.save_pretrained(tmp_path)
    reloaded = zoo.create_model(name, pretrained=tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**dummy_inputs(name, model.config)).energy, out.energy)


def test_demo_converts_fixture_and_predicts(tmp_path):
    from zoo.demo import run_demos

    rows = run_demos(tmp_path, families=["graphormer3d"], quick=True)
    assert rows[0].ok, rows[0].error
    assert "relaxed energy" in rows[0].prediction and "eV" in rows[0].prediction
    assert rows[0].summary["max_abs_energy_error"] < 1e-5
    assert (rows[0].folder / "README.md").is_file()
