"""Graphormer featurization of many SMILES on 1 and 2 processes into Parquet shards
(`zoo.inference.featurize_to_parquet`): seconds, molecules/s and scaling efficiency t1 / (p * tp).
Protocol: benchmarks/_protocol.py (alternating, warm-up, outputs checked equal, median with min/max,
load average). Each process runs one thread.

A control runs beside it under the same protocol: a pure-Python CPU loop cut into as many pieces as there
are shards, on a pool of 1 and of 2 processes. Its efficiency is what this machine gives two processes at
that moment (on a shared or virtual 2-core machine it can be well under 1), so the featurizer's figure can
be read against it.

    python benchmarks/featurize_parallel.py --repeats 5      # every B3DB molecule (7,807)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _protocol as protocol  # noqa: E402

from zoo.inference import featurize_to_parquet, read_parquet_items  # noqa: E402


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def _control(num_proc: int, pieces: int, work: int):
    """The CPU-bound control: `pieces` loops of `work` steps on `num_proc` forked processes."""
    import multiprocessing

    def side():
        if num_proc == 1:
            return [_spin(work) for _ in range(pieces)]
        with multiprocessing.get_context("fork").Pool(num_proc) as pool:
            return pool.map(_spin, [work] * pieces)
    return side


def _efficiency(times: dict, one: str, two: str) -> dict:
    """Scaling efficiency t1 / (2 * t2): the per-round speed-up (protocol.ratio) over the 2 processes."""
    speedup = protocol.ratio(times, one, two)
    return {key: speedup[key] / 2 for key in ("median", "min", "max")} | {"of": "t1 / (2 * t2)"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--molecules", type=int, default=None, help="default: every B3DB molecule (7,807)")
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--control-steps", type=int, default=3_000_000, help="loop steps per control piece")
    parser.add_argument("--out", type=Path, default=HERE / "featurize_parallel")
    args = parser.parse_args(argv)
    threads = protocol.pin_threads(1)
    env = protocol.environment(threads, molecules=args.molecules, shard_size=args.shard_size)
    from zoo.recipes.graphormer import b3db_rows

    rows = [row["SMILES"] for row in b3db_rows("B3DB_classification.tsv")]
    count = args.molecules or len(rows)
    smiles = [rows[i % len(rows)] for i in range(count)]
    env["molecules"] = count
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def run(num_proc: int):
            def side():
                shutil.rmtree(tmp / str(num_proc), ignore_errors=True)
                return featurize_to_parquet(smiles, tmp / str(num_proc), num_proc=num_proc, shard_size=args.shard_size)
            return side

        pieces = -(-len(smiles) // args.shard_size)
        sides = {"1 process": run(1), "2 processes": run(2),
                 "control, 1 process": _control(1, pieces, args.control_steps),
                 "control, 2 processes": _control(2, pieces, args.control_steps)}
        one, two = sides["1 process"](), sides["2 processes"]()
        check = protocol.compare_outputs(read_parquet_items(one["shards"])[1], read_parquet_items(two["shards"])[1],
                                         what="items from 1 vs 2 processes")
        items, skipped = one["items"], len(one["skipped"])
        del one, two
        import gc

        gc.collect()  # the checked items (about a GB) are not carried into the forked workers
        times = protocol.alternate(sides, args.repeats, progress="rounds")
    protocol.finish(env)
    featurize = {name: times[name] for name in ("1 process", "2 processes")}
    control = {name: times[name] for name in ("control, 1 process", "control, 2 processes")}
    results = {"env": env, "molecules": len(smiles), "items": items, "skipped": skipped,
               "check": check, "sides": protocol.summarize(featurize, work=len(smiles), unit="molecules"),
               "speedup_2_over_1": protocol.ratio(featurize, "1 process", "2 processes"),
               "efficiency_2": _efficiency(featurize, "1 process", "2 processes"),
               "efficiency_1": 1.0,
               "control": {"pieces": pieces, "steps_per_piece": args.control_steps,
                           "sides": protocol.summarize(control),
                           "efficiency_2": _efficiency(control, "control, 1 process", "control, 2 processes")}}
    protocol.save(results, args.out, panels=[
        {"title": f"SMILES -> Parquet shards, {len(smiles)} molecules", "ylabel": "molecules / s",
         "bars": results["sides"], "key": "median_molecules_per_s"},
        {"title": "CPU-bound control (pure Python loop)", "ylabel": "seconds",
         "bars": results["control"]["sides"]}])
    print(f"load average {env['load_average_start']} -> {env['load_average_end']}")
    for name, row in results["sides"].items():
        print(f"{name}: {row['median_molecules_per_s']:.0f} molecules/s "
              f"({row['min_molecules_per_s']:.0f}..{row['max_molecules_per_s']:.0f})")
    e = results["efficiency_2"]
    print(f"scaling efficiency with 2 processes: {e['median']:.2f} ({e['min']:.2f}..{e['max']:.2f}); 1 process: 1.00")
    c = results["control"]["efficiency_2"]
    print(f"control (pure-Python loop) efficiency with 2 processes: {c['median']:.2f} ({c['min']:.2f}..{c['max']:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
