"""Parity with the original Graphormer-3D: every fixture case folder (with a meta.json) is converted from its
original checkpoint with the converter and must reproduce the original outputs and intermediates."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification

import zoo  # noqa: F401
from conversion.convert_graphormer3d import convert
from tests.models.graphormer3d._fixtures import BIAS, PAIRS, PER_ATOM, cases, featurizer_for


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Each case's original checkpoint converted once, through the converter, and reloaded."""
    models = {}

    def get(case):
        if case.name not in models:
            folder = convert(case.file(case.meta["checkpoint"]["file"]), tmp_path_factory.mktemp(case.name) / "out")
            models[case.name] = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        return models[case.name]

    return get


def run_with_intermediates(model, inputs):
    """Model outputs plus the intermediates the fixtures record, captured with hooks."""
    captured = {}
    base = model.graphormer3d
    hooks = [
        base.pair_kernel.register_forward_hook(lambda m, a, out: captured.__setitem__("gbf_feature", out)),
        base.pair_feature_proj.register_forward_pre_hook(
            lambda m, a: captured.__setitem__("edge_feature_sum", a[0])
        ),
        model.energy_head.proj.register_forward_hook(
            lambda m, a, out: captured.__setitem__("energy_proj", out)
        ),
        model.energy_head.tag_weight.register_forward_hook(
            lambda m, a, out: captured.__setitem__("energy_agg_factor", out)
        ),
    ]
    try:
        with torch.no_grad():
            out = model(
                atom_ids=inputs["atoms"],
                tags=inputs["tags"],
                positions=inputs["pos"],
                real_mask=inputs["real_mask"],
                output_hidden_states=True,
            )
            encoded = base(inputs["atoms"], inputs["tags"], inputs["pos"], output_pair_features=True)
    finally:
        for hook in hooks:
            hook.remove()
    captured.update(
        energy=out.energy,
        energy_eV=out.energy_ev,
        node_output=out.node_output,
        deltapos_pred=out.delta_pos,
        node_target_mask=out.node_target_mask,
        graph_node_feature=out.hidden_states[0],
        layer_outputs=torch.stack(out.hidden_states[1:]),
        final_hidden=encoded.last_hidden_state,
        graph_attn_bias=encoded.attention_bias,
        delta_pos_unit=encoded.pair_direction,
    )
    return captured


def assert_close_on(actual, expected, mask, atol, rtol, name):
    mask = mask.expand_as(expected)
    torch.testing.assert_close(
        actual[mask], expected[mask], atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}"
    )


@pytest.mark.parametrize("case", cases())
def test_every_expected_entry_is_compared(case):
    expected = case.tensors("expected.safetensors")
    compared = set(case.meta["tolerance"]["outputs"]) | set(PER_ATOM + PAIRS + BIAS)
    assert set(expected) == set(case.meta["expected"]), f"{case.where}: meta.json expected differs from the file"
    assert set(expected) <= compared, f"{case.where}: entries no test compares: {sorted(set(expected) - compared)}"
    assert compared <= set(expected), f"{case.where}: entries the tests compare but the case lacks: " \
        f"{sorted(compared - set(expected))}"


@pytest.mark.parametrize("case", cases())
def test_outputs_match_original(case, converted):
    meta = case.meta
    inputs = case.tensors("inputs.safetensors")
    expected = case.tensors("expected.safetensors")
    actual = run_with_intermediates(converted(case), inputs)
    atom = inputs["atoms"].ne(0)
    for name, rule in meta["tolerance"]["outputs"].items():
        if rule.get("exact"):
            assert torch.equal(actual[name], expected[name]), name
            continue
        mask = (
            atom.unsqueeze(-1)
            if rule.get("positions") == "atoms != 0"
            else torch.ones_like(expected[name], dtype=torch.bool)
        )
        assert_close_on(actual[name], expected[name], mask, rule["atol"], rule["rtol"], name)


