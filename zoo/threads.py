"""Size torch's thread pool to the CPU cores that are free, so a shared machine slows down in proportion.

On a 2-core machine where another job holds one core, a 2-thread OpenMP pool that busy-waits at every
barrier waits for its descheduled thread on each op: the demo ran 10x slower, not 2x. `quiet_pools()`
(call it before torch is imported) makes idle OpenMP threads sleep instead of spin and turns off the
tokenizers' own pool; `fit_threads()` (call it before each heavy step) measures how busy the allowed
cores are with other processes' work and sets torch's intra-op threads to the rest.

    from zoo.threads import fit_threads, quiet_pools
    quiet_pools()
    import torch
    fit_threads()          # e.g. 1 while another process keeps one of two cores busy
"""

from __future__ import annotations

import os
import time

__all__ = ["allowed_cpus", "busy_cores_of_others", "fit_threads", "free_cores", "quiet_pools"]

# Set before the OpenMP / MKL runtimes start (that is, before `import torch`); an explicit setting wins.
QUIET_ENV = {
    "OMP_WAIT_POLICY": "PASSIVE",  # idle OpenMP workers sleep instead of spinning on a core someone else needs
    "KMP_BLOCKTIME": "0",  # the same for Intel's OpenMP runtime (MKL builds)
    "TOKENIZERS_PARALLELISM": "false",  # no second (rayon) pool next to torch's
}


def quiet_pools() -> None:
    """Environment for thread pools that do not fight over shared cores (explicit settings are kept)."""
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask), else 0..cpu_count-1."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _cpu_jiffies(cpus: list[int]) -> tuple[float, float] | None:
    """(busy, total) jiffies summed over `cpus` from /proc/stat, or None where there is no /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{i}" for i in cpus}
    busy = total = 0.0
    for line in lines:
        fields = line.split()
        if fields and fields[0] in wanted:
            values = [float(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
            total += sum(values)
            busy += sum(values) - values[3] - values[4]
    return (busy, total) if total else None


def busy_cores_of_others(interval: float = 0.5) -> float:
    """How many of the allowed cores other processes kept busy over `interval` seconds (this process's
    own CPU time is subtracted). Falls back to the 1-minute load average where /proc/stat is missing."""
    cpus = allowed_cpus()
    before, own_before, start = _cpu_jiffies(cpus), time.process_time(), time.monotonic()
    if before is None:
        return min(float(len(cpus)), os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0.0
    time.sleep(interval)
    after, own_after, elapsed = _cpu_jiffies(cpus), time.process_time(), time.monotonic() - start
    busy, total = after[0] - before[0], after[1] - before[1]
    if total <= 0 or elapsed <= 0:
        return 0.0
    busy_cores = len(cpus) * busy / total
    own_cores = (own_after - own_before) / elapsed
    return max(0.0, busy_cores - own_cores)


def free_cores(interval: float = 0.5) -> int:
    """Allowed cores minus those other processes keep busy (rounded), at least 1."""
    cpus = allowed_cpus()
    return max(1, min(len(cpus), round(len(cpus) - busy_cores_of_others(interval))))


def fit_threads(interval: float = 0.5, *, maximum: int | None = None) -> int:
    """Set torch's intra-op threads to the free cores (ZOO_NUM_THREADS or OMP_NUM_THREADS, when set,
    win) and inter-op threads to 1 where that can still be set; returns the intra-op count."""
    import torch

    explicit = os.environ.get("ZOO_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    count = int(explicit) if explicit and explicit.isdigit() and int(explicit) > 0 else free_cores(interval)
    if maximum:
        count = min(count, maximum)
    torch.set_num_threads(count)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or inter-op work has started: keep what is there
        pass
    return count
