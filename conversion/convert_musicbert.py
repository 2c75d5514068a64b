"""Convert an original MusicBERT fairseq checkpoint (microsoft/muzic) into a zoo / Hugging Face folder.

    python conversion/convert_musicbert.py checkpoint_last_musicbert_base.pt converted/musicbert_base
    python conversion/convert_musicbert.py checkpoint_last_genre_topmagd_0_checkpoint_last_musicbert_base.pt \
        converted/musicbert_genre --label-dict topmagd_data_bin/0/label/dict.txt

A pre-training checkpoint becomes `MusicBertForMaskedLM`; a checkpoint with a classification head
becomes `MusicBertForSequenceClassification` (multi-label when the task was
`sentence_prediction_multilabel`) or, with `--pair`, `MusicBertForPairClassification`. Sizes come from
`cfg.model` (or legacy `args`) and are checked against the tensor shapes; the architecture name is
not trusted. Every original key is mapped by the table below; the LM-head tensors a fine-tuned
checkpoint still carries are dropped by name and listed in conversion.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conversion.safe_checkpoint import CheckpointReadError, read_checkpoint  # noqa: E402

ENCODER = "encoder.sentence_encoder."
LM_HEAD = "encoder.lm_head."
ENCODER_KEYS = {
    "embed_tokens.weight": "embed_tokens.weight",
    "embed_positions.weight": "embed_positions.weight",
    "emb_layer_norm.weight": "emb_layer_norm.weight",
    "emb_layer_norm.bias": "emb_layer_norm.bias",
    "downsampling.0.weight": "downsampling.weight",
    "downsampling.0.bias": "downsampling.bias",
    "upsampling.0.weight": "upsampling.weight",
    "upsampling.0.bias": "upsampling.bias",
}
LAYER_KEYS = [
    f"{module}.{kind}"
    for module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                   "self_attn_layer_norm", "fc1", "fc2", "final_layer_norm")
    for kind in ("weight", "bias")
]
LM_HEAD_KEYS = ["weight", "bias", "dense.weight", "dense.bias", "layer_norm.weight", "layer_norm.bias"]
CLASSIFIER_KEYS = ["dense.weight", "dense.bias", "out_proj.weight", "out_proj.bias"]


class ConversionError(ValueError):
    """The checkpoint does not match what a MusicBERT checkpoint must hold."""


def _model_args(checkpoint: dict[str, Any], source: str) -> dict[str, Any]:
    cfg = checkpoint.get("cfg")
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
        return cfg["model"]
    if isinstance(checkpoint.get("args"), dict):
        return checkpoint["args"]
    raise ConversionError(f"{source}: no model configuration (neither cfg.model nor args)")


# fairseq task of a fine-tuning run -> the loss its classification head was trained with
PROBLEM_TYPES = {
    "sentence_prediction": "single_label_classification",  # fairseq's (muzic train_nsp.sh: next sentence)
    "sentence_prediction_multilabel": "multi_label_classification",  # muzic's (train_genre.sh: genre, style)
}


def _task_name(checkpoint: dict[str, Any], args: dict[str, Any]) -> str:
    cfg = checkpoint.get("cfg")
    task = cfg.get("task") if isinstance(cfg, dict) else None
    if isinstance(task, dict) and task.get("_name"):
        return str(task["_name"])
    return str(args.get("task", ""))


def build_key_table(num_layers: int, head: str | None, zoo_prefix: str) -> dict[str, str]:
    """original key -> zoo key for every tensor the converted model holds."""
    table = {ENCODER + old: f"{zoo_prefix}{new}" for old, new in ENCODER_KEYS.items()}
    for layer in range(num_layers):
        for key in LAYER_KEYS:
            table[f"{ENCODER}layers.{layer}.{key}"] = f"{zoo_prefix}layers.{layer}.{key}"
    if head is None:
        table.update({LM_HEAD + key: f"lm_head.{key}" for key in LM_HEAD_KEYS})
    else:
        table.update({f"classification_heads.{head}.{key}": f"classifier.{key}" for key in CLASSIFIER_KEYS})
    return table


def read_labels(path: str | Path) -> list[str]:
    """A fairseq label dictionary (`label count` per line); logit j is line j."""
    labels = [line.split()[0] for line in Path(path).read_text().splitlines() if line.strip()]
    if not labels:
        raise ConversionError(f"{path}: empty label dictionary")
    return labels


def convert(
    original: str | Path,
    out_dir: str | Path,
    *,
    variant: str | None = None,
    head_name: str | None = None,
    pair: bool = False,
    label_dict: str | Path | None = None,
    expected: str | Path | None = None,
    overwrite: bool = False,
    atol: float = 1e-5,
) -> dict[str, Any]:
    """Convert one checkpoint into `out_dir`; returns what is written to conversion.json.

    `expected` is an optional safetensors file with the original's `input_ids` and outputs
    (`features`, `mlm_logits`, `classification_logits`) to check the converted model against.
    """
    import zoo  # noqa: F401  registers the family for the card
    from zoo.fileio import atomic_write_json, sha256_file, staged_folder
    from zoo.hub import write_card
    from zoo.models.musicbert import (
        MusicBertConfig,
        MusicBertForMaskedLM,
        MusicBertForPairClassification,
        MusicBertForSequenceClassification,
        OctupleMidiTokenizer,
    )

    original = Path(original)
    checkpoint = read_checkpoint(original)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise ConversionError(f"{original}: not a fairseq checkpoint (no 'model' state dict)")
    state = checkpoint["model"]
    args = _model_args(checkpoint, str(original))
    heads = sorted({key.split(".")[1] for key in state if key.startswith("classification_heads.")})
    if head_name is None and len(heads) > 1:
        raise ConversionError(f"{original}: several classification heads {heads}; choose one with --head-name")
    head = head_name or (heads[0] if heads else None)
    if head is not None and head not in heads:
        raise ConversionError(f"{original}: no classification head '{head}' (found {heads or 'none'})")

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise ConversionError(f"{original}: missing tensor {key}")
        return tuple(state[key].shape)

    vocab_size, hidden = shape(ENCODER + "embed_tokens.weight")
    num_layers = len({key.split(".")[3] for key in state if key.startswith(ENCODER + "layers.")})
    pad = 1
    config_kwargs: dict[str, Any] = dict(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=num_layers,
        num_attention_heads=int(args["encoder_attention_heads"]),
        intermediate_size=shape(ENCODER + "layers.0.fc1.weight")[0],
        hidden_act=str(args.get("activation_fn", "gelu")),
        hidden_dropout_prob=float(args.get("dropout", 0.1)),
        attention_probs_dropout_prob=float(args.get("attention_dropout", 0.1)),
        activation_dropout=float(args.get("activation_dropout", 0.0)),
        max_positions=shape(ENCODER + "embed_positions.weight")[0] - pad - 1,
        pooler_activation=str(args.get("pooler_activation_fn", "tanh")),
        classifier_dropout=float(args.get("pooler_dropout", 0.0)),
    )
    declared = {"encoder_embed_dim": hidden, "encoder_layers": num_layers,
                "encoder_ffn_embed_dim": config_kwargs["intermediate_size"],
                "max_positions": config_kwargs["max_positions"]}
    clash = {k: (args[k], v) for k, v in declared.items() if k in args and int(args[k]) != v}
    if clash:
        raise ConversionError(f"{original}: cfg.model disagrees with the tensor shapes: {clash}")
    task = _task_name(checkpoint, args)
    if head is not None:
        num_labels = shape(f"classification_heads.{head}.out_proj.weight")[0]
        config_kwargs["num_labels"] = num_labels
        if not pair:
            if task not in PROBLEM_TYPES:
                raise ConversionError(f"{original}: fine-tuning task {task!r} is not one the converter knows "
                                      f"({', '.join(sorted(PROBLEM_TYPES))}); its head's loss is unknown")
            config_kwargs["problem_type"] = PROBLEM_TYPES[task]
        if label_dict is not None:
            labels = read_labels(label_dict)
            if len(labels) != num_labels:
                raise ConversionError(f"{label_dict}: {len(labels)} labels, the head has {num_labels} outputs")
            config_kwargs["id2label"] = dict(enumerate(labels))
            config_kwargs["label2id"] = {label: i for i, label in enumerate(labels)}
    config = MusicBertConfig(**config_kwargs)
    model_class = MusicBertForMaskedLM if head is None else (
        MusicBertForPairClassification if pair else MusicBertForSequenceClassification)

    table = build_key_table(num_layers, head, "musicbert.")
    dropped = sorted(key for key in state if key.startswith(LM_HEAD)) if head is not None else []
    unused = sorted(set(state) - set(table) - set(dropped))
    if unused:
        raise ConversionError(f"{original}: original keys not used by the conversion: {unused}")
    with torch.device("meta"):
        model = model_class(config)
    expected_keys = set(model.state_dict())
    unfilled = sorted(expected_keys - set(table.values()))
    missing = sorted(key for key in table if key not in state)
    if unfilled or missing:
        raise ConversionError(f"{original}: model keys not filled {unfilled}; original keys missing {missing}")
    new_state = {}
    for old, new in table.items():
        tensor = state[old]
        target = model.state_dict()[new]
        if tuple(tensor.shape) != tuple(target.shape):
            raise ConversionError(f"{original}: {old} has shape {tuple(tensor.shape)}, {new} needs {tuple(target.shape)}")
        new_state[new] = tensor.to(torch.float32).contiguous()
    model = model_class(config)
    model.load_state_dict(new_state, strict=True, assign=True)
    model.eval()

    # the sequence length the checkpoint was trained for: max_positions counts element tokens (8 per note,
    # <s> and </s> included), capped at the original's 1,000-note windows
    tokenizer = OctupleMidiTokenizer(max_notes=min(1000, model.config.max_positions // 8 - 2))
    out_dir = Path(out_dir)
    record: dict[str, Any] = {
        "source_file": original.name, "source_sha256": sha256_file(original), "format": "fairseq",
        "fairseq_task": task, "fairseq_arch": args.get("_name") or args.get("arch"), "variant": variant,
        "architecture": model_class.__name__, "classification_head": head, "dropped_keys": dropped,
        "command": " ".join(["python conversion/convert_musicbert.py", str(original), str(out_dir)] + [
            f"--{flag} {value}" for flag, value in (("variant", variant), ("head-name", head_name),
                                                   ("label-dict", label_dict), ("expected", expected)) if value
        ] + (["--pair"] if pair else [])),
    }
    with staged_folder(out_dir, overwrite=overwrite) as stage:
        model.save_pretrained(stage)
        tokenizer.save_pretrained(stage)
        reloaded = model_class.from_pretrained(stage).eval()
        record["forward_check"] = _forward_check(model, reloaded, tokenizer)
        if expected is not None:
            record["parity"] = parity_check(reloaded, expected, atol=atol)
            if not record["parity"]["ok"]:
                raise ConversionError(f"{original}: converted outputs differ from {expected}: {record['parity']}")
        atomic_write_json(stage / "conversion.json", record)
        from zoo.verification import write_record
        write_record(stage, original=original, converter=__file__, variant=variant)  # verification/ (zoo verify)
        write_card(stage, variant=variant, repo_id=out_dir.name)
    return record


def _forward_check(model: torch.nn.Module, reloaded: torch.nn.Module, tokenizer: Any) -> dict[str, Any]:
    """The reloaded folder reproduces the in-memory model on a two-note input."""
    ids = torch.tensor([tokenizer.octuples_to_ids([(0, 0, 0, 60, 8, 20, 9, 31), (0, 8, 0, 64, 8, 20, 9, 31)])])
    with torch.no_grad():
        before, after = model(ids).logits, reloaded(ids).logits
    diff = float((before - after).abs().max())
    same_weights = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))
    if not same_weights or not torch.isfinite(after).all() or diff > 1e-6:
        raise ConversionError(f"reloaded model differs from the converted one (max abs diff {diff})")
    return {"input_shape": list(ids.shape), "max_abs_diff": diff, "weights_identical": same_weights, "ok": True}


def parity_check(model: torch.nn.Module, expected: str | Path, atol: float = 1e-5) -> dict[str, Any]:
    """Compare a converted model with outputs the original code produced for the same `input_ids`."""
    from safetensors.torch import load_file

    reference = load_file(str(expected))
    with torch.no_grad():
        base = model.musicbert(reference["input_ids"])
        got = {"features": base.last_hidden_state, "compound_hidden": base.octuple_hidden_state}
        if hasattr(model, "lm_head"):
            got["mlm_logits"] = model.lm_head(base.last_hidden_state)
        else:
            got["classification_logits"] = model.classifier(base.last_hidden_state)
    result: dict[str, Any] = {"atol": atol, "max_abs_diff": {}}
    for name, tensor in got.items():
        if name in reference:
            result["max_abs_diff"][name] = float((tensor - reference[name]).abs().max())
    result["ok"] = bool(result["max_abs_diff"]) and all(v <= atol for v in result["max_abs_diff"].values())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("original", help="original fairseq checkpoint (.pt)")
    parser.add_argument("out_dir", help="folder to write (config.json, model.safetensors, dict.txt, README.md)")
    parser.add_argument("--variant", help="registry variant name, for the card (e.g. musicbert_base)")
    parser.add_argument("--head-name", help="classification head to convert when there are several")
    parser.add_argument("--pair", action="store_true", help="convert the head as a pair (melody completion) head")
    parser.add_argument("--label-dict", help="fairseq label dictionary of a fine-tuned head")
    parser.add_argument("--expected", help="safetensors with the original's outputs to check parity against")
    parser.add_argument("--overwrite", action="store_true")
    options = parser.parse_args(argv)
    try:
        record = convert(
            options.original, options.out_dir, variant=options.variant, head_name=options.head_name,
            pair=options.pair, label_dict=options.label_dict, expected=options.expected, overwrite=options.overwrite,
        )
    except (ConversionError, CheckpointReadError, FileNotFoundError, FileExistsError) as err:
        print(f"convert_musicbert: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: record[k] for k in ("architecture", "forward_check", "parity") if k in record}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
