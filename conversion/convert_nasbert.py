"""Convert ML.NET's NAS-BERT TorchSharp checkpoints (`.tsm`) into zoo folders.

Reads encoder checkpoints (`NasBert2000000.tsm`, `pretrained_NasBert_14M_encoder.tsm`) and the model
state of fine-tuned ML.NET models (the `TSModel` stream: `PredictionHead.*` or `NerHead.*`, then
`Encoder.*`). The subnet (`arches`, widths) is read off the checkpoint's keys and shapes; `--variant`
additionally checks it against a registry entry. Every key is mapped by an explicit table.

    python conversion/convert_nasbert.py NasBert2000000.tsm out/nasbert5 --variant nasbert5_mlnet \
        --vocab-dir path/to/vocab   # optional: encoder.json, vocab.bpe, dict.txt (default: bundled)
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from conversion.torchsharp import read_tsm
from zoo.fileio import atomic_write_json, sha256_file, staged_folder
from zoo.models.nasbert import (
    NasBertConfig,
    NasBertForSequenceClassification,
    NasBertForTokenClassification,
    NasBertModel,
    NasBertTokenizer,
    build_op_table,
)
from zoo.models.nasbert.resources import VOCAB_DIR

__all__ = ["ConversionError", "convert", "infer_config", "key_table", "main"]

NUM_LAYERS = 24  # ML.NET's numEncoderLayers
HEADS = {  # ML.NET head prefix -> zoo head class
    "PredictionHead.Classifier.dense": NasBertForSequenceClassification,
    "NerHead.Classifier.dense": NasBertForTokenClassification,
}
ENCODER_PREFIX = "Encoder."
BUNDLED_VOCAB_SIZE = 50265  # RoBERTa dictionary: 4 specials + 50260 dict.txt lines + <mask>

# TorchSharp key (relative to the encoder) -> zoo key (relative to NasBertModel).
_EMBEDDING_KEYS = {
    "TokenEmbedding.weight": "embeddings.embed_tokens.weight",
    "PositionalEmbedding.Embedding.weight": "embeddings.embed_positions.weight",
    "EmbeddingLayerNorm.weight": "embeddings.layer_norm.weight",
    "EmbeddingLayerNorm.bias": "embeddings.layer_norm.bias",
}
_TRANSFER_KEYS = {"EmbedTransfer.HiddenTransfer.{p}": "embed_transfer.{p}"}
_OP_KEYS = {  # per op kind, relative to `Layers.{i}.Operation.` / `layers.{i}.`
    "mha": {
        "SelfAttention.QProjection.{p}": "q_proj.{p}", "SelfAttention.KProjection.{p}": "k_proj.{p}",
        "SelfAttention.VProjection.{p}": "v_proj.{p}", "SelfAttention.OutProjLinear.{p}": "out_proj.{p}",
        "LayerNorm.{p}": "layer_norm.{p}",
    },
    "ffn": {"FullConnects.fc1.{p}": "fc1.{p}", "FullConnects.fc2.{p}": "fc2.{p}", "FinalLayerNorm.{p}": "layer_norm.{p}"},
    "sepconv": {
        "Conv1.conv.Conv.conv1.{p}": "conv1.depthwise.{p}", "Conv1.conv.Conv.conv2.{p}": "conv1.pointwise.{p}",
        "LayerNorm1.{p}": "layer_norm1.{p}",
        "Conv2.conv.Conv.conv1.{p}": "conv2.depthwise.{p}", "Conv2.conv.Conv.conv2.{p}": "conv2.pointwise.{p}",
        "LayerNorm2.{p}": "layer_norm2.{p}",
    },
    "identity": {},
}


class ConversionError(ValueError):
    """The checkpoint does not fit the NAS-BERT layout (missing/unexpected keys, wrong shapes)."""


def _expand(table: dict[str, str], source_prefix: str, target_prefix: str) -> dict[str, str]:
    return {source_prefix + s.format(p=p): target_prefix + t.format(p=p)
            for s, t in table.items() for p in ("weight", "bias")}


def key_table(config: NasBertConfig, head_prefix: str | None = None) -> dict[str, str]:
    """TorchSharp key -> zoo key for every tensor a checkpoint of this config holds.

    `head_prefix` (e.g. "PredictionHead.Classifier.dense") selects the ML.NET model-stream layout, where
    the encoder's keys carry `Encoder.` and map under the head model's `nasbert.`.
    """
    table = dict(_EMBEDDING_KEYS)
    widths = config.block_hidden_sizes
    if config.embedding_size != widths[0]:
        table.update(_expand(_TRANSFER_KEYS, "", ""))
    for index, op in enumerate(config.layer_ops()):
        table.update(_expand(_OP_KEYS[op.kind], f"Layers.{index}.Operation.", f"layers.{index}."))
    for block in range(len(widths) - 1):
        if widths[block] != widths[block + 1]:
            table.update(_expand({"InHiddenTransfer.{p}": "{p}"}, f"HiddenTransferList.{block}.",
                                 f"hidden_transfers.{block}."))
    if head_prefix is None:
        return table
    table = {ENCODER_PREFIX + s: "nasbert." + t for s, t in table.items()}
    table.update({f"{head_prefix}.weight": "classifier.weight", f"{head_prefix}.bias": "classifier.bias"})
    return table


def _layer_op(index: int, keys: dict[str, torch.Tensor], source: str) -> tuple[str, int, int]:
    """(kind, width, kernel) of layer `index` from its keys (relative to `Layers.{index}.Operation.`)."""
    if not keys:
        return "identity", 0, 0
    if "SelfAttention.QProjection.weight" in keys:
        return "mha", keys["SelfAttention.QProjection.weight"].shape[0], 0
    if "FullConnects.fc1.weight" in keys:
        return "ffn", keys["FullConnects.fc1.weight"].shape[1], 0
    if "Conv1.conv.Conv.conv1.weight" in keys:
        weight = keys["Conv1.conv.Conv.conv1.weight"]
        return "sepconv", weight.shape[0], weight.shape[-1]
    raise ConversionError(f"{source}: layer {index} holds keys of no known op: {sorted(keys)[:6]}")


def infer_config(state: dict[str, torch.Tensor], source: str = "checkpoint", **overrides: Any) -> NasBertConfig:
    """The NasBertConfig (ML.NET op table) a TorchSharp encoder state dict was saved from.

    Op widths and conv kernels come from tensor shapes; identity layers get op index 0, as in ML.NET.
    """
    for key in _EMBEDDING_KEYS:
        if key not in state:
            raise ConversionError(f"{source}: missing '{key}'; not a NAS-BERT encoder checkpoint")
    vocab_size, embedding_size = state["TokenEmbedding.weight"].shape
    max_positions = state["PositionalEmbedding.Embedding.weight"].shape[0] - 2
    per_layer: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        match = re.fullmatch(r"Layers\.(\d+)\.Operation\.(.+)", key)
        if match:
            per_layer.setdefault(int(match[1]), {})[match[2]] = tensor
    if per_layer and max(per_layer) >= NUM_LAYERS:
        raise ConversionError(f"{source}: layer {max(per_layer)} found; ML.NET encoders have {NUM_LAYERS} layers")
    table = build_op_table("mlnet")
    arches = []
    for index in range(NUM_LAYERS):
        kind, width, kernel = _layer_op(index, per_layer.get(index, {}), source)
        if kind == "identity":
            arches.append(0)
            continue
        matches = [i for i, op in enumerate(table) if (op.kind, op.width, op.kernel) == (kind, width, kernel)]
        if not matches:
            raise ConversionError(f"{source}: layer {index} is {kind} width {width} kernel {kernel}, "
                                  "which is not in ML.NET's op table")
        arches.append(matches[0])
    values = {"vocab_size": vocab_size, "embedding_size": embedding_size,
              "max_position_embeddings": max_positions, "arches": arches, **overrides}
    return NasBertConfig(**values)


def split_model_stream(state: dict[str, torch.Tensor], source: str) -> tuple[str | None, dict[str, torch.Tensor]]:
    """(head prefix or None, encoder state without `Encoder.`) of an encoder file or an ML.NET model stream."""
    if not any(key.startswith(ENCODER_PREFIX) for key in state):
        return None, state
    heads = [prefix for prefix in HEADS if f"{prefix}.weight" in state]
    if len(heads) != 1:
        raise ConversionError(f"{source}: an ML.NET model stream needs exactly one head of {list(HEADS)}; "
                              f"found {heads}")
    encoder = {k[len(ENCODER_PREFIX):]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}
    return heads[0], encoder


def map_state_dict(
    state: dict[str, torch.Tensor], config: NasBertConfig, head_prefix: str | None, model: torch.nn.Module,
    source: str,
) -> dict[str, torch.Tensor]:
    """Rename every tensor by `key_table`; unused original keys, unfilled model keys and shape mismatches
    are errors naming them."""
    table = key_table(config, head_prefix)
    unused = [key for key in state if key not in table]
    absent = [key for key in table if key not in state]
    if unused or absent:
        raise ConversionError(f"{source}: keys do not match the layout of arches {config.arches}: "
                              f"unexpected {unused[:10]}{'...' if len(unused) > 10 else ''}, "
                              f"missing {absent[:10]}{'...' if len(absent) > 10 else ''}")
    mapped = {table[key]: tensor for key, tensor in state.items()}
    expected = model.state_dict()
    unfilled = sorted(set(expected) - set(mapped))
    if unfilled:
        raise ConversionError(f"{source}: model keys left unfilled: {unfilled}")
    for key, tensor in mapped.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ConversionError(f"{source}: '{key}' has shape {tuple(tensor.shape)}, the model expects "
                                  f"{tuple(expected[key].shape)}")
        if not tensor.is_floating_point():
            raise ConversionError(f"{source}: '{key}' has dtype {tensor.dtype}; expected floating point")
    return {key: tensor.to(torch.float32) for key, tensor in mapped.items()}


def _check_variant(config: NasBertConfig, variant: str, source: str) -> dict[str, Any]:
    from zoo.registry import model_info

    entry = model_info(variant)
    expected = NasBertConfig(**entry.config)
    got = [op.name for op in config.layer_ops()]
    want = [op.name for op in expected.layer_ops()]
    problems = []
    if got != want:
        problems.append(f"ops {got} != {want}")
    for field in ("embedding_size", "vocab_size", "max_position_embeddings"):
        if getattr(config, field) != getattr(expected, field):
            problems.append(f"{field} {getattr(config, field)} != {getattr(expected, field)}")
    if problems:
        raise ConversionError(f"{source} does not match variant '{variant}': {'; '.join(problems)}")
    return entry.config


def _forward_check(model: torch.nn.Module, folder: Path, config: NasBertConfig) -> dict[str, Any]:
    """Reload the written folder and compare a forward pass with the in-memory model (exact)."""
    generator = torch.Generator().manual_seed(0)
    length = min(12, config.max_position_embeddings)
    ids = torch.randint(4, config.vocab_size, (2, length), generator=generator)
    ids[:, 0] = config.bos_token_id
    ids[1, length // 2:] = config.pad_token_id
    reloaded = type(model).from_pretrained(folder).eval()
    with torch.no_grad():
        before = model.eval()(input_ids=ids)
        after = reloaded(input_ids=ids)
    key = "last_hidden_state" if "last_hidden_state" in before else "logits"
    diff = (before[key] - after[key]).abs().max().item()
    if diff != 0.0 or not torch.isfinite(after[key]).all():
        raise ConversionError(f"{folder}: reloaded model differs from the converted one (max |diff| {diff})")
    return {"reload_forward_max_abs_diff": diff, "output": key, "shape": list(after[key].shape),
            "reference_outputs": "none: the C#/TorchSharp original could not be run, so no original outputs exist"}


def convert(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    variant: str | None = None,
    vocab_dir: str | Path | None = None,
    framing: str = "mlnet",
    overwrite: bool = False,
    command: str | None = None,
) -> Path:
    """Convert a `.tsm` encoder or ML.NET model stream into a zoo folder; returns the folder.

        convert("NasBert2000000.tsm", "out/nasbert5", variant="nasbert5_mlnet", vocab_dir="vocab/")
    """
    from zoo.hub import write_card

    checkpoint = Path(checkpoint)
    source = str(checkpoint)
    state = read_tsm(checkpoint)
    head_prefix, encoder_state = split_model_stream(state, source)
    overrides: dict[str, Any] = {}
    if head_prefix is not None:
        overrides["num_labels"] = state[f"{head_prefix}.weight"].shape[0]
    if variant is not None:
        from zoo.registry import model_info

        overrides = {k: v for k, v in model_info(variant).config.items()
                     if k not in ("arches", "embedding_size", "vocab_size", "max_position_embeddings")} | overrides
    config = infer_config(encoder_state, source, **overrides)
    if variant is not None:
        _check_variant(config, variant, source)
    model_class = HEADS[head_prefix] if head_prefix else NasBertModel
    model = model_class(config).eval()
    mapped = map_state_dict(state, config, head_prefix, model, source)
    model.load_state_dict(mapped, strict=True)

    tokenizer = None
    if vocab_dir is None and config.vocab_size == BUNDLED_VOCAB_SIZE:
        vocab_dir = VOCAB_DIR
    if vocab_dir is not None:
        vocab_dir = Path(vocab_dir)
        tokenizer = NasBertTokenizer.from_files(vocab_dir / "encoder.json", vocab_dir / "vocab.bpe",
                                                vocab_dir / "dict.txt", framing=framing,
                                                model_max_length=config.max_position_embeddings)
        if len(tokenizer) != config.vocab_size:
            raise ConversionError(f"{vocab_dir}: the tokenizer has {len(tokenizer)} ids but {source} embeds "
                                  f"{config.vocab_size}; pass the vocabulary the checkpoint was trained with")
    with staged_folder(out_dir, overwrite=overwrite) as stage:
        model.save_pretrained(stage)
        if tokenizer is not None:
            tokenizer.save_pretrained(stage)
        check = _forward_check(model, stage, config)
        atomic_write_json(stage / "conversion.json", {
            "source_file": checkpoint.name, "source_sha256": sha256_file(checkpoint),
            "source_bytes": checkpoint.stat().st_size, "format": "torchsharp",
            "layout": "ML.NET model stream" if head_prefix else "encoder", "head": head_prefix,
            "variant": variant, "arches": config.arches,
            "ops": [op.name for op in config.layer_ops()], "tensors": len(state),
            "parameters": sum(p.numel() for p in model.parameters()),
            "tokenizer": (f"GPT-2 BPE + fairseq dict, framing={framing}" if tokenizer is not None
                          else f"not written: the checkpoint embeds {config.vocab_size} ids, not the "
                          f"{BUNDLED_VOCAB_SIZE} of the bundled vocabulary; pass --vocab-dir"),
            "command": command or f"python conversion/convert_nasbert.py {shlex.quote(source)} {out_dir}",
            "forward_check": check,
        })
        from zoo.verification import write_record
        write_record(stage, original=checkpoint, converter=__file__, variant=variant)  # verification/ (zoo verify)
        write_card(stage, variant=variant, repo_id=Path(out_dir).name)
    return Path(out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="TorchSharp .tsm encoder or ML.NET TSModel stream")
    parser.add_argument("out_dir")
    parser.add_argument("--variant", help="registry variant to check the checkpoint against")
    parser.add_argument("--vocab-dir", help="folder with encoder.json, vocab.bpe, dict.txt (default: the bundled "
                        "ML.NET vocabulary when the checkpoint has 50265 ids)")
    parser.add_argument("--framing", choices=("fairseq", "mlnet"), default="mlnet",
                        help="tokenizer framing (ML.NET's models were fine-tuned with 'mlnet')")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    command = "python conversion/convert_nasbert.py " + " ".join(map(shlex.quote, argv or sys.argv[1:]))
    import zoo  # noqa: F401  (registers the family for the card and the registry check)

    folder = convert(args.checkpoint, args.out_dir, variant=args.variant, vocab_dir=args.vocab_dir,
                     framing=args.framing, overwrite=args.overwrite, command=command)
    print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
