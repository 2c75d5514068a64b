"""DMP inference on B3DB SMILES: tokenize + featurize + collate + forward, file-order batches (eager and
SDPA attention) against size-bucketed batches (`zoo.inference.predict_dmp`, SDPA), same weights.
Protocol: benchmarks/_protocol.py (sides alternate after a warm-up, threads pinned, outputs checked equal
before timing, median with min/max, load average, JSON + PNG).

    python benchmarks/dmp.py --molecules 2000 --batch-size 64 --variant dmp_small_molecule_cls
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _protocol as protocol  # noqa: E402

import zoo  # noqa: E402
from zoo.inference import predict_dmp  # noqa: E402
from zoo.models.dmp import DmpDataCollator, DmpFeaturizer, DmpTokenizer  # noqa: E402
from zoo.recipes.dmp import b3db_molecules  # noqa: E402


def file_order(model, tokenizer, featurizer, smiles: list[str], batch_size: int) -> np.ndarray:
    """The plain loop: batches in input order, each padded to its longest SMILES."""
    collator, logits = DmpDataCollator(), []
    with torch.inference_mode():
        for first in range(0, len(smiles), batch_size):
            batch = collator(featurizer.encode_molecules(smiles[first:first + batch_size], tokenizer))
            logits.append(model(**batch).logits.float().numpy())
    return np.concatenate(logits)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="dmp_small_molecule_cls")
    parser.add_argument("--molecules", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "dmp")
    args = parser.parse_args(argv)
    threads = protocol.pin_threads(args.threads)
    env = protocol.environment(threads, variant=args.variant, batch_size=args.batch_size)
    smiles = [s for s, _ in b3db_molecules()[:args.molecules]]
    tokenizer, featurizer = DmpTokenizer(), DmpFeaturizer()
    torch.manual_seed(0)
    models = {"eager": zoo.create_model(args.variant, attn_implementation="eager").eval()}
    models["sdpa"] = zoo.create_model(args.variant, attn_implementation="sdpa").eval()
    models["sdpa"].load_state_dict(models["eager"].state_dict())
    sides = {
        "file order, eager": lambda: file_order(models["eager"], tokenizer, featurizer, smiles, args.batch_size),
        "file order, SDPA": lambda: file_order(models["sdpa"], tokenizer, featurizer, smiles, args.batch_size),
        "size buckets, SDPA": lambda: predict_dmp(models["sdpa"], tokenizer, featurizer, smiles,
                                                  batch_size=args.batch_size).outputs["logits"],
    }
    reference = sides["file order, eager"]()
    checks = {name: protocol.compare_outputs(sides[name](), reference, atol=1e-5, what=f"{name} vs file order, eager")
              for name in ("file order, SDPA", "size buckets, SDPA")}
    times = protocol.alternate(sides, args.repeats, warmup=0, progress="rounds")  # warmed by the checks
    protocol.finish(env)
    lengths = [len(tokenizer.encode_smiles(s)) for s in smiles[:500]]
    results = {"env": env, "molecules": len(smiles), "checks": checks,
               "smiles_tokens_median": float(np.median(lengths)), "smiles_tokens_max": int(max(lengths)),
               "sides": protocol.summarize(times, work=len(smiles), unit="molecules"),
               "buckets_over_file_order_sdpa": protocol.ratio(times, "file order, SDPA", "size buckets, SDPA"),
               "buckets_over_file_order_eager": protocol.ratio(times, "file order, eager", "size buckets, SDPA")}
    protocol.save(results, args.out, panels=[
        {"title": f"DMP {args.variant}, {len(smiles)} B3DB SMILES -> logits", "ylabel": "molecules / s",
         "bars": results["sides"], "key": "median_molecules_per_s", "rotation": 15}])
    print(f"load average {env['load_average_start']} -> {env['load_average_end']}, {threads} thread(s)")
    for name, row in results["sides"].items():
        print(f"{name:>20}: {row['median_molecules_per_s']:.0f} molecules/s "
              f"({row['min_molecules_per_s']:.0f}..{row['max_molecules_per_s']:.0f})")
    for key in ("buckets_over_file_order_sdpa", "buckets_over_file_order_eager"):
        r = results[key]
        print(f"{r['of']}: {r['median']:.2f}x ({r['min']:.2f}..{r['max']:.2f})")
    print("max |logit difference| vs file order eager: "
          + ", ".join(f"{k} {v['max_abs_diff']:.1e}" for k, v in checks.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
