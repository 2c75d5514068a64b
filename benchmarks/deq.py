"""DEQ benchmark on the MDEQ CIFAR-tiny configuration (`mdeq_tiny_cifar10`, 32x32 inputs).

Measured in one run, each figure a ratio against a reference in the same run:
1. forward solve: zoo's Anderson vs torchdeq's `anderson_solver` (PyPI torchdeq, benchmark-only dependency)
   on the same f, same tolerance / memory / ridge: wall time and evaluations of f;
2. backward: phantom gradient (k=5, tau=0.5) vs exact implicit differentiation (IFT, adjoint solved with
   Broyden to the same tolerance): wall time of `loss.backward()` (the paper's figure: >= 1.7x);
3. peak memory of one forward+backward: DEQ (IFT) vs the explicit network of equal depth (f unrolled as many
   times as the DEQ's forward solve evaluated it, backpropagated through every step); each measured in a
   fresh subprocess (RSS sampled every millisecond on CPU, `torch.cuda.max_memory_allocated` on GPU).

    PYTHONPATH=$PWD python benchmarks/deq.py [--batch 32] [--repeats 3] [--tol 1e-4]

The weights are random, drawn as in the reference fixtures (plain convolutions N(0, 1/fan_in),
weight-norm gains 0.1, GroupNorm gains x5 (gn2), x0.4 (gn3), x2.5 (fusion)) so that f is contractive and
every solver converges: with the original N(0, 0.01) initialisation an untrained MDEQ has no stable
equilibrium (the original code warms up with unrolled steps for that reason).

Protocol: benchmarks/_protocol.py (sides alternate after a warm-up, threads pinned, outputs compared
before timing, median with min/max, load average). Writes benchmarks/deq.json and benchmarks/deq.png.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _protocol as protocol  # noqa: E402

VARIANT = "mdeq_tiny_cifar10"


def build(device: torch.device, batch: int, tol: float, seed: int = 0):
    import zoo  # noqa: F401  (registers the family)
    from zoo.models.deq import DeqConvergenceWarning
    from zoo.registry import create_model

    warnings.simplefilter("ignore", DeqConvergenceWarning)
    torch.manual_seed(seed)
    model = create_model(VARIANT, dropout=0.0, f_solver="anderson", b_solver="broyden", f_tol=tol, b_tol=tol,
                         f_max_iter=50, b_max_iter=50)
    make_contractive(model)
    model = model.to(device)
    images = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).to(device)
    labels = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(seed + 1)).to(device)
    return model, images, labels


def make_contractive(model) -> None:
    """The reference fixtures' random initialisation (see the module docstring)."""
    from zoo.models.deq.modeling_mdeq import WeightNormConv2d

    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, WeightNormConv2d):
                module.weight_g.fill_(0.1)
            elif isinstance(module, torch.nn.Conv2d):
                module.weight.normal_(0, module.weight[0].numel() ** -0.5)
            elif isinstance(module, torch.nn.GroupNorm) and module.weight is not None:
                scale = 5.0 if name.endswith("gn2") else 0.4 if name.endswith("gn3") else 2.5 if "fuse_layers" in name else 1
                module.weight.mul_(scale)


class PeakRss:
    """Samples this process's resident set size every millisecond (CPU peak memory of a code block)."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = self.start = self.rss()
        self._stop = threading.Event()

    def rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self.page

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.001)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def forward_solvers(model, images, tol, repeats, device):
    from torchdeq.solver.anderson import anderson_solver

    from zoo.models.deq.equilibrium_deq import anderson

    model.eval()
    with torch.no_grad():
        f, z0, _ = model.mdeq.equilibrium_function(images)
        out = {}

        def ours():
            out["ours"] = anderson(f, z0, max_iter=50, tol=tol, stop_mode="rel")
            sync(device)

        def theirs():
            out["theirs"] = anderson_solver(f, z0, max_iter=50, tol=tol, stop_mode="rel", m=6, lam=1e-4, tau=1.0)
            sync(device)

        times = protocol.alternate({"zoo Anderson": ours, "torchdeq Anderson": theirs}, repeats)
        (z_ours, stats), (z_theirs, _, info) = out["ours"], out["theirs"]

        def rel(z):
            fz = f(z)
            return float(((fz - z).norm(dim=1) / fz.norm(dim=1)).max())
        theirs_steps = int(info["nstep"].max()) if torch.is_tensor(info["nstep"]) else int(info["nstep"])
        return {
            "sides": protocol.summarize(times), "torchdeq_over_zoo": protocol.ratio(times, "torchdeq Anderson",
                                                                                   "zoo Anderson"),
            "zoo_f_evaluations": stats.nstep, "torchdeq_nstep": theirs_steps,
            "zoo_max_rel_residual": rel(z_ours), "torchdeq_max_rel_residual": rel(z_theirs),
            # two solvers to the same tolerance: the fixed points agree to about tol, not bit for bit
            "solutions": protocol.compare_outputs(z_ours, z_theirs, atol=1e-2, require=False, what="fixed points"),
        }


def _train_with_frozen_batchnorm(model) -> None:
    """Training mode (dropout, gradients) with the BatchNorm running statistics left as they are."""
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()


def backward_modes(model, images, labels, repeats, device):
    """A whole training step (same forward solve) with IFT vs phantom gradients, alternating after a warm-up;
    the backward part and the backward solver's evaluations recorded too."""
    _train_with_frozen_batchnorm(model)
    model.config.phantom_steps, model.config.phantom_tau = 5, 0.5
    backward = {"ift": [], "phantom": []}
    steps = {"ift": [], "phantom": []}
    grads, losses = {}, {}

    def step(mode):
        def run():
            model.config.backward = mode
            model.zero_grad()
            sync(device)
            out = model(pixel_values=images, labels=labels)
            sync(device)
            start = time.perf_counter()
            out.loss.backward()
            sync(device)
            backward[mode].append(time.perf_counter() - start)
            solve = model.mdeq.last_solve
            steps[mode].append(solve.backward_stats[0].nstep if solve.backward_stats else 0)
            losses[mode] = out.loss.detach()
            grads[mode] = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
        return run

    times = protocol.alternate({"IFT": step("ift"), "phantom k=5": step("phantom")}, repeats)
    for mode in backward:  # drop the warm-up call
        backward[mode], steps[mode] = backward[mode][1:], steps[mode][1:]
    difference = (grads["phantom"] - grads["ift"]).norm() / grads["ift"].norm()
    return {
        "sides": protocol.summarize(times),
        "backward_only": {mode: protocol.summary(values) for mode, values in backward.items()},
        "backward_solver_evaluations": {mode: statistics.median(values) for mode, values in steps.items()},
        "step_ift_over_phantom": protocol.ratio(times, "IFT", "phantom k=5"),
        "backward_ift_over_phantom": protocol.ratio(backward, "ift", "phantom"),
        # the same forward; the gradients differ by design (phantom approximates the implicit gradient)
        "losses": protocol.compare_outputs(losses["ift"], losses["phantom"], atol=0.0, what="training-step losses"),
        "gradient_relative_difference": float(difference),
    }


