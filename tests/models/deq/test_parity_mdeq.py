"""MDEQ parity with the original code: every MDEQ case under tests/fixtures/deq/, through the converter.

Every fact comes from the case: tolerances from meta.json, which outputs to check from meta.json `outputs`
(a declared file that is missing fails), batch size, branch count and unrolled step counts from the keys and
shapes of the expected files, the stem / injection layout from the converted config (the injection is the
stem output, or stage0's when the original builds one). The expected tensors come from the original
locuslab/deq (and locuslab/mdeq v1) code, solved in float64 to a relative residual of ~1e-13.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from transformers import AutoModelForImageClassification

from conversion.convert_deq import convert
from tests.models.deq.conftest import FAMILY, declaring, numbered, original_checkpoint, unrolled_steps
from zoo.models.deq.equilibrium_deq import SOLVERS, hutchinson_jacobian_loss, vector_jacobian_product

CASES = FAMILY.cases("MDEQ")
F32 = "float32_implementation (solver tol <= 1e-6 relative, enough iterations)"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    cache = {}

    def get(case):
        if case.name not in cache:
            cache[case.name] = convert(original_checkpoint(case), tmp_path_factory.mktemp("conv") / case.name,
                                       config=case.meta["original_config_yaml"])
        return cache[case.name]

    return get


def load_model(out, dtype, tol, max_iter=150, solver="broyden"):
    model = AutoModelForImageClassification.from_pretrained(out).to(dtype).eval()
    model.config.f_solver, model.config.b_solver = solver, "broyden"
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


def injection_module(model):
    """The module whose output the original injects into branch 0: stage0 when the config builds one."""
    return model.mdeq.stage0 if model.mdeq.stage0 is not None else model.mdeq.downsample


def check_branches(case, model, expected, prefix):
    keys = numbered(expected, prefix)
    if len(keys) != model.config.num_branches:
        pytest.fail(f"{case.where}: expected file holds {len(keys)} '{prefix}*' tensors but the converted config "
                    f"has {model.config.num_branches} branches")
    return keys


@pytest.mark.parametrize("case", CASES)
def test_forward_float64(case, converted):
    tol = case.meta["tolerances"]["float64_implementation"]
    fwd = tol["expected_forward.z_star_*|logits|injection_branch0"]
    unrolled_tol = tol["expected_forward.z_unrolled_*|logits_unrolled_*"]
    model = load_model(converted(case), torch.float64, 1e-12)
    images = case.tensors("inputs.safetensors")["images"].double()
    expected = case.tensors("expected_forward.safetensors")
    batch = expected["logits"].shape[0]
    assert images.shape[0] == batch
    with torch.no_grad():
        output = model(pixel_values=images)
        assert bool(output.converged.all()) and float(output.rel_residual.max()) < 1e-12
        close(output.logits, expected["logits"], fwd["atol"], fwd["rtol"], "logits")
        keys = check_branches(case, model, expected, "z_star_branch")
        for key, state in zip(keys, output.equilibrium_states, strict=True):
            close(state, expected[key], fwd["atol"], fwd["rtol"], key)
        close(model.mdeq.injection(images), expected["injection_branch0"], fwd["atol"], fwd["rtol"], "injection")
        f, _, _ = model.mdeq.equilibrium_function(images)
        z_star = torch.cat([s.reshape(batch, -1) for s in output.equilibrium_states], dim=1)
        close(f(z_star) - z_star, expected["f_of_z_star_minus_z_star"], 1e-10, 0.0, "residual")
        steps = unrolled_steps(expected)
        if not steps:
            pytest.fail(f"{case.where}: expected_forward.safetensors holds no logits_unrolled_K<k>")
        for k in steps:
            unrolled = model(pixel_values=images, unrolled_steps=k)
            close(unrolled.logits, expected[f"logits_unrolled_K{k}"], unrolled_tol["atol"], unrolled_tol["rtol"], f"K{k}")
            branch_keys = check_branches(case, model, expected, f"z_unrolled_K{k}_branch")
            for key, state in zip(branch_keys, unrolled.equilibrium_states, strict=True):
                close(state, expected[key], unrolled_tol["atol"], unrolled_tol["rtol"], key)


@pytest.mark.parametrize("solver", sorted(SOLVERS))
@pytest.mark.parametrize("case", CASES)
def test_every_solver_reaches_the_equilibrium(case, converted, solver):
    tol = case.meta["tolerances"]["float64_implementation"]["expected_forward.z_star_*|logits|injection_branch0"]
    # plain iteration converges only linearly: give it the iterations the original needed on this case
    naive = case.meta["reference_numbers"].get("solver_independence", {}).get("naive_iterations_used", 0)
    budget = max(400, int(1.2 * naive)) if solver == "fixed_point_iteration" else 400
    model = load_model(converted(case), torch.float64, 1e-12, max_iter=budget, solver=solver)
    images = case.tensors("inputs.safetensors")["images"].double()
    expected = case.tensors("expected_forward.safetensors")
    with torch.no_grad():
        output = model(pixel_values=images)
    assert bool(output.converged.all()), (solver, output.rel_residual.tolist())
    assert float(output.rel_residual.max()) < 1e-12
    close(output.logits, expected["logits"], tol["atol"], tol["rtol"], solver)
    for key, state in zip(numbered(expected, "z_star_branch"), output.equilibrium_states, strict=True):
        close(state, expected[key], tol["atol"], tol["rtol"], f"{solver} {key}")


@pytest.mark.parametrize("case", declaring("MDEQ", "expected_forward_float32.safetensors"))
def test_forward_float32(case, converted):
    tol = case.meta["tolerances"][F32]
    model = load_model(converted(case), torch.float32, 1e-6, max_iter=100)
    images = case.tensors("inputs.safetensors")["images"]
    expected64 = case.tensors("expected_forward.safetensors")
    expected32 = case.tensors("expected_forward_float32.safetensors")
    with torch.no_grad():
        output = model(pixel_values=images)
    close(output.logits, expected32["logits_float32_tight"].double(), tol["logits"]["atol"], 0.0, "vs original f32")
    close(output.logits, expected64["logits"], tol["logits"]["atol"], 0.0, "vs float64")
    for key, state in zip(numbered(expected64, "z_star_branch"), output.equilibrium_states, strict=True):
        close(state, expected64[key], tol["z_star_*"]["atol"], 0.0, key)
    # the original's own default (loose) solve is further away than the tight one: the file means what it says
    loose = float((expected32["logits_float32_default_solver"].double() - expected64["logits"]).abs().max())
    assert loose > float((expected32["logits_float32_tight"].double() - expected64["logits"]).abs().max())


def _loss_and_grads(model, inputs, keep=None):
    """Backward of the labelled loss; `keep` (a list) receives the injected tensor with its gradient kept."""
    model.zero_grad()
    images = inputs["images"].double().clone().requires_grad_()
    handle = None
    if keep is not None:
        def retain(module, args, output):
            output.retain_grad()
            keep.append(output)
        handle = injection_module(model).register_forward_hook(retain)
    output = model(pixel_values=images, labels=inputs["labels"])
    if handle is not None:
        handle.remove()
    output.loss.backward()
    return output, images


def _check_param_grads(model, expected, prefix, tol):
    names = {f"{prefix}grad.{grad_name(n)}" for n, _ in model.named_parameters()}
    assert names == {k for k in expected if k.startswith(prefix + "grad.")}
    for name, param in model.named_parameters():
        close(param.grad, expected[f"{prefix}grad.{grad_name(name)}"], tol["atol"], tol["rtol"], prefix + name)


@pytest.mark.parametrize("case", declaring("MDEQ", "expected_grad_ift.safetensors"))
def test_ift_gradients(case, converted):
    tol = case.meta["tolerances"]["float64_implementation"]["expected_grad_ift.*"]
    model = load_model(converted(case), torch.float64, 1e-12)
    model.config.backward = "ift"
    train_mode_with_frozen_bn(model)
    inputs = case.tensors("inputs.safetensors")
    expected = case.tensors("expected_grad_ift.safetensors")
    injection = []
    output, images = _loss_and_grads(model, inputs, keep=injection)
    close(injection[0].grad, expected["grad_injection_branch0"], tol["atol"], tol["rtol"], "grad_injection_branch0")
    close(output.loss.reshape(1), expected["loss"], 1e-12, 0.0, "loss")
    close(output.logits, expected["logits_trainmode"], tol["atol"], tol["rtol"], "logits_trainmode")
    close(images.grad, expected["grad_images"], tol["atol"], tol["rtol"], "grad_images")
    solve = model.mdeq.last_solve
    assert solve.backward_stats and solve.backward_stats[0].converged
    close(solve.incoming_grad, expected["dL_dzstar"], tol["atol"], tol["rtol"], "dL_dzstar")
    close(solve.adjoint, expected["ift_adjoint"], tol["atol"], tol["rtol"], "ift_adjoint")
    _check_param_grads(model, expected, "", tol)


def _all_grads(model):
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("case", declaring("MDEQ", "expected_grad_phantom.safetensors"))
def test_phantom_gradients(case, converted):
    tol = case.meta["tolerances"]["float64_implementation"]["expected_grad_phantom.*"]
    model = load_model(converted(case), torch.float64, 1e-12)
    model.config.backward = "phantom"
    train_mode_with_frozen_bn(model)
    inputs = case.tensors("inputs.safetensors")
    expected = case.tensors("expected_grad_phantom.safetensors")
    ift = case.tensors("expected_grad_ift.safetensors") if "expected_grad_ift.safetensors" in case.meta["outputs"] \
        else None
    declared = case.meta["reference_numbers"]["phantom_gradient"]["cases"]
    tags = {key.split(".grad", 1)[0].removesuffix(".loss") for key in expected if ".grad" in key or key.endswith(".loss")}
    assert tags == {c["tag"] for c in declared}, "phantom file and meta.json declare different settings"
    for setting in declared:
        model.config.phantom_steps, model.config.phantom_tau = setting["k"], setting["tau"]
        prefix = setting["tag"] + "."
        output, images = _loss_and_grads(model, inputs)
        close(output.loss.reshape(1), expected[prefix + "loss"], 1e-12, 0.0, prefix + "loss")
        close(images.grad, expected[prefix + "grad_images"], tol["atol"], tol["rtol"], prefix + "grad_images")
        _check_param_grads(model, expected, prefix, tol)
        if ift is not None and "cosine_vs_ift_all_params" in setting:
            reference = torch.cat([ift[f"grad.{grad_name(n)}"].reshape(-1) for n, _ in model.named_parameters()])
            cosine = float(torch.nn.functional.cosine_similarity(_all_grads(model), reference, dim=0))
            assert cosine == pytest.approx(setting["cosine_vs_ift_all_params"], abs=1e-6), prefix


@pytest.mark.parametrize("case", declaring("MDEQ", "expected_jacobian.safetensors"))
def test_jacobian_probe(case, converted):
    tol = case.meta["tolerances"]["float64_implementation"]
    model = load_model(converted(case), torch.float64, 1e-12)
    images = case.tensors("inputs.safetensors")["images"].double()
    expected = case.tensors("expected_jacobian.safetensors")
    jac = case.meta["reference_numbers"]["jacobian"]
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
    train_mode_with_frozen_bn(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        output = model.mdeq(images, compute_jac_loss=True, jac_probes=v[None])
    assert float(output.jac_loss) == pytest.approx(jac[key], rel=1e-6)


@pytest.mark.parametrize("case", declaring("MDEQ", "expected_grad_ift.safetensors"))
def test_shine_is_closer_to_ift_than_jacobian_free(case, converted):
    """SHINE (the forward Broyden inverse reused in the backward) against the exact IFT gradient of the
    fixture: a better estimate than the Jacobian-free gradient (one undamped phantom step)."""
    model = load_model(converted(case), torch.float64, 1e-10, max_iter=100)
    train_mode_with_frozen_bn(model)
    inputs = case.tensors("inputs.safetensors")
    expected = case.tensors("expected_grad_ift.safetensors")
    reference = torch.cat([expected[f"grad.{grad_name(n)}"].reshape(-1) for n, _ in model.named_parameters()])
    cosines = {}
    for mode in ("shine", "phantom"):
        model.config.backward, model.config.phantom_steps, model.config.phantom_tau = mode, 1, 1.0
        _loss_and_grads(model, inputs)
        cosines[mode] = float(torch.nn.functional.cosine_similarity(_all_grads(model), reference, dim=0))
    assert cosines["shine"] > cosines["phantom"], cosines


@pytest.mark.parametrize("case", declaring("MDEQ", "expected_grad_ift.safetensors"))
def test_ift_gradients_float32(case, converted):
    """A float32 model with a tight solver reproduces the float64 IFT gradients to the float32 tolerance."""
    tol = case.meta["tolerances"][F32]["gradients"]
    model = load_model(converted(case), torch.float32, 1e-6, max_iter=100)
    train_mode_with_frozen_bn(model)
    inputs = case.tensors("inputs.safetensors")
    expected = case.tensors("expected_grad_ift.safetensors")
    model.zero_grad()
    images = inputs["images"].clone().requires_grad_()
    model(pixel_values=images, labels=inputs["labels"]).loss.backward()
    close(images.grad, expected["grad_images"], tol["atol"], tol["rtol"], "grad_images")
    for name, param in model.named_parameters():
        close(param.grad, expected[f"grad.{grad_name(name)}"], tol["atol"], tol["rtol"], name)
