"""Convert an original Graphormer-3D (fairseq `graphormer3d`, OC20 IS2RE) checkpoint into a zoo folder.

    python conversion/convert_graphormer3d.py checkpoint_last_oc20_is2re.pt converted/g3d \\
        --variant graphormer3d_base_oc20_is2re

Both pair kernels are handled: `gbf.*` keys (Gaussian kernel, original code since Feb 2022) and `rbf.*` keys
(the older RBF kernel the released OC20 checkpoint was trained with). float16 tensors are cast to float32.
The folder gets config.json, model.safetensors, preprocessor_config.json (the featurizer), conversion.json
and README.md; it is then reloaded and run on a built-in slab + adsorbate system (or on a reference case with
`--reference-dir`, whose outputs it must reproduce).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from conversion.safe_checkpoint import CheckpointReadError, read_checkpoint

# Original fairseq argument -> Graphormer3DConfig field.
ARG_TABLE = {
    "layers": "num_layers",
    "blocks": "num_blocks",
    "embed_dim": "hidden_size",
    "ffn_embed_dim": "intermediate_size",
    "attention_heads": "num_attention_heads",
    "num_kernel": "num_kernels",
    "input_dropout": "input_dropout",
    "dropout": "dropout",
    "attention_dropout": "attention_dropout",
    "activation_dropout": "activation_dropout",
    "node_loss_weight": "node_loss_weight",
    "min_node_loss_weight": "min_node_loss_weight",
}

# Original key pattern -> our key (the misspelt `engergy_proj` / `energe_agg_factor` are the original's).
KEY_TABLE = [
    (r"atom_encoder\.weight", "graphormer3d.atom_embedding.weight"),
    (r"tag_encoder\.weight", "graphormer3d.tag_embedding.weight"),
    (r"gbf\.means\.weight", "graphormer3d.pair_kernel.means"),
    (r"gbf\.stds\.weight", "graphormer3d.pair_kernel.widths"),
    (r"gbf\.mul\.weight", "graphormer3d.pair_kernel.pair_scale.weight"),
    (r"gbf\.bias\.weight", "graphormer3d.pair_kernel.pair_shift.weight"),
    (r"rbf\.means", "graphormer3d.pair_kernel.means"),
    (r"rbf\.temps", "graphormer3d.pair_kernel.widths"),
    (r"rbf\.mul\.weight", "graphormer3d.pair_kernel.pair_scale.weight"),
    (r"rbf\.bias\.weight", "graphormer3d.pair_kernel.pair_shift.weight"),
    (r"edge_proj\.(weight|bias)", r"graphormer3d.pair_feature_proj.\1"),
    (r"bias_proj\.layer([12])\.(weight|bias)", r"graphormer3d.attention_bias_proj.fc\1.\2"),
    (r"layers\.(\d+)\.self_attn\.in_proj\.(weight|bias)", r"graphormer3d.layers.\1.attention.qkv_proj.\2"),
    (r"layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)", r"graphormer3d.layers.\1.attention.out_proj.\2"),
    (r"layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"graphormer3d.layers.\1.attention_norm.\2"),
    (r"layers\.(\d+)\.fc([12])\.(weight|bias)", r"graphormer3d.layers.\1.fc\2.\3"),
    (r"layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"graphormer3d.layers.\1.ffn_norm.\2"),
    (r"final_ln\.(weight|bias)", r"graphormer3d.final_norm.\1"),
    (r"engergy_proj\.layer([12])\.(weight|bias)", r"energy_head.proj.fc\1.\2"),
    (r"energe_agg_factor\.weight", "energy_head.tag_weight.weight"),
    (r"node_proc\.([qkv])_proj\.(weight|bias)", r"node_head.\1_proj.\2"),
    (r"node_proc\.force_proj1\.(weight|bias)", r"node_head.proj_x.\1"),
    (r"node_proc\.force_proj2\.(weight|bias)", r"node_head.proj_y.\1"),
    (r"node_proc\.force_proj3\.(weight|bias)", r"node_head.proj_z.\1"),
]


class ConversionError(ValueError):
    """The original checkpoint does not fit the Graphormer-3D layout."""


def pair_kernel_of(state_dict: dict[str, torch.Tensor]) -> str:
    """ "gaussian" for `gbf.*` keys, "rbf" for `rbf.*` keys; an error if neither or both are present."""
    has_gbf = any(k.startswith("gbf.") for k in state_dict)
    has_rbf = any(k.startswith("rbf.") for k in state_dict)
    if has_gbf == has_rbf:
        found = "both gbf.* and rbf.*" if has_gbf else "neither gbf.* nor rbf.*"
        raise ConversionError(f"cannot tell the pair kernel: the state dict has {found} keys")
    return "rbf" if has_rbf else "gaussian"


def config_from_checkpoint(checkpoint: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Graphormer3DConfig keyword arguments from the checkpoint's `cfg["model"]` (or legacy `args`)."""
    cfg = checkpoint.get("cfg") or {}
    args = cfg.get("model") if isinstance(cfg, dict) else None
    if not isinstance(args, dict):
        args = checkpoint.get("args")
    if not isinstance(args, dict):
        raise ConversionError(
            "the checkpoint has neither cfg['model'] nor args with the model hyper-parameters"
        )
    missing = [
        name
        for name in ("layers", "blocks", "embed_dim", "attention_heads", "num_kernel")
        if name not in args
    ]
    if missing:
        raise ConversionError(f"the checkpoint's model arguments lack {missing}")
    kwargs = {ours: args[theirs] for theirs, ours in ARG_TABLE.items() if args.get(theirs) is not None}
    kwargs["pair_kernel"] = pair_kernel_of(state_dict)
    kwargs["num_atom_types"] = int(state_dict["atom_encoder.weight"].shape[0])
    kwargs["num_tags"] = int(state_dict["tag_encoder.weight"].shape[0])
    return kwargs


