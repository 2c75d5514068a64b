"""Graphormer speed against the original microsoft pipeline and the transformers 4.40.2 port, on B3DB.
Protocol: benchmarks/_protocol.py (sides alternate round by round after a warm-up, threads pinned alike in
both processes, outputs checked before timing, median with min/max, load average).

    python benchmarks/graphormer.py --graphormer /tmp/Graphormer/graphormer/data --repeats 3
    python benchmarks/graphormer.py --quick          # 500 molecules, slim model, 2 rounds

1. Featurize + collate (graphs -> batches): the same ogb-style graphs, batches of 64 in file order, 5 hops,
   spatial_pos_max 1024, at most 128 atoms. Sides: zoo; the original microsoft pipeline
   (`graphormer/data/wrapper.py` preprocess_item + `collator.py` collator, its Cython algos); the port
   (`preprocess_item` + `GraphormerDataCollator`, its edge paths cut to 5 hops before collating). The
   peers get their inputs as numpy / torch objects built before timing (no JSON conversion inside).
   Batches are compared field by field before timing (differences are stated, not hidden). In the timed
   rounds every side drops each batch once it is made, as a training or inference loop does: kept alive,
   1,000 molecules' batches hold about 2 GB (input_edges alone is [64, 127, 127, 5, 3] int64 when a batch
   holds a 127-atom molecule), and the figure measured the page faults both sides pay for fresh memory.
2. End to end, SMILES -> predictions for every B3DB molecule with the same weights: zoo
   (`zoo.inference.predict_graphormer`: featurize, size buckets, SDPA) against the port (rdkit SMILES ->
   graph, its preprocessing and collator, batches of 64 in file order made one at a time, its model). The
   port's edge paths are cut to 5 hops before collating here too: uncut, a batch holding a salt (two
   fragments: 510 "hops") asks its collator for tens of GB and the run is killed. Zoo's bucketed outputs
   are checked against zoo's per-molecule runs (1e-5) and against the port's outputs.
3. Forward at batch 64 (the first 64 molecules): the port vs zoo eager vs zoo SDPA.

The peers run in one long-lived subprocess (transformers 4.x and 5.x cannot share a process) that
times its own work and answers commands, so both sides still alternate. The port is installed with
`pip install --no-deps --target` into a cache directory (never a project dependency); the original
pipeline is imported from `--graphormer` (a microsoft/Graphormer checkout's graphormer/data) at run time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import _protocol as protocol  # noqa: E402

from zoo.inference import predict_graphormer  # noqa: E402
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
HOPS, SPATIAL_POS_MAX, MAX_NODES = 5, 1024, 128

# The peer process: transformers 4.40.2 on its path, the original pipeline copied into a temporary package.
PEER_SERVER = r"""
import json, os, shutil, sys, tempfile, time, types
import numpy as np, torch
from safetensors.torch import load_file, save_file
setup = json.loads(sys.stdin.readline())
torch.set_num_threads(setup["threads"])
from transformers.models.graphormer.collating_graphormer import GraphormerDataCollator, preprocess_item
from transformers import GraphormerConfig, GraphormerForGraphClassification
graphs = [{k: np.asarray(v, dtype=np.int64) for k, v in g.items()} for g in json.load(open(setup["graphs"]))]
for g in graphs:
    g["edge_index"] = g["edge_index"].reshape(2, -1); g["edge_feat"] = g["edge_feat"].reshape(len(g["edge_index"][0]), 3)