@pytest.mark.parametrize("case", cases())
def test_intermediates_match_original(case, converted):
    meta = case.meta
    atol, rtol = meta["tolerance"]["intermediates"]["atol"], meta["tolerance"]["intermediates"]["rtol"]
    inputs = case.tensors("inputs.safetensors")
    expected = case.tensors("expected.safetensors")
    actual = run_with_intermediates(converted(case), inputs)
    atom = inputs["atoms"].ne(0)
    pair = atom[:, :, None] & atom[:, None, :]
    for name in PER_ATOM:
        mask = atom[None, :, :, None] if name == "layer_outputs" else atom.unsqueeze(-1)
        assert_close_on(actual[name], expected[name], mask, atol, rtol, name)
    for name in PAIRS:
        assert_close_on(actual[name], expected[name], pair.unsqueeze(-1), atol, rtol, name)
    bias, expected_bias = actual["graph_attn_bias"], expected["graph_attn_bias"]
    query_rows = atom[:, None, :, None].expand_as(expected_bias)
    padded_keys = (~atom)[:, None, None, :].expand_as(expected_bias)
    assert torch.equal(torch.isneginf(bias) & query_rows, padded_keys & query_rows)
    assert torch.equal(torch.isneginf(expected_bias) & query_rows, padded_keys & query_rows)
    finite = query_rows & ~padded_keys
    torch.testing.assert_close(bias[finite], expected_bias[finite], atol=atol, rtol=rtol)


@pytest.mark.parametrize("case", cases())
def test_featurizer_matches_original_pipeline(case):
    """systems.json -> per-system periodic expansion (items_pbc) and the padded batch (inputs), exactly."""
    systems = case.json("systems.json")
    items = case.tensors("items_pbc.safetensors")
    inputs = case.tensors("inputs.safetensors")
    featurizer = featurizer_for(case.meta)
    names = {
        "pos": "positions",
        "atomic_numbers": "atomic_numbers",
        "atoms": "atom_ids",
        "tags": "tags",
        "real_mask": "real_mask",
        "deltapos": "delta_pos",
    }
    for index, system in enumerate(systems):
        item = featurizer.featurize(system)
        for theirs, ours in names.items():
            assert torch.equal(item[ours], items[f"item{index}.{theirs}"]), f"system {index}: {ours}"
    batch = featurizer(systems)
    for theirs, ours in {
        "atoms": "atom_ids",
        "tags": "tags",
        "pos": "positions",
        "real_mask": "real_mask",
        "relaxed_energy": "labels",
        "deltapos": "delta_pos_labels",
    }.items():
        assert batch[ours].dtype == inputs[theirs].dtype, ours
        assert torch.equal(batch[ours], inputs[theirs]), ours
    assert batch["atom_ids"].shape[1] == case.meta["inputs"]["padded_len"]
    assert len(systems) == case.meta["inputs"]["n_systems"]


@pytest.mark.parametrize("case", cases())
def test_featurized_systems_reproduce_original_energies(case, converted):
    """End to end: raw records -> featurizer -> converted model gives the original's energies in eV."""
    systems = case.json("systems.json")
    expected = case.tensors("expected.safetensors")
    batch = featurizer_for(case.meta)(systems)
    with torch.no_grad():
        out = converted(case)(**batch)
    rule = case.meta["tolerance"]["outputs"]["energy_eV"]
    torch.testing.assert_close(out.energy_ev, expected["energy_eV"], atol=rule["atol"], rtol=rule["rtol"])
    assert out.loss is not None and torch.isfinite(out.loss)


@pytest.mark.parametrize("case", cases())
def test_parity_checks_catch_known_mistakes(case, converted):
    """The tolerances separate right from wrong: counting periodic images in the energy or swapping the
    pair-type order both move the outputs outside them (the fixture README's list of easy mistakes)."""
    inputs = case.tensors("inputs.safetensors")
    expected = case.tensors("expected.safetensors")
    model = converted(case)
    args = dict(atom_ids=inputs["atoms"], tags=inputs["tags"], positions=inputs["pos"])
    with torch.no_grad():
        with_images = model(**args, real_mask=inputs["atoms"].ne(0)).energy
        kernel = model.graphormer3d.pair_kernel
        original_pair_types = kernel.pair_types
        kernel.pair_types = lambda ids: original_pair_types(ids).transpose(1, 2)
        try:
            swapped = model(**args, real_mask=inputs["real_mask"]).energy
        finally:
            del kernel.pair_types
    rule = case.meta["tolerance"]["outputs"]["energy"]
    for wrong in (with_images, swapped):
        assert not torch.allclose(wrong, expected["energy"], atol=rule["atol"], rtol=rule["rtol"])
