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

Writes benchmarks/deq.json and benchmarks/deq.png.
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


def timed(fn, device, repeats):
    times, result = [], None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def forward_solvers(model, images, tol, repeats, device):
    from torchdeq.solver.anderson import anderson_solver

    from zoo.models.deq.equilibrium_deq import anderson

    model.eval()
    with torch.no_grad():
        f, z0, _ = model.mdeq.equilibrium_function(images)
        def ours():
            return anderson(f, z0, max_iter=50, tol=tol, stop_mode="rel")

        def theirs():
            return anderson_solver(f, z0, max_iter=50, tol=tol, stop_mode="rel", m=6, lam=1e-4, tau=1.0)

        ours(), theirs()  # warm-up: kernel selection and allocator caches, for both
        ours_times, theirs_times = [], []
        for _ in range(repeats):  # interleaved, so that load changes hit both alike
            t, (z_ours, stats) = timed(ours, device, 1)
            ours_times.append(t)
            t, (z_theirs, _, info) = timed(theirs, device, 1)
            theirs_times.append(t)
        ours_t, theirs_t = statistics.median(ours_times), statistics.median(theirs_times)
        def rel(z):
            fz = f(z)
            return float(((fz - z).norm(dim=1) / fz.norm(dim=1)).max())
        theirs_steps = int(info["nstep"].max()) if torch.is_tensor(info["nstep"]) else int(info["nstep"])
        return {
            "zoo_anderson_seconds": ours_t, "torchdeq_anderson_seconds": theirs_t,
            "time_ratio_torchdeq_over_zoo": theirs_t / ours_t,
            "zoo_f_evaluations": stats.nstep, "torchdeq_nstep": theirs_steps,
            "zoo_max_rel_residual": rel(z_ours), "torchdeq_max_rel_residual": rel(z_theirs),
            "max_abs_diff_between_solutions": float((z_ours - z_theirs).abs().max()),
        }


def _train_with_frozen_batchnorm(model) -> None:
    """Training mode (dropout, gradients) with the BatchNorm running statistics left as they are."""
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()


def backward_modes(model, images, labels, repeats, device):
    _train_with_frozen_batchnorm(model)
    results = {}
    for mode in ("ift", "phantom"):
        model.config.backward = mode
        model.config.phantom_steps, model.config.phantom_tau = 5, 0.5
        times, step_times, steps = [], [], []
        for _ in range(repeats):
            model.zero_grad()
            sync(device)
            begin = time.perf_counter()
            out = model(pixel_values=images, labels=labels)
            sync(device)
            start = time.perf_counter()
            out.loss.backward()
            sync(device)
            end = time.perf_counter()
            times.append(end - start)
            step_times.append(end - begin)
            solve = model.mdeq.last_solve
            steps.append(solve.backward_stats[0].nstep if solve.backward_stats else 0)
        results[f"{mode}_backward_seconds"] = statistics.median(times)
        results[f"{mode}_training_step_seconds"] = statistics.median(step_times)
        results[f"{mode}_backward_solver_evaluations"] = statistics.median(steps)
    # phantom's k steps run while the forward builds the graph: the backward-only ratio flatters it, the
    # whole training step (same forward solve in both) is the fair comparison
    results["speedup_phantom_over_ift"] = results["ift_backward_seconds"] / results["phantom_backward_seconds"]
    results["step_speedup_phantom_over_ift"] = (results["ift_training_step_seconds"]
                                                / results["phantom_training_step_seconds"])
    return results


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


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fwd, bwd, mem = results["forward"], results["backward"], results["memory"]
    panels = [
        ("forward solve (s)", ["zoo Anderson", "torchdeq Anderson"],
         [fwd["zoo_anderson_seconds"], fwd["torchdeq_anderson_seconds"]]),
        ("training step: fwd+bwd (s)", ["IFT", "phantom k=5"],
         [bwd["ift_training_step_seconds"], bwd["phantom_training_step_seconds"]]),
        ("peak memory fwd+bwd (MiB)", ["DEQ (IFT)", f"unrolled x{mem['depth']}"],
         [mem["deq"]["peak_increase_mib"], mem["unrolled"]["peak_increase_mib"]]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for axis, (title, names, values) in zip(axes, panels):
        axis.bar(names, values, color=["tab:blue", "tab:orange"])
        axis.set_title(title)
        for i, v in enumerate(values):
            axis.text(i, v, f"{v:.3g}", ha="center", va="bottom")
    fig.suptitle(f"MDEQ CIFAR-tiny, batch {results['batch']}, {results['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tol", type=float, default=1e-4, help="relative tolerance of every solver")
    parser.add_argument("--memory", choices=["deq", "unrolled"], help=argparse.SUPPRESS)
    parser.add_argument("--depth", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(HERE / "deq"), help="output prefix for .json and .png")
    args = parser.parse_args(argv)
    if args.memory:
        print(json.dumps(measure_memory(args.memory, args.batch, args.tol, args.depth)))
        return 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, images, labels = build(device, args.batch, args.tol)
    results = {"variant": VARIANT, "batch": args.batch, "device": device.type, "tol": args.tol,
               "torch": torch.__version__, "threads": torch.get_num_threads()}
    results["forward"] = forward_solvers(model, images, args.tol, args.repeats, device)
    results["backward"] = backward_modes(model, images, labels, args.repeats, device)
    depth = results["forward"]["zoo_f_evaluations"]
    results["memory"] = {"depth": depth, "deq": memory_in_subprocess("deq", args.batch, args.tol, depth),
                         "unrolled": memory_in_subprocess("unrolled", args.batch, args.tol, depth)}
    results["memory"]["ratio_unrolled_over_deq"] = (results["memory"]["unrolled"]["peak_increase_mib"]
                                                    / max(results["memory"]["deq"]["peak_increase_mib"], 1e-9))
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    plot(results, out.with_suffix(".png"))
    fwd, bwd, mem = results["forward"], results["backward"], results["memory"]
    print(f"forward  zoo Anderson {fwd['zoo_anderson_seconds']:.3f}s ({fwd['zoo_f_evaluations']} f-evals) | "
          f"torchdeq {fwd['torchdeq_anderson_seconds']:.3f}s (nstep {fwd['torchdeq_nstep']}) | "
          f"ratio torchdeq/zoo {fwd['time_ratio_torchdeq_over_zoo']:.2f}")
    print(f"backward IFT {bwd['ift_backward_seconds']:.3f}s ({bwd['ift_backward_solver_evaluations']} evals) | "
          f"phantom k=5 {bwd['phantom_backward_seconds']:.3f}s | speed-up {bwd['speedup_phantom_over_ift']:.2f}x; "
          f"whole training step {bwd['step_speedup_phantom_over_ift']:.2f}x (paper: >= 1.7x)")
    print(f"memory   DEQ {mem['deq']['peak_increase_mib']:.1f} MiB | unrolled x{depth} "
          f"{mem['unrolled']['peak_increase_mib']:.1f} MiB | ratio {mem['ratio_unrolled_over_deq']:.2f}")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