def rename_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Apply KEY_TABLE; kernel means/widths are stored [1, K] (Gaussian) or [K] (RBF) and become [K].

    An original key that no rule covers is an error naming it.
    """
    renamed: dict[str, torch.Tensor] = {}
    unused = []
    for key, tensor in state_dict.items():
        for pattern, target in KEY_TABLE:
            if re.fullmatch(pattern, key):
                new_key = re.sub(pattern, target, key)
                if new_key.endswith(("pair_kernel.means", "pair_kernel.widths")):
                    tensor = tensor.reshape(-1)
                renamed[new_key] = tensor.float()
                break
        else:
            unused.append(key)
    if unused:
        raise ConversionError(f"original keys with no place in Graphormer3DForIS2RE: {unused}")
    return renamed


def load_original(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The checkpoint dict and its model state dict (read with the safe reader)."""
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise ConversionError(f"{path}: not a fairseq checkpoint (no 'model' state dict)")
    state_dict = dict(checkpoint["model"])
    if "atom_encoder.weight" not in state_dict or "tag_encoder.weight" not in state_dict:
        raise ConversionError(
            f"{path}: no atom_encoder/tag_encoder weights; is this a Graphormer-3D checkpoint?"
        )
    return checkpoint, state_dict


def build_model(path: str | Path):
    """The zoo model holding the original weights (strict: every key used, every parameter filled)."""
    from zoo.models.graphormer3d import Graphormer3DConfig, Graphormer3DForIS2RE

    checkpoint, state_dict = load_original(path)
    config = Graphormer3DConfig(**config_from_checkpoint(checkpoint, state_dict))
    model = Graphormer3DForIS2RE(config)
    renamed = rename_state_dict(state_dict)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(renamed))
    extra = sorted(set(renamed) - set(expected))
    if missing or extra:
        raise ConversionError(f"key mismatch: model parameters not filled {missing}; unexpected {extra}")
    wrong = [
        f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in renamed.items()
        if v.shape != expected[k].shape
    ]
    if wrong:
        raise ConversionError(f"shape mismatch (checkpoint vs model): {wrong}")
    model.load_state_dict(renamed, strict=True)
    return model.eval(), checkpoint


def reference_check(model, reference_dir: Path) -> dict[str, Any]:
    """Compare energy and node outputs with a fixture case (inputs.safetensors / expected.safetensors)."""
    from safetensors.torch import load_file

    inputs = load_file(str(reference_dir / "inputs.safetensors"))
    expected = load_file(str(reference_dir / "expected.safetensors"))
    with torch.no_grad():
        out = model(
            atom_ids=inputs["atoms"],
            tags=inputs["tags"],
            positions=inputs["pos"],
            real_mask=inputs["real_mask"],
        )
    atoms = inputs["atoms"].ne(0).unsqueeze(-1)
    energy_err = (out.energy - expected["energy"]).abs().max().item()
    node_err = ((out.node_output - expected["node_output"]).abs() * atoms).max().item()
    passed = torch.allclose(out.energy, expected["energy"], atol=1e-5, rtol=1e-4) and torch.allclose(
        out.node_output * atoms, expected["node_output"] * atoms, atol=1e-5, rtol=1e-4
    )
    return {
        "kind": "reference",
        "reference": str(reference_dir),
        "max_abs_energy_error": energy_err,
        "max_abs_node_error": node_err,
        "passed": bool(passed),
    }


