"""Inference on a data set: size-bucketed batches, and featurization on several processes.

A batch is padded to its largest item, so batching molecules in file order spends most of the
attention work on padding (B3DB: a median of 22 atoms, batches padded to 60-130). `iter_size_buckets`
sorts items by size and cuts batches by count and padded cost; `predict_dataset` runs a model over
them and returns the outputs in input order. Each item's output equals its own batch-of-one run
(padding is masked), up to float rounding.

    from zoo.inference import predict_graphormer, predict_dmp
    result = predict_graphormer(model, featurizer, smiles, batch_size=64, on_error="skip")
    result.outputs["logits"]        # [len(smiles), num_classes], NaN rows for skipped molecules
    result.skipped                  # (index, input, reason) of each molecule left out

`featurize_to_parquet` featurizes a large SMILES list on several processes into Parquet shards.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)


def iter_size_buckets(sizes: Sequence[int], batch_size: int = 64, max_cost: int | None = None,
                      cost: Callable[[int, int], int] | None = None) -> Iterator[list[int]]:
    """Indices of `sizes`, grouped into batches of similar size (ascending), each at most `batch_size`
    items and, with `max_cost`, at most that padded cost: `cost(items, largest size)`, by default
    items * largest ** 2 (attention). A single item above `max_cost` still gets a batch of its own.

        list(iter_size_buckets([5, 1, 3, 2], batch_size=2))   # [[1, 3], [2, 0]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_cost is not None and max_cost < 1:
        raise ValueError(f"max_cost must be >= 1, got {max_cost}")
    cost = cost or (lambda items, largest: items * largest * largest)
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i], i))
    batch: list[int] = []
    for index in order:
        # ascending order: the new item is the batch's largest
        if batch and (len(batch) == batch_size
                      or (max_cost is not None and cost(len(batch) + 1, sizes[index]) > max_cost)):
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


