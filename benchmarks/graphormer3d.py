"""Graphormer-3D base: forward time and peak memory against system size (20 to 200 atoms).

    PYTHONPATH=. python benchmarks/graphormer3d.py [--device cpu|cuda] [--sizes 20 40 80 120 160 200]

Each size runs in its own subprocess (a fresh base model, `graphormer3d_base_oc20_is2re` architecture,
random weights, eval mode, float32, batch of one system with that many atoms, no periodic images).
Reported: the median (with min / max) of --repeats forward passes after a warm-up, as wall time and as
the process's CPU time (one thread, so on a shared CPU the CPU time is the cost measure; on CUDA the
wall time is); the sizes run round-robin, --rounds times, so that load falls on all sizes alike; the peak memory of the
forward (CUDA: max allocated minus the weights; CPU: rise of the process's peak RSS during the first
forward); both as ratios to the smallest size, next to the ratios a purely linear and a purely quadratic
cost give. The fitted log-log slope says how cost grows.
There is no peer here (a scaling measurement of zoo alone), so no outputs to compare. Protocol:
benchmarks/_protocol.py (pinned threads, median with min/max, load average, JSON + PNG with ranges).
Results are printed and saved as JSON + PNG next to this script (or under --out).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _protocol as protocol  # noqa: E402


def synthetic_system(n_atoms: int, seed: int = 0) -> dict:
    """A slab-like block of `n_atoms` atoms on a jittered grid (2.5 Å spacing), adsorbates on top."""
    import numpy as np

    rng = np.random.default_rng(seed)
    side = math.ceil(n_atoms ** (1 / 3))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n_atoms]
    positions = grid * 2.5 + rng.normal(0, 0.1, size=grid.shape)
    height = positions[:, 2]
    tags = np.where(height >= np.quantile(height, 0.9), 2, np.where(height >= np.quantile(height, 0.5), 1, 0))
    numbers = rng.choice([8, 6, 1, 29, 78, 46, 28], size=n_atoms)
    return {"atomic_numbers": numbers, "positions": positions, "tags": tags, "cell": None}


def measure(n_atoms: int, device: str, repeats: int, threads: int) -> dict:
    """Child process: time and memory of one size."""
    import torch

    import zoo
    from zoo.models.graphormer3d import Graphormer3DFeaturizer

    protocol.pin_threads(threads)
    torch.manual_seed(0)
    model = zoo.create_model("graphormer3d_base_oc20_is2re").eval().to(device)
    batch = {k: v.to(device) for k, v in Graphormer3DFeaturizer()([synthetic_system(n_atoms)]).items()}
    padded = int(batch["atom_ids"].shape[1])

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    with torch.no_grad():
        if device.startswith("cuda"):
            torch.backends.cuda.matmul.allow_tf32 = False
            model(**batch)
            sync()
            torch.cuda.reset_peak_memory_stats()
            weights = torch.cuda.memory_allocated()
            model(**batch)
            sync()
            peak = torch.cuda.max_memory_allocated() - weights
        else:
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            model(**batch)
            peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1024
        times, cpu_times = [], []
        for _ in range(repeats):
            sync()
            start, cpu_start = time.perf_counter(), time.process_time()
            model(**batch)
            sync()
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    return {
        "atoms": n_atoms,
        "padded_atoms": padded,
        "forward_s": protocol.summary(times),
        "forward_cpu_s": protocol.summary(cpu_times),
        "peak_forward_bytes": int(peak),
        "device": device,
    }


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) against log(x)."""
    lx = [math.log(x) for x in xs]
    ly = [math.log(max(y, 1e-12)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def plot(rows: list[dict], path: Path, device: str, cost_key: str, env: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    atoms = [r["padded_atoms"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    base = rows[0][cost_key]["median_s"]
    axes[0].fill_between(atoms, [r[cost_key]["min_s"] / base for r in rows], [r[cost_key]["max_s"] / base for r in rows],
                         alpha=0.3, label="min-max of the timed passes")
    for ax, key, label in ((axes[0], "time_ratio", "forward time"), (axes[1], "memory_ratio", "peak memory")):
        ax.plot(atoms, [r[key] for r in rows], "o-", label=f"Graphormer-3D base ({label}, median)")
        ax.plot(atoms, [r["linear_ratio"] for r in rows], "--", label="linear in atoms")
        ax.plot(atoms, [r["quadratic_ratio"] for r in rows], ":", label="quadratic in atoms")
        ax.set_xlabel("atoms (padded)")
        ax.set_ylabel(f"{label} / {label} at {atoms[0]} atoms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(atoms, [str(a) for a in atoms])
        ax.minorticks_off()
        ax.legend(fontsize=8)
    fig.suptitle(f"Graphormer-3D base (45.1M params), batch of 1, {device}; load average "
                 f"{env['load_average_start']} -> {env['load_average_end']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 40, 80, 120, 160, 200])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per run, after a warm-up")
    parser.add_argument("--rounds", type=int, default=2, help="runs of every size, round-robin")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure(args.child, args.device, args.repeats, args.threads)))
        return 0

    from tqdm.auto import tqdm

    env = protocol.environment(args.threads, device=args.device, rounds=args.rounds)
    runs: dict[int, list[dict]] = {size: [] for size in sorted(args.sizes)}
    jobs = [size for round_ in range(args.rounds)
            for size in (sorted(args.sizes) if round_ % 2 == 0 else sorted(args.sizes, reverse=True))]
    for size in tqdm(jobs, desc="graphormer3d benchmark", unit="run"):
        command = [
            sys.executable,
            __file__,
            "--child",
            str(size),
            "--device",
            args.device,
            "--repeats",
            str(args.repeats),
            "--threads",
            str(args.threads),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        runs[size].append(json.loads(result.stdout.strip().splitlines()[-1]))
    protocol.finish(env)
    rows = []
    for results in runs.values():  # pool every round's timed passes; memory: the largest peak seen
        row = dict(results[0])
        for key in ("forward_s", "forward_cpu_s"):
            row[key] = protocol.summary([t for r in results for t in r[key]["all_s"]])
        row["peak_forward_bytes"] = max(r["peak_forward_bytes"] for r in results)
        rows.append(row)
    first = rows[0]
    # On a shared CPU, process time of the one-thread forward measures its cost; wall time is also kept.
    cost_key = "forward_cpu_s" if args.device == "cpu" else "forward_s"
    for row in rows:
        scale = row["padded_atoms"] / first["padded_atoms"]
        row["time_ratio"] = row[cost_key]["median_s"] / first[cost_key]["median_s"]
        row["memory_ratio"] = row["peak_forward_bytes"] / max(first["peak_forward_bytes"], 1)
        row["linear_ratio"], row["quadratic_ratio"] = scale, scale**2
    atoms = [r["padded_atoms"] for r in rows]
    summary = {
        "device": args.device,
        "threads": args.threads,
        "model": "graphormer3d_base_oc20_is2re (12 layers x 4 blocks, 768 dims, 48 heads, 128 kernels)",
        "time_measure": cost_key,
        "time_loglog_slope": slope(atoms, [r[cost_key]["median_s"] for r in rows]),
        "memory_loglog_slope": slope(atoms, [max(r["peak_forward_bytes"], 1) for r in rows]),
        "rows": rows,
        "env": env,
    }
    print(
        f"{'atoms':>6} {'padded':>6} {'wall':>10} {'cpu':>10} {'x time':>7} {'peak MiB':>9} {'x mem':>7} "
        f"{'x lin':>6} {'x quad':>7}"
    )
    for r in rows:
        print(
            f"{r['atoms']:>6} {r['padded_atoms']:>6} {r['forward_s']['median_s'] * 1e3:>8.1f}ms "
            f"{r['forward_cpu_s']['median_s'] * 1e3:>8.1f}ms {r['time_ratio']:>7.2f} "
            f"{r['peak_forward_bytes'] / 2**20:>9.1f} {r['memory_ratio']:>7.2f} {r['linear_ratio']:>6.2f} "
            f"{r['quadratic_ratio']:>7.2f}"
        )
    print(
        f"log-log slope ({cost_key}): time {summary['time_loglog_slope']:.2f}, "
        f"memory {summary['memory_loglog_slope']:.2f} "
        "(1 = linear, 2 = quadratic in atoms)"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "graphormer3d" if args.device == "cpu" else f"graphormer3d_{args.device.split(':')[0]}"
    protocol.save(summary, args.out / stem)
    plot(rows, args.out / f"{stem}.png", args.device, cost_key, env)
    print(f"saved {args.out / stem}.json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
