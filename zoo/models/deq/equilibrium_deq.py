"""The equilibrium core shared by MDEQ and the DEQ-Transformer: fixed-point solvers and backward modes.

Every solver works on a batch of flattened states `z` of shape (batch, D) and a map `f` of the same
shape, and returns the solution together with per-sample residual statistics (`SolverStats`). A solve
that does not reach its tolerance, whose linear system is singular, or that diverges is reported in the
statistics (and by a warning from the models), never raised as a crash.

    z_star, stats = anderson(f, torch.zeros(2, 10), max_iter=50, tol=1e-6)
    z_star, stats = broyden(f, torch.zeros(2, 10), max_iter=50, tol=1e-6)
    z_star, stats = fixed_point_iteration(f, torch.zeros(2, 10), max_iter=500, tol=1e-6)

This file is self-contained (torch only) so that saved model folders load with `trust_remote_code=True`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

__all__ = [
    "SOLVERS", "EquilibriumResult", "SolverSettings", "SolverStats", "anderson", "broyden",
    "fixed_point_iteration", "hutchinson_jacobian_loss", "jacobian_loss_weight", "phantom_gradient",
    "solve_equilibrium", "vector_jacobian_product",
]

Map = Callable[[torch.Tensor], torch.Tensor]

# Relative residuals divide by ||f(z)|| + this, so an all-zero fixed point does not divide by zero.
_REL_EPS = 1e-9
# A solve is stopped as divergent once its residual grows this many times past the first one
# (the original Broyden uses 1e3 * seq_len for the relative mode; a fixed factor is enough here).
_DIVERGENCE_FACTOR = 1e4


@dataclass
class SolverStats:
    """What a solve reached, per sample and overall.

    `abs_residual[b]` = ||f(z_b) - z_b||, `rel_residual[b]` = that / ||f(z_b)||, both at the returned
    iterate; `nstep` counts evaluations of f; `trace` is the worst (over the batch) residual in
    `stop_mode` after each step; `fallback` describes any protective action (a singular Anderson
    system replaced by a plain step, a divergent solve stopped at its best iterate).
    """

    solver: str
    nstep: int
    abs_residual: torch.Tensor
    rel_residual: torch.Tensor
    converged: bool
    diverged: bool = False
    fallback: str | None = None
    stop_mode: str = "rel"
    tol: float = 0.0
    trace: list[float] = field(default_factory=list)
    # Broyden only: x -> x^T B with B its final low-rank estimate of (J_f - I)^-1 (reused by SHINE).
    inverse_jacobian_transposed: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)

    @property
    def residual(self) -> torch.Tensor:
        """Per-sample residual in the stopping mode."""
        return self.rel_residual if self.stop_mode == "rel" else self.abs_residual

    def warning_text(self, what: str) -> str:
        """A message that is the same for every solve with these settings (so Python shows it once per call
        site); the per-sample figures are in the model output (`rel_residual`, `converged`)."""
        text = (f"{what}: {self.solver} did NOT converge to {self.stop_mode} tolerance {self.tol:g} within its "
                f"iteration limit for some samples; see `rel_residual` / `converged` in the output")
        if self.diverged:
            text += " (the solve diverged and was stopped at its best iterate)"
        if self.fallback and "singular" in self.fallback:
            text += " (Anderson's system was singular: plain fixed-point steps were taken)"
        return text

    def describe(self) -> str:
        worst = float(self.residual.max()) if self.residual.numel() else 0.0
        text = (f"{self.solver} {'converged' if self.converged else 'did NOT converge'} after {self.nstep} "
                f"evaluations: worst {self.stop_mode} residual {worst:.3g} (tolerance {self.tol:.3g})")
        if self.diverged:
            text += "; the solve diverged and was stopped at its best iterate"
        if self.fallback:
            text += f"; {self.fallback}"
        return text


class _BestIterate:
    """Keeps, per sample, the iterate with the lowest residual seen so far and the stopping test."""

    def __init__(self, z0: torch.Tensor, stop_mode: str, tol: float, solver: str):
        if stop_mode not in ("rel", "abs"):
            raise ValueError(f"stop_mode must be 'rel' or 'abs', got {stop_mode!r}")
        bsz = z0.shape[0]
        self.solver, self.stop_mode, self.tol = solver, stop_mode, tol
        self.z = z0.detach().clone()
        self.abs = torch.full((bsz,), float("inf"), dtype=z0.dtype, device=z0.device)
        self.rel = torch.full_like(self.abs, float("inf"))
        self.trace: list[float] = []
        self.nstep = 0
        self.diverged = False
        self.fallback: str | None = None

    def update(self, z: torch.Tensor, fz: torch.Tensor) -> float:
        """Record the iterate z with f(z) = fz; returns the worst current residual in stop_mode."""
        gz = fz - z
        abs_res = gz.norm(dim=1)
        rel_res = abs_res / (fz.norm(dim=1) + _REL_EPS)
        current = rel_res if self.stop_mode == "rel" else abs_res
        best = self.rel if self.stop_mode == "rel" else self.abs
        better = torch.isfinite(current) & (current < best)
        if better.any():
            self.z[better] = z.detach()[better]
            self.abs = torch.where(better, abs_res.detach(), self.abs)
            self.rel = torch.where(better, rel_res.detach(), self.rel)
        worst = float(current.max()) if torch.isfinite(current).all() else float("inf")
        self.trace.append(worst)
        if not torch.isfinite(current).all() or worst > _DIVERGENCE_FACTOR * max(self.trace[0], 1e-30):
            self.diverged = True
        return worst

    def residual_in_mode(self) -> torch.Tensor:
        """Per-sample best residual so far, in stop_mode."""
        return self.rel if self.stop_mode == "rel" else self.abs

    def converged(self) -> bool:
        best = self.rel if self.stop_mode == "rel" else self.abs
        return bool((best < self.tol).all())

    def result(self) -> tuple[torch.Tensor, SolverStats]:
        fallback = self.fallback
        if self.diverged:
            fallback = "; ".join(x for x in (fallback, "stopped a divergent solve at its best iterate") if x)
        return self.z, SolverStats(
            solver=self.solver, nstep=self.nstep, abs_residual=self.abs, rel_residual=self.rel,
            converged=self.converged(), diverged=self.diverged, fallback=fallback,
            stop_mode=self.stop_mode, tol=self.tol, trace=self.trace,
        )


def fixed_point_iteration(
    f: Map, z0: torch.Tensor, max_iter: int = 50, tol: float = 1e-3, stop_mode: str = "rel", **_: object
) -> tuple[torch.Tensor, SolverStats]:
    """Plain iteration z <- f(z), stopping when every sample's residual is below `tol`.

        z, stats = fixed_point_iteration(lambda z: 0.5 * z + 1, torch.zeros(1, 3), tol=1e-10, max_iter=100)
    """
    track = _BestIterate(z0, stop_mode, tol, "fixed_point_iteration")
    z = z0
    for _step in range(max_iter):
        fz = f(z)
        track.nstep += 1
        track.update(z, fz)
        if track.converged() or track.diverged:
            break
        z = fz
    return track.result()


def anderson(
    f: Map, z0: torch.Tensor, max_iter: int = 50, tol: float = 1e-3, stop_mode: str = "rel",
    m: int = 6, lam: float = 1e-4, beta: float = 1.0, **_: object,
) -> tuple[torch.Tensor, SolverStats]:
    """Anderson acceleration with the original DEQ defaults (memory m=6, ridge lam=1e-4, mixing beta=1).

    Two safeguards make it reach tight tolerances where the original stalls:
    - the ridge is relative: lam times the mean squared residual norm in the memory, not an absolute lam.
      With the original's absolute ridge, once the residuals fall below ~sqrt(lam) the ridge dominates the
      Gram matrix, the mixing weights tend to a plain average of the stored iterates and progress stalls
      (a float64 three-branch MDEQ stopped near 3e-8 relative residual after 400 steps);
    - a restart: when a sample's best residual has not improved for 2*m steps, its memory is cleared and
      it restarts from its best iterate (reported in `stats.fallback`).
    The mixing weights solve a bordered least-squares system per sample; when it is singular or gives
    non-finite weights for a sample, that sample takes a plain fixed-point step instead (also reported).

        z, stats = anderson(lambda z: 0.5 * torch.tanh(z) + 1, torch.zeros(2, 4), tol=1e-8)
    """
    bsz, dim = z0.shape
    track = _BestIterate(z0, stop_mode, tol, "anderson")
    X = z0.new_zeros(bsz, m, dim)
    F = z0.new_zeros(bsz, m, dim)
    X[:, 0], F[:, 0] = z0, f(z0)
    track.update(X[:, 0], F[:, 0])
    X[:, 1], F[:, 1] = F[:, 0], f(F[:, 0])
    track.update(X[:, 1], F[:, 1])
    track.nstep = 2
    # per sample: how many stored pairs are valid (since the last restart) and when the best last improved
    filled = torch.full((bsz,), 2, dtype=torch.long, device=z0.device)
    best = track.residual_in_mode().clone()
    stale = torch.zeros(bsz, dtype=torch.long, device=z0.device)
    eye = torch.eye(m, dtype=z0.dtype, device=z0.device)
    singular_steps = restarts = 0
    for k in range(2, max_iter):
        if track.converged() or track.diverged:
            break
        n = min(k, m)
        G = F[:, :n] - X[:, :n]
        valid = _valid_slots(filled, k, m, n)  # (bsz, n): slots written since the sample's last restart
        G = G * valid[:, :, None]
        gram = torch.bmm(G, G.transpose(1, 2))
        scale = (gram.diagonal(dim1=1, dim2=2).sum(dim=1) / valid.sum(dim=1)).clamp_min(torch.finfo(z0.dtype).tiny)
        # invalid slots get a unit diagonal and no border, so their weight is exactly 0
        H = z0.new_zeros(bsz, n + 1, n + 1)
        H[:, 0, 1:] = H[:, 1:, 0] = valid
        H[:, 1:, 1:] = gram + lam * scale[:, None, None] * eye[:n, :n] + torch.diag_embed(~valid * 1.0)
        rhs = z0.new_zeros(bsz, n + 1, 1)
        rhs[:, 0] = 1
        solution, info = torch.linalg.solve_ex(H, rhs)
        alpha = solution[:, 1:, 0] * valid
        bad = (info != 0) | ~torch.isfinite(alpha).all(dim=1)
        if bad.any():
            singular_steps += 1
            plain = torch.zeros_like(alpha)
            plain[:, (k - 1) % m] = 1.0  # the newest stored pair: a plain step z <- f(z)
            alpha = torch.where(bad[:, None], plain, torch.nan_to_num(alpha))
        slot = k % m
        X[:, slot] = beta * (alpha[:, None] @ F[:, :n])[:, 0] + (1 - beta) * (alpha[:, None] @ X[:, :n])[:, 0]
        F[:, slot] = f(X[:, slot])
        track.nstep += 1
        track.update(X[:, slot], F[:, slot])
        filled = filled + 1
        current = track.residual_in_mode()
        improved = current < best
        best = torch.minimum(best, current)
        stale = torch.where(improved, torch.zeros_like(stale), stale + 1)
        restart = stale >= 2 * m
        if restart.any():
            restarts += int(restart.sum())
            # the restarted samples continue from their best iterate with a one-pair memory (f maps whole
            # batches, so it is evaluated on every sample's best iterate and the others are left as they are)
            f_best = f(track.z)
            track.nstep += 1
            X[restart, slot], F[restart, slot] = track.z[restart], f_best[restart]
            filled = torch.where(restart, torch.ones_like(filled), filled)
            stale = torch.where(restart, torch.zeros_like(stale), stale)
    notes = []
    if singular_steps:
        notes.append(f"Anderson system singular at {singular_steps} step(s): took plain fixed-point steps")
    if restarts:
        notes.append(f"Anderson memory restarted {restarts} time(s) after {2 * m} steps without progress")
    track.fallback = "; ".join(notes) or None
    return track.result()


def _valid_slots(filled: torch.Tensor, k: int, m: int, n: int) -> torch.Tensor:
    """(bsz, n) bool: slot j holds a pair written in the last `filled[b]` steps (slot of step t is t % m)."""
    steps_back = (k - 1 - torch.arange(n, device=filled.device)) % m  # how many steps ago slot j was written
    return steps_back[None, :] < filled[:, None]


def broyden(
    f: Map, z0: torch.Tensor, max_iter: int = 50, tol: float = 1e-3, stop_mode: str = "rel", **_: object
) -> tuple[torch.Tensor, SolverStats]:
    """Broyden's ("good") quasi-Newton method on g(z) = f(z) - z, with a per-sample low-rank inverse.

    The inverse Jacobian estimate starts at -I and receives one rank-one update per step, as in the
    original DEQ code (no line search).

        z, stats = broyden(lambda z: 0.5 * torch.tanh(z) + 1, torch.zeros(2, 4), tol=1e-8)
    """
    bsz, dim = z0.shape
    track = _BestIterate(z0, stop_mode, tol, "broyden")
    # inverse-Jacobian estimate -I + sum_i u_i v_i^T; only the first n columns are ever read, so the
    # memory of unused columns is never touched
    us = z0.new_empty(bsz, max_iter, dim)
    vs = z0.new_empty(bsz, max_iter, dim)

    def apply_inverse(x: torch.Tensor, n: int) -> torch.Tensor:  # (-I + U V^T) x
        if n == 0:
            return -x
        return -x + torch.einsum("bnd,bn->bd", us[:, :n], torch.einsum("bnd,bd->bn", vs[:, :n], x))

    def apply_inverse_transposed(x: torch.Tensor, n: int) -> torch.Tensor:  # x^T (-I + U V^T)
        if n == 0:
            return -x
        return -x + torch.einsum("bn,bnd->bd", torch.einsum("bd,bnd->bn", x, us[:, :n]), vs[:, :n])

    z = z0
    fz = f(z)
    track.nstep = 1
    track.update(z, fz)
    gz = fz - z
    update = gz
    for nstep in range(1, max_iter + 1):
        z_new = z + update
        fz_new = f(z_new)
        track.nstep += 1
        track.update(z_new, fz_new)
        g_new = fz_new - z_new
        dz, dg = z_new - z, g_new - gz
        z, gz = z_new, g_new
        if track.converged() or track.diverged or nstep == max_iter:
            break
        n = nstep - 1
        v = apply_inverse_transposed(dz, n)
        u = (dz - apply_inverse(dg, n)) / (v * dg).sum(dim=1, keepdim=True)
        vs[:, n] = torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
        us[:, n] = torch.nan_to_num(u, nan=0.0, posinf=0.0, neginf=0.0)
        update = -apply_inverse(gz, n + 1)
    z_best, stats = track.result()
    used = max(track.nstep - 2, 0)
    stats.inverse_jacobian_transposed = lambda x: apply_inverse_transposed(x, min(used, max_iter))
    return z_best, stats


SOLVERS: dict[str, Callable[..., tuple[torch.Tensor, SolverStats]]] = {
    "anderson": anderson, "broyden": broyden, "fixed_point_iteration": fixed_point_iteration,
}


def get_solver(name: str) -> Callable[..., tuple[torch.Tensor, SolverStats]]:
    try:
        return SOLVERS[name]
    except KeyError:
        raise ValueError(f"unknown solver {name!r}; choose one of {', '.join(SOLVERS)}") from None


@dataclass
class SolverSettings:
    """Forward and backward solver choices (names as in SOLVERS) and the backward mode.

    backward: "ift" (exact implicit differentiation, the adjoint solved with `b_solver`), "phantom"
    (k = phantom_steps damped steps z <- tau f(z) + (1 - tau) z from the detached equilibrium; k=1, tau=1
    is the Jacobian-free gradient), "shine" (the adjoint taken from the forward Broyden solve's inverse
    Jacobian estimate, no backward solve; Ramzi et al. 2022; needs f_solver="broyden"), or "unrolled" (no
    solver: f applied `unrolled_steps` times from 0).
    """

    f_solver: str = "anderson"
    b_solver: str = "broyden"
    f_max_iter: int = 30
    b_max_iter: int = 40
    f_tol: float = 1e-3
    b_tol: float = 1e-3
    stop_mode: str = "rel"
    backward: str = "ift"
    phantom_steps: int = 5
    phantom_tau: float = 0.5
    anderson_m: int = 6
    anderson_lam: float = 1e-4
    anderson_beta: float = 1.0

    def __post_init__(self) -> None:
        get_solver(self.f_solver)
        get_solver(self.b_solver)
        if self.backward not in ("ift", "phantom", "shine", "unrolled"):
            raise ValueError(f"backward must be 'ift', 'phantom', 'shine' or 'unrolled', got {self.backward!r}")
        if self.backward == "shine" and self.f_solver != "broyden":
            raise ValueError(f"backward='shine' reuses Broyden's inverse Jacobian: set f_solver='broyden' "
                             f"(got {self.f_solver!r})")
        if self.stop_mode not in ("rel", "abs"):
            raise ValueError(f"stop_mode must be 'rel' or 'abs', got {self.stop_mode!r}")
        if self.phantom_steps < 1 or not 0 < self.phantom_tau <= 1:
            raise ValueError("phantom_steps must be >= 1 and 0 < phantom_tau <= 1")

    def solver_kwargs(self, name: str) -> dict:
        if name == "anderson":
            return {"m": self.anderson_m, "lam": self.anderson_lam, "beta": self.anderson_beta}
        return {}


@dataclass
class EquilibriumResult:
    """The equilibrium state (with the gradient path of the chosen backward mode) and the statistics."""

    z: torch.Tensor
    stats: SolverStats | None
    jac_loss: torch.Tensor | None = None
    backward_stats: list[SolverStats] = field(default_factory=list)
    adjoint: torch.Tensor | None = None  # y solving y = y J_f(z*) + dL/dz*, after an "ift" backward
    incoming_grad: torch.Tensor | None = None  # dL/dz* that the adjoint solve received


class _ImplicitBackward(torch.autograd.Function):
    """Identity in the forward; in the backward, replaces the incoming gradient g at f(z*) by the
    solution y of y = y J_f(z*) + g (implicit function theorem). A Function rather than a tensor hook,
    so nothing has to be removed from inside the backward pass."""

    @staticmethod
    def forward(ctx, new_z, solve_adjoint):  # noqa: ANN001
        ctx.solve_adjoint = solve_adjoint
        return new_z.clone()

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001
        return ctx.solve_adjoint(grad), None


def vector_jacobian_product(new_z: torch.Tensor, z: torch.Tensor, v: torch.Tensor, create_graph: bool = False):
    """v^T J where J = d new_z / d z (new_z = f(z) computed with z requiring grad)."""
    return torch.autograd.grad(new_z, z, v, retain_graph=True, create_graph=create_graph)[0]


def hutchinson_jacobian_loss(
    new_z: torch.Tensor, z: torch.Tensor, probes: torch.Tensor | None = None, num_probes: int = 1,
    create_graph: bool = True, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Hutchinson estimate of ||J_f(z)||_F^2 / numel(z): mean over Gaussian probes v of ||v^T J||^2 / numel.

    `probes` (num_probes, *z.shape) fixes the probe vectors; otherwise they are drawn from `generator`.
    This is the Jacobian regulariser of Bai et al. (2021), `jac_loss_estimate` in the original code.

        loss = hutchinson_jacobian_loss(f(z), z)   # z.requires_grad_() first
    """
    if probes is None:
        probes = torch.randn((num_probes, *z.shape), dtype=z.dtype, device=z.device, generator=generator)
    total = new_z.new_zeros(())
    for v in probes:
        total = total + vector_jacobian_product(new_z, z, v, create_graph=create_graph).pow(2).sum()
    return total / probes.shape[0] / z.numel()