original = None
if setup.get("graphormer"):
    for name in ("ogb", "ogb.graphproppred", "ogb.lsc", "ogb.lsc.pcqm4mv2_pyg"):  # dataset classes only
        stub = sys.modules.setdefault(name, types.ModuleType(name))
        stub.PygGraphPropPredDataset = stub.PygPCQM4Mv2Dataset = type("Dataset", (), {})
    package = os.path.join(tempfile.mkdtemp(), "msgraphormer_data")
    os.makedirs(package)
    open(os.path.join(package, "__init__.py"), "w").close()
    for name in ("wrapper.py", "collator.py", "algos.pyx"):
        shutil.copy(os.path.join(setup["graphormer"], name), package)
    sys.path.insert(0, os.path.dirname(package))
    from msgraphormer_data.wrapper import preprocess_item as original_preprocess
    from msgraphormer_data.collator import collator as original_collator
    from torch_geometric.data import Data
    tensors = [(torch.from_numpy(g["node_feat"]), torch.from_numpy(g["edge_index"]), torch.from_numpy(g["edge_feat"]))
               for g in graphs]
    def original(batch, keep=True):
        out = []
        items = []
        for i, (x, ei, ea) in enumerate(tensors):
            item = original_preprocess(Data(x=x, edge_index=ei, edge_attr=ea, y=torch.zeros(1)))
            item.idx = i
            items.append(item)
        for s in range(0, len(items), batch):
            made = original_collator(items[s:s + batch], max_node=setup["max_nodes"],
                                     multi_hop_max_dist=setup["hops"], spatial_pos_max=setup["spatial_pos_max"])
            if keep:
                out.append(made)
        return out
collator = GraphormerDataCollator(spatial_pos_max=setup["spatial_pos_max"])
def port_batches(batch, hops=setup["hops"]):
    items = []
    for g in graphs:
        item = preprocess_item({"edge_index": g["edge_index"], "edge_attr": g["edge_feat"], "node_feat": g["node_feat"],
                                "num_nodes": len(g["node_feat"]), "labels": [0]})
        if hops is not None:
            item["input_edges"] = item["input_edges"][:, :, :hops, :]
        items.append(item)
    for s in range(0, len(items), batch):
        yield collator(items[s:s + batch])
def port(batch, keep=True):
    if not keep:  # consume batch by batch, as a training or inference loop does
        for _ in port_batches(batch):
            pass
        return []
    return list(port_batches(batch))
model = None
if setup.get("weights"):
    model = GraphormerForGraphClassification(GraphormerConfig(**setup["config"])).eval()
    model.load_state_dict(load_file(setup["weights"]), strict=True)
port(8); original and original(8)  # warm-up: pyximport compiles the Cython algos on first use
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    start = time.perf_counter()
    if cmd["cmd"] == "featurize":
        batches = (original if cmd["pipeline"] == "original" else port)(cmd["batch"], keep=bool(cmd.get("save")))
        seconds = time.perf_counter() - start
        if cmd.get("save"):
            save_file({f"{i}.{k}": v.clone().contiguous() for i, b in enumerate(batches[:cmd["save_batches"]])
                       for k, v in b.items() if isinstance(v, torch.Tensor)}, cmd["save"])
    elif cmd["cmd"] == "e2e":  # graphs -> predictions (the parent times SMILES -> graph the same way for both)
        with torch.no_grad():
            logits = [model(**{k: v for k, v in b.items() if k != "labels"}).logits for b in port_batches(cmd["batch"])]
        seconds = time.perf_counter() - start
        if cmd.get("save"):
            save_file({"logits": torch.cat(logits).contiguous()}, cmd["save"])
    elif cmd["cmd"] == "forward":
        batch = load_file(cmd["batch_file"])
        start = time.perf_counter()
        with torch.no_grad():
            logits = model(**batch).logits
        seconds = time.perf_counter() - start
        if cmd.get("save"):
            save_file({"logits": logits.contiguous()}, cmd["save"])
    print(json.dumps({"seconds": seconds}), flush=True)
