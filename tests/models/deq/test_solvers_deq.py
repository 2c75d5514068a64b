"""The equilibrium core against closed forms: solvers, fallbacks, implicit and phantom gradients."""

from __future__ import annotations

import pytest
import torch

from zoo.models.deq.equilibrium_deq import (
    SolverSettings,
    anderson,
    broyden,
    fixed_point_iteration,
    hutchinson_jacobian_loss,
    jacobian_loss_weight,
    solve_equilibrium,
)

SOLVERS = {"anderson": anderson, "broyden": broyden, "fixed_point_iteration": fixed_point_iteration}


def linear_problem(dim=6, scale=0.6, seed=0):
    """f(z) = A z + b with ||A|| < 1: z* = (I - A)^-1 b in closed form."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    a = scale * a / torch.linalg.matrix_norm(a, ord=2)
    b = torch.randn(2, dim, generator=g, dtype=torch.float64)
    z_star = torch.linalg.solve(torch.eye(dim, dtype=torch.float64) - a, b.T).T
    return a, b, z_star


@pytest.mark.parametrize("name", SOLVERS)
def test_solvers_reach_the_closed_form(name):
    a, b, z_star = linear_problem()
    z, stats = SOLVERS[name](lambda z: z @ a.T + b, torch.zeros_like(b), max_iter=200, tol=1e-12)
    assert stats.converged and not stats.diverged
    torch.testing.assert_close(z, z_star, atol=1e-10, rtol=0)
    assert stats.rel_residual.shape == (2,) and float(stats.rel_residual.max()) < 1e-12
    assert stats.abs_residual.shape == (2,)


def test_broyden_is_exact_on_linear_maps_in_few_steps():
    a, b, z_star = linear_problem(dim=4)
    _, stats_plain = fixed_point_iteration(lambda z: z @ a.T + b, torch.zeros_like(b), max_iter=500, tol=1e-12)
    _, stats = broyden(lambda z: z @ a.T + b, torch.zeros_like(b), max_iter=50, tol=1e-12)
    assert stats.nstep < stats_plain.nstep


def test_abs_stop_mode():
    a, b, _ = linear_problem()
    _, stats = anderson(lambda z: z @ a.T + b, torch.zeros_like(b), max_iter=100, tol=1e-9, stop_mode="abs")
    assert stats.converged and float(stats.abs_residual.max()) < 1e-9


def test_singular_anderson_system_falls_back_instead_of_crashing():
    # A translation makes every residual f(z) - z identical: with lam=0 the bordered system is singular.
    z0 = torch.zeros(2, 3, dtype=torch.float64)
    z, stats = anderson(lambda z: z + 1.0, z0, max_iter=6, tol=1e-30, lam=0.0)
    assert stats.fallback and "singular" in stats.fallback
    assert not stats.converged and torch.isfinite(z).all() and stats.nstep == 6


@pytest.mark.parametrize("name", SOLVERS)
def test_solve_without_fixed_point_is_reported(name):
    def f(z):
        return torch.exp(z) + 2.0  # exp(z) + 2 > z everywhere: no fixed point exists

    z, stats = SOLVERS[name](f, torch.zeros(2, 3, dtype=torch.float64), max_iter=40, tol=1e-8)
    assert not stats.converged and torch.isfinite(z).all()
    assert "did NOT converge" in stats.describe()
    if name == "fixed_point_iteration":
        assert stats.diverged and "divergent" in stats.describe()


def test_nan_map_is_reported_not_raised():
    z, stats = fixed_point_iteration(lambda z: z * float("nan"), torch.ones(2, 3), max_iter=5, tol=1e-6)
    assert not stats.converged and stats.diverged


def _linear_module(dim=5):
    a, b, z_star = linear_problem(dim=dim)
    weight = torch.nn.Parameter(a.clone())
    return weight, b, (lambda z: z @ weight.T + b)


def test_ift_gradient_matches_the_closed_form():
    weight, b, f = _linear_module()
    settings = SolverSettings(f_solver="broyden", b_solver="anderson", f_max_iter=100, b_max_iter=100,
                              f_tol=1e-13, b_tol=1e-13)
    result = solve_equilibrium(f, torch.zeros_like(b), settings, track_grad=True)
    c = torch.arange(5, dtype=torch.float64)
    (result.z * c).sum().backward()
    # L = c . z*, z* = (I - W)^-1 b  =>  dL/dW = y z*^T summed over the batch, y = (I - W)^-T c
    eye = torch.eye(5, dtype=torch.float64)
    z_star = torch.linalg.solve(eye - weight.detach(), b.T).T
    y = torch.linalg.solve((eye - weight.detach()).T, c)
    expected = sum(torch.outer(y, z_star[i]) for i in range(2))
    torch.testing.assert_close(weight.grad, expected, atol=1e-10, rtol=0)
    assert result.backward_stats[0].converged


def test_phantom_gradient_k1_tau1_is_jacobian_free():
    weight, b, f = _linear_module()
    settings = SolverSettings(f_tol=1e-13, f_max_iter=100, backward="phantom", phantom_steps=1, phantom_tau=1.0)
    result = solve_equilibrium(f, torch.zeros_like(b), settings, track_grad=True)
    c = torch.arange(5, dtype=torch.float64)
    (result.z * c).sum().backward()
    z_star = result.z.detach()
    expected = sum(torch.outer(c, z_star[i]) for i in range(2))  # dL/dW with z* treated as constant
    torch.testing.assert_close(weight.grad, expected, atol=1e-10, rtol=0)


def test_shine_is_exact_when_broyden_learns_the_jacobian():
    # In one dimension Broyden's secant estimate of (f' - 1)^-1 is exact for a linear map after one step,
    # so SHINE's adjoint (no backward solve) equals the implicit gradient; JFB does not.
    grads = {}
    for mode in ("ift", "shine", "phantom"):
        weight = torch.nn.Parameter(torch.tensor([[0.7]], dtype=torch.float64))
        b = torch.tensor([[1.0], [-2.0]], dtype=torch.float64)
        settings = SolverSettings(f_solver="broyden", f_tol=1e-13, f_max_iter=50, b_tol=1e-13, b_max_iter=50,
                                  backward=mode, phantom_steps=1, phantom_tau=1.0)
        result = solve_equilibrium(lambda z, w=weight, b=b: z @ w.T + b, torch.zeros_like(b), settings, track_grad=True)
        result.z.sum().backward()
        grads[mode] = weight.grad
    torch.testing.assert_close(grads["shine"], grads["ift"], atol=1e-12, rtol=0)
    assert not torch.allclose(grads["phantom"], grads["ift"])


def test_hutchinson_estimate_is_unbiased():
    a, _, _ = linear_problem(dim=4)
    z = torch.zeros(1, 4, dtype=torch.float64, requires_grad=True)
    new_z = z @ a.T
    g = torch.Generator().manual_seed(0)
    estimate = hutchinson_jacobian_loss(new_z, z, num_probes=20000, create_graph=False, generator=g)
    exact = float((a**2).sum()) / 4
    assert float(estimate) == pytest.approx(exact, rel=0.03)


def test_jacobian_schedule():
    assert jacobian_loss_weight(1.0, step=250, incremental=100) == pytest.approx(1.2)
    assert jacobian_loss_weight(1.0, step=250, incremental=0) == 1.0


def test_bad_settings():
    with pytest.raises(ValueError, match="backward must be"):
        SolverSettings(backward="neumann")
    with pytest.raises(ValueError, match="unknown solver"):
        SolverSettings(f_solver="lbfgs")
    with pytest.raises(ValueError, match="set f_solver='broyden'"):
        SolverSettings(f_solver="anderson", backward="shine")


@pytest.mark.parametrize("shrink", [1e-6, 1e-3])
def test_anderson_is_scale_invariant(shrink):
    """The same problem scaled down (residuals below sqrt(lam) from the first step) converges in the same
    number of steps: the ridge is relative to the residuals. The original's absolute ridge (lam=1e-4)
    turns the mixing into a plain average at that scale and stalls near the tolerances DEQs are run at."""
    a, b, z_star = linear_problem(dim=12, scale=0.97, seed=3)
    _, reference = anderson(lambda z: z @ a.T + b, torch.zeros_like(b), max_iter=300, tol=1e-12)
    z, stats = anderson(lambda z: z @ a.T + shrink * b, torch.zeros_like(b), max_iter=300, tol=1e-12)
    assert reference.converged and stats.converged, stats.describe()
    assert stats.nstep == reference.nstep
    torch.testing.assert_close(z / shrink, z_star, atol=1e-9, rtol=0)


def test_anderson_restarts_a_stalled_solve_and_says_so():
    # a translation has no fixed point: the absolute residual never improves, so the memory is restarted
    z0 = torch.zeros(2, 3, dtype=torch.float64)
    z, stats = anderson(lambda z: z + 1.0, z0, max_iter=40, tol=1e-30, stop_mode="abs", m=3)
    assert not stats.converged and torch.isfinite(z).all()
    assert stats.fallback and "restarted" in stats.fallback
