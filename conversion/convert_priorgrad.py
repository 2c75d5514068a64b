"""Convert an original PriorGrad-vocoder learner checkpoint (`weights-<step>.pt`) to a zoo folder.

    python conversion/convert_priorgrad.py checkpoints/priorgrad/weights-3000000.pt out/priorgrad_ljspeech \
        --stats LJSpeech-1.1/stats_priorgrad --variant priorgrad_vocoder_ljspeech

The checkpoint is the dict `PriorGradLearner.save_to_checkpoint` writes (step, model, optimizer, params,
scaler). The network hyper-parameters come from its `params`; the prior's energy statistics from the
`stats_priorgrad/energy_{max,min}_train.npy` files the original computes over the training set.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

import zoo  # noqa: F401  (registers the family, needed to render the card)
from conversion.safe_checkpoint import CheckpointReadError, read_checkpoint
from zoo.fileio import atomic_write_json, sha256_file, staged_folder
from zoo.hub import CONVERSION_FILE, write_card
from zoo.models.priorgrad import (
    PriorGradConfig,
    PriorGradFeatureExtractor,
    PriorGradVocoder,
    load_energy_stats,
)

__all__ = ["ConversionError", "config_from_params", "convert", "key_table", "main"]

# Original params -> PriorGradConfig fields (same names); these must be present in the checkpoint.
REQUIRED_PARAMS = (
    "sample_rate", "n_mels", "n_fft", "hop_samples", "fmin", "fmax", "residual_layers", "residual_channels",
    "dilation_cycle_length", "noise_schedule",
)
# Present in the released params.py; older DiffWave-style params may lack them (the original defaults).
OPTIONAL_PARAMS = {
    "inference_noise_schedule": None, "use_prior": True, "condition_prior": False,
    "condition_prior_global": False, "std_min": 0.1, "max_energy_override": None, "use_l2loss": True,
    "crop_mel_frames": 62,
}
# Training-only params that do not shape the model.
TRAINING_PARAMS = ("batch_size", "learning_rate", "max_grad_norm")


class ConversionError(ValueError):
    """The checkpoint or statistics do not describe a PriorGrad vocoder this converter understands."""


def config_from_params(params: dict[str, Any], stats: dict[str, float] | None) -> PriorGradConfig:
    """A `PriorGradConfig` from the checkpoint's `params` dict and the energy statistics."""
    missing = [key for key in REQUIRED_PARAMS if key not in params]
    if missing:
        raise ConversionError(f"checkpoint params lack {missing}; is this a PriorGrad-vocoder learner checkpoint?")
    unknown = sorted(set(params) - set(REQUIRED_PARAMS) - set(OPTIONAL_PARAMS) - set(TRAINING_PARAMS))
    if unknown:
        raise ConversionError(f"checkpoint params has keys this converter does not know: {unknown}")
    values = {key: params[key] for key in REQUIRED_PARAMS}
    values.update({key: params.get(key, default) for key, default in OPTIONAL_PARAMS.items()})
    if values["use_prior"]:
        if stats is None:
            raise ConversionError(
                "use_prior=True: the prior needs the training-set energy statistics; pass --stats pointing at "
                "stats_priorgrad/ (energy_max_train.npy, energy_min_train.npy)"
            )
        values.update(energy_min=stats["energy_min"], energy_max=stats["energy_max"])
    try:
        return PriorGradConfig(**values)
    except ValueError as error:
        raise ConversionError(f"checkpoint params: {error}") from None


def key_table(config: PriorGradConfig) -> dict[str, str]:
    """Original state-dict key -> zoo key, for every weight the original PriorGrad module owns."""
    modules = ["input_projection", "diffusion_embedding.projection1", "diffusion_embedding.projection2",
               "spectrogram_upsampler.conv1", "spectrogram_upsampler.conv2", "skip_projection", "output_projection"]
    if config.condition_prior_global:
        modules += ["global_condition_upsampler.conv1", "global_condition_upsampler.conv2"]
    layer_parts = ["dilated_conv", "diffusion_projection", "conditioner_projection", "output_projection"]
    if config.condition_prior_global:
        layer_parts.append("conditioner_projection_global")
    modules += [f"residual_layers.{i}.{part}" for i in range(config.residual_layers) for part in layer_parts]
    return {
        f"{module}.{kind}": f"priorgrad.{module}.{kind}" for module in modules for kind in ("weight", "bias")
    }


def _map_state_dict(original: dict[str, Any], model: PriorGradVocoder) -> dict[str, torch.Tensor]:
    table = key_table(model.config)
    # The step table is a non-persistent buffer; some torch versions wrote it anyway: it is rebuilt, not read.
    ignored = {"diffusion_embedding.embedding"}
    unused = sorted(set(original) - set(table) - ignored)
    unfilled = sorted(set(table) - set(original))
    if unused or unfilled:
        raise ConversionError(
            f"checkpoint does not match the configured model: original keys not used {unused}; model keys not "
            f"filled (original names) {unfilled}"
        )
    targets = model.state_dict()
    mapped = {}
    for source, target in table.items():
        tensor = original[source]
        if not isinstance(tensor, torch.Tensor):
            raise ConversionError(f"checkpoint key {source} is {type(tensor).__name__}, not a tensor")
        if tensor.shape != targets[target].shape:
            raise ConversionError(
                f"checkpoint key {source} has shape {list(tensor.shape)}, model expects {list(targets[target].shape)}"
            )
        mapped[target] = tensor.float()
    return mapped