"""


class Peer:
    """The transformers-4.x / original-pipeline process, answering one command at a time."""

    def __init__(self, path: Path, setup: dict, threads: int, cache: Path):
        env = protocol.thread_env(threads)
        env.update({"PYTHONPATH": str(path), "TRANSFORMERS_VERBOSITY": "error", "PYXBLD_DIR": str(cache / "pyxbld")})
        self.process = subprocess.Popen([sys.executable, "-c", PEER_SERVER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env, text=True)
        self._send({**setup, "threads": threads})
        if not self._receive().get("ready"):
            raise RuntimeError("the peer process did not start")

    def _send(self, message: dict) -> None:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def _receive(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the peer process ended (exit {self.process.wait()}); see its stderr above")
        return json.loads(line)

    def __call__(self, **command) -> protocol.SelfTimed:
        self._send(command)
        return protocol.SelfTimed(self._receive()["seconds"])

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def ensure_peer(cache: Path) -> Path:
    target = cache / f"peer-transformers-{PEER_VERSION}"
    if not (target / "transformers" / "models" / "graphormer").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), *PEER_PACKAGES],
                       check=True)
    return target


def b3db_smiles() -> list[str]:
    from zoo.recipes.graphormer import b3db_rows

    return [row["SMILES"] for row in b3db_rows("B3DB_classification.tsv")]


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


# The port's known convention differences, checked exactly: its atom ids are shifted once more (+1 on real
# atoms), and padded key columns of its attention bias hold 0 where the original and zoo hold -inf.
PORT_CONVENTIONS = {
    "input_nodes": ("zoo + 1 on real atoms", lambda zoo: zoo + (zoo > 0).long()),
    "attn_bias": ("0 instead of -inf on padded keys",
                  lambda zoo: torch.where(torch.isinf(zoo) & _padded_keys(zoo), torch.zeros_like(zoo), zoo)),
}


def _padded_keys(attn_bias: torch.Tensor) -> torch.Tensor:
    """True at [b, query, key] where key is a padding column (all -inf in the graph token's row)."""
    return torch.isinf(attn_bias[:, :1, :]).expand_as(attn_bias)


def compare_batches(zoo_batches: list[dict], saved: dict, names: dict[str, str], count: int,
                    conventions: dict | None = None) -> dict:
    """Field by field: zoo name -> peer name, over the first `count` batches: "equal", "equal after <stated
    convention difference>", or the batches that differ."""
    report = {}
    for ours, theirs in names.items():
        differing = [i for i in range(count) if not torch.equal(zoo_batches[i][ours], saved[f"{i}.{theirs}"])]
        if differing and conventions and ours in conventions:
            note, convert = conventions[ours]
            still = [i for i in range(count) if not torch.equal(convert(zoo_batches[i][ours]), saved[f"{i}.{theirs}"])]
            report[ours] = f"equal after the stated difference: {note}" if not still else f"differs in batches {still[:5]}"
        else:
            report[ours] = "equal" if not differing else f"differs in batches {differing[:5]}"
    return report


def smiles_graphs(smiles: list[str]) -> list[dict]:
    graphs = []
    for text in smiles:
        try:
            graph = smiles_to_graph(text)
        except ValueError:
            continue
        if 0 < len(graph["node_feat"]) <= MAX_NODES:
            graphs.append(graph)
    return graphs


def comparable(smiles: list[str]) -> list[str]:
    """The SMILES every side can process: rdkit parses them, 2..MAX_NODES atoms (the port's collator fails on a
    batch whose first molecule has one atom, and nobody takes more than MAX_NODES)."""
    kept = []
    for text in smiles:
        try:
            atoms = len(smiles_to_graph(text)["node_feat"])
        except ValueError:
            continue
        if 2 <= atoms <= MAX_NODES:
            kept.append(text)
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graphormer", type=Path, help="microsoft/Graphormer checkout's graphormer/data folder")
    parser.add_argument("--molecules", type=int, default=None, help="B3DB molecules (default: all 7,807)")
    parser.add_argument("--featurize-molecules", type=int, default=2000)
    parser.add_argument("--arch", choices=sorted(ARCHS), default="small", help="model of the end-to-end run")
    parser.add_argument("--forward-arch", choices=sorted(ARCHS), default="base")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--e2e-repeats", type=int, default=1, help="timed end-to-end rounds (after the checked run)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="500 molecules, the slim model, 2 rounds")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "zoo" / "bench")
    parser.add_argument("--out", type=Path, default=HERE / "graphormer")
    args = parser.parse_args(argv)
    if args.quick:
        args.molecules, args.featurize_molecules, args.arch, args.forward_arch, args.repeats = 500, 300, "slim", "slim", 2
        args.e2e_repeats = 2
    threads = protocol.pin_threads(args.threads)
    env = protocol.environment(threads, peer=f"transformers {PEER_VERSION}", arch=args.arch,
                               forward_arch=args.forward_arch, dataset="B3DB classification SMILES (qc-b3db)")
    peer_path = ensure_peer(args.cache)
    b3db = b3db_smiles()
    all_smiles = comparable(b3db)
    env["molecules"] = {"b3db": len(b3db), "comparable": len(all_smiles),
                        "left_out": "unparsable, one atom (the port's collator fails on those), over 128 atoms"}
    smiles = all_smiles[:args.molecules] if args.molecules else all_smiles
    feat_graphs = smiles_graphs(all_smiles[:args.featurize_molecules])
    e2e_graphs = smiles_graphs(smiles)
    featurizer = GraphormerFeaturizer(multi_hop_max_dist=HOPS, spatial_pos_max=SPATIAL_POS_MAX, max_nodes=MAX_NODES)

    def model_for(arch: str) -> GraphormerForGraphClassification:
        config = GraphormerConfig(**ARCHS[arch], num_classes=1, attention_dropout=0.0, activation_dropout=0.0)
        torch.manual_seed(0)
        model = GraphormerForGraphClassification(config).eval()
        for param in model.parameters():  # trained-like scale: random weights everywhere, not zeros / ones
            torch.nn.init.normal_(param, std=0.02)
        return model

    def peer_config(arch: str) -> dict:
        config = {**ARCHS[arch], "num_classes": 1, "attention_dropout": 0.0, "activation_dropout": 0.0,
                  "dropout": 0.0, "encoder_normalize_before": True, "pre_layernorm": False}
        config["embedding_dim"] = config.pop("hidden_size")
        config["ffn_embedding_dim"] = config.pop("intermediate_size")
        return config

    results: dict = {"env": env}
    from safetensors.torch import load_file, save_file

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def dump_graphs(graphs: list[dict], path: Path) -> None:
            path.write_text(json.dumps([{k: v.tolist() for k, v in g.items()} for g in graphs]))

        # -- 1. featurize + collate ------------------------------------------------------------------------
        dump_graphs(feat_graphs, tmp / "feat_graphs.json")
        peer = Peer(peer_path, {"graphs": str(tmp / "feat_graphs.json"), "hops": HOPS, "max_nodes": MAX_NODES,
                                "spatial_pos_max": SPATIAL_POS_MAX,
                                "graphormer": str(args.graphormer) if args.graphormer else None}, threads, args.cache)

        def zoo_featurize(keep: bool = False):
            items, _ = featurizer.featurize(feat_graphs)
            if not keep:  # consume batch by batch, as a training or inference loop does (the peers alike)
                for s in range(0, len(items), args.batch):
                    featurizer.collate(items[s:s + args.batch])
                return None
            return [featurizer.collate(items[s:s + args.batch]) for s in range(0, len(items), args.batch)]

        zoo_batches = zoo_featurize(keep=True)
        count = len(zoo_batches)
        peer(cmd="featurize", pipeline="port", batch=args.batch, save=str(tmp / "port.safetensors"), save_batches=count)
        port_saved = load_file(tmp / "port.safetensors")
        checks = {"port": compare_batches(zoo_batches, port_saved, {k: k for k in (
            "input_nodes", "input_edges", "attn_bias", "in_degree", "spatial_pos", "attn_edge_type")}, count,
            PORT_CONVENTIONS)}
        sides = {"zoo": zoo_featurize,
                 "port (5 hops)": lambda: peer(cmd="featurize", pipeline="port", batch=args.batch)}
        if args.graphormer:
            peer(cmd="featurize", pipeline="original", batch=args.batch, save=str(tmp / "orig.safetensors"),
                 save_batches=count)
            checks["original"] = compare_batches(zoo_batches, load_file(tmp / "orig.safetensors"), {
                "input_nodes": "x", "input_edges": "edge_input", "attn_bias": "attn_bias", "in_degree": "in_degree",
                "spatial_pos": "spatial_pos", "attn_edge_type": "attn_edge_type"}, count)
            sides["microsoft original"] = lambda: peer(cmd="featurize", pipeline="original", batch=args.batch)
        # The peer times its own work (no IPC in its figure); zoo is timed around the call.
        times = protocol.alternate(sides, args.repeats, progress="featurize rounds")
        peer.close()
        results["featurize"] = {
            "molecules": len(feat_graphs), "batch": args.batch, "hops": HOPS, "checks": checks,
            "sides": protocol.summarize(times, work=len(feat_graphs), unit="molecules"),
            "port_over_zoo": protocol.ratio(times, "port (5 hops)", "zoo"),
        }
        if "microsoft original" in times:
            results["featurize"]["original_over_zoo"] = protocol.ratio(times, "microsoft original", "zoo")

        # -- 2. end to end and 3. forward ----------------------------------------------------------------------
        model = model_for(args.arch)
        save_file(to_hf4x(model.state_dict()), tmp / "weights.safetensors")
        dump_graphs(e2e_graphs, tmp / "e2e_graphs.json")
        peer = Peer(peer_path, {"graphs": str(tmp / "e2e_graphs.json"), "hops": HOPS, "max_nodes": MAX_NODES,
                                "spatial_pos_max": SPATIAL_POS_MAX, "weights": str(tmp / "weights.safetensors"),
                                "config": peer_config(args.arch)}, threads, args.cache)
        model.config._attn_implementation = "sdpa"

        def zoo_e2e():
            return predict_graphormer(model, featurizer, smiles, batch_size=args.batch, on_error="skip")

        zoo_result = zoo_e2e()
        zoo_logits = zoo_result.outputs["logits"][zoo_result.ok]
        peer(cmd="e2e", batch=args.batch, save=str(tmp / "e2e.safetensors"))
        port_logits = load_file(tmp / "e2e.safetensors")["logits"].numpy()
        kept = [len(g["node_feat"]) for g in e2e_graphs]
        sample = np.linspace(0, len(zoo_logits) - 1, num=min(200, len(zoo_logits))).astype(int)
        ok_positions = np.flatnonzero(zoo_result.ok)
        with torch.no_grad():
            single = np.stack([model(**featurizer(smiles[ok_positions[i]])).logits[0].numpy() for i in sample])
        e2e_checks = {
            "zoo_bucketed_vs_per_molecule": protocol.compare_outputs(zoo_logits[sample], single, atol=1e-5,
                                                                     what="bucketed vs per-molecule"),
            "zoo_vs_port": protocol.compare_outputs(zoo_logits, port_logits, atol=1e-4, what="zoo vs port logits",
                                                    require=False),
            "molecules_predicted": {"zoo": int(zoo_result.ok.sum()), "port": len(kept)},
        }

        def zoo_file_order():  # zoo before size buckets: batches of 64 in file order (SDPA, the default then)
            items, _ = featurizer.featurize(smiles, on_error="skip")
            with torch.inference_mode():
                return torch.cat([model(**featurizer.collate(items[s:s + args.batch])).logits
                                  for s in range(0, len(items), args.batch)]).numpy()

        e2e_checks["zoo_bucketed_vs_file_order"] = protocol.compare_outputs(
            zoo_logits, zoo_file_order(), atol=1e-5, what="bucketed vs file-order batches")

        def port_e2e():
            start = time.perf_counter()
            smiles_graphs(smiles)  # SMILES -> graph, as zoo does inside predict
            return protocol.SelfTimed(time.perf_counter() - start + peer(cmd="e2e", batch=args.batch))

        sides = {"zoo (buckets, SDPA)": zoo_e2e, "zoo before (file order)": zoo_file_order, "port": port_e2e}
        times = protocol.alternate(sides, args.e2e_repeats, warmup=0, progress="end-to-end rounds")  # warmed by checks
        results["end_to_end"] = {
            "molecules": len(smiles), "arch": args.arch, "batch": args.batch, "checks": e2e_checks,
            "atoms_median": float(np.median(kept)), "atoms_max": int(max(kept)), "buckets": zoo_result.batches,
            "sides": protocol.summarize(times, work=len(smiles), unit="molecules"),
            "port_over_zoo": protocol.ratio(times, "port", "zoo (buckets, SDPA)"),
            "before_over_now": protocol.ratio(times, "zoo before (file order)", "zoo (buckets, SDPA)"),
        }
        peer.close()

        forward_model = model_for(args.forward_arch)
        save_file(to_hf4x(forward_model.state_dict()), tmp / "fweights.safetensors")
        peer = Peer(peer_path, {"graphs": str(tmp / "feat_graphs.json"), "hops": HOPS, "max_nodes": MAX_NODES,
                                "spatial_pos_max": SPATIAL_POS_MAX, "weights": str(tmp / "fweights.safetensors"),
                                "config": peer_config(args.forward_arch)}, threads, args.cache)
        batch = dict(featurizer(all_smiles[:args.batch]))
        save_file({k: v.contiguous() for k, v in batch.items()}, tmp / "batch.safetensors")
        peer(cmd="forward", batch_file=str(tmp / "batch.safetensors"), save=str(tmp / "fwd.safetensors"))
        outputs = {"port": load_file(tmp / "fwd.safetensors")["logits"]}

        def zoo_forward(implementation):
            def run():
                forward_model.config._attn_implementation = implementation
                with torch.no_grad():
                    return forward_model(**batch).logits
            return run

        outputs["zoo eager"], outputs["zoo SDPA"] = zoo_forward("eager")(), zoo_forward("sdpa")()
        sides = {"port": lambda: peer(cmd="forward", batch_file=str(tmp / "batch.safetensors")),
                 "zoo eager": zoo_forward("eager"), "zoo SDPA": zoo_forward("sdpa")}
        times = protocol.alternate(sides, args.repeats, warmup=0)  # warmed by the output checks
        peer.close()
        results["forward"] = {
            "arch": args.forward_arch, "batch": args.batch, "atoms_max": int(batch["input_nodes"].shape[1]),
            "checks": {name: protocol.compare_outputs(outputs[name], outputs["port"], atol=1e-4, require=False,
                                                      what=f"{name} vs port") for name in ("zoo eager", "zoo SDPA")},
            "sides": protocol.summarize(times),
            "port_over_zoo_eager": protocol.ratio(times, "port", "zoo eager"),
            "port_over_zoo_sdpa": protocol.ratio(times, "port", "zoo SDPA"),
        }
    protocol.finish(env)
    protocol.save(results, args.out, panels=[
        {"title": f"graphs -> batches ({results['featurize']['molecules']} molecules)", "ylabel": "molecules / s",
         "bars": results["featurize"]["sides"], "key": "median_molecules_per_s", "rotation": 15},
        {"title": f"SMILES -> predictions, {results['end_to_end']['molecules']} B3DB, {args.arch}",
         "ylabel": "molecules / s", "bars": results["end_to_end"]["sides"], "key": "median_molecules_per_s"},
        {"title": f"forward, {args.forward_arch}, batch {args.batch}", "ylabel": "seconds",
         "bars": results["forward"]["sides"]},
    ])
    print(f"load average {env['load_average_start']} -> {env['load_average_end']}, {threads} thread(s)")
    feat = results["featurize"]
    for name, row in feat["sides"].items():
        print(f"featurize {name:>20}: {row['median_molecules_per_s']:8.0f} molecules/s "
              f"({row['min_molecules_per_s']:.0f}..{row['max_molecules_per_s']:.0f})")
    print(f"  batch checks: {feat['checks']}")
    for key in ("port_over_zoo", "original_over_zoo"):
        if key in feat:
            print(f"  {feat[key]['of']}: {feat[key]['median']:.2f}x ({feat[key]['min']:.2f}..{feat[key]['max']:.2f})")
    e2e = results["end_to_end"]
    for name, row in e2e["sides"].items():
        print(f"end to end {name:>20}: {row['median_molecules_per_s']:8.1f} molecules/s")
    r = e2e["port_over_zoo"]
    print(f"  {r['of']}: {r['median']:.2f}x ({r['min']:.2f}..{r['max']:.2f}); checks {e2e['checks']}")
    r = e2e["before_over_now"]
    print(f"  {r['of']}: {r['median']:.2f}x ({r['min']:.2f}..{r['max']:.2f})")
    fwd = results["forward"]
    for key in ("port_over_zoo_eager", "port_over_zoo_sdpa"):
        print(f"forward {fwd[key]['of']}: {fwd[key]['median']:.2f}x ({fwd[key]['min']:.2f}..{fwd[key]['max']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