def jacobian_loss_weight(base_weight: float, step: int, incremental: int = 0) -> float:
    """The original schedule: the weight grows by 0.1 every `incremental` steps when incremental > 0."""
    if incremental > 0:
        return base_weight + 0.1 * (step // incremental)
    return base_weight


def should_apply_jacobian_loss(frequency: float) -> bool:
    """The original applies the regulariser on a random fraction `frequency` of the training steps."""
    return frequency >= 1.0 or (frequency > 0.0 and random.random() < frequency)


def phantom_gradient(f: Map, z_star: torch.Tensor, steps: int, tau: float) -> torch.Tensor:
    """Phantom gradient (Geng et al. 2021): z <- tau f(z) + (1 - tau) z, `steps` times with autograd,
    from the detached equilibrium. steps=1, tau=1 is the Jacobian-free gradient."""
    z = z_star.detach()
    for _ in range(steps):
        z = tau * f(z) + (1 - tau) * z if tau != 1.0 else f(z)
    return z


def solve_equilibrium(
    f: Map, z_init: torch.Tensor, settings: SolverSettings, *, track_grad: bool,
    jac_loss: bool = False, jac_probes: torch.Tensor | None = None,
) -> EquilibriumResult:
    """Solve z* = f(z*) and attach the gradient path of `settings.backward`.

    Without `track_grad` (inference) the result is the solver's z*. With it: "ift" returns f(z*) whose
    backward solves the adjoint equation with `settings.b_solver`; "phantom" returns the damped
    unrolled steps from z*. `jac_loss=True` adds the Hutchinson Jacobian estimate at z*.

        result = solve_equilibrium(f, torch.zeros(2, 16), SolverSettings(f_tol=1e-6), track_grad=True)
    """
    solver = get_solver(settings.f_solver)
    with torch.no_grad():
        z_star, stats = solver(f, z_init.detach(), max_iter=settings.f_max_iter, tol=settings.f_tol,
                               stop_mode=settings.stop_mode, **settings.solver_kwargs(settings.f_solver))
    if not track_grad:
        return EquilibriumResult(z_star, stats)
    result = EquilibriumResult(z_star, stats)
    needs_graph = settings.backward in ("ift", "shine") or jac_loss
    if needs_graph:
        z_leaf = z_star.detach().requires_grad_()
        new_z = f(z_leaf)
        if jac_loss:
            result.jac_loss = hutchinson_jacobian_loss(new_z, z_leaf, probes=jac_probes)
    if settings.backward == "phantom":
        result.z = phantom_gradient(f, z_star, settings.phantom_steps, settings.phantom_tau)
        return result
    if settings.backward == "shine":
        inverse_t = stats.inverse_jacobian_transposed

        def shine_adjoint(grad: torch.Tensor) -> torch.Tensor:
            # y = grad (I - J_f)^-1 = -grad (J_f - I)^-1 ~ -grad^T B, B from the forward Broyden solve
            y = -inverse_t(grad)
            result.adjoint, result.incoming_grad = y.detach(), grad.detach()
            return y

        result.z = _ImplicitBackward.apply(new_z, shine_adjoint)
        return result
    b_solver = get_solver(settings.b_solver)

    def solve_adjoint(grad: torch.Tensor) -> torch.Tensor:
        def adjoint_map(y: torch.Tensor) -> torch.Tensor:
            return vector_jacobian_product(new_z, z_leaf, y) + grad

        with torch.enable_grad():
            y, b_stats = b_solver(adjoint_map, torch.zeros_like(grad), max_iter=settings.b_max_iter,
                                  tol=settings.b_tol, stop_mode=settings.stop_mode,
                                  **settings.solver_kwargs(settings.b_solver))
        result.backward_stats.append(b_stats)
        result.adjoint, result.incoming_grad = y.detach(), grad.detach()
        return y

    result.z = _ImplicitBackward.apply(new_z, solve_adjoint)
    return result


def unrolled(f: Map, z_init: torch.Tensor, steps: int) -> torch.Tensor:
    """f applied `steps` times from z_init with autograd (the original pretraining / warm-up path)."""
    z = z_init
    for _ in range(steps):
        z = f(z)
    return z
