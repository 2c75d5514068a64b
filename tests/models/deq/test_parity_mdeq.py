"""MDEQ parity with the original code: every MDEQ case under tests/fixtures/deq/, through the converter.

Each case folder's meta.json declares the tolerances; the expected tensors come from the original
locuslab/deq (and locuslab/mdeq v1) code, solved in float64 to a relative residual of ~1e-13.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForImageClassification

from conversion.convert_deq import convert
from tests.models.deq.conftest import fixture_cases, original_checkpoint
from zoo.models.deq.equilibrium_deq import hutchinson_jacobian_loss, vector_jacobian_product

CASES = fixture_cases("MDEQ")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    cache = {}

    def get(folder):
        if folder.name not in cache:
            meta = json.loads((folder / "meta.json").read_text())
            out = convert(original_checkpoint(folder, meta), tmp_path_factory.mktemp("conv") / folder.name,
                          config=meta["original_config_yaml"])
            cache[folder.name] = (meta, out)
        return cache[folder.name]

    return get


def load_model(out, dtype, tol, max_iter=150):
    model = AutoModelForImageClassification.from_pretrained(out).to(dtype).eval()
    model.config.f_solver = model.config.b_solver = "broyden"
    model.config.f_tol = model.config.b_tol = tol
    model.config.f_max_iter = model.config.b_max_iter = max_iter
    return model


def close(actual, expected, atol, rtol=0.0, name=""):
    torch.testing.assert_close(actual.to(expected.dtype), expected, atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


def train_mode_with_frozen_bn(model):
    """The fixtures' gradient setting: train mode (graph for the backward) with BatchNorm running stats."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()


def grad_name(name):
    return name[len("mdeq."):] if name.startswith("mdeq.") else name


@pytest.mark.parametrize("folder", CASES)
def test_forward_float64(folder, converted):
    meta, out = converted(folder)
    tol = meta["tolerances"]["float64_implementation"]
    fwd = tol["expected_forward.z_star_*|logits|injection_branch0"]
    unrolled_tol = tol["expected_forward.z_unrolled_*|logits_unrolled_*"]
    model = load_model(out, torch.float64, 1e-12)
    images = load_file(folder / "inputs.safetensors")["images"].double()
    expected = load_file(folder / "expected_forward.safetensors")
    with torch.no_grad():
        output = model(pixel_values=images)
        assert bool(output.converged.all()) and float(output.rel_residual.max()) < 1e-12
        close(output.logits, expected["logits"], fwd["atol"], fwd["rtol"], "logits")
        for i, state in enumerate(output.equilibrium_states):
            close(state, expected[f"z_star_branch{i}"], fwd["atol"], fwd["rtol"], f"z_star_branch{i}")
        close(model.mdeq.injection(images), expected["injection_branch0"], fwd["atol"], fwd["rtol"], "injection")
        f, _, _ = model.mdeq.equilibrium_function(images)
        z_star = torch.cat([s.reshape(2, -1) for s in output.equilibrium_states], dim=1)
        close(f(z_star) - z_star, expected["f_of_z_star_minus_z_star"], 1e-10, 0.0, "residual")
        for k in (1, 4):
            unrolled = model(pixel_values=images, unrolled_steps=k)
            close(unrolled.logits, expected[f"logits_unrolled_K{k}"], unrolled_tol["atol"], unrolled_tol["rtol"], f"K{k}")
            for i, state in enumerate(unrolled.equilibrium_states):
                close(state, expected[f"z_unrolled_K{k}_branch{i}"], unrolled_tol["atol"], unrolled_tol["rtol"])


@pytest.mark.parametrize("solver", ["anderson", "fixed_point_iteration"])
@pytest.mark.parametrize("folder", CASES[:1])
def test_other_solvers_reach_the_same_equilibrium(folder, converted, solver):
    meta, out = converted(folder)
    model = load_model(out, torch.float64, 1e-12, max_iter=400)
    model.config.f_solver = solver
    images = load_file(folder / "inputs.safetensors")["images"].double()
    expected = load_file(folder / "expected_forward.safetensors")
    with torch.no_grad():
        output = model(pixel_values=images)
    assert bool(output.converged.all()), (solver, output.rel_residual)
    close(output.logits, expected["logits"], 1e-8, 1e-7, solver)


