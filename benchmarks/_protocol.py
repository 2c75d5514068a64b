"""The measuring protocol every benchmark in benchmarks/ follows (DESIGN.md, "Benchmarks").

1. Both sides do the same work: `compare_outputs` checks their outputs equal (or records the largest
   difference, which the benchmark states) before anything is timed.
2. Threads are pinned alike (`pin_threads`, before torch does any work; a peer subprocess gets the
   same count through `thread_env`).
3. `alternate` runs every side once as a warm-up, then interleaves them round by round (A B, B A, ...),
   so that load from other processes falls on all sides alike.
4. `summary` reports the median with min / max of the timed runs, never a best-of alone.
5. `environment` records the load average (before and after), the thread count and the machine.
6. `save` writes the results as JSON and a PNG whose bars are medians with min-max ranges.

    sides = {"zoo": lambda: ours(x), "peer": lambda: theirs(x)}
    check = compare_outputs(sides["zoo"](), sides["peer"](), atol=1e-5)
    runs = alternate(sides, repeats=5)
    results = {"env": environment(threads), "check": check, "runs": summarize(runs),
               "ratio": ratio(runs, "peer", "zoo")}
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def pin_threads(threads: int) -> int:
    """The same thread count for this process's torch / BLAS and (through the environment) its children."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set once in this process
            pass
    except ImportError:
        pass
    return threads


def thread_env(threads: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for a peer subprocess with the same thread pinning."""
    env = dict(os.environ if base is None else base)
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    return env


def load_average() -> list[float]:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:  # not on this platform
        return []


def environment(threads: int, **extra: Any) -> dict[str, Any]:
    """What the figures depend on: machine, thread count, library versions, load average now."""
    info: dict[str, Any] = {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "threads": threads, "python": platform.python_version(),
        "load_average_start": load_average(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    info.update(extra)
    return info


def finish(env: dict[str, Any]) -> dict[str, Any]:
    env["load_average_end"] = load_average()
    return env


class SelfTimed(float):
    """Returned by a side that times its own work (a peer process: its figure leaves out the IPC)."""


def alternate(sides: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
              progress: str | None = None, clock: str = "wall") -> dict[str, list[float]]:
    """Seconds per call of each side: `warmup` untimed rounds, then `repeats` timed rounds whose order
    alternates (forward, then reversed), so that no side always runs first or last. A side that returns
    a `SelfTimed` value is credited with that value instead of the wall time around the call.
    `clock="cpu"` times this process's CPU time instead (single-threaded, in-process sides on a shared
    machine: what the work costs, whatever else runs)."""
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    now = time.perf_counter if clock == "wall" else time.process_time
    names = list(sides)
    for _ in range(warmup):
        for name in names:
            sides[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    rounds = range(repeats)
    if progress:
        from tqdm.auto import tqdm

        rounds = tqdm(rounds, desc=progress, unit="round")
    for index in rounds:
        for name in (names if index % 2 == 0 else names[::-1]):
            start = now()
            value = sides[name]()
            elapsed = now() - start
            times[name].append(float(value) if isinstance(value, SelfTimed) else elapsed)
    return times


def summary(seconds: list[float], work: float | None = None, unit: str = "items") -> dict[str, Any]:
    """Median / min / max seconds (and, with `work` items per call, the median rate and its range)."""
    result: dict[str, Any] = {
        "median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds),
        "runs": len(seconds), "all_s": [round(s, 6) for s in seconds],
    }
    if work is not None:
        result.update({f"median_{unit}_per_s": work / result["median_s"], f"min_{unit}_per_s": work / result["max_s"],
                       f"max_{unit}_per_s": work / result["min_s"], "work": work, "unit": unit})
    return result


def summarize(times: dict[str, list[float]], work: float | None = None, unit: str = "items") -> dict[str, Any]:
    return {name: summary(seconds, work, unit) for name, seconds in times.items()}


def ratio(times: dict[str, list[float]], slow: str, fast: str) -> dict[str, float]:
    """slow / fast per round (rounds are paired by the alternation): median, min and max of the ratio."""
    per_round = [a / b for a, b in zip(times[slow], times[fast])]
    return {"median": statistics.median(per_round), "min": min(per_round), "max": max(per_round),
            "of": f"{slow} / {fast}"}


def _leaves(value: Any) -> list:
    """The leaves of a nested structure (dicts in key order, lists, tuples), tensors as numpy arrays."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if isinstance(value, dict):
        return [leaf for key in sorted(value) for leaf in _leaves(value[key])]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def _numeric(value: Any) -> bool:
    return (isinstance(value, (int, float, np.ndarray, np.number)) and not isinstance(value, bool)
            and np.asarray(value).dtype.kind in "iuf")


