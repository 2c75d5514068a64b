"""Convert a DMP checkpoint written by fairseq-train (microsoft/DVMP, task `dmp` or `graph_sp`) to a zoo folder.

    python conversion/convert_dmp.py checkpoint_best.pt converted/dmp --variant dmp_base

Pre-training checkpoints become `DmpForPreTraining`; checkpoints with a classification head (fine-tuning,
task `graph_sp`) become `DmpForSequenceClassification`, whose folder leaves out the pre-training heads.
The checkpoint is read with the restricted unpickler (no fairseq needed, no code executed).
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from conversion.safe_checkpoint import CheckpointReadError, read_checkpoint
from zoo.fileio import atomic_write_json, sha256_file, staged_folder
from zoo.models.dmp import (
    DmpConfig,
    DmpDataCollator,
    DmpFeaturizer,
    DmpForPreTraining,
    DmpForSequenceClassification,
    DmpProcessor,
    DmpTokenizer,
)

__all__ = ["ConversionError", "config_from_fairseq", "convert", "convert_state_dict", "main"]

# original key pattern -> zoo key template (applied after the head prefix is chosen)
_KEY_TABLE: list[tuple[str, str]] = [
    (r"encoder0\.sentence_encoder\.embed_tokens\.weight", "dmp.embed_tokens.weight"),
    (r"encoder0\.sentence_encoder\.embed_positions\.weight", "dmp.embed_positions.weight"),
    (r"encoder0\.sentence_encoder\.layernorm_embedding\.(weight|bias)", r"dmp.layernorm_embedding.\1"),
    (
        r"encoder0\.sentence_encoder\.layers\.(\d+)\.(self_attn\.[qkv]_proj|self_attn\.out_proj|self_attn_layer_norm"
        r"|fc1|fc2|final_layer_norm)\.(weight|bias)",
        r"dmp.layers.\1.\2.\3",
    ),
    (r"encoder1\.atom_encoder\.atom_embedding_list\.(\d+)\.weight", r"dmp.gnn.atom_encoder.embeddings.\1.weight"),
    (r"encoder1\.gcns\.(\d+)\.aggrmlp\.(weight|bias)", r"dmp.gnn.layers.\1.aggregate_proj.\2"),
    (r"encoder1\.gcns\.(\d+)\.mlp\.(weight|bias)", r"dmp.gnn.layers.\1.mlp.\2"),
    (
        r"encoder1\.gcns\.(\d+)\.edge_encoder\.atom_embedding_list\.(\d+)\.weight",
        r"dmp.gnn.layers.\1.edge_encoder.embeddings.\2.weight",
    ),
    (r"encoder1\.norms\.(\d+)\.(weight|bias|running_mean|running_var|num_batches_tracked)", r"dmp.gnn.norms.\1.\2"),
]
_PRETRAINING_TABLE: list[tuple[str, str]] = [
    (r"encoder0\.lm_head\.(dense|layer_norm)\.(weight|bias)", r"lm_head.\1.\2"),
    (r"encoder0\.lm_head\.bias", "lm_head.bias"),
    (r"encoder1\.atom_head\.dense\.(weight|bias)", r"atom_head.dense.\1"),
    (r"encoder1\.atom_head\.norm\.(weight|bias|running_mean|running_var|num_batches_tracked)", r"atom_head.norm.\1"),
    (r"encoder1\.atom_head\.bias", "atom_head.bias"),
    (r"(projection|prediction)_heads\.(\d)\.mlps\.(\d+)\.(weight|bias)", r"\1_heads.\2.layers.\3.\4"),
    (
        r"(projection|prediction)_heads\.(\d)\.bns\.(\d+)\.(weight|bias|running_mean|running_var|num_batches_tracked)",
        r"\1_heads.\2.norms.\3.\4",
    ),
]
_CLASSIFIER_TABLE: list[tuple[str, str]] = [
    (r"classification_heads\.[^.]+\.(dense|dense1|out_proj)\.(weight|bias)", r"classifier.\1.\2"),
]
# the output matrices of the MLM and atom heads are the input embeddings in the original (tied tensors)
_TIED = {
    "encoder0.lm_head.weight": "encoder0.sentence_encoder.embed_tokens.weight",
    "encoder1.atom_head.weight": "encoder1.atom_encoder.atom_embedding_list.0.weight",
}
_BOOKKEEPING = re.compile(r"encoder0\.sentence_encoder\.version")
# pre-training-only parts a property-prediction model does not use (the original keeps them in memory unused)
_PRETRAINING_ONLY = re.compile(r"encoder0\.lm_head\.|encoder1\.atom_head\.|projection_heads\.|prediction_heads\.")

_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "tanh": "tanh", "linear": "linear", "gelu_accurate": "gelu_pytorch_tanh"}
_REQUIRED = {  # original option -> value this implementation reproduces
    "encoder_normalize_before": False, "encoder_learned_pos": True, "layernorm_embedding": True,
    "no_scale_embedding": True, "datatype": "tg", "gnn_aggr": "maxminmean", "gnn_norm": "batch",
    "gnn_activation_fn": "relu", "conv_encode_edge": True, "use_bottleneck_head": True,
    "untie_weights_roberta": False, "spectral_norm_classification_head": False, "adaptive_input": False,
    "no_token_positional_embeddings": False,
}


class ConversionError(ValueError):
    """The checkpoint cannot be converted faithfully (unknown keys, missing keys, unsupported options)."""


def _model_options(checkpoint: dict[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    cfg = checkpoint.get("cfg")
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
        return dict(cfg["model"]), dict(cfg.get("task") or {})
    args = checkpoint.get("args")
    if isinstance(args, dict):
        return dict(args), dict(args)
    raise ConversionError(f"{path}: neither cfg['model'] nor args found; is this a fairseq-train checkpoint?")


def config_from_fairseq(model_cfg: dict[str, Any], task_cfg: dict[str, Any], state: dict[str, torch.Tensor]) -> DmpConfig:
    """A DmpConfig from the original option names (checked against the tensor shapes by the caller)."""
    arch = model_cfg.get("_name", model_cfg.get("arch"))
    if arch not in (None, "dmp"):
        raise ConversionError(f"architecture {arch!r} is not DMP ('dmp')")
    unsupported = {k: model_cfg[k] for k, v in _REQUIRED.items() if k in model_cfg and model_cfg[k] != v}
    for key in ("quant_noise_pq", "quant_noise_scalar"):
        if model_cfg.get(key, 0):
            unsupported[key] = model_cfg[key]
    if unsupported:
        raise ConversionError(f"unsupported original options (zoo reproduces {_REQUIRED}): {unsupported}")
    activation = model_cfg.get("activation_fn", "gelu")
    if activation not in _ACTIVATIONS:
        raise ConversionError(f"unsupported activation_fn {activation!r}")
    heads = {k.split(".")[1] for k in state if k.startswith("classification_heads.")}
    if len(heads) > 1:
        raise ConversionError(f"the checkpoint holds several classification heads {sorted(heads)}; zoo keeps one")
    kwargs: dict[str, Any] = {}
    if heads:
        head = heads.pop()
        kwargs["num_labels"] = state[f"classification_heads.{head}.out_proj.weight"].shape[0]
        if task_cfg.get("regression_target"):
            kwargs["problem_type"] = "regression"
        elif kwargs["num_labels"] > 1:
            kwargs["problem_type"] = "single_label_classification"
    return DmpConfig(
        vocab_size=state["encoder0.sentence_encoder.embed_tokens.weight"].shape[0],
        hidden_size=model_cfg["encoder_embed_dim"],
        num_hidden_layers=model_cfg["encoder_layers"],
        num_attention_heads=model_cfg["encoder_attention_heads"],
        intermediate_size=model_cfg["encoder_ffn_embed_dim"],
        hidden_act=_ACTIVATIONS[activation],
        hidden_dropout_prob=model_cfg.get("dropout", 0.1),
        attention_probs_dropout_prob=model_cfg.get("attention_dropout", 0.0),
        activation_dropout=model_cfg.get("activation_dropout", 0.0) or model_cfg.get("relu_dropout", 0.0),
        max_position_embeddings=state["encoder0.sentence_encoder.embed_positions.weight"].shape[0],
        gnn_num_layers=model_cfg["gnn_number_layer"],
        gnn_hidden_size=model_cfg["gnn_embed_dim"],
        gnn_dropout=model_cfg.get("gnn_dropout", 0.1),
        projection_ratio=float(model_cfg.get("bottleneck_ratio", 1.0)),
        projection_layers=int(model_cfg.get("bottleneck_layer", 2)),
        coeff_transformer=float(model_cfg.get("coeff0", 1.0)),
        coeff_gnn=float(model_cfg.get("coeff1", 1.0)),
        use_dropnet=float(model_cfg.get("use_dropnet", 0.0)),
        classifier_activation=model_cfg.get("pooler_activation_fn", "tanh"),
        classifier_dropout=model_cfg.get("pooler_dropout", 0.0),
        gradient_multiplier=0.1 if model_cfg.get("gradmultiply") else 1.0,
        gnn_gradient_multiplier=float(model_cfg.get("gradmultiply_gnn", 1.0)),
        **kwargs,
    )


def _rename(key: str, table: list[tuple[str, str]]) -> str | None:
    for pattern, template in table:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, template, key)
    return None


def convert_state_dict(
    state: dict[str, torch.Tensor], model: torch.nn.Module
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map original keys onto `model`'s; returns (new state dict, original keys deliberately dropped).

    Raises ConversionError naming unknown original keys, unfilled model keys, shape mismatches and
    tied tensors that differ.
    """
    classification = isinstance(model, DmpForSequenceClassification)
    table = _KEY_TABLE + (_CLASSIFIER_TABLE if classification else _PRETRAINING_TABLE)
    converted, dropped, unknown = {}, [], []
    for key, tensor in state.items():
        if key in _TIED:
            if not torch.equal(tensor, state[_TIED[key]]):
                raise ConversionError(f"{key} differs from {_TIED[key]}; zoo ties them as the original does")
            dropped.append(key)
            continue
        if _BOOKKEEPING.fullmatch(key) or (classification and _PRETRAINING_ONLY.match(key)):
            dropped.append(key)
            continue
        if not classification and key.startswith("classification_heads."):
            dropped.append(key)
            continue
        new_key = _rename(key, table)
        if new_key is None:
            unknown.append(key)
        else:
            converted[new_key] = tensor
    if unknown:
        raise ConversionError(f"original keys with no place in the zoo model: {unknown}")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    if missing:
        raise ConversionError(f"model keys the checkpoint does not fill: {missing}")
    extra = sorted(set(converted) - set(expected))
    if extra:
        raise ConversionError(f"converted keys the model does not have (config mismatch?): {extra}")
    wrong = {k: (tuple(v.shape), tuple(expected[k].shape)) for k, v in converted.items() if v.shape != expected[k].shape}
    if wrong:
        raise ConversionError(f"shape mismatches (checkpoint, model): {wrong}")
    return {k: v.to(expected[k].dtype) for k, v in converted.items()}, dropped


