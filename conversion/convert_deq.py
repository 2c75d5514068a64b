"""Convert original MDEQ (locuslab/deq v2, locuslab/mdeq v1) and DEQ-Transformer checkpoints to zoo folders.

    python conversion/convert_deq.py final_state.pth.tar OUT_DIR --config cls_mdeq_TINY.yaml
    python conversion/convert_deq.py MDEQ_Small.pkl OUT_DIR --variant mdeq_small_imagenet --layout v1
    python conversion/convert_deq.py deq_transformer_wt103.pkl OUT_DIR --variant deq_transformer_wt103 \
        --vocab-corpus wikitext-103/wiki.train.tokens

Accepted inputs: a v2 state dict (`final_state.pth.tar`, `model_best.pth.tar`), a v2 training checkpoint
dict (`checkpoint.pth.tar`, its "state_dict" entry is used) and the v1 layout of the released ImageNet
`.pkl` files, whose duplicate `fullstage_copy.*`, `deq.func.*` and `deq.func_copy.*` entries are checked
against the real weights and dropped. The architecture comes from a registry variant or the original
yaml (`--config`, yaml or json). DEQ-Transformer state dicts (`DEQTransformerLM.state_dict()`, tied
tensors stored under both names) take a variant or the `train_transformer.py` arguments as yaml/json
(argparse names, plus `cutoffs`/`tie_projs`). Every original key must be used and every model key filled.

The DEQ-Transformer's word-level vocabulary is not inside the checkpoint: the original rebuilds it from the
training file. Give it as `--vocab-corpus TRAIN_FILE` (rebuilt the original's way: `<eos>` first, then
words by decreasing count) or `--vocab FILE` (one symbol per line in id order), and the folder gets a
DeqTransformerTokenizer (vocab.txt, for AutoTokenizer with trust_remote_code); its size must equal the
checkpoint's vocabulary size.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from conversion.safe_checkpoint import read_checkpoint
from zoo.fileio import atomic_write_json, sha256_file, staged_folder
from zoo.hub import write_card
from zoo.models.deq import (
    DeqConvergenceWarning,
    DeqTransformerConfig,
    DeqTransformerForCausalLM,
    MdeqConfig,
    MdeqForImageClassification,
    MdeqImageProcessor,
)
from zoo.models.deq.tokenization_deq_transformer import (
    DeqTransformerTokenizer,
    build_vocabulary,
    read_vocabulary,
)

__all__ = ["ConversionError", "convert", "deq_transformer_state_dict", "main", "mdeq_state_dict", "split_layout"]

V1_PREFIXES = ("fullstage_copy.", "deq.func.", "deq.func_copy.")
BASE_PREFIXES = ("downsample.", "stage0.", "fullstage.")


class ConversionError(ValueError):
    """The checkpoint does not match the requested layout or architecture."""


def _tensor_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # tools/cls_train.py training checkpoint
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConversionError(f"{path}: expected an MDEQ state dict (or a training checkpoint with 'state_dict'), "
                              f"found {type(obj).__name__}")
    return dict(obj)


def split_layout(state: dict[str, torch.Tensor], layout: str, source: str) -> tuple[dict[str, torch.Tensor], str]:
    """Return the v2 state dict and the detected layout ("v1" or "v2"); `layout` is "auto", "v1" or "v2".

    v1 duplicates are verified before they are dropped: `deq.func.X` must equal `fullstage.X`, and
    `deq.func_copy.X` must equal `fullstage_copy.X`.
    """
    v1_keys = [k for k in state if k.startswith(V1_PREFIXES)]
    detected = "v1" if v1_keys else "v2"
    if layout not in ("auto", "v1", "v2"):
        raise ConversionError(f"layout must be 'auto', 'v1' or 'v2', got {layout!r}")
    if layout == "v2" and detected == "v1":
        raise ConversionError(f"{source} is in the v1 (locuslab/mdeq) layout: it has {len(v1_keys)} keys such as "
                              f"{v1_keys[0]!r}; convert it with --layout v1 (or auto)")
    if layout == "v1" and detected == "v2":
        raise ConversionError(f"{source} has no fullstage_copy.* / deq.func.* keys, so it is not in the v1 layout; "
                              f"convert it with --layout v2 (or auto)")
    if detected == "v2":
        return state, detected
    for key in v1_keys:
        if key.startswith("deq.func."):
            twin = "fullstage." + key[len("deq.func."):]
        elif key.startswith("deq.func_copy."):
            twin = "fullstage_copy." + key[len("deq.func_copy."):]
        else:
            continue
        if twin not in state or not torch.equal(state[twin], state[key]):
            raise ConversionError(f"{source}: v1 duplicate {key!r} does not match {twin!r}; the file is inconsistent")
    return {k: v for k, v in state.items() if not k.startswith(V1_PREFIXES)}, detected


def mdeq_state_dict(model: MdeqForImageClassification, original: dict[str, torch.Tensor],
                    source: str) -> dict[str, torch.Tensor]:
    """Map a v2 MDEQ state dict onto `model`'s keys: base keys gain the `mdeq.` prefix, head keys keep
    their names. Unused original keys, unfilled model keys and shape mismatches are errors."""
    return _mapped(model, original, source, "mdeq.", "MDEQ")


def deq_transformer_state_dict(model: DeqTransformerForCausalLM, original: dict[str, torch.Tensor],
                               source: str) -> dict[str, torch.Tensor]:
    """Map a `DEQTransformerLM` state dict: embedding/injection/layer keys gain `transformer.`, `crit.*` keep
    their names. Tied pairs (softmax output layers / projections and the embedding) must hold equal tensors."""
    for target, tied_source in model.all_tied_weights_keys.items():
        a, b = target, tied_source[len("transformer."):]
        if a in original and b in original and not torch.equal(original[a], original[b]):
            raise ConversionError(f"{source}: {a} and {b} differ, but the configuration ties them; convert a model "
                                  f"trained with --not_tied using tie_word_embeddings=False")
    return _mapped(model, original, source, "transformer.", "DEQ-Transformer")


def _mapped(model, original: dict[str, torch.Tensor], source: str, prefix: str, what: str) -> dict[str, torch.Tensor]:
    table = {key: key[len(prefix):] if key.startswith(prefix) else key for key in model.state_dict()}
    missing = sorted(k for k, o in table.items() if o not in original)
    used = set(table.values())
    unused = sorted(k for k in original if k not in used)
    if missing or unused:
        raise ConversionError(
            f"{source} does not match the configured {what}: "
            + (f"model keys with no original entry: {missing[:8]}{' ...' if len(missing) > 8 else ''}; " if missing else "")
            + (f"original keys not used: {unused[:8]}{' ...' if len(unused) > 8 else ''}" if unused else "")
            + " (check --config / --variant, e.g. POST_GN_AFFINE, and --layout)"
        )
    target = model.state_dict()
    converted = {}
    for key, orig in table.items():
        tensor = original[orig]
        if tensor.shape != target[key].shape:
            raise ConversionError(f"{source}: {orig} has shape {tuple(tensor.shape)} but the configured model expects "
                                  f"{tuple(target[key].shape)} for {key}")
        converted[key] = tensor.to(target[key].dtype)
    return converted


def _load_config(config: str | Path | dict | None, variant: str | None, source: str, family: str):
    config_class = MdeqConfig if family == "mdeq" else DeqTransformerConfig
    if variant:
        from zoo.registry import build_config

        built = build_config(variant)
        if not isinstance(built, config_class):
            raise ConversionError(f"{source} is a {family} checkpoint but variant {variant!r} is a "
                                  f"{built.model_type} variant")
        return built
    if config is None:
        raise ConversionError(f"converting {source} needs the architecture: pass --variant NAME or --config "
                              f"ORIGINAL.yaml (the yaml the checkpoint was trained with)")
    if not isinstance(config, dict):
        text = Path(config).read_text()
        if str(config).endswith(".json"):
            config = json.loads(text)
        else:
            import yaml

            config = yaml.safe_load(text)
    if family == "deq_transformer":
        return DeqTransformerConfig.from_original_args(config) if "n_token" in config else DeqTransformerConfig(**config)
    if "MODEL" in config:
        return MdeqConfig.from_original_yaml(config)
    return MdeqConfig(**config)


def _check_inputs(config) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    if isinstance(config, DeqTransformerConfig):
        return {"input_ids": torch.randint(0, config.vocab_size, (2, min(config.tgt_len, 16)), generator=generator)}
    height, width = config.image_size
    return {"pixel_values": torch.randn(2, config.num_input_channels, height, width, generator=generator)}


def _quiet_forward(model, inputs: dict[str, torch.Tensor]):
    """A no-grad forward pass for the conversion checks. The configured (often loose) solver may stop early
    on random inputs: that is recorded in conversion.json, not warned about."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeqConvergenceWarning)
        return model(**inputs)