def compare_outputs(ours: Any, theirs: Any, atol: float = 0.0, what: str = "outputs",
                    require: bool = True) -> dict[str, Any]:
    """Check two sides' outputs equal within `atol` before timing (exactly for non-numbers).

    Returns {"equal", "max_abs_diff", "count", "atol"}; with `require` a mismatch raises AssertionError
    naming `what`, so that a benchmark never times two different computations by accident. Arrays are
    compared leaf by leaf with numpy (a NaN on either side counts as an infinite difference).
    """
    a, b = _leaves(ours), _leaves(theirs)
    sizes_a = [int(np.size(x)) for x in a]
    sizes_b = [int(np.size(y)) for y in b]
    if sum(sizes_a) != sum(sizes_b) or len(a) != len(b) or sizes_a != sizes_b:
        result = {"equal": False, "max_abs_diff": math.inf, "count": [sum(sizes_a), sum(sizes_b)], "atol": atol}
    else:
        worst = 0.0
        exact = True
        for x, y in zip(a, b):
            if _numeric(x) and _numeric(y):
                if np.size(x):
                    diff = np.abs(np.asarray(x, dtype=np.float64).reshape(-1)
                                  - np.asarray(y, dtype=np.float64).reshape(-1))
                    worst = max(worst, math.inf if np.isnan(diff).any() else float(diff.max()))
            elif not np.array_equal(np.asarray(x, dtype=object), np.asarray(y, dtype=object)):
                exact = False
        result = {"equal": exact and worst <= atol, "max_abs_diff": worst, "count": sum(sizes_a), "atol": atol}
    if require and not result["equal"]:
        raise AssertionError(f"{what}: the two sides differ ({result}); not timing different work")
    return result


def save(results: dict[str, Any], stem: Path, panels: list[dict[str, Any]] | None = None) -> None:
    """Write `stem`.json and, given panels, `stem`.png.

    A panel is {"title", "ylabel", "bars": {label: summary}, "key": "median_s" | "median_<unit>_per_s"}:
    bars show the median, whiskers the min-max range of the timed runs.
    """
    stem = Path(stem)
    tmp = stem.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=float) + "\n")
    tmp.replace(stem.with_suffix(".json"))
    if not panels:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        key = panel.get("key", "median_s")
        low_key, high_key = key.replace("median", "min"), key.replace("median", "max")
        labels = list(panel["bars"])
        medians = [panel["bars"][label][key] for label in labels]
        lows = [panel["bars"][label][low_key] for label in labels]
        highs = [panel["bars"][label][high_key] for label in labels]
        ax.bar(labels, medians, color=["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b2"][:len(labels)])
        ax.errorbar(labels, medians, yerr=[[m - lo for m, lo in zip(medians, lows)],
                                           [hi - m for m, hi in zip(medians, highs)]],
                    fmt="none", ecolor="black", capsize=4)
        ax.set_title(panel["title"], fontsize=9)
        ax.set_ylabel(panel.get("ylabel", key))
        if panel.get("log"):
            ax.set_yscale("log")
        ax.tick_params(axis="x", labelsize=8, rotation=panel.get("rotation", 0))
    env = results.get("env", {})
    fig.suptitle(f"median, min-max whiskers; {env.get('threads', '?')} threads; load average "
                 f"{env.get('load_average_start', '?')} -> {env.get('load_average_end', '?')}", fontsize=8)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=100)
    plt.close(fig)