_CHECK_SMILES = ["CC(=O)Oc1ccccc1C(=O)O", "C[N+](C)(C)CCOC(C)=O.[Cl-]", "O=C(O)C[C@H](N)C(=O)O"]


def _forward_check(model, folder: Path) -> dict[str, Any]:
    """Reload the written folder and compare its outputs with the in-memory converted model."""
    tokenizer = DmpTokenizer.from_pretrained(folder)
    batch = DmpDataCollator()(DmpFeaturizer().encode_molecules(_CHECK_SMILES, tokenizer))
    reloaded = type(model).from_pretrained(folder).eval()
    model.eval()
    with torch.no_grad():
        before, after = model(**batch), reloaded(**batch)
    field = "logits" if isinstance(model, DmpForSequenceClassification) else "sequence_projection"
    diff = float((before[field] - after[field]).abs().max())
    if diff != 0.0:
        raise ConversionError(f"the reloaded folder gives different {field} (max abs diff {diff})")
    return {"smiles": _CHECK_SMILES, "output": field, "max_abs_diff_after_reload": diff,
            "finite": bool(torch.isfinite(after[field]).all())}


def convert(
    original: str | Path,
    out_dir: str | Path,
    *,
    variant: str | None = None,
    overwrite: bool = False,
    command: str | None = None,
) -> Path:
    """Convert `original` into a complete zoo folder at `out_dir`; returns the folder.

        convert("checkpoint_best.pt", "converted/dmp_bbbp", variant="dmp_base_molecule_cls")
    """
    original = Path(original)
    checkpoint = read_checkpoint(original)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise CheckpointReadError(f"{original}: no 'model' state dict; not a fairseq-train checkpoint")
    state = {k: v for k, v in checkpoint["model"].items()}
    non_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if non_tensors:
        raise ConversionError(f"{original}: non-tensor entries in the state dict: {non_tensors}")
    model_cfg, task_cfg = _model_options(checkpoint, original)
    config = config_from_fairseq(model_cfg, task_cfg, state)
    head_class = DmpForSequenceClassification if any(k.startswith("classification_heads.") for k in state) \
        else DmpForPreTraining
    if variant is not None:
        from zoo.registry import model_info

        entry = model_info(variant)
        if entry.architecture != head_class.__name__:
            raise ConversionError(
                f"{original} holds a {head_class.__name__} checkpoint but variant {variant} is a {entry.architecture}"
            )
    model = head_class(config).eval()
    converted, dropped = convert_state_dict(state, model)
    model.load_state_dict(converted, strict=True)
    tokenizer = DmpTokenizer()
    with staged_folder(out_dir, overwrite=overwrite) as stage:
        model.save_pretrained(stage)
        DmpProcessor(tokenizer).save_pretrained(stage)  # tokenizer files + the SMILES -> batch processor
        record = {
            "source_file": original.name, "source_sha256": sha256_file(original), "format": "fairseq-train (DVMP)",
            "variant": variant, "command": command or f"convert({str(original)!r}, {str(out_dir)!r})",
            "architecture": head_class.__name__, "original_task": task_cfg.get("_name"),
            "dropped_original_keys": dropped, "converted_keys": len(converted),
        }
        record["forward_check"] = _forward_check(model, stage)
        atomic_write_json(stage / "conversion.json", record)
        from zoo.hub import write_card
        from zoo.verification import write_record
        write_record(stage, original=original, converter=__file__, variant=variant)  # verification/ (zoo verify)
        write_card(stage, variant=variant, repo_id=Path(out_dir).name)
    return Path(out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("original", help="fairseq-train checkpoint (.pt) of microsoft/DVMP")
    parser.add_argument("out_dir", help="folder to write (config.json, model.safetensors, dict.txt, README.md)")
    parser.add_argument("--variant", help="registry variant the checkpoint belongs to (for the card)")
    parser.add_argument("--overwrite", action="store_true", help="replace out_dir if it exists")
    args = parser.parse_args(argv)
    command = "python conversion/convert_dmp.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    try:
        folder = convert(args.original, args.out_dir, variant=args.variant, overwrite=args.overwrite, command=command)
    except (ConversionError, CheckpointReadError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