def measure_memory(kind: str, batch: int, tol: float, depth: int) -> dict:
    """One forward+backward in this (fresh) process; returns the peak memory increase in MiB."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, images, labels = build(device, batch, tol)
    _train_with_frozen_batchnorm(model)
    model.config.backward = "ift"
    steps = depth if kind == "unrolled" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = model(pixel_values=images, labels=labels, unrolled_steps=steps)
        out.loss.backward()
        peak = torch.cuda.max_memory_allocated()
    else:
        with PeakRss() as meter:
            out = model(pixel_values=images, labels=labels, unrolled_steps=steps)
            out.loss.backward()
        base, peak = meter.start, meter.peak
    return {"kind": kind, "peak_increase_mib": (peak - base) / 2**20, "device": device.type}


def memory_in_subprocess(kind, batch, tol, depth):
    command = [sys.executable, __file__, "--memory", kind, "--batch", str(batch), "--tol", str(tol), "--depth", str(depth)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tol", type=float, default=1e-4, help="relative tolerance of every solver")
    parser.add_argument("--memory", choices=["deq", "unrolled"], help=argparse.SUPPRESS)
    parser.add_argument("--depth", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(HERE / "deq"), help="output prefix for .json and .png")
    args = parser.parse_args(argv)
    if args.memory:
        print(json.dumps(measure_memory(args.memory, args.batch, args.tol, args.depth)))
        return 0
    threads = protocol.pin_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    env = protocol.environment(threads, variant=VARIANT, batch=args.batch, device=device.type, tol=args.tol)
    model, images, labels = build(device, args.batch, args.tol)
    results = {"env": env, "variant": VARIANT, "batch": args.batch}
    results["forward"] = forward_solvers(model, images, args.tol, args.repeats, device)
    results["backward"] = backward_modes(model, images, labels, args.repeats, device)
    depth = results["forward"]["zoo_f_evaluations"]
    results["memory"] = {"depth": depth, "deq": memory_in_subprocess("deq", args.batch, args.tol, depth),
                         "unrolled": memory_in_subprocess("unrolled", args.batch, args.tol, depth)}
    results["memory"]["ratio_unrolled_over_deq"] = (results["memory"]["unrolled"]["peak_increase_mib"]
                                                    / max(results["memory"]["deq"]["peak_increase_mib"], 1e-9))
    protocol.finish(env)
    fwd, bwd, mem = results["forward"], results["backward"], results["memory"]
    protocol.save(results, Path(args.out), panels=[
        {"title": f"forward solve, batch {args.batch}", "ylabel": "seconds", "bars": fwd["sides"]},
        {"title": "training step (forward + backward)", "ylabel": "seconds", "bars": bwd["sides"]},
    ])
    print(f"load average {env['load_average_start']} -> {env['load_average_end']}, {threads} thread(s)")
    r = fwd["torchdeq_over_zoo"]
    print(f"forward  zoo {fwd['sides']['zoo Anderson']['median_s']:.3f}s ({fwd['zoo_f_evaluations']} f-evals), "
          f"torchdeq {fwd['sides']['torchdeq Anderson']['median_s']:.3f}s (nstep {fwd['torchdeq_nstep']}); "
          f"{r['of']} {r['median']:.2f}x ({r['min']:.2f}..{r['max']:.2f}); "
          f"max |z diff| {fwd['solutions']['max_abs_diff']:.1e}")
    r, b = bwd["step_ift_over_phantom"], bwd["backward_ift_over_phantom"]
    print(f"training step IFT / phantom: {r['median']:.2f}x ({r['min']:.2f}..{r['max']:.2f}); backward only "
          f"{b['median']:.2f}x ({b['min']:.2f}..{b['max']:.2f}); IFT backward solver evaluations "
          f"{bwd['backward_solver_evaluations']['ift']}; gradient relative difference "
          f"{bwd['gradient_relative_difference']:.3f}")
    print(f"memory   DEQ {mem['deq']['peak_increase_mib']:.1f} MiB | unrolled x{depth} "
          f"{mem['unrolled']['peak_increase_mib']:.1f} MiB | ratio {mem['ratio_unrolled_over_deq']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