@pytest.mark.parametrize("folder", CASES)
def test_forward_float32(folder, converted):
    meta, out = converted(folder)
    tol = meta["tolerances"]["float32_implementation (solver tol <= 1e-6 relative, enough iterations)"]
    model = load_model(out, torch.float32, 1e-6, max_iter=100)
    images = load_file(folder / "inputs.safetensors")["images"]
    expected64 = load_file(folder / "expected_forward.safetensors")
    expected32 = load_file(folder / "expected_forward_float32.safetensors")
    with torch.no_grad():
        output = model(pixel_values=images)
    close(output.logits, expected32["logits_float32_tight"].double(), tol["logits"]["atol"], 0.0, "vs original f32")
    close(output.logits, expected64["logits"], tol["logits"]["atol"], 0.0, "vs float64")
    for i, state in enumerate(output.equilibrium_states):
        close(state, expected64[f"z_star_branch{i}"], tol["z_star_*"]["atol"], 0.0, f"z_star_branch{i}")



GRAD_CASES = [c for c in CASES if (c.values[0] / "expected_grad_ift.safetensors").is_file()]
PHANTOM_CASES = [c for c in CASES if (c.values[0] / "expected_grad_phantom.safetensors").is_file()]
JACOBIAN_CASES = [c for c in CASES if (c.values[0] / "expected_jacobian.safetensors").is_file()]


def _loss_and_grads(model, inputs, keep=None):
    """Backward of the labelled loss; `keep` (a list) receives the injected tensor with its gradient kept."""
    model.zero_grad()
    images = inputs["images"].double().clone().requires_grad_()
    handle = None
    if keep is not None:
        def retain(module, args, output):
            output.retain_grad()
            keep.append(output)
        handle = model.mdeq.downsample.register_forward_hook(retain)
    output = model(pixel_values=images, labels=inputs["labels"])
    if handle is not None:
        handle.remove()
    output.loss.backward()
    return output, images


@pytest.mark.parametrize("folder", GRAD_CASES)
def test_ift_gradients(folder, converted):
    meta, out = converted(folder)
    tol = meta["tolerances"]["float64_implementation"]["expected_grad_ift.*"]
    model = load_model(out, torch.float64, 1e-12)
    model.config.backward = "ift"
    train_mode_with_frozen_bn(model)
    inputs = load_file(folder / "inputs.safetensors")
    expected = load_file(folder / "expected_grad_ift.safetensors")
    injection = []
    output, images = _loss_and_grads(model, inputs, keep=injection)
    assert model.mdeq.stage0 is None  # the stem output is the injection in these cases
    close(injection[0].grad, expected["grad_injection_branch0"], tol["atol"], tol["rtol"], "grad_injection_branch0")
    close(output.loss.reshape(1), expected["loss"], 1e-12, 0.0, "loss")
    close(output.logits, expected["logits_trainmode"], tol["atol"], tol["rtol"], "logits_trainmode")
    close(images.grad, expected["grad_images"], tol["atol"], tol["rtol"], "grad_images")
    solve = model.mdeq.last_solve
    assert solve.backward_stats and solve.backward_stats[0].converged
    close(solve.incoming_grad, expected["dL_dzstar"], tol["atol"], tol["rtol"], "dL_dzstar")
    close(solve.adjoint, expected["ift_adjoint"], tol["atol"], tol["rtol"], "ift_adjoint")
    names = {f"grad.{grad_name(n)}" for n, _ in model.named_parameters()}
    assert names == {k for k in expected if k.startswith("grad.")}
    for name, param in model.named_parameters():
        close(param.grad, expected[f"grad.{grad_name(name)}"], tol["atol"], tol["rtol"], name)


@pytest.mark.parametrize("folder", PHANTOM_CASES)
def test_phantom_gradients(folder, converted):
    meta, out = converted(folder)
    tol = meta["tolerances"]["float64_implementation"]["expected_grad_phantom.*"]
    model = load_model(out, torch.float64, 1e-12)
    model.config.backward = "phantom"
    train_mode_with_frozen_bn(model)
    inputs = load_file(folder / "inputs.safetensors")
    expected = load_file(folder / "expected_grad_phantom.safetensors")
    for case in meta["reference_numbers"]["phantom_gradient"]["cases"]:
        model.config.phantom_steps, model.config.phantom_tau = case["k"], case["tau"]
        prefix = case["tag"] + "."
        output, images = _loss_and_grads(model, inputs)
        close(output.loss.reshape(1), expected[prefix + "loss"], 1e-12, 0.0, prefix + "loss")
        close(images.grad, expected[prefix + "grad_images"], tol["atol"], tol["rtol"], prefix + "grad_images")
        for name, param in model.named_parameters():
            close(param.grad, expected[f"{prefix}grad.{grad_name(name)}"], tol["atol"], tol["rtol"], prefix + name)


