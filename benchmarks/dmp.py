"""DMP throughput: molecules/s for tokenize + featurize + collate + forward, eager vs SDPA attention.

Both attention paths run in the same process on the same B3DB molecules and weights; the ratio SDPA/eager
is the figure to compare across machines. Results are printed and saved as JSON + PNG next to this file
(or --out).

    python benchmarks/dmp.py --molecules 512 --batch-size 32 --variant dmp_small_molecule_cls
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

import zoo
from zoo.models.dmp import DmpDataCollator, DmpFeaturizer, DmpTokenizer
from zoo.recipes.dmp import b3db_molecules


def _prepare(smiles: list[str], batch_size: int) -> tuple[list[dict], float]:
    tokenizer, featurizer, collator = DmpTokenizer(), DmpFeaturizer(), DmpDataCollator()
    start = time.perf_counter()
    batches = []
    for first in range(0, len(smiles), batch_size):
        batches.append(collator(featurizer.encode_molecules(smiles[first:first + batch_size], tokenizer)))
    return batches, time.perf_counter() - start


def _forward_seconds(model, batches: list[dict], repeats: int) -> float:
    with torch.inference_mode():
        model(**batches[0])  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for batch in batches:
                model(**batch)
            best = min(best, time.perf_counter() - start)
    return best


def run(variant: str, molecules: int, batch_size: int, repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    smiles = [s for s, _ in b3db_molecules()[:molecules]]
    batches, prepare_s = _prepare(smiles, batch_size)
    torch.manual_seed(0)
    results = {"variant": variant, "molecules": len(smiles), "batch_size": batch_size, "threads": threads,
               "torch": torch.__version__, "prepare_seconds": prepare_s,
               "prepare_molecules_per_s": len(smiles) / prepare_s}
    reference = zoo.create_model(variant, attn_implementation="eager").eval()
    state = reference.state_dict()
    for implementation in tqdm(["eager", "sdpa"], desc="attention"):
        model = zoo.create_model(variant, attn_implementation=implementation).eval()
        model.load_state_dict(state)
        forward_s = _forward_seconds(model, batches, repeats)
        results[implementation] = {
            "forward_seconds": forward_s, "forward_molecules_per_s": len(smiles) / forward_s,
            "end_to_end_molecules_per_s": len(smiles) / (forward_s + prepare_s),
        }
    results["sdpa_over_eager_forward"] = results["eager"]["forward_seconds"] / results["sdpa"]["forward_seconds"]
    return results


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["eager", "sdpa"]
    fig, axis = plt.subplots(figsize=(5, 3.2))
    forward = [results[n]["forward_molecules_per_s"] for n in names]
    total = [results[n]["end_to_end_molecules_per_s"] for n in names]
    x = range(len(names))
    axis.bar([i - 0.2 for i in x], forward, width=0.4, label="forward only")
    axis.bar([i + 0.2 for i in x], total, width=0.4, label="tokenize+featurize+forward")
    axis.set_xticks(list(x), names)
    axis.set_ylabel("molecules / s")
    axis.set_title(f"DMP {results['variant']} (batch {results['batch_size']}, {results['threads']} thread(s))")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="dmp_small_molecule_cls")
    parser.add_argument("--molecules", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    args = parser.parse_args(argv)
    results = run(args.variant, args.molecules, args.batch_size, args.repeats, args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dmp.json").write_text(json.dumps(results, indent=2) + "\n")
    _plot(results, out / "dmp.png")
    print(f"prepare (tokenize+featurize+collate): {results['prepare_molecules_per_s']:.0f} molecules/s")
    for name in ("eager", "sdpa"):
        row = results[name]
        print(f"{name:<6} forward {row['forward_molecules_per_s']:.0f} molecules/s, "
              f"end to end {row['end_to_end_molecules_per_s']:.0f} molecules/s")
    print(f"SDPA / eager forward speed: {results['sdpa_over_eager_forward']:.2f}x  (saved to {out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
