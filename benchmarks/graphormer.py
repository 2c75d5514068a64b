"""Graphormer speed: zoo against the transformers 4.40.2 port (the peer users had until transformers 5).

Measured in one run, same molecules and same weights for both:
1. featurize + collate, molecules/s (best of N runs on each side), from the same ogb-style graphs
   (SMILES -> graph with rdkit is timed separately: the port has no SMILES entry point);
2. featurizing 10k molecules end to end with zoo (SMILES -> batches), seconds;
3. forward time at batch 64: the port (fed original-convention inputs, its eager attention) vs zoo eager
   vs zoo SDPA, and the largest output difference between them.

The port is installed with `pip install --no-deps --target` into a cache directory (never a project
dependency; its Cython algos need Cython<3) and run in a subprocess, since the two transformers majors
cannot share one process. Results: printed, and saved to benchmarks/graphormer.json + .png.

    python benchmarks/graphormer.py --molecules 10000 --peer-molecules 2000 --arch base
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zoo.models.graphormer import (  # noqa: E402
    GraphormerConfig,
    GraphormerFeaturizer,
    GraphormerForGraphClassification,
    smiles_to_graph,
)

PEER_VERSION = "4.40.2"
PEER_PACKAGES = [f"transformers=={PEER_VERSION}", "tokenizers==0.19.1", "huggingface_hub==0.23.5", "Cython<3"]
ARCHS = {
    "slim": {"num_hidden_layers": 12, "hidden_size": 80, "intermediate_size": 80, "num_attention_heads": 8},
    "small": {"num_hidden_layers": 6, "hidden_size": 256, "intermediate_size": 256, "num_attention_heads": 8},
    "base": {"num_hidden_layers": 12, "hidden_size": 768, "intermediate_size": 768, "num_attention_heads": 32},
}
HF4X_NAMES = (  # zoo key prefix -> transformers-4.x key prefix (inverse of the converter's table)
    ("graphormer.graph_encoder.", "encoder.graph_encoder."),
    ("head.lm_head_transform_weight.", "encoder.lm_head_transform_weight."),
    ("head.layer_norm.", "encoder.layer_norm."),
    ("head.embed_out.weight", "classifier.classifier.weight"),
    ("head.lm_output_learned_bias", "classifier.lm_output_learned_bias"),
)

PEER_SCRIPT = r"""
import json, sys, time, statistics
import numpy as np, torch
from safetensors.torch import load_file, save_file
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
from transformers.models.graphormer.collating_graphormer import GraphormerDataCollator, preprocess_item
from transformers import GraphormerConfig, GraphormerForGraphClassification
graphs = json.load(open(args["graphs"]))
collator = GraphormerDataCollator(spatial_pos_max=1024)
def run():
    items = []
    for g in graphs:
        item = {"edge_index": g["edge_index"], "edge_attr": g["edge_feat"], "node_feat": g["node_feat"],
                "num_nodes": len(g["node_feat"]), "labels": [0]}
        items.append(preprocess_item(item))
    for start in range(0, len(items), args["batch"]):
        collator(items[start:start + args["batch"]])
run_small = graphs
graphs = run_small[:50]; run()  # warm-up (pyximport compiles the Cython algos on first import)
graphs = run_small
featurize_runs = []
for _ in range(args["featurize_repeats"]):
    start = time.perf_counter(); run(); featurize_runs.append(time.perf_counter() - start)
featurize_s = min(featurize_runs)
model = GraphormerForGraphClassification(GraphormerConfig(**args["config"])).eval()
model.load_state_dict(load_file(args["weights"]), strict=True)
batch = load_file(args["batch_file"])
times = []
with torch.no_grad():
    for i in range(args["warmup"] + args["repeats"]):
        start = time.perf_counter(); logits = model(**batch).logits; elapsed = time.perf_counter() - start
        if i >= args["warmup"]:
            times.append(elapsed)
