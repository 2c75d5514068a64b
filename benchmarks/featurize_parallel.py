"""Graphormer featurization of many SMILES on 1 and 2 processes into Parquet shards
(`zoo.inference.featurize_to_parquet`): seconds, molecules/s and scaling efficiency t1 / (p * tp).
Protocol: benchmarks/_protocol.py (alternating, warm-up, outputs checked equal, median with min/max,
load average). Each process runs one thread.

    python benchmarks/featurize_parallel.py --molecules 4000 --repeats 3
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--molecules", type=int, default=4000)
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "featurize_parallel")
    args = parser.parse_args(argv)
    threads = protocol.pin_threads(1)
    env = protocol.environment(threads, molecules=args.molecules, shard_size=args.shard_size)
    from zoo.recipes.graphormer import b3db_rows

    rows = [row["SMILES"] for row in b3db_rows("B3DB_classification.tsv")]
    smiles = [rows[i % len(rows)] for i in range(args.molecules)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def run(num_proc: int):
            def side():
                shutil.rmtree(tmp / str(num_proc), ignore_errors=True)
                return featurize_to_parquet(smiles, tmp / str(num_proc), num_proc=num_proc, shard_size=args.shard_size)
            return side

        sides = {"1 process": run(1), "2 processes": run(2)}
        one, two = sides["1 process"](), sides["2 processes"]()
        check = protocol.compare_outputs(read_parquet_items(one["shards"])[1], read_parquet_items(two["shards"])[1],
                                         what="items from 1 vs 2 processes")
        times = protocol.alternate(sides, args.repeats, warmup=0, progress="rounds")  # warmed by the check
    protocol.finish(env)
    per_round = [a / (2 * b) for a, b in zip(times["1 process"], times["2 processes"])]
    results = {"env": env, "molecules": len(smiles), "items": one["items"], "skipped": len(one["skipped"]),
               "check": check, "sides": protocol.summarize(times, work=len(smiles), unit="molecules"),
               "speedup_2_over_1": protocol.ratio(times, "1 process", "2 processes"),
               "efficiency_2": {"median": sorted(per_round)[len(per_round) // 2], "min": min(per_round),
                                "max": max(per_round), "of": "t1 / (2 * t2)"},
               "efficiency_1": 1.0}
    protocol.save(results, args.out, panels=[
        {"title": f"SMILES -> Parquet shards, {len(smiles)} molecules", "ylabel": "molecules / s",
         "bars": results["sides"], "key": "median_molecules_per_s"}])
    print(f"load average {env['load_average_start']} -> {env['load_average_end']}")
    for name, row in results["sides"].items():
        print(f"{name}: {row['median_molecules_per_s']:.0f} molecules/s "
              f"({row['min_molecules_per_s']:.0f}..{row['max_molecules_per_s']:.0f})")
    e = results["efficiency_2"]
    print(f"scaling efficiency with 2 processes: {e['median']:.2f} ({e['min']:.2f}..{e['max']:.2f}); 1 process: 1.00")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
