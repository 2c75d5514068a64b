"""DP fine-tuning cost and utility per family: non-private vs flat-clipping DP vs per-layer DP (Opacus).

Speed: on each family's offline recipe, the same batches and the same starting weights go through one
optimizer step in three set-ups, alternating (non-private, flat DP, per-layer DP, non-private, ...) after
a warm-up, threads pinned; median / min / max step time and the step's peak memory (CUDA: peak allocated;
CPU: the process's peak resident set above its level before the step, /proc/self/status VmHWM after a
reset through /proc/self/clear_refs). Utility: the recipe's metric after DP fine-tuning at epsilon 1, 3 and
8 (`zoo.private.finetune_private`) against the non-private `zoo.finetune` run with the same data, epochs,
batch size and learning rate. JSON + PNG next to this file (or --out).

    python benchmarks/dp_finetune.py --part speed --repeats 12
    python benchmarks/dp_finetune.py --part utility   # per-family data / epochs / learning rate: UTILITY
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import os
import statistics
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

import zoo  # noqa: F401  (registers families and recipes)
from zoo.finetune import RecipeOptions, build_model, finetune, get_recipe
from zoo.private import PrivacyOptions, complete_grad_samples, finetune_private
from zoo.private_rules import dp_adapter

HERE = Path(__file__).resolve().parent
# family -> (variant, recipe, metric reported, DP settings the family needs)
FAMILIES = {
    "graphormer": ("graphormer_slim_classifier", "b3db_bbb", "roc_auc", {}),
    "dmp": ("dmp_small_molecule_cls", "dmp_b3db_bbb", "roc_auc", {"swap_batchnorm": True}),
    "nasbert": ("nasbert5_mlnet_text_classification", "nasbert_fortunes", "accuracy", {}),
    "musicbert": ("musicbert_tiny", "music21_dance", "f1_macro", {}),
}
MODES = ("non-private", "flat DP", "per-layer DP")


def _peak_reset() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so the baseline is what is really in use
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current resident set
    return _proc_status("VmRSS")


def _peak_read() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    return _proc_status("VmHWM")


def _proc_status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB -> MiB
    raise RuntimeError(f"/proc/self/status has no {key}")


class _Setup:
    """One way to take an optimizer step on a batch."""

    def __init__(self, mode: str, family: str, model: torch.nn.Module, lr: float, sparse_embeddings: bool = True):
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer, DPPerLayerOptimizer

        self.mode, self.model = mode, model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        self.adapter = dp_adapter(family)
        if mode == "non-private":
            self.forward, self.optimizer = model, optimizer
            return
        self.forward = GradSampleModule(model)
        self.adapter.attach(model)
        params = [p for p in model.parameters() if p.requires_grad]
        if mode == "flat DP":
            self.optimizer = DPOptimizer(optimizer, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=1)
        else:
            share = 1.0 / len(params) ** 0.5
            self.optimizer = DPPerLayerOptimizer(optimizer, noise_multiplier=1.0, max_grad_norm=[share] * len(params),
                                                 expected_batch_size=1)
        if sparse_embeddings:  # as zoo.private does: embedding tables keep per-example rows, not [B, V, D]
            self.adapter.use_sparse_embeddings(model, self.optimizer)

    def step(self, batch: dict) -> None:
        output = self.forward(**batch)
        output.loss.backward()
        if self.mode != "non-private":
            self.adapter.after_backward(self.model, batch)
            complete_grad_samples(self.model, int(batch["labels"].shape[0]))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def speed(family: str, batch_size: int, repeats: int, warmup: int) -> dict:
    variant, recipe, _, settings = FAMILIES[family]
    spec = get_recipe(recipe)
    data = spec.load(RecipeOptions(quick=True))
    overrides = {"gnn_norm": "group"} if settings.get("swap_batchnorm") else {}
    base = build_model(variant, data, seed=0, model_overrides=overrides)
    batches = [data.collator([data.train[(start + i) % len(data.train)] for i in range(batch_size)])
               for start in range(0, batch_size * 4, batch_size)]
    setups = {mode: _Setup(mode, family, copy.deepcopy(base), spec.learning_rate) for mode in MODES}
    for setup in setups.values():
        for index in range(warmup):
            setup.step(batches[index % len(batches)])
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    peaks: dict[str, list[float]] = {mode: [] for mode in MODES}
    for index in tqdm(range(repeats), desc=f"{family} steps", leave=False):
        for mode in MODES:  # alternating, so drifts in machine load hit every set-up alike
            batch = batches[index % len(batches)]
            gc.collect()
            before = _peak_reset()
            start = time.perf_counter()
            setups[mode].step(batch)
            times[mode].append(time.perf_counter() - start)
            peaks[mode].append(_peak_read() - before)
    params = sum(p.numel() for p in base.parameters())
    row = {"variant": variant, "recipe": recipe, "params": params, "batch_size": batch_size}
    for mode in MODES:
        row[mode] = {"median_s": statistics.median(times[mode]), "min_s": min(times[mode]), "max_s": max(times[mode]),
                     "peak_mib_median": statistics.median(peaks[mode]), "peak_mib_max": max(peaks[mode])}
    for mode in MODES[1:]:
        row[f"{mode} / non-private time"] = row[mode]["median_s"] / row["non-private"]["median_s"]
        row[f"{mode} / non-private memory"] = (row[mode]["peak_mib_median"]
                                               / max(row["non-private"]["peak_mib_median"], 1e-9))
    return row


# family -> utility settings (train examples, epochs, learning rate): the most data and epochs that fit a few
# minutes per run on one CPU thread, and a learning rate with which the non-private run beats chance
UTILITY = {
    "graphormer": {"train_samples": 600, "epochs": 3.0, "learning_rate": 5e-4},
    "dmp": {"train_samples": 600, "epochs": 3.0, "learning_rate": 5e-4},
    "nasbert": {"train_samples": 800, "epochs": 4.0, "learning_rate": 1e-3},
    "musicbert": {"train_samples": 400, "epochs": 4.0, "learning_rate": 1e-3},
}
BEATS_CHANCE_BY = 0.05  # DP runs are reported only where the non-private run beats chance by this much


def chance_level(metric: str, labels: list[int]) -> tuple[float, str]:
    """What a predictor that ignores its input scores on these eval labels, and how that was worked out."""
    if metric == "roc_auc":
        return 0.5, "ROC-AUC of any constant or random score"
    counts = torch.bincount(torch.tensor(labels)).double()
    prior = counts / counts.sum()
    if metric == "accuracy":
        return float(prior.max()), "accuracy of always predicting the majority class"
    if metric == "f1_macro":  # the better of always-majority and uniform guessing, in expectation
        classes = int((counts > 0).sum())
        majority = float(2 * prior.max() / (1 + prior.max()) / classes)
        uniform = float((2 * prior / classes / (prior + 1 / classes))[counts > 0].mean())
        return max(majority, uniform), "macro-F1 of always predicting the majority class or guessing uniformly"
    raise ValueError(f"no chance level for metric {metric!r}")


def utility(family: str, workdir: Path, epsilons: list[float], train_samples: int, eval_samples: int,
            epochs: float, batch_size: int, seed: int, learning_rate: float) -> dict:
    variant, recipe, metric, settings = FAMILIES[family]
    spec = get_recipe(recipe)
    options = RecipeOptions(max_train_samples=train_samples, max_eval_samples=eval_samples, seed=seed)
    overrides = {"gnn_norm": "group"} if settings.get("swap_batchnorm") else {}
    labels = [] if metric == "roc_auc" else [int(item["labels"]) for item in spec.load(options).eval]
    chance, chance_how = chance_level(metric, labels)
    row = {"variant": variant, "recipe": recipe, "metric": metric, "epochs": epochs, "batch_size": batch_size,
           "learning_rate": learning_rate, "chance": chance, "chance_is": chance_how, "runs": {}}
    plain = finetune(variant, recipe, workdir / f"{family}_plain", epochs=epochs, batch_size=batch_size, seed=seed,
                     learning_rate=learning_rate, options=options, overwrite=True, model_overrides=overrides)
    row["train_samples"], row["eval_samples"] = plain["train_samples"], plain["eval_samples"]
    row["runs"]["non-private"] = {metric: plain["eval"][f"eval_{metric}"]}
    if plain["eval"][f"eval_{metric}"] < chance + BEATS_CHANCE_BY:
        row["dp_skipped"] = (f"the non-private run ({plain['eval'][f'eval_{metric}']:.3f}) does not beat chance "
                             f"({chance:.3f}) by {BEATS_CHANCE_BY}: DP numbers would say nothing")
        return row
    for epsilon in epsilons:
        privacy = PrivacyOptions(epsilon=epsilon, delta=min(1e-5, 0.1 / plain["train_samples"]),
                                 clipping="per-layer", **settings)
        metrics = finetune_private(variant, recipe, workdir / f"{family}_eps{epsilon:g}", privacy, epochs=epochs,
                                   batch_size=batch_size, seed=seed, learning_rate=learning_rate, options=options,
                                   overwrite=True)
        spent = metrics["privacy"]
        row["runs"][f"epsilon {epsilon:g}"] = {
            metric: metrics["eval"][f"eval_{metric}"], "epsilon_spent": spent["epsilon"], "delta": spent["delta"],
            "noise_multiplier": spent["noise_multiplier"], "steps": spent["steps"],
        }
    return row


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speed_rows, utility_rows = results.get("speed", {}), results.get("utility", {})
    panels = (1 if speed_rows else 0) * 2 + (1 if utility_rows else 0)
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(5 * max(panels, 1), 3.6), squeeze=False)
    axes = list(axes[0])
    colors = {"non-private": "#4c72b0", "flat DP": "#dd8452", "per-layer DP": "#55a868"}
    if speed_rows:
        families = list(speed_rows)
        for panel, (key, label) in zip(axes[:2], (("median_s", "step time / non-private"),
                                                  ("peak_mib_median", "step peak memory / non-private"))):
            for offset, mode in enumerate(MODES):
                values = [speed_rows[f][mode][key] / max(speed_rows[f]["non-private"][key], 1e-9) for f in families]
                panel.bar([i + (offset - 1) * 0.27 for i in range(len(families))], values, width=0.27, label=mode,
                          color=colors[mode])
            panel.axhline(1.5, color="grey", linestyle="--", linewidth=1)
            panel.set_xticks(range(len(families)), families)
            panel.set_ylabel(label)
            panel.legend(fontsize=8)
        axes = axes[2:]
    if utility_rows:
        panel = axes[0]
        for family, row in utility_rows.items():
            eps = [float(k.split()[1]) for k in row["runs"] if k.startswith("epsilon")]
            values = [row["runs"][f"epsilon {e:g}"][row["metric"]] for e in eps]
            label = f"{family} ({row['metric']})" + (": no DP, non-private ~ chance" if row.get("dp_skipped") else "")
            line = panel.plot(eps, values, marker="o", label=label)[0]
            panel.axhline(row["runs"]["non-private"][row["metric"]], color=line.get_color(), linestyle=":")
            if "chance" in row:
                panel.axhline(row["chance"], color=line.get_color(), linestyle="--", linewidth=0.8)
        panel.set_xscale("log")
        panel.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        panel.set_xticks([1, 3, 8], ["1", "3", "8"])
        panel.set_xlabel("epsilon (dotted: non-private, dashed: chance)")
        panel.set_ylabel("eval metric")
        panel.legend(fontsize=8)
    fig.suptitle("DP fine-tuning (Opacus): cost and utility")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("speed", "utility", "all"), default="all")
    parser.add_argument("--family", action="append", choices=sorted(FAMILIES), help="repeatable; default all")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    parser.add_argument("--train-samples", type=int, help="default: the family's entry in UTILITY")
    parser.add_argument("--eval-samples", type=int, default=300)
    parser.add_argument("--epochs", type=float, help="default: the family's entry in UTILITY")
    parser.add_argument("--learning-rate", type=float, help="default: the family's entry in UTILITY")
    parser.add_argument("--utility-batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="/tmp/zoo_dp_benchmark")
    parser.add_argument("--out", default=str(HERE / "dp_finetune.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    families = args.family or list(FAMILIES)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    results.update({"torch": torch.__version__, "threads": args.threads,
                    "device": "cuda" if torch.cuda.is_available() else "cpu"})
    load_before = os.getloadavg()
    if args.part in ("speed", "all"):
        results.setdefault("speed", {})
        for family in tqdm(families, desc="speed"):
            results["speed"][family] = speed(family, args.batch_size, args.repeats, args.warmup)
        results["speed_load_average"] = {"before": load_before, "after": os.getloadavg()}
        results["speed_settings"] = {"batch_size": args.batch_size, "repeats": args.repeats, "warmup": args.warmup,
                                     "noise_multiplier": 1.0, "max_grad_norm": 1.0, "optimizer": "AdamW"}
    if args.part in ("utility", "all"):
        results.setdefault("utility", {})
        for family in tqdm(families, desc="utility"):
            family_load = os.getloadavg()
            chosen = {key: getattr(args, key) if getattr(args, key) is not None else value
                      for key, value in UTILITY[family].items()}
            results["utility"][family] = utility(family, Path(args.workdir), args.epsilons, chosen["train_samples"],
                                                 args.eval_samples, chosen["epochs"], args.utility_batch_size, args.seed,
                                                 chosen["learning_rate"])
            results["utility"][family]["settings"] = {
                "max_train_samples": chosen["train_samples"], "max_eval_samples": args.eval_samples, "seed": args.seed,
                "clipping": "per-layer", "max_grad_norm": 1.0, "accountant": "rdp", "threads": args.threads,
                "load_average": {"before": family_load, "after": os.getloadavg()}}
    results["load_average"] = {"before": load_before, "after": os.getloadavg()}
    out.write_text(json.dumps(results, indent=2))
    _plot(results, out.with_suffix(".png"))
    _print(results)
    return results


def _print(results: dict) -> None:
    for family, row in results.get("speed", {}).items():
        cells = ", ".join(f"{mode} {row[mode]['median_s'] * 1000:.0f} ms [{row[mode]['min_s'] * 1000:.0f}-"
                          f"{row[mode]['max_s'] * 1000:.0f}] peak +{row[mode]['peak_mib_median']:.0f} MiB"
                          for mode in MODES)
        print(f"{family}: {cells}; per-layer/non-private time {row['per-layer DP / non-private time']:.2f}x")
    for family, row in results.get("utility", {}).items():
        print(f"{family} {row['metric']} (chance {row.get('chance', float('nan')):.3f}): "
              + ", ".join(f"{name} {run[row['metric']]:.3f}" for name, run in row["runs"].items())
              + (f"; {row['dp_skipped']}" if row.get("dp_skipped") else ""))
    print(f"load average before {results['load_average']['before']}, after {results['load_average']['after']}")


if __name__ == "__main__":
    main()
