"""Embeddings from any zoo model: one vector per molecule, piece, sentence, image, utterance or 3D system,
or one per atom / note / token / pixel / frame with `per_item=True`.

    import zoo
    vectors = zoo.embed(["CCO", "c1ccccc1O"], model="runs/dmp_bbb")            # array [2, D]
    per_note = zoo.embed(["song.mid"], model="org/musicbert", per_item=True)    # list of [notes, D] arrays

    zoo embed CCO c1ccccc1O --model org/graphormer-bbb --output molecules.npy
    zoo embed song.mid --model musicbert_base --per-item --output notes.parquet

The pooling per family (also stated in each model card):

| family | input | vector (pooled) | per item |
| --- | --- | --- | --- |
| graphormer | SMILES | the graph token of the last layer (`pooler_output`) | atom vectors |
| dmp | SMILES | Transformer `</s>` vector and GNN max+mean pool, concatenated | GNN atom vectors |
| musicbert | MIDI file | mean of the note vectors (`octuple_hidden_state`) | note vectors |
| nasbert | text | mean of the token vectors (padding left out) | token vectors |
| mdeq | image | per branch, the spatial mean of the equilibrium state, concatenated | pixel vectors of the finest branch |
| deq_transformer | text (the folder's word vocabulary) or token ids | mean of the token vectors | token vectors |
| graphormer3d | atoms (JSON: numbers, positions, tags, cell) | mean of the real atoms' vectors | atom vectors |
| priorgrad | wav file | mean over frames of the learned mel conditioner | frame vectors of the conditioner |

Batching lives in one function (`batches`) so that size-bucketing can slot in there.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["POOLING", "EmbedError", "Embeddings", "batches", "embed", "load_embedder", "main", "read_inputs",
           "write_embeddings"]

POOLING = {
    "graphormer": "graph token of the last layer (pooler_output); per atom: the atom vectors",
    "dmp": "Transformer </s> vector and GNN max+mean pool, concatenated; per atom: the GNN atom vectors",
    "musicbert": "mean of the note vectors (octuple_hidden_state); per note: the note vectors",
    "nasbert": "mean of the token vectors (padding left out); per token: the token vectors",
    "mdeq": "spatial mean of each branch's equilibrium state, concatenated; per pixel: the finest branch",
    "deq_transformer": "mean of the token vectors; per token: the token vectors",
    "graphormer3d": "mean of the real (not periodic-image) atoms' vectors; per atom: the real atoms' vectors",
    "priorgrad": "mean over frames of the learned mel conditioner (spectrogram_upsampler); per frame: its vectors",
}
MAX_INPUTS = 1_000_000  # bound on what one call reads from files
MAX_DEQ_TOKENS = 4096  # one DEQ-Transformer segment: attention is quadratic in its length


class EmbedError(ValueError):
    """Bad input to `zoo embed` (names the input and the problem)."""


@dataclass
class Embeddings:
    """`vectors`: [N, D] float32 (pooled) or a list of N [n_i, D] arrays (per item); `inputs`: what each is of."""

    inputs: list[str]
    vectors: np.ndarray | list[np.ndarray]
    family: str
    pooling: str
    per_item: bool


def batches(items: Sequence[Any], batch_size: int, sizes: Sequence[int] | None = None) -> Iterator[list[int]]:
    """Index lists of the batches `embed` runs: in input order, or, with `sizes`, items of similar size together
    (zoo.inference.iter_size_buckets) so that a batch is padded to its own largest item, not the data set's.
    Results are placed back by index, so the order of batches never changes an output."""
    if batch_size < 1:
        raise EmbedError(f"batch_size must be at least 1, got {batch_size}")
    if sizes is not None:
        from .inference import iter_size_buckets

        yield from iter_size_buckets(sizes, batch_size)
        return
    for start in range(0, len(items), batch_size):
        yield list(range(start, min(start + batch_size, len(items))))


# families whose inputs are strings whose length tracks the padded size (SMILES atoms, text tokens)
_SIZED_BY_LENGTH = {"graphormer", "dmp", "nasbert"}


# ------------------------------------------------------------------------------------------------ loading
def _family_of_folder(config: dict[str, Any]) -> str:
    from .auto import families

    for name, family in families().items():
        if family.config_class.model_type == config.get("model_type"):
            return name
    raise EmbedError(f"model_type {config.get('model_type')!r} is not a zoo family")


def _load_base(model: str, revision: str | None) -> tuple[torch.nn.Module, str, str | None]:
    """(base model, family, folder or repo id to read processor files from; None for a fresh variant)."""
    from transformers import AutoConfig, AutoModel

    import zoo

    from .registry import UnknownModelError

    source = model
    if not Path(model).is_dir():
        try:
            entry = zoo.model_info(model)
        except UnknownModelError:
            entry = None
        if entry is not None and (entry.pretrained or entry.hub_id):
            # a released variant: its converted weights (the Hub repo, or the original release converted once)
            from .pull import pull

            source = str(pull(model, revision=revision))
        elif entry is not None:  # a variant with no released weights: a fresh model, said loudly
            print(f"zoo embed: '{model}' has no released weights: random weights (pass a fine-tuned folder or "
                  "repo id for real embeddings)", file=sys.stderr)
            family = zoo.get_family(entry.family)
            torch.manual_seed(0)
            return family.base_model_class(zoo.registry.build_config(model)).eval(), entry.family, None
    try:
        config = AutoConfig.from_pretrained(source, revision=revision)
    except OSError as err:
        raise EmbedError(f"--model {model}: not a zoo folder, a Hub repo id, or a registry variant ({err})") from None
    family = _family_of_folder(config.to_dict())
    base = AutoModel.from_pretrained(source, revision=revision).eval()
    return base, family, source


def _processor(family: str, source: str | None, revision: str | None):
    """The processor saved with the model (zoo's own class reads it), else the family's default one."""

    def saved(cls, fallback: Callable[[], Any] | None = None):
        if source is not None:
            try:
                return cls.from_pretrained(source, revision=revision)
            except (OSError, ValueError, KeyError):
                pass
        return (fallback or cls)()

    if family == "graphormer":
        from .models.graphormer import GraphormerFeaturizer
        return saved(GraphormerFeaturizer)
    if family == "dmp":
        from .models.dmp import DmpProcessor, DmpTokenizer
        return saved(DmpProcessor, lambda: DmpProcessor(saved(DmpTokenizer)))
    if family == "musicbert":
        from .models.musicbert import OctupleMidiTokenizer
        return saved(OctupleMidiTokenizer)
    if family == "nasbert":
        from .models.nasbert import NasBertTokenizer
        from .models.nasbert.resources import mlnet_tokenizer
        return saved(NasBertTokenizer, mlnet_tokenizer)
    if family == "graphormer3d":
        from .models.graphormer3d import Graphormer3DFeaturizer
        return saved(Graphormer3DFeaturizer)
    if family == "priorgrad":
        from .models.priorgrad import PriorGradFeatureExtractor
        return saved(PriorGradFeatureExtractor)
    if family == "mdeq":
        from .models.deq import MdeqImageProcessor
        return saved(MdeqImageProcessor)
    if family == "deq_transformer":  # text needs the folder's word vocabulary (vocab.txt); token ids do not
        from .models.deq import DeqTransformerTokenizer
        return saved(DeqTransformerTokenizer, lambda: None)
    raise EmbedError(f"no embedding recipe for the {family} family")


# ------------------------------------------------------------------------------------------------ per family
def _rows(pooled: torch.Tensor) -> list[np.ndarray]:
    return [row.float().numpy() for row in pooled]


def _embed_batch(family: str, model, processor, raw: list[Any], per_item: bool) -> list[np.ndarray]:
    """Vectors of one batch: [D] arrays (pooled) or [n, D] arrays (per item)."""
    if family == "graphormer":
        batch = processor(raw)
        out = model(**{k: v for k, v in batch.items() if k != "labels"})
        if not per_item:
            return _rows(out.pooler_output)
        nodes, mask = out.last_hidden_state[:, 1:], out.node_mask[:, 1:]  # position 0: the graph token
        return [nodes[i][mask[i]].numpy() for i in range(len(raw))]
    if family == "dmp":
        batch = processor(raw)
        out = model(**{k: v for k, v in batch.items() if k in processor.model_input_names})
        if not per_item:
            return _rows(torch.cat([out.sequence_embedding, out.graph_embedding], dim=-1))
        return [out.node_embeddings[batch["atom_batch"] == i].numpy() for i in range(len(raw))]
    if family == "musicbert":
        vectors = []
        for path in raw:  # one piece per call: the tokenizer reads one MIDI file at a time
            encoded = processor.encode_midi(path, return_tensors="pt")
            notes = model(**encoded).octuple_hidden_state[0]
            keep = encoded["attention_mask"][0].reshape(-1, 8)[:, 0].bool()
            keep[0] = keep[-1] = False  # the <s> and </s> octuples are not notes
            keep &= torch.arange(len(keep)) < int(encoded["attention_mask"][0].sum()) // 8 - 1
            notes = notes[keep]
            vectors.append(notes.numpy() if per_item else notes.mean(0).numpy())
        return vectors
    if family == "nasbert":
        batch = processor(raw, return_tensors="pt", padding=True)
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].bool()
        if per_item:
            return [hidden[i][mask[i]].numpy() for i in range(len(raw))]
        return _rows((hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))
    if family == "mdeq":
        out = model(**processor(raw))
        if per_item:
            finest = out.last_hidden_state
            return [finest[i].flatten(1).T.numpy() for i in range(len(raw))]
        return _rows(torch.cat([state.mean(dim=(2, 3)) for state in out.equilibrium_states], dim=-1))
    if family == "deq_transformer":
        vectors = []
        for ids in raw:
            if isinstance(ids, str):
                if processor is None:
                    raise ValueError("this DEQ-Transformer folder has no tokenizer (vocab.txt): give token ids, or "
                                     "convert it with --vocab / --vocab-corpus")
                ids = processor(ids)["input_ids"]
            if len(ids) > MAX_DEQ_TOKENS:
                raise ValueError(f"{len(ids)} tokens; at most {MAX_DEQ_TOKENS} per input")
            hidden = model(input_ids=torch.as_tensor([ids], dtype=torch.long)).last_hidden_state[0]
            vectors.append(hidden.numpy() if per_item else hidden.mean(0).numpy())
        return vectors
    if family == "graphormer3d":
        batch = processor(raw)
        hidden = model(**{k: v for k, v in batch.items() if k != "labels"}).last_hidden_state
        real = batch["real_mask"] & batch["atom_ids"].ne(0)
        atoms = [hidden[i][real[i]] for i in range(len(raw))]
        return [a.numpy() for a in atoms] if per_item else [a.mean(0).numpy() for a in atoms]
    if family == "priorgrad":
        vectors = []
        hop = getattr(processor, "hop_length", 256)
        for path in raw:
            mel = processor(processor.load_audio(path), sampling_rate=processor.sampling_rate)["spectrogram"]
            mel = torch.as_tensor(np.asarray(mel), dtype=torch.float32)
            mel = mel if mel.ndim == 3 else mel[None]
            conditioner = model.spectrogram_upsampler(mel)[0]  # [C, frames * hop]
            frames = conditioner.reshape(conditioner.shape[0], -1, hop).mean(-1).T  # [frames, C]
            vectors.append(frames.numpy() if per_item else frames.mean(0).numpy())
        return vectors
    raise EmbedError(f"no embedding recipe for the {family} family")


# ------------------------------------------------------------------------------------------------ inputs
def read_inputs(values: Sequence[Any], family: str) -> tuple[list[Any], list[str]]:
    """Raw inputs and their names: molecule / text families read a file as a list (one input per line, first
    column for SMILES; '%'-separated blocks for fortune files); music, audio, image and 3D families take one
    file per input (MIDI, wav, image or .npy, atoms JSON); strings pass through."""
    raw, names = [], []
    for value in values:
        if isinstance(value, (str, os.PathLike)) and _is_file(value):
            path = Path(value)
            if family in ("graphormer", "dmp", "nasbert", "deq_transformer"):  # a list: one input per line (fortune files: per '%')
                for number, text in _text_items(path, family):
                    raw.append(text)
                    names.append(f"{path.name}:{number}")
                    if len(raw) > MAX_INPUTS:
                        raise EmbedError(f"{path}: more than {MAX_INPUTS} inputs")
                continue
            if family == "graphormer3d":
                try:
                    system = json.loads(path.read_text())
                except ValueError as err:
                    raise EmbedError(f"{path}: not a JSON atoms description ({err})") from None
                raw.append(system)
            elif family == "mdeq":
                raw.append(_read_image(path))
            else:
                raw.append(str(path))
            names.append(str(value))
        elif family in ("musicbert", "priorgrad", "mdeq", "graphormer3d") and isinstance(value, (str, os.PathLike)):
            raise EmbedError(f"{value}: no such file (the {family} family embeds files)")
        else:
            raw.append(value)
            names.append(value if isinstance(value, str) else f"input {len(names)}")
    if not raw:
        raise EmbedError("no inputs to embed")
    return raw, names


def _is_file(value: str | os.PathLike) -> bool:
    """Whether an input names a file; a long sentence is not a path (stat() would fail on it)."""
    try:
        return Path(value).is_file()
    except (OSError, ValueError):
        return False


def _text_items(path: Path, family: str) -> Iterator[tuple[int, str]]:
    """(line number, item) of a list file: SMILES files give the first column of each line; text files one
    item per line, or per block between '%' lines (the fortune format)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise EmbedError(f"{path}: not UTF-8 text ({err})") from None
    if family in ("nasbert", "deq_transformer") and "%" in (line.strip() for line in lines):
        block: list[str] = []
        start = 1
        for number, line in enumerate(lines + ["%"], 1):
            if line.strip() == "%":
                if " ".join(block).strip():
                    yield start, " ".join(part.strip() for part in block).strip()
                block, start = [], number + 1
            else:
                block.append(line)
        return
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if family not in ("nasbert", "deq_transformer"):
            text = text.replace("\t", " ").replace(",", " ").split(" ")[0] if text else ""
        if text and not text.startswith("#") and text.lower() != "smiles":
            yield number, text


def _read_image(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        array = np.load(path, allow_pickle=False)
    else:
        from PIL import Image

        with Image.open(path) as image:
            if image.width * image.height > 4096 * 4096:
                raise EmbedError(f"{path}: {image.width} x {image.height} pixels is too large")
            array = np.asarray(image.convert("L") if image.mode not in ("RGB", "L") else image)
    if array.ndim not in (2, 3):
        raise EmbedError(f"{path}: expected an H x W or H x W x C image, got shape {array.shape}")
    return array.astype(np.float32)


# ------------------------------------------------------------------------------------------------ API
def load_embedder(model: str, revision: str | None = None) -> tuple[torch.nn.Module, str, Any]:
    """(base model in eval mode, family, processor) for a folder, repo id or variant name."""
    base, family, source = _load_base(str(model), revision)
    return base, family, _processor(family, source, revision)


def embed(
    inputs: Sequence[Any] | str,
    model: str | os.PathLike,
    *,
    per_item: bool = False,
    batch_size: int = 16,
    revision: str | None = None,
) -> Embeddings:
    """Embed raw inputs (see the module docstring for what each family takes and how it pools)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    base, family, processor = load_embedder(str(model), revision)
    raw, names = read_inputs(list(inputs), family)
    vectors: list[np.ndarray | None] = [None] * len(raw)
    with torch.no_grad():
        sizes = ([len(item) for item in raw] if family in _SIZED_BY_LENGTH and all(isinstance(item, str) for item in raw)
                 else None)
        for index in batches(raw, batch_size, sizes):
            try:
                out = _embed_batch(family, base, processor, [raw[i] for i in index], per_item)
            except (ValueError, KeyError, OSError) as err:
                shown = ", ".join(names[i] for i in index[:3]) + (" ..." if len(index) > 3 else "")
                raise EmbedError(f"embedding {shown}: {err}") from err
            for i, vector in zip(index, out):
                vectors[i] = np.asarray(vector, dtype=np.float32)
    result = vectors if per_item else np.stack(vectors)
    return Embeddings(names, result, family, POOLING[family], per_item)


def write_embeddings(result: Embeddings, path: str | os.PathLike) -> Path:
    """Write atomically: .npy ([N, D] pooled; per item: the rows of all inputs stacked, and `<name>.offsets.npy`
    with where each input starts) or .parquet (columns input, item, vector)."""
    import io

    from .fileio import atomic_write_bytes

    path = Path(path)
    if path.suffix == ".npy":
        buffer = io.BytesIO()
        if result.per_item:
            lengths = [len(v) for v in result.vectors]
            np.save(buffer, np.concatenate(result.vectors) if lengths else np.zeros((0, 0), np.float32))
            offsets = io.BytesIO()
            np.save(offsets, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
            atomic_write_bytes(path.with_suffix(".offsets.npy"), offsets.getvalue())
        else:
            np.save(buffer, result.vectors)
        return atomic_write_bytes(path, buffer.getvalue())
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        if result.per_item:
            inputs = [name for name, v in zip(result.inputs, result.vectors) for _ in range(len(v))]
            items = [i for v in result.vectors for i in range(len(v))]
            rows = [row.tolist() for v in result.vectors for row in v]
        else:
            inputs, items, rows = result.inputs, [-1] * len(result.inputs), [v.tolist() for v in result.vectors]
        table = pa.table({"input": inputs, "item": items, "vector": pa.array(rows, type=pa.list_(pa.float32()))})
        table = table.replace_schema_metadata({"zoo.family": result.family, "zoo.pooling": result.pooling})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        return atomic_write_bytes(path, sink.getvalue().to_pybytes())
    raise EmbedError(f"--output {path}: write .npy or .parquet")


def main(argv: list[str] | None = None) -> int:
    """`zoo embed INPUT... --model VARIANT_OR_REPO [--per-item] [--output X.npy|X.parquet]`."""
    import argparse

    parser = argparse.ArgumentParser(prog="zoo embed", description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="SMILES / text / files (MIDI, wav, images, atoms JSON, .txt lists)")
    parser.add_argument("--model", required=True, help="zoo folder, Hub repo id, or registry variant")
    parser.add_argument("--revision")
    parser.add_argument("--per-item", action="store_true", help="one vector per atom / note / token / pixel / frame")
    parser.add_argument("--output", help="X.npy or X.parquet (default: print a summary)")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    if args.output and Path(args.output).suffix not in (".npy", ".parquet"):
        print(f"zoo embed: error: --output {args.output}: write .npy or .parquet", file=sys.stderr)
        return 2
    try:
        result = embed(args.inputs, args.model, per_item=args.per_item, batch_size=args.batch_size,
                       revision=args.revision)
    except EmbedError as err:
        print(f"zoo embed: error: {err}", file=sys.stderr)
        return 2
    shapes = [v.shape for v in result.vectors]
    print(f"{result.family}: {len(result.inputs)} input(s), pooling: {result.pooling}")
    for name, shape in list(zip(result.inputs, shapes))[:10]:
        print(f"  {name[:60]}: {tuple(shape)}")
    if args.output:
        print(f"wrote {write_embeddings(result, args.output)}")
    return 0
