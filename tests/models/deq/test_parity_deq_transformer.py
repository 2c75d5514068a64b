"""DEQ-Transformer parity with the original DEQ-Sequence code: every DEQ-Transformer case under
tests/fixtures/deq/, converted through conversion/convert_deq.py.

The original masks attention scores in float32 even in float64 runs, so its float64 reference is only
determined to ~1e-7; the case README sets atol 1e-5 (forward) and atol 1e-5 + rtol 1e-4 (gradients).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from conversion.convert_deq import convert
from tests.models.deq.conftest import FAMILY, declaring, original_checkpoint
from zoo.models.deq.equilibrium_deq import SOLVERS, hutchinson_jacobian_loss, vector_jacobian_product

CASES = FAMILY.cases("DEQ-Transformer")
ARGS = "original_args (train_transformer.py argparse names)"


def tolerance(meta, fragment, precision="float64_implementation"):
    """The meta.json tolerance entry whose key contains `fragment`."""
    table = meta["tolerances"][precision]
    return next(value for key, value in table.items() if fragment in key)


def original_args(meta):
    args = dict(meta[ARGS])
    args.update(cutoffs=meta["derived_constructor_args"]["cutoffs"], tie_projs=meta["derived_constructor_args"]["tie_projs"])
    return args


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    cache = {}

    def get(case):
        if case.name not in cache:
            out = convert(original_checkpoint(case), tmp_path_factory.mktemp("conv") / case.name,
                          config=original_args(case.meta))
            cache[case.name] = (case.meta, out)
        return cache[case.name]

    return get


def load_model(out, dtype=torch.float64, tol=1e-12):
    model = AutoModelForCausalLM.from_pretrained(out).to(dtype).eval()
    c = model.config
    c.f_solver = c.b_solver = "broyden"
    c.f_tol = c.b_tol = tol
    c.f_max_iter = c.b_max_iter = 150
    return model


def close(actual, expected, atol, rtol=0.0, name=""):
    torch.testing.assert_close(actual.to(expected.dtype), expected, atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


def segment(inputs, name):
    """Fixture tensors are time-major (length, batch); the model is batch-first."""
    return inputs[f"data_{name}"].t(), inputs[f"target_{name}"].t()


def segment_names(inputs):
    """The consecutive segments of a case, in order, from its inputs' `data_<name>` keys (memory is carried
    from one to the next); the single-segment checks use the first."""
    names = sorted(key[len("data_"):] for key in inputs if key.startswith("data_"))
    assert names, "inputs.safetensors holds no data_<segment> tensor"
    return names


def cluster_order(nll_time_major, targets_time_major, cutoffs):
    """The original's `keep_order=False` loss: NLLs grouped by softmax cluster of the target."""
    flat, tgt = nll_time_major.reshape(-1), targets_time_major.reshape(-1)
    bounds = [0, *cutoffs, 10**9]
    return torch.cat([flat[(tgt >= lo) & (tgt < hi)] for lo, hi in zip(bounds[:-1], bounds[1:])])


@pytest.mark.parametrize("folder", CASES)
def test_two_segments_with_memory(folder, converted):
    meta, out = converted(folder)
    fwd = tolerance(meta, "z_star")
    fwd_atol = fwd["atol"]
    inj_atol = tolerance(meta, "injection")["atol"]
    model = load_model(out)
    inputs = load_file(folder.file("inputs.safetensors"))
    expected = load_file(folder.file("expected_forward.safetensors"))
    mems = None
    for name in segment_names(inputs):
        ids, targets = segment(inputs, name)
        with torch.no_grad():
            output = model(input_ids=ids, labels=targets, mems=mems)
            _, _, context = model.transformer.equilibrium_function(ids, mems)
        assert bool(output.converged.all())
        close(output.last_hidden_state.transpose(1, 2), expected[f"{name}.z_star"], fwd_atol, 0, "z_star")
        close(output.last_hidden_state.transpose(0, 1), expected[f"{name}.hidden"], fwd_atol, 0, "hidden")
        close(output.nll.t(), expected[f"{name}.nll"], fwd_atol, 0, "nll")
        close(output.logits.transpose(0, 1), expected[f"{name}.log_probs"], fwd_atol, 0, "log_probs")
        close(context["u1s"], expected[f"{name}.injection"], inj_atol, 0, "injection")
        close(output.mems[0].transpose(0, 1), expected[f"{name}.mems_z0"], fwd_atol, 0, "mems_z0")
        close(output.mems[1].transpose(0, 1), expected[f"{name}.mems_u0"], fwd_atol, 0, "mems_u0")
        grouped = cluster_order(output.nll.t(), targets.t(), model.config.cutoffs)
        close(grouped, expected[f"{name}.loss_as_returned"].reshape(-1), fwd_atol, 0, "loss_as_returned")
        mems = output.mems


@pytest.mark.parametrize("folder", CASES)
def test_unrolled(folder, converted):
    meta, out = converted(folder)
    unrolled_atol = tolerance(meta, "unrolled")["atol"]
    model = load_model(out)
    inputs = load_file(folder.file("inputs.safetensors"))
    first = segment_names(inputs)[0]
    ids, targets = segment(inputs, first)
    expected = load_file(folder.file("expected_forward.safetensors"))
    steps = {"unrolled_eval_n_layer": model.config.eval_n_layer, "unrolled_n_layer": model.config.n_layer}
    for tag, k in steps.items():
        with torch.no_grad():
            output = model(input_ids=ids, labels=targets, unrolled_steps=k)
        close(output.nll.t(), expected[f"{first}.{tag}.nll"], unrolled_atol, 0, tag)
        close(output.last_hidden_state.transpose(0, 1), expected[f"{first}.{tag}.hidden"], unrolled_atol, 0, tag)
    model.config.backward = "unrolled"  # eval: eval_n_layer steps
    with torch.no_grad():
        output = model(input_ids=ids, labels=targets)
    close(output.nll.t(), expected[f"{first}.unrolled_eval_n_layer.nll"], unrolled_atol, 0, "backward=unrolled")


