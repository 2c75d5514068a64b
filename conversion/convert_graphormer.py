"""Convert an original Graphormer checkpoint to a zoo folder.

Reads a fairseq checkpoint (`checkpoint_best_pcqm4mv2.pt`, the released files; float16 tensors become
float32 by default) or a transformers-4.x folder (config.json + pytorch_model.bin or model.safetensors,
e.g. clefourrier/graphormer-base-pcqm4mv2), maps the keys with an explicit table, and writes config.json,
model.safetensors, the featurizer config, conversion.json and the model card. The written folder is
reloaded and run before it replaces OUT_DIR.

    python conversion/convert_graphormer.py checkpoint_best_pcqm4mv2.pt converted/pcqm4mv2 \
        --variant graphormer_base_pcqm4mv2
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conversion.safe_checkpoint import CheckpointReadError, read_checkpoint, read_state_dict  # noqa: E402

__all__ = ["CRITERION_HEADS", "ConversionError", "convert", "main", "map_state_dict", "original_criterion", "read_original"]

# fairseq argument names (cfg["model"]) that define the architecture; read into GraphormerConfig
FAIRSEQ_ARGS = (
    "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads", "dropout",
    "attention_dropout", "act_dropout", "activation_fn", "encoder_normalize_before", "pre_layernorm",
    "apply_graphormer_init", "num_classes", "num_atoms", "num_edges", "num_in_degree", "num_out_degree",
    "num_spatial", "num_edge_dis", "edge_type", "multi_hop_max_dist", "spatial_pos_max", "max_nodes",
    "share_encoder_input_output_embed",
)

# (original prefix, zoo prefix); None drops the key on purpose (documented in the card).
FAIRSEQ_KEYS = (
    ("encoder.graph_encoder.", "graphormer.graph_encoder."),
    ("encoder.lm_head_transform_weight.", "head.lm_head_transform_weight."),
    ("encoder.layer_norm.", "head.layer_norm."),
    ("encoder.embed_out.weight", "head.embed_out.weight"),
    ("encoder.lm_output_learned_bias", "head.lm_output_learned_bias"),
    ("encoder.masked_lm_pooler.", None),  # built by the original, never used in its forward
)
HF4X_KEYS = (
    ("encoder.graph_encoder.", "graphormer.graph_encoder."),
    ("encoder.lm_head_transform_weight.", "head.lm_head_transform_weight."),
    ("encoder.layer_norm.", "head.layer_norm."),
    ("classifier.classifier.weight", "head.embed_out.weight"),
    ("classifier.lm_output_learned_bias", "head.lm_output_learned_bias"),
)
HEADS = {"regression": "GraphormerForGraphRegression", "classification": "GraphormerForGraphClassification",
         "none": "GraphormerModel"}
CHECK_SMILES = ("CC(=O)Oc1ccccc1C(=O)O", "C[N+](C)(C)CC(=O)[O-]", "[Na+].[Cl-]", "O", "C1=CCCCC1")


class ConversionError(ValueError):
    """The original checkpoint does not fit the target model (keys, shapes, configuration)."""


# microsoft/Graphormer's criteria (graphormer/criterions) -> the head whose loss is theirs
CRITERION_HEADS = {
    "l1_loss": "regression", "l1_loss_with_flag": "regression",
    "binary_logloss": "classification", "binary_logloss_with_flag": "classification",
    "multiclass_cross_entropy": "classification", "multiclass_cross_entropy_with_flag": "classification",
}


def original_criterion(path: str | Path) -> str | None:
    """The criterion a fairseq checkpoint was trained with (cfg.criterion._name or args.criterion), else None."""
    path = Path(path)
    if path.is_dir():
        return None
    checkpoint = read_checkpoint(path)
    cfg = checkpoint.get("cfg") if isinstance(checkpoint, dict) else None
    criterion = cfg.get("criterion") if isinstance(cfg, dict) else None
    if isinstance(criterion, dict) and criterion.get("_name"):
        return str(criterion["_name"])
    args = checkpoint.get("args") if isinstance(checkpoint, dict) else None
    return str(args["criterion"]) if isinstance(args, dict) and args.get("criterion") else None


def read_original(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """(state dict, config kwargs for GraphormerConfig, format) of a fairseq file or transformers-4.x folder."""
    path = Path(path)
    if path.is_dir():
        config_path = path / "config.json"
        if not config_path.is_file():
            raise ConversionError(f"{path}: a transformers-4.x folder needs config.json")
        config = json.loads(config_path.read_text())
        if config.get("model_type") != "graphormer":
            raise ConversionError(f"{config_path}: model_type is {config.get('model_type')!r}, not 'graphormer'")
        weights = [path / name for name in ("model.safetensors", "pytorch_model.bin") if (path / name).is_file()]
        if not weights:
            raise ConversionError(f"{path}: no model.safetensors or pytorch_model.bin")
        if weights[0].suffix == ".safetensors":
            from safetensors.torch import load_file

            state_dict = load_file(weights[0])
        else:
            state_dict = read_state_dict(weights[0])
        if not any(key.startswith(("encoder.", "classifier.")) for key in state_dict):  # a bare GraphormerModel
            state_dict = {f"encoder.{key}": value for key, value in state_dict.items()}
        ignored = {"model_type", "transformers_version", "architectures", "torch_dtype", "dtype", "auto_map"}
        return dict(state_dict), {k: v for k, v in config.items() if k not in ignored}, "transformers-4.x"
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ConversionError(f"{path}: not a fairseq checkpoint (no 'model' state dict)")
    cfg = checkpoint.get("cfg") or {}
    args = cfg.get("model") if isinstance(cfg, dict) else None
    if not args:
        args = checkpoint.get("args")
    if not isinstance(args, dict):
        raise ConversionError(f"{path}: no model arguments (cfg['model'] or args) to build the configuration from")
    missing = [name for name in FAIRSEQ_ARGS[:4] if name not in args]
    if missing:
        raise ConversionError(f"{path}: model arguments lack {missing}")
    config = {name: args[name] for name in FAIRSEQ_ARGS if name in args}
    return dict(checkpoint["model"]), config, "fairseq"


def map_state_dict(
    original: dict[str, torch.Tensor], table: tuple[tuple[str, str | None], ...], expected: dict[str, torch.Tensor],
    dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    """Rename keys by the table; every original key must be used and every model key filled, shapes equal."""
    converted: dict[str, torch.Tensor] = {}
    unused = []
    for key, tensor in original.items():
        for source, target in table:
            if key == source or (source.endswith(".") and key.startswith(source)):
                if target is not None:
                    converted[target + key[len(source):] if source.endswith(".") else target] = tensor
                break
        else:
            unused.append(key)
    unused += [key for key in converted if key not in expected]
    missing = [key for key in expected if key not in converted]
    if unused or missing:
        raise ConversionError(
            "checkpoint keys do not match the model: "
            + (f"original keys not used: {sorted(unused)}; " if unused else "")
            + (f"model keys not filled: {sorted(missing)}" if missing else "")
        )
    wrong = [f"{k}: {tuple(v.shape)} vs model {tuple(expected[k].shape)}" for k, v in converted.items()
             if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        raise ConversionError(f"tensor shapes differ: {wrong}")
    return {key: tensor.to(dtype).contiguous() for key, tensor in converted.items()}


def _check_batch(featurizer, config) -> tuple[dict[str, torch.Tensor], list[str]]:
    try:
        return dict(featurizer(list(CHECK_SMILES))), list(CHECK_SMILES)
    except ImportError:  # rdkit missing: the catalogue's synthetic graphs still exercise the model
        from zoo.catalog.graphormer import dummy_inputs

        return dummy_inputs(config, None), ["synthetic ring (6 atoms)", "synthetic chain (4 atoms)"]


def _forward(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        out = model(**batch)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def convert(
    original: str | Path,
    out_dir: str | Path,
    *,
    variant: str | None = None,
    head: str | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
    command: str | None = None,
) -> Path:
    """Convert and write a zoo folder; returns its path. `head`: regression, classification or none."""
    import zoo  # noqa: F401  (registers the Auto classes)
    from zoo.fileio import atomic_write_json, sha256_file, staged_folder
    from zoo.hub import write_card
    from zoo.models.graphormer import GraphormerConfig, GraphormerFeaturizer, modeling_graphormer
    from zoo.registry import model_info

    original = Path(original)
    if not original.exists():
        raise FileNotFoundError(f"original checkpoint {original} does not exist")
    state_dict, config_kwargs, fmt = read_original(original)
    entry = model_info(variant) if variant else None
    if head is None and entry:
        head = {v: k for k, v in HEADS.items()}[entry.architecture]
    elif head is None and fmt == "fairseq":  # the head whose loss the checkpoint was trained with
        criterion = original_criterion(original)
        if criterion not in CRITERION_HEADS:
            raise ConversionError(f"{original}: trained with criterion {criterion!r}, not one of "
                                  f"{sorted(CRITERION_HEADS)}; choose the head (--head)")
        head = CRITERION_HEADS[criterion]
    elif head is None:
        head = "classification"  # transformers 4.x had GraphormerForGraphClassification only
    if head not in HEADS:
        raise ConversionError(f"head must be one of {sorted(HEADS)}, not {head!r}")
    config = GraphormerConfig(**config_kwargs)
    if entry:
        wrong = {k: (getattr(config, k), v) for k, v in entry.config.items()
                 if k not in ("dropout", "attention_dropout", "activation_dropout") and getattr(config, k) != v}
        if wrong:
            raise ConversionError(f"{original} does not match variant {variant}: (checkpoint, variant) {wrong}")
    model_class = getattr(modeling_graphormer, HEADS[head])
    with torch.device("meta"):
        expected = model_class(config).state_dict()
    table = FAIRSEQ_KEYS if fmt == "fairseq" else HF4X_KEYS
    if head == "none":
        table = tuple((src, dst) for src, dst in table if dst is None or dst.startswith("graphormer."))
        expected = {f"graphormer.{k}": v for k, v in expected.items()}
    weights = map_state_dict(state_dict, table, expected, getattr(torch, dtype))
    if head == "none":
        weights = {k[len("graphormer."):]: v for k, v in weights.items()}
    model = model_class(config)
    model.load_state_dict(weights, strict=True)
    model = model.to(getattr(torch, dtype)).eval()
    featurizer = GraphormerFeaturizer(
        multi_hop_max_dist=config.multi_hop_max_dist, spatial_pos_max=config.spatial_pos_max, max_nodes=config.max_nodes
    )
    batch, molecules = _check_batch(featurizer, config)
    before = _forward(model, batch)
    out_dir = Path(out_dir)
    with staged_folder(out_dir, overwrite=overwrite) as stage:
        model.save_pretrained(stage)
        featurizer.save_pretrained(stage)
        reloaded = model_class.from_pretrained(stage, dtype=getattr(torch, dtype)).eval()
        after = _forward(reloaded, batch)
        diff = float((after - before).abs().max())
        if diff > 0:
            raise ConversionError(f"the reloaded folder gives different outputs (max |diff| {diff})")
        atomic_write_json(stage / "conversion.json", {
            "source": str(original), "source_file": original.name,
            "source_sha256": sha256_file(original) if original.is_file() else {
                p.name: sha256_file(p) for p in sorted(original.iterdir()) if p.is_file()},
            "format": fmt, "variant": variant, "head": HEADS[head], "dtype": dtype,
            "original_dtypes": sorted({str(t.dtype).removeprefix("torch.") for t in state_dict.values()}),
            "dropped_keys": sorted(k for k in state_dict if any(k.startswith(s) for s, d in table if d is None)),
            "command": command or f"python conversion/convert_graphormer.py {original} {out_dir}",
            "forward_check": {"molecules": molecules, "reload_max_abs_diff": diff,
                              "outputs": after.reshape(after.shape[0], -1)[:, :4].tolist()},
        })
        from zoo.verification import write_record
        write_record(stage, original=original, converter=__file__, variant=variant)  # verification/ (zoo verify)
        write_card(stage, variant=variant, repo_id=out_dir.name)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("original", help="fairseq .pt file or transformers-4.x folder")
    parser.add_argument("out_dir")
    parser.add_argument("--variant", help="registry variant (zoo list graphormer*) the checkpoint is")
    parser.add_argument("--head", choices=sorted(HEADS), help="default: the variant's, else the one whose loss "
                        "the fairseq checkpoint's criterion is (l1_loss: regression, binary_logloss / "
                        "multiclass_cross_entropy: classification), or classification (transformers-4.x)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    command = "python conversion/convert_graphormer.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        out = convert(args.original, args.out_dir, variant=args.variant, head=args.head, dtype=args.dtype,
                      overwrite=args.overwrite, command=command)
    except (ConversionError, CheckpointReadError, FileNotFoundError, FileExistsError) as err:
        print(f"convert_graphormer: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