def _forward_check(model: PriorGradVocoder, folder: Path) -> dict[str, Any]:
    """Reload the written folder, run one noise prediction on a fixed input, compare to the live model."""
    reloaded = PriorGradVocoder.from_pretrained(folder).eval()
    config = model.config
    generator = torch.Generator().manual_seed(0)
    frames = 4
    inputs = {
        "spectrogram": torch.randn(1, config.n_mels, frames, generator=generator) - 5.0,
        "audio": torch.randn(1, frames * config.hop_samples, generator=generator) * 0.1,
        "diffusion_step": torch.tensor([len(config.noise_schedule) // 2]),
        "target_std": torch.full((1, frames), 0.5),
    }
    with torch.no_grad():
        expected = model(**inputs).predicted_noise
        actual = reloaded(**inputs).predicted_noise
    difference = float((expected - actual).abs().max())
    # Not bitwise: weights memory-mapped from safetensors sit at unaligned addresses, and MKL's
    # matrix-vector path rounds differently there (observed: ~5e-7 on outputs of order 1).
    if difference > 1e-5 or not torch.isfinite(actual).all():
        raise ConversionError(f"reloaded folder {folder} does not reproduce the converted model (max diff {difference})")
    return {"reload_forward_max_abs_diff": difference, "atol": 1e-5, "finite": True, "frames": frames}


def convert(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    stats: str | Path | None = None,
    variant: str | None = None,
    overwrite: bool = False,
    command: str | None = None,
) -> Path:
    """Convert `checkpoint` (+ energy statistics) into a complete zoo folder at `out_dir`; returns it.

    `stats`: a data root holding stats_priorgrad/ or that folder itself; by default looked for next to the
    checkpoint and one level up.
    """
    checkpoint = Path(checkpoint)
    try:
        original = read_checkpoint(checkpoint)
    except CheckpointReadError as error:
        raise ConversionError(f"{checkpoint}: {error}") from None
    if not isinstance(original, dict) or "model" not in original or "params" not in original:
        keys = sorted(original) if isinstance(original, dict) else type(original).__name__
        raise ConversionError(f"{checkpoint}: expected a learner checkpoint with 'model' and 'params', got {keys}")
    params = dict(original["params"])
    stats_values = _find_stats(checkpoint, stats) if params.get("use_prior", True) else None
    config = config_from_params(params, stats_values)
    model = PriorGradVocoder(config).eval()
    model.load_state_dict(_map_state_dict(dict(original["model"]), model), strict=True)
    feature_extractor = PriorGradFeatureExtractor(
        sampling_rate=config.sample_rate, n_fft=config.n_fft, hop_length=config.hop_samples, n_mels=config.n_mels,
        fmin=config.fmin, fmax=config.fmax, use_prior=config.use_prior, std_min=config.std_min,
        max_energy_override=config.max_energy_override, energy_min=config.energy_min, energy_max=config.energy_max,
    )
    with staged_folder(out_dir, overwrite=overwrite) as stage:
        model.save_pretrained(stage)
        feature_extractor.save_pretrained(stage)
        check = _forward_check(model, stage)
        atomic_write_json(stage / CONVERSION_FILE, {
            "source_file": checkpoint.name,
            "source_sha256": sha256_file(checkpoint),
            "format": "priorgrad-learner",
            "step": original.get("step"),
            "variant": variant,
            "stats": stats_values,
            "command": command or f"python conversion/convert_priorgrad.py {shlex.quote(str(checkpoint))} {out_dir}",
            "forward_check": check,
        })
        from zoo.verification import write_record
        write_record(stage, original=checkpoint, converter=__file__, variant=variant)  # verification/ (zoo verify)
        write_card(stage, variant=variant, repo_id=Path(out_dir).name)
    return Path(out_dir)


def _find_stats(checkpoint: Path, stats: str | Path | None) -> dict[str, float] | None:
    if stats is not None:
        return load_energy_stats(stats)
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / "stats_priorgrad").is_dir():
            return load_energy_stats(folder)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="original weights-<step>.pt")
    parser.add_argument("out_dir", help="folder to write (config.json, model.safetensors, card, ...)")
    parser.add_argument("--stats", help="data root with stats_priorgrad/, or that folder (default: next to the checkpoint)")
    parser.add_argument("--variant", help="registry variant name, e.g. priorgrad_vocoder_ljspeech")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty out_dir")
    args = parser.parse_args(argv)
    command = "python conversion/convert_priorgrad.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    try:
        out = convert(args.checkpoint, args.out_dir, stats=args.stats, variant=args.variant,
                      overwrite=args.overwrite, command=command)
    except (ConversionError, FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"out_dir": str(out), "files": sorted(p.name for p in out.iterdir())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