@dataclass
class DatasetPredictions:
    """Per-input outputs (NaN rows where an input was skipped) and the skipped inputs with reasons."""

    outputs: dict[str, np.ndarray]
    skipped: list[tuple[int, str, str]] = field(default_factory=list)
    batches: int = 0

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of the inputs that have outputs."""
        first = next(iter(self.outputs.values()))
        return ~np.isnan(first.reshape(len(first), -1)).any(axis=1)


def predict_dataset(
    model: torch.nn.Module, items: Sequence[Any], sizes: Sequence[int], collate: Callable[[list[Any]], dict],
    *, batch_size: int = 64, max_cost: int | None = None, outputs: Sequence[str] = ("logits",),
    positions: Sequence[int] | None = None, total: int | None = None, progress: bool = False,
) -> DatasetPredictions:
    """Run `model(**collate(items of a bucket))` over size buckets; return `outputs` in input order.

    `positions[i]` is the input index of `items[i]` (default i) and `total` the number of inputs (rows
    of the result; inputs without an item get NaN). Runs under `torch.inference_mode`.
    """
    if len(sizes) != len(items):
        raise ValueError(f"{len(sizes)} sizes for {len(items)} items")
    positions = list(range(len(items))) if positions is None else list(positions)
    total = len(items) if total is None else total
    buckets = list(iter_size_buckets(sizes, batch_size, max_cost))
    if progress:
        from tqdm.auto import tqdm

        buckets = tqdm(buckets, desc="predicting", unit="batch")
    results: dict[str, np.ndarray] = {}
    device = next(model.parameters()).device
    count = 0
    with torch.inference_mode():
        for bucket in buckets:
            batch = collate([items[i] for i in bucket])
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            output = model(**batch)
            rows = [positions[i] for i in bucket]
            for name in outputs:
                value = output[name].detach().float().cpu().numpy()
                if name not in results:
                    results[name] = np.full((total, *value.shape[1:]), np.nan, dtype=np.float32)
                results[name][rows] = value
            count += 1
    return DatasetPredictions(results, batches=count)


def predict_graphormer(
    model: torch.nn.Module, featurizer: Any, molecules: Sequence[Any], *, batch_size: int = 64,
    max_cost: int | None = 64 * 48 * 48, on_error: str = "raise", outputs: Sequence[str] = ("logits",),
    progress: bool = False,
) -> DatasetPredictions:
    """Graphormer predictions for molecules (SMILES, rdkit Mols, graphs) in size buckets.

    `max_cost` bounds items x (atoms + 1)^2 per batch (default: 64 molecules of 47 atoms), so that
    batches of large molecules stay small and batches of small ones large.
    """
    molecules = list(molecules)
    items, skipped = featurizer.featurize(molecules, on_error=on_error, progress=progress)
    bad = {s.index for s in skipped}
    positions = [i for i in range(len(molecules)) if i not in bad]
    sizes = [len(item["x"]) + 1 for item in items]  # + the graph token
    result = predict_dataset(model, items, sizes, featurizer.collate, batch_size=batch_size, max_cost=max_cost,
                             outputs=outputs, positions=positions, total=len(molecules), progress=progress)
    result.skipped = [(s.index, s.input, s.reason) for s in skipped]
    return result


def predict_dmp(
    model: torch.nn.Module, tokenizer: Any, featurizer: Any, smiles: Sequence[str], *, batch_size: int = 64,
    max_cost: int | None = 64 * 96 * 96, on_error: str = "raise", outputs: Sequence[str] = ("logits",),
    progress: bool = False,
) -> DatasetPredictions:
    """DMP predictions for SMILES in size buckets (by SMILES token count, the padded dimension)."""
    from zoo.models.dmp import DmpDataCollator

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    smiles = list(smiles)
    encoded = featurizer.encode_molecules(smiles, tokenizer, errors=on_error)
    bad = {index for index, _, _ in encoded.skipped}
    positions = [i for i in range(len(smiles)) if i not in bad]
    sizes = [len(item["input_ids"]) for item in encoded]
    result = predict_dataset(model, list(encoded), sizes, DmpDataCollator(), batch_size=batch_size,
                             max_cost=max_cost, outputs=outputs, positions=positions, total=len(smiles),
                             progress=progress)
    result.skipped = list(encoded.skipped)
    return result


# -- featurizing on several processes -----------------------------------------------------------------------
def _featurize_shard(args: tuple[list[str], int, str, dict]) -> tuple[str, int, list[tuple[int, str, str]]]:
    """Featurize one shard of SMILES with GraphormerFeaturizer and write it as Parquet (atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from zoo.models.graphormer import GraphormerFeaturizer

    smiles, first, path, options = args
    featurizer = GraphormerFeaturizer(**options)
    items, skipped = featurizer.featurize(smiles, on_error="skip", log_skipped=False)  # logged once, by the parent
    bad = {s.index for s in skipped}
    indices = [first + i for i in range(len(smiles)) if i not in bad]
    columns: dict[str, list] = {"index": indices, "num_nodes": [len(item["x"]) for item in items]}
    for name in ("x", "attn_edge_type", "spatial_pos", "in_degree", "edge_input"):
        columns[name] = [np.asarray(item[name]).reshape(-1) for item in items]
        columns[name + "_shape"] = [list(np.shape(item[name])) for item in items]
    tmp = path + ".tmp"
    pq.write_table(pa.table(columns), tmp)
    os.replace(tmp, path)
    return path, len(items), [(first + s.index, s.input, s.reason) for s in skipped]


def featurize_to_parquet(smiles: Sequence[str], out_dir: str | os.PathLike, *, num_proc: int = 1,
                         shard_size: int = 2048, featurizer_options: dict | None = None,
                         progress: bool = False, start_method: str | None = None) -> dict[str, Any]:
    """Graphormer items for many SMILES, featurized on `num_proc` processes into Parquet shards.

    Each shard `shard-NNNNN.parquet` holds, per molecule, its input `index`, `num_nodes` and the item
    arrays flattened with their shapes (`read_parquet_items` restores them). Returns the shard paths,
    the item count and the skipped molecules.
    """
    if num_proc < 1 or shard_size < 1:
        raise ValueError(f"num_proc and shard_size must be >= 1, got {num_proc} and {shard_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    smiles = list(smiles)
    jobs = [(smiles[first:first + shard_size], first, str(out / f"shard-{n:05d}.parquet"), featurizer_options or {})
            for n, first in enumerate(range(0, len(smiles), shard_size))]
    if num_proc == 1:
        results = map(_featurize_shard, jobs)
        pool = None
    else:
        import multiprocessing

        # fork where there is one: the workers inherit the imported featurizer instead of importing
        # torch and rdkit again (they run numpy and rdkit only, no torch thread pool)
        methods = multiprocessing.get_all_start_methods()
        pool = multiprocessing.get_context(start_method or ("fork" if "fork" in methods else "spawn")).Pool(num_proc)
        results = pool.imap(_featurize_shard, jobs)
    try:
        if progress:
            from tqdm.auto import tqdm

            results = tqdm(results, total=len(jobs), desc="featurizing shards", unit="shard")
        done = list(results)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    skipped = [s for _, _, shard_skipped in done for s in shard_skipped]
    if skipped:
        logger.warning(
            "skipped %d molecule(s): %s%s", len(skipped), "; ".join(f"{i}: {reason}" for i, _, reason in skipped[:10]),
            f"; ... ({len(skipped) - 10} more)" if len(skipped) > 10 else "")
    return {"shards": [path for path, _, _ in done], "items": sum(count for _, count, _ in done),
            "skipped": skipped, "num_proc": num_proc}


def read_parquet_items(paths: Sequence[str | os.PathLike]) -> tuple[list[int], list[dict[str, np.ndarray]]]:
    """The input indices and Graphormer items (for `GraphormerFeaturizer.collate`) stored by `featurize_to_parquet`."""
    import pyarrow.parquet as pq

    indices, items = [], []
    for path in paths:
        table = pq.read_table(path).to_pydict()
        for row in range(len(table["index"])):
            item = {}
            for name in ("x", "attn_edge_type", "spatial_pos", "in_degree", "edge_input"):
                shape = table[name + "_shape"][row]
                values = np.asarray(table[name][row], dtype=np.int64)
                if values.size != math.prod(shape):
                    raise ValueError(f"{path}: row {row} field {name} has {values.size} values for shape {shape}")
                item[name] = values.reshape(shape)
            n = int(table["num_nodes"][row])
            if item["x"].ndim != 2 or n != item["x"].shape[0]:
                raise ValueError(f"{path}: row {row} says num_nodes={n} but its x has shape {item['x'].shape}")
            item["attn_bias"] = np.zeros((n + 1, n + 1), dtype=np.float32)
            indices.append(int(table["index"][row]))
            items.append(item)
    return indices, items


MAX_FEATURIZE_BYTES = 2 << 30  # a SMILES file larger than this is refused before it is read


def featurize_file(path: str | os.PathLike, out_dir: str | os.PathLike, *, num_proc: int = 1,
                   shard_size: int = 2048, featurizer_options: dict | None = None, progress: bool = True,
                   overwrite: bool = False) -> dict[str, Any]:
    """`featurize_to_parquet` for a SMILES file (first column of each line; blank, '#' and a 'smiles'
    header line left out). Writes the shards, `skipped.tsv` (file line, SMILES, reason) and
    `manifest.json` (shards, counts, options, the input's line of each shard row index) into `out_dir`,
    which must be empty or absent unless `overwrite`."""
    import json

    from zoo.embed import EmbedError, _text_items
    from zoo.fileio import atomic_write_text

    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such SMILES file")
    size = source.stat().st_size
    if size > MAX_FEATURIZE_BYTES:
        raise ValueError(f"{source}: {size} bytes, over the {MAX_FEATURIZE_BYTES}-byte limit; "
                         "split the file")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out}: not empty (pass --overwrite to replace its shards)")
        for old in list(out.glob("shard-*.parquet")) + [out / "skipped.tsv", out / "manifest.json"]:
            old.unlink(missing_ok=True)
    try:
        rows = list(_text_items(source, "graphormer"))
    except EmbedError as err:
        raise ValueError(str(err)) from None
    if not rows:
        raise ValueError(f"{source}: no SMILES in the file")
    lines = [number for number, _ in rows]
    summary = featurize_to_parquet([text for _, text in rows], out, num_proc=num_proc, shard_size=shard_size,
                                   featurizer_options=featurizer_options, progress=progress)
    def cell(value: str) -> str:  # one TSV cell: control characters (tab, newline, NUL, ...) escaped
        return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in value)

    skipped = "".join(f"{lines[index]}\t{cell(text)}\t{cell(reason)}\n" for index, text, reason in summary["skipped"])
    atomic_write_text(out / "skipped.tsv", "line\tsmiles\treason\n" + skipped)
    manifest = {"source": str(source), "molecules": len(rows), "items": summary["items"],
                "skipped": len(summary["skipped"]), "num_proc": num_proc, "shard_size": shard_size,
                "featurizer_options": featurizer_options or {},
                "shards": [Path(p).name for p in summary["shards"]],
                "index": "a shard row's `index` is the SMILES's position in the file's SMILES; "
                         "`lines[index]` is its line number", "lines": lines}
    atomic_write_text(out / "manifest.json", json.dumps(manifest) + "\n")
    return {**summary, "lines": lines}