@pytest.mark.parametrize("folder", JACOBIAN_CASES)
def test_jacobian_probe(folder, converted):
    meta, out = converted(folder)
    tol = meta["tolerances"]["float64_implementation"]
    model = load_model(out, torch.float64, 1e-12)
    images = load_file(folder / "inputs.safetensors")["images"].double()
    expected = load_file(folder / "expected_jacobian.safetensors")
    jac = meta["reference_numbers"]["jacobian"]
    f, _, _ = model.mdeq.equilibrium_function(images)
    z = expected["z_star_vec"].clone().requires_grad_()
    new_z = f(z)
    v = expected["hutchinson_v"]
    close(vector_jacobian_product(new_z, z, v), expected["vJ"], tol["expected_jacobian.vJ"]["atol"],
          tol["expected_jacobian.vJ"]["rtol"], "vJ")
    estimate = hutchinson_jacobian_loss(new_z, z, probes=v[None], create_graph=False)
    key = next(k for k in jac if k.startswith("hutchinson_with_stored_v"))
    assert float(estimate) == pytest.approx(jac[key], rel=tol["meta.jacobian scalars"]["rtol"])
    # the model's own regulariser at its equilibrium, with the same probe
    model.train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        output = model.mdeq(images, compute_jac_loss=True, jac_probes=v[None])
    assert float(output.jac_loss) == pytest.approx(jac[key], rel=1e-6)


@pytest.mark.parametrize("folder", GRAD_CASES)
def test_shine_is_closer_to_ift_than_jacobian_free(folder, converted):
    """SHINE (the forward Broyden inverse reused in the backward) against the exact IFT gradient of the
    fixture: a better estimate than the Jacobian-free gradient (whose cosine the fixture records)."""
    meta, out = converted(folder)
    model = load_model(out, torch.float64, 1e-10, max_iter=100)
    train_mode_with_frozen_bn(model)
    inputs = load_file(folder / "inputs.safetensors")
    expected = load_file(folder / "expected_grad_ift.safetensors")
    reference = torch.cat([expected[f"grad.{grad_name(n)}"].reshape(-1) for n, _ in model.named_parameters()])
    cosines = {}
    for mode in ("shine", "phantom"):
        model.config.backward, model.config.phantom_steps, model.config.phantom_tau = mode, 1, 1.0
        _loss_and_grads(model, inputs)
        grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        cosines[mode] = float(torch.nn.functional.cosine_similarity(grads, reference, dim=0))
    jfb = next(c for c in meta["reference_numbers"]["phantom_gradient"]["cases"] if c["k"] == 1)
    assert cosines["phantom"] == pytest.approx(jfb["cosine_vs_ift_all_params"], abs=1e-6)
    assert cosines["shine"] > cosines["phantom"]


@pytest.mark.parametrize("folder", GRAD_CASES)
def test_ift_gradients_float32(folder, converted):
    """A float32 model with a tight solver reproduces the float64 IFT gradients to the float32 tolerance."""
    meta, out = converted(folder)
    tol = meta["tolerances"]["float32_implementation (solver tol <= 1e-6 relative, enough iterations)"]["gradients"]
    model = load_model(out, torch.float32, 1e-6, max_iter=100)
    train_mode_with_frozen_bn(model)
    inputs = load_file(folder / "inputs.safetensors")
    expected = load_file(folder / "expected_grad_ift.safetensors")
    model.zero_grad()
    images = inputs["images"].clone().requires_grad_()
    model(pixel_values=images, labels=inputs["labels"]).loss.backward()
    close(images.grad, expected["grad_images"], tol["atol"], tol["rtol"], "grad_images")
    for name, param in model.named_parameters():
        close(param.grad, expected[f"grad.{grad_name(name)}"], tol["atol"], tol["rtol"], name)