def _family_of_state(state: dict[str, torch.Tensor]) -> str:
    return "deq_transformer" if "inject_conv.weight" in state or "crit.cluster_bias" in state else "mdeq"


def convert(
    original: str | Path,
    out_dir: str | Path,
    *,
    variant: str | None = None,
    config: str | Path | dict | None = None,
    layout: str = "auto",
    overwrite: bool = False,
    command: str | None = None,
    vocab: str | Path | None = None,
    vocab_corpus: str | Path | None = None,
) -> Path:
    """Convert an original MDEQ or DEQ-Transformer checkpoint into a zoo folder and check the reloaded model.

        convert("final_state.pth.tar", "out/mdeq_tiny", config="cls_mdeq_TINY.yaml")
    """
    original = Path(original)
    state = _tensor_dict(read_checkpoint(original), original)
    family = _family_of_state(state)
    if family == "mdeq":
        state, detected = split_layout(state, layout, str(original))
    elif layout == "v1":
        raise ConversionError(f"{original} is a DEQ-Transformer state dict; --layout v1 applies to MDEQ only")
    else:
        detected = "v2"
    cfg = _load_config(config, variant, str(original), family)
    tokenizer = _tokenizer(family, cfg, vocab, vocab_corpus)
    if family == "mdeq":
        if detected == "v1" and not cfg.post_gn_affine:
            raise ConversionError(f"{original} is a v1 checkpoint, whose post-fusion GroupNorms are always affine, "
                                  f"but the configuration has post_gn_affine=False; use the v1 yaml or a v1 variant")
        model_class, mapper = MdeqForImageClassification, mdeq_state_dict
    else:
        model_class, mapper = DeqTransformerForCausalLM, deq_transformer_state_dict
    model = model_class(cfg)
    model.load_state_dict(mapper(model, state, str(original)), strict=True)
    model.eval()
    inputs = _check_inputs(cfg)
    check = _quiet_forward(model, inputs)
    expected = check.logits
    out_dir = Path(out_dir)
    with staged_folder(out_dir, overwrite=overwrite) as stage:
        model.save_pretrained(stage)
        if family == "mdeq":
            original_image_processor(cfg).save_pretrained(stage)
        if tokenizer is not None:
            tokenizer.save_pretrained(stage)
        reloaded = model_class.from_pretrained(stage).eval()
        got = _quiet_forward(reloaded, inputs).logits
        diff = float((got - expected).abs().max())
        if diff != 0.0:
            raise ConversionError(f"reloaded model differs from the converted one by {diff}")
        atomic_write_json(stage / "conversion.json", {
            "source_file": original.name,
            "source_sha256": sha256_file(original),
            "format": f"mdeq-{detected}-state-dict" if family == "mdeq" else "deq-transformer-state-dict",
            "family": family,
            "layout": detected,
            "variant": variant,
            "dropped_v1_keys": detected == "v1",
            "command": command or f"python conversion/convert_deq.py {shlex.quote(str(original))} {shlex.quote(str(out_dir))}",
            "forward_check": {"inputs": "2 x N(0,1) images of config.image_size" if family == "mdeq"
                              else f"2 x {inputs['input_ids'].shape[1]} random token ids", "reload_max_abs_diff": diff,
                              "solver_converged": bool(check.converged.all()),
                              "max_rel_residual": float(check.rel_residual.max()),
                              "logits_shape": list(got.shape)},
        })
        from zoo.verification import write_record
        write_record(stage, original=original, converter=__file__, variant=variant)  # verification/ (zoo verify)
        write_card(stage, variant=variant, repo_id=out_dir.name)
    return out_dir