def forward_check(folder: Path, reference_dir: Path | None) -> dict[str, Any]:
    """Reload the written folder through the Auto class and run it."""
    from transformers import AutoModelForSequenceClassification

    from zoo.models.graphormer3d.processing_graphormer3d import Graphormer3DFeaturizer, example_system

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    if reference_dir is not None:
        return reference_check(model, reference_dir)
    featurizer = Graphormer3DFeaturizer.from_pretrained(folder)
    with torch.no_grad():
        out = model(**featurizer([example_system()]))
    finite = bool(torch.isfinite(out.energy_ev).all() and torch.isfinite(out.delta_pos).all())
    return {
        "kind": "forward",
        "system": "example_system()",
        "energy_ev": out.energy_ev.tolist(),
        "passed": finite,
    }


def variant_differences(config, expected) -> list[str]:
    """Architecture fields where a converted config differs from the registry variant's."""
    fields = [
        "num_layers",
        "num_blocks",
        "hidden_size",
        "intermediate_size",
        "num_attention_heads",
        "num_kernels",
        "pair_kernel",
        "num_atom_types",
        "num_tags",
    ]
    return [
        f"{name}: checkpoint {getattr(config, name)!r}, variant {getattr(expected, name)!r}"
        for name in fields
        if getattr(config, name) != getattr(expected, name)
    ]


def convert(
    original: str | Path,
    out_dir: str | Path,
    *,
    variant: str | None = None,
    overwrite: bool = False,
    reference_dir: str | Path | None = None,
    command: str | None = None,
) -> Path:
    """Convert `original` into the zoo folder `out_dir` (written atomically) and return its path."""
    from zoo.fileio import atomic_write_json, sha256_file, staged_folder
    from zoo.hub import write_card
    from zoo.models.graphormer3d.processing_graphormer3d import Graphormer3DFeaturizer
    from zoo.registry import model_info

    original = Path(original)
    expected_config = None
    if variant is not None:
        from zoo.registry import build_config

        model_info(variant)
        expected_config = build_config(variant)
    model, checkpoint = build_model(original)
    differences = variant_differences(model.config, expected_config) if expected_config is not None else []
    if differences:
        print(f"warning: the checkpoint differs from variant {variant}: {differences}", file=sys.stderr)
    source_dtypes = sorted({str(t.dtype).replace("torch.", "") for t in checkpoint["model"].values()})
    reference = Path(reference_dir) if reference_dir is not None else None
    with staged_folder(out_dir, overwrite=overwrite) as stage:
        model.save_pretrained(stage)
        Graphormer3DFeaturizer().save_pretrained(stage)
        check = forward_check(stage, reference)
        if not check["passed"]:
            raise ConversionError(f"the converted model failed its check: {json.dumps(check)}")
        atomic_write_json(
            stage / "conversion.json",
            {
                "source_file": original.name,
                "source_sha256": sha256_file(original),
                "source_format": "fairseq",
                "source_dtypes": source_dtypes,
                "pair_kernel": model.config.pair_kernel,
                "variant": variant,
                "differences_from_variant": differences,
                "command": command
                or f"python conversion/convert_graphormer3d.py {original.name} OUT_DIR"
                + (f" --variant {variant}" if variant else ""),
                "check": check,
            },
        )
        from zoo.verification import write_record
        write_record(stage, original=original, converter=__file__, variant=variant)  # verification/ (zoo verify)
        write_card(stage, variant=variant, repo_id=Path(out_dir).name, extra={"pipeline_tag": "graph-ml"})
    return Path(out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("original", help="original fairseq checkpoint (.pt)")
    parser.add_argument("out_dir", help="folder to write (config.json, model.safetensors, ...)")
    parser.add_argument("--variant", help="registry name, e.g. graphormer3d_base_oc20_is2re (for the card)")
    parser.add_argument("--overwrite", action="store_true", help="replace out_dir if it exists")
    parser.add_argument(
        "--reference-dir", help="fixture case whose expected outputs the conversion must match"
    )
    args = parser.parse_args(argv)
    try:
        folder = convert(
            args.original,
            args.out_dir,
            variant=args.variant,
            overwrite=args.overwrite,
            reference_dir=args.reference_dir,
            command="python conversion/convert_graphormer3d.py " + shlex.join(argv or sys.argv[1:]),
        )
    except (ConversionError, CheckpointReadError, FileExistsError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.loads((folder / "conversion.json").read_text())["check"])
    print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