def featurize_main(argv: list[str] | None = None) -> int:
    """`zoo featurize SMILES_FILE OUT_DIR [--num-proc N] [--shard-size N] [--max-nodes N] ...`"""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="zoo featurize",
                                     description="Graphormer items for a SMILES file, on several processes, "
                                                 "into Parquet shards (read back with "
                                                 "zoo.inference.read_parquet_items)")
    parser.add_argument("smiles_file")
    parser.add_argument("out_dir")
    from zoo.threads import allowed_cpus

    parser.add_argument("--num-proc", type=int, default=max(1, min(len(allowed_cpus()), 8)),
                        help="worker processes (default: the CPUs this process may use, at most 8)")
    parser.add_argument("--shard-size", type=int, default=2048)
    parser.add_argument("--max-nodes", type=int, default=None, help="refuse molecules with more atoms")
    parser.add_argument("--multi-hop-max-dist", type=int, default=None)
    parser.add_argument("--spatial-pos-max", type=int, default=None)
    parser.add_argument("--overwrite", action="store_true", help="replace the shards of an earlier run in OUT_DIR")
    args = parser.parse_args(argv)
    options = {name: value for name, value in (("max_nodes", args.max_nodes),
                                               ("multi_hop_max_dist", args.multi_hop_max_dist),
                                               ("spatial_pos_max", args.spatial_pos_max)) if value is not None}
    try:
        summary = featurize_file(args.smiles_file, args.out_dir, num_proc=args.num_proc, shard_size=args.shard_size,
                                 featurizer_options=options, overwrite=args.overwrite)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        print(f"zoo featurize: error: {err}", file=sys.stderr)
        return 2
    print(f"{summary['items']} molecule(s) in {len(summary['shards'])} shard(s) under {args.out_dir}; "
          f"{len(summary['skipped'])} skipped (listed in skipped.tsv)")
    return 0