@pytest.mark.parametrize("folder", declaring("DEQ-Transformer", "expected_forward_float32.safetensors"))
def test_float32(folder, converted):
    meta, out = converted(folder)
    model = load_model(out, torch.float32, tol=1e-6)
    inputs = load_file(folder.file("inputs.safetensors"))
    first = segment_names(inputs)[0]
    ids, targets = segment(inputs, first)
    expected = load_file(folder.file("expected_forward_float32.safetensors"))[f"{first}.loss_as_returned_float32_tight"]
    with torch.no_grad():
        output = model(input_ids=ids, labels=targets)
    grouped = cluster_order(output.nll.t(), targets.t(), model.config.cutoffs)
    atol = tolerance(meta, "forward", "float32_implementation")["atol"]
    close(grouped, expected.reshape(-1), atol, 0, "float32 nll")


@pytest.mark.parametrize("folder", declaring("DEQ-Transformer", "expected_grad_ift.safetensors"))
def test_ift_gradients(folder, converted):
    meta, out = converted(folder)
    grad_tol = tolerance(meta, "grad_ift")
    grad_atol, grad_rtol = grad_tol["atol"], grad_tol["rtol"]
    model = load_model(out).train()
    inputs = load_file(folder.file("inputs.safetensors"))
    first = segment_names(inputs)[0]
    ids, targets = segment(inputs, first)
    expected = load_file(folder.file("expected_grad_ift.safetensors"))
    injection = []

    def retain(module, args, out):
        out.retain_grad()
        injection.append(out)

    handle = model.transformer.inject_conv.register_forward_hook(retain)
    output = model(input_ids=ids, labels=targets)
    handle.remove()
    output.loss.backward()
    close(injection[0].grad, expected["grad_injection_u1s"], grad_atol, grad_rtol, "grad_injection_u1s")
    close(output.loss.reshape(1), expected["loss"], 1e-6, 0, "loss")
    solve = model.transformer.last_solve
    assert solve.backward_stats[0].converged
    close(solve.incoming_grad.reshape(expected["dL_dzstar"].shape), expected["dL_dzstar"], grad_atol, grad_rtol)
    close(solve.adjoint.reshape(expected["ift_adjoint"].shape), expected["ift_adjoint"], grad_atol, grad_rtol)
    tied = {target[len("crit."):]: source for target, source in model.all_tied_weights_keys.items()}
    checked = 0
    for name, param in model.named_parameters():
        key = name[len("transformer."):] if name.startswith("transformer.") else name
        want = expected[f"grad.{key}"].clone()
        for target, source in tied.items():  # storage-shared projections: their gradients add up
            if source == name and f"grad.crit.{target}" in expected:
                want += expected[f"grad.crit.{target}"]
        close(param.grad, want, grad_atol, grad_rtol, name)
        checked += 1
    assert checked == len([k for k in expected if k.startswith("grad.")]) - sum(
        1 for t in tied if f"grad.crit.{t}" in expected)


@pytest.mark.parametrize("folder", declaring("DEQ-Transformer", "expected_jacobian.safetensors"))
def test_jacobian_probe(folder, converted):
    meta, out = converted(folder)
    model = load_model(out)
    inputs = load_file(folder.file("inputs.safetensors"))
    ids, _ = segment(inputs, segment_names(inputs)[0])
    expected = load_file(folder.file("expected_jacobian.safetensors"))
    jac = meta["reference_numbers"]["jacobian"]
    f, _, _ = model.transformer.equilibrium_function(ids)
    batch = ids.shape[0]
    z = expected["z_star"].reshape(batch, -1).clone().requires_grad_()
    new_z = f(z)
    v = expected["hutchinson_v"].reshape(batch, -1)
    close(vector_jacobian_product(new_z, z, v).reshape(expected["vJ"].shape), expected["vJ"],
          tolerance(meta, "vJ")["atol"], 0, "vJ")
    key = next(k for k in jac if k.startswith("hutchinson"))
    estimate = hutchinson_jacobian_loss(new_z, z, probes=v[None], create_graph=False)
    assert float(estimate) == pytest.approx(jac[key], rel=1e-4)


@pytest.mark.parametrize("solver", sorted(SOLVERS))
@pytest.mark.parametrize("folder", CASES)
def test_every_solver_reaches_the_equilibrium(folder, converted, solver):
    """Every solver lands on the original's equilibrium (first segment, no memory); plain iteration gets the
    iterations the original needed on this case (meta.json solver_independence)."""
    meta, out = converted(folder)
    fwd_atol = tolerance(meta, "z_star")["atol"]
    model = load_model(out)
    inputs = load_file(folder.file("inputs.safetensors"))
    first = segment_names(inputs)[0]
    ids, targets = segment(inputs, first)
    expected = load_file(folder.file("expected_forward.safetensors"))
    naive = meta["reference_numbers"]["forward_float64"][first]["solver_independence"]["naive_iters"]
    model.config.f_solver = solver
    model.config.f_tol = 1e-9
    model.config.f_max_iter = int(1.2 * naive) if solver == "fixed_point_iteration" else 400
    with torch.no_grad():
        output = model(input_ids=ids, labels=targets)
    assert bool(output.converged.all()), (solver, output.rel_residual.tolist())
    close(output.last_hidden_state.transpose(1, 2), expected[f"{first}.z_star"], fwd_atol, 0, f"{solver} z_star")
    close(output.nll.t(), expected[f"{first}.nll"], fwd_atol, 0, f"{solver} nll")