save_file({"logits": logits.contiguous()}, args["out"])
print(json.dumps({"featurize_s": featurize_s, "forward_s": times}))
"""


def ensure_peer(cache: Path) -> Path:
    target = cache / f"peer-transformers-{PEER_VERSION}"
    if not (target / "transformers" / "models" / "graphormer").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), *PEER_PACKAGES],
                       check=True)
    return target


def b3db_smiles(count: int) -> list[str]:
    from zoo.recipes.graphormer import b3db_rows

    smiles = [row["SMILES"] for row in b3db_rows("B3DB_classification.tsv")]
    return [smiles[i % len(smiles)] for i in range(count)]


def zoo_featurize(featurizer: GraphormerFeaturizer, molecules: list, batch: int) -> tuple[float, int]:
    start = time.perf_counter()
    items, skipped = featurizer.featurize(molecules, on_error="skip")
    for first in range(0, len(items), batch):
        featurizer.collate(items[first:first + batch])
    return time.perf_counter() - start, len(skipped)


def time_forward(model, batch: dict, warmup: int, repeats: int) -> tuple[list[float], torch.Tensor]:
    times = []
    with torch.no_grad():
        for index in range(warmup + repeats):
            start = time.perf_counter()
            logits = model(**batch).logits
            if index >= warmup:
                times.append(time.perf_counter() - start)
    return times, logits


def to_hf4x(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, tensor in state_dict.items():
        for ours, theirs in HF4X_NAMES:
            if key.startswith(ours):
                renamed[theirs + key[len(ours):]] = tensor.contiguous()
                break
        else:
            raise KeyError(f"no transformers-4.x name for {key}")
    return renamed


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    rates = results["featurize"]
    left.bar(["transformers 4.40.2", "zoo"], [rates["peer_molecules_per_s"], rates["zoo_molecules_per_s"]],
             color=["grey", "tab:blue"])
    left.set_ylabel("molecules / s")
    left.set_title(f"featurize + collate ({rates['ratio']:.1f}x)")
    forward = results["forward"]
    names = ["transformers 4.40.2", "zoo eager", "zoo SDPA"]
    right.bar(names, [forward["peer_ms"], forward["zoo_eager_ms"], forward["zoo_sdpa_ms"]],
              color=["grey", "tab:blue", "tab:green"])
    right.set_ylabel("ms per batch of 64")
    right.set_title(f"forward, {results['arch']} ({forward['ratio_sdpa_vs_peer']:.2f}x)")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--molecules", type=int, default=10_000, help="zoo end-to-end featurization size")
    parser.add_argument("--peer-molecules", type=int, default=2_000, help="molecules for the zoo-vs-port rate")
    parser.add_argument("--arch", choices=sorted(ARCHS), default="base")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--featurize-repeats", type=int, default=2, help="best of N featurization runs, both sides")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "zoo" / "bench")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "graphormer.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    peer = ensure_peer(args.cache)

    smiles = b3db_smiles(max(args.molecules, args.peer_molecules))
    start = time.perf_counter()
    graphs, bad = [], 0
    for text in smiles[:args.peer_molecules]:
        try:
            graph = smiles_to_graph(text)
        except ValueError:
            bad += 1
            continue
        if 0 < len(graph["node_feat"]) <= 128:
            graphs.append(graph)
    rdkit_rate = args.peer_molecules / (time.perf_counter() - start)
    featurizer = GraphormerFeaturizer(multi_hop_max_dist=5, spatial_pos_max=1024, max_nodes=128)
    zoo_featurize(featurizer, graphs[:50], args.batch)  # warm-up
    zoo_s = min(zoo_featurize(featurizer, graphs, args.batch)[0] for _ in range(args.featurize_repeats))
    end_to_end_s, skipped = zoo_featurize(featurizer, smiles[:args.molecules], args.batch)

    config = GraphormerConfig(**ARCHS[args.arch], num_classes=1, attention_dropout=0.0, activation_dropout=0.0)
    torch.manual_seed(0)
    model = GraphormerForGraphClassification(config).eval()
    for param in model.parameters():  # trained-like scale: random weights everywhere, not zeros / ones
        torch.nn.init.normal_(param, std=0.02)
    forward_batch = dict(featurizer(smiles[:args.batch]))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from safetensors.torch import load_file, save_file

        (tmp / "graphs.json").write_text(json.dumps([{k: v.tolist() for k, v in g.items()} for g in graphs]))
        save_file(to_hf4x(model.state_dict()), tmp / "weights.safetensors")
        save_file({k: v.contiguous() for k, v in forward_batch.items()}, tmp / "batch.safetensors")
        peer_config = {**ARCHS[args.arch], "num_classes": 1, "attention_dropout": 0.0, "activation_dropout": 0.0,
                       "dropout": 0.0, "encoder_normalize_before": True, "pre_layernorm": False}
        peer_config["embedding_dim"] = peer_config.pop("hidden_size")
        peer_config["ffn_embedding_dim"] = peer_config.pop("intermediate_size")
        payload = {"graphs": str(tmp / "graphs.json"), "weights": str(tmp / "weights.safetensors"),
                   "batch_file": str(tmp / "batch.safetensors"), "out": str(tmp / "peer.safetensors"),
                   "config": peer_config, "batch": args.batch, "warmup": args.warmup, "repeats": args.repeats,
                   "threads": args.threads, "featurize_repeats": args.featurize_repeats}
        env = {**os.environ, "PYTHONPATH": str(peer), "TRANSFORMERS_VERBOSITY": "error",
               "PYXBLD_DIR": str(args.cache / "pyxbld")}
        result = subprocess.run([sys.executable, "-c", PEER_SCRIPT, json.dumps(payload)], env=env, cwd=tmp,
                                capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"the transformers {PEER_VERSION} run failed:\n{result.stderr[-4000:]}")
        peer_result = json.loads(result.stdout.strip().splitlines()[-1])
        peer_logits = load_file(tmp / "peer.safetensors")["logits"]

    model.config._attn_implementation = "eager"
    eager_s, eager_logits = time_forward(model, forward_batch, args.warmup, args.repeats)
    model.config._attn_implementation = "sdpa"
    sdpa_s, sdpa_logits = time_forward(model, forward_batch, args.warmup, args.repeats)
    peer_ms = 1000 * statistics.median(peer_result["forward_s"])
    eager_ms, sdpa_ms = 1000 * statistics.median(eager_s), 1000 * statistics.median(sdpa_s)
    results = {
        "arch": args.arch, "threads": args.threads, "torch": torch.__version__, "peer": f"transformers {PEER_VERSION}",
        "dataset": "B3DB classification SMILES (qc-b3db)",
        "smiles_to_graph_molecules_per_s": rdkit_rate,
        "featurize": {
            "molecules": len(graphs), "peer_s": peer_result["featurize_s"], "zoo_s": zoo_s,
            "peer_molecules_per_s": len(graphs) / peer_result["featurize_s"],
            "zoo_molecules_per_s": len(graphs) / zoo_s, "ratio": peer_result["featurize_s"] / zoo_s,
        },
        "end_to_end": {"molecules": args.molecules, "seconds": end_to_end_s, "skipped": skipped,
                       "molecules_per_s": args.molecules / end_to_end_s},
        "forward": {
            "batch": args.batch, "nodes": int(forward_batch["input_nodes"].shape[1]), "peer_ms": peer_ms,
            "zoo_eager_ms": eager_ms, "zoo_sdpa_ms": sdpa_ms, "ratio_eager_vs_peer": peer_ms / eager_ms,
            "ratio_sdpa_vs_peer": peer_ms / sdpa_ms, "ratio_sdpa_vs_eager": eager_ms / sdpa_ms,
            "max_abs_diff_peer_vs_zoo_eager": float((peer_logits - eager_logits).abs().max()),
            "max_abs_diff_sdpa_vs_eager": float((sdpa_logits - eager_logits).abs().max()),
        },
    }
    feat, fwd, e2e = results["featurize"], results["forward"], results["end_to_end"]
    print(f"SMILES -> ogb graph (rdkit, zoo): {rdkit_rate:.0f} molecules/s")
    print(f"featurize + collate, {feat['molecules']} molecules: transformers {PEER_VERSION} "
          f"{feat['peer_molecules_per_s']:.0f}/s, zoo {feat['zoo_molecules_per_s']:.0f}/s -> {feat['ratio']:.1f}x")
    print(f"zoo end to end (SMILES -> batches), {e2e['molecules']} molecules: {e2e['seconds']:.1f} s "
          f"({e2e['skipped']} skipped and reported)")
    print(f"forward {args.arch}, batch {args.batch} ({fwd['nodes']} atoms max), {args.threads} thread(s): "
          f"port {peer_ms:.1f} ms, zoo eager {eager_ms:.1f} ms ({fwd['ratio_eager_vs_peer']:.2f}x), "
          f"zoo SDPA {sdpa_ms:.1f} ms ({fwd['ratio_sdpa_vs_peer']:.2f}x; SDPA vs eager "
          f"{fwd['ratio_sdpa_vs_eager']:.2f}x)")
    print(f"same weights, max |logit difference|: port vs zoo {fwd['max_abs_diff_peer_vs_zoo_eager']:.2e}, "
          f"SDPA vs eager {fwd['max_abs_diff_sdpa_vs_eager']:.2e}")
    from zoo.fileio import atomic_write_json

    atomic_write_json(args.out, results)
    plot(results, args.out.with_suffix(".png"))
    print(f"saved {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