def _tokenizer(family: str, cfg, vocab, vocab_corpus) -> DeqTransformerTokenizer | None:
    """The word-level tokenizer from a vocab list or the training corpus (DEQ-Transformer only)."""
    if vocab is None and vocab_corpus is None:
        return None
    if family != "deq_transformer":
        raise ConversionError("--vocab / --vocab-corpus apply to DEQ-Transformer checkpoints only")
    if vocab is not None and vocab_corpus is not None:
        raise ConversionError("give --vocab or --vocab-corpus, not both")
    try:
        if vocab is not None:
            symbols = read_vocabulary(vocab)
        else:
            with open(vocab_corpus, encoding="utf-8") as handle:  # streamed: WikiText-103 is 0.5 GB
                symbols = build_vocabulary(handle)
        tokenizer = DeqTransformerTokenizer(symbols=symbols)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConversionError(f"vocabulary {vocab or vocab_corpus}: {error}") from None
    if len(symbols) != cfg.vocab_size:
        raise ConversionError(f"vocabulary {vocab or vocab_corpus} has {len(symbols)} symbols but the checkpoint's "
                              f"vocab_size is {cfg.vocab_size}")
    return tokenizer


def original_image_processor(config) -> MdeqImageProcessor:
    """The evaluation preprocessing of locuslab/mdeq's tools/cls_train.py for the checkpoint's data set:
    CIFAR-10 (32 x 32) ToTensor + Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)); ImageNet
    Resize(size / 0.875) + CenterCrop(size) + Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])."""
    size = list(config.image_size)
    if size == [32, 32]:
        return MdeqImageProcessor(rescale_factor=1 / 255, image_mean=[0.4914, 0.4822, 0.4465],
                                  image_std=[0.2023, 0.1994, 0.2010], size=size, num_channels=config.num_input_channels)
    return MdeqImageProcessor(rescale_factor=1 / 255, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
                              size=size, crop_fraction=0.875, num_channels=config.num_input_channels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("original", help="original checkpoint (.pth.tar / .pkl / .pth)")
    parser.add_argument("out_dir", help="folder to write (config.json, model.safetensors, README.md)")
    parser.add_argument("--variant", help="registry variant giving the architecture (zoo list mdeq*)")
    parser.add_argument("--config", help="original yaml (MDEQ) or train_transformer.py arguments (yaml/json)")
    parser.add_argument("--layout", default="auto", choices=["auto", "v1", "v2"], help="checkpoint layout")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty out_dir")
    parser.add_argument("--vocab", help="DEQ-Transformer: vocabulary file, one symbol per line in id order")
    parser.add_argument("--vocab-corpus", help="DEQ-Transformer: training text to rebuild the vocabulary from "
                                               "(the original's way; WikiText-103: wiki.train.tokens)")
    args = parser.parse_args(argv)
    command = "python conversion/convert_deq.py " + " ".join(map(shlex.quote, argv if argv is not None else sys.argv[1:]))
    try:
        out = convert(args.original, args.out_dir, variant=args.variant, config=args.config, layout=args.layout,
                      overwrite=args.overwrite, command=command,
                      vocab=args.vocab, vocab_corpus=args.vocab_corpus)
    except (ConversionError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
