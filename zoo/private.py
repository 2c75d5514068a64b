"""Differentially private fine-tuning (DP-SGD on Opacus) of the zoo's heads.

Opacus wraps the model (per-example gradients), the optimizer (clipping + Gaussian noise) and the data
loader (Poisson sampling), and its accountant tracks the privacy spent; the HF Trainer cannot host those
wrappers, so this module runs its own loop over a recipe's data set, collator and metrics and writes the
same Hub folder as `zoo.finetune`, with the privacy spent in metrics.json and in the card.

    from zoo.private import PrivacyOptions, finetune_private
    metrics = finetune_private("graphormer_slim_classifier", "b3db_bbb", "runs/bbb_dp", PrivacyOptions(epsilon=8))
    metrics["privacy"]["epsilon"]  # <= 8, from Opacus' accountant

Per-example gradients come from Opacus' grad samplers (Linear, Embedding, LayerNorm, GroupNorm, Conv1d)
plus the rules in `zoo.private_rules` for what Opacus cannot see: parameters read directly rather than
through a module call (Graphormer's graph token, virtual distance and multi-hop edge tables, its head's
learned bias, DMP's shared output projection) and DMP's GNN, whose layers see atoms and bonds, not molecules.
Embedding tables keep each example's looked-up rows instead of Opacus' dense [batch, vocabulary, width]
per-example gradient; the DP optimizer clips them exactly from those rows (`zoo.private_rules`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .fileio import atomic_write_json, atomic_write_text, staged_folder
from .finetune import (
    RecipeOptions,
    _base_model,
    _card_results,
    build_model,
    check_finetune_inputs,
    get_recipe,
    plot_curves,
)
from .registry import model_info

__all__ = [
    "CLIPPING", "PrivacyError", "PrivacyOptions", "complete_grad_samples", "finetune_private", "privacy_unit", "register_privacy_unit",
]

logger = logging.getLogger(__name__)

CLIPPING = ("flat", "per-layer", "adaptive")
ACCOUNTANTS = ("rdp", "prv")
PRIVACY_FILE_KEY = "privacy"

# What one training example is, per recipe: the unit DP protects. A recipe missing here is refused.
_PRIVACY_UNITS: dict[str, str] = {
    "b3db_bbb": "one molecule (SMILES + BBB label)",
    "b3db_logbb": "one molecule (SMILES + logBB)",
    "dmp_b3db_bbb": "one molecule (SMILES + BBB label)",
    "dmp_b3db_bbb_transformer": "one molecule (SMILES + BBB label)",
    "dmp_b3db_bbb_gnn": "one molecule (SMILES + BBB label)",
    "music21_dance": "one tune (its MIDI rendering + dance type)",
    "nasbert_fortunes": "one fortune item (text + topic)",
    "mdeq_digits": "one 8x8 digit image",
}
_NO_UNIT_REASONS: dict[str, str] = {
    "priorgrad_espeak": "its training examples are random crops of recorded sentences, several per sentence and "
                        "many per voice, so a per-example guarantee would not protect a sentence or a speaker",
}


class PrivacyError(ValueError):
    """A DP run that zoo refuses, or one that had to stop; the message says why and what to do instead."""


@dataclass
class PrivacyOptions:
    """The privacy target and the DP-SGD settings of a run.

        PrivacyOptions(epsilon=8, delta=1e-5, max_grad_norm=1.0, clipping="per-layer")
    """

    epsilon: float
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    clipping: str = "flat"  # flat | per-layer | adaptive
    accountant: str = "rdp"
    swap_batchnorm: bool = False  # replace BatchNorm with GroupNorm where the family allows it
    resume_from: str | None = None  # a previous DP run's folder: continue its accountant on the same data
    target_unclipped_quantile: float = 0.5  # adaptive clipping (Andrew et al. 2021)
    clipbound_learning_rate: float = 0.2

    def validate(self, train_size: int) -> None:
        if not (isinstance(self.epsilon, (int, float)) and math.isfinite(self.epsilon) and self.epsilon > 0):
            raise PrivacyError(f"--dp-epsilon must be a positive finite number, got {self.epsilon!r}")
        if not 0 < self.delta < 1:
            raise PrivacyError(f"--dp-delta must be in (0, 1), got {self.delta!r}")
        if self.delta >= 1 / train_size:
            raise PrivacyError(
                f"--dp-delta {self.delta:g} is not below 1/n = {1 / train_size:.3g} for n = {train_size} training "
                "examples: such a delta allows releasing some example outright; pick a smaller delta")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise PrivacyError(f"--max-grad-norm must be a positive number, got {self.max_grad_norm!r}")
        if self.clipping not in CLIPPING:
            raise PrivacyError(f"--clipping must be one of {', '.join(CLIPPING)}, got {self.clipping!r}")
        if self.accountant not in ACCOUNTANTS:
            raise PrivacyError(f"accountant must be one of {', '.join(ACCOUNTANTS)}, got {self.accountant!r}")


def register_privacy_unit(recipe: str, unit: str) -> None:
    """Declare what one training example of `recipe` is, which makes the recipe usable for DP runs."""
    _PRIVACY_UNITS[recipe] = unit


def privacy_unit(recipe: str) -> str:
    """The per-example unit of a recipe, or PrivacyError saying why it has none."""
    get_recipe(recipe)
    if recipe in _PRIVACY_UNITS:
        return _PRIVACY_UNITS[recipe]
    reason = _NO_UNIT_REASONS.get(recipe, "the recipe declares no per-example unit (zoo.private.register_privacy_unit)")
    raise PrivacyError(f"--dp-* with recipe '{recipe}': refused, {reason}. DP-SGD bounds what one training example "
                       "can change; it needs examples that each belong to one person or record.")


# --------------------------------------------------------------------------------------------- accounting
def _accountant(mechanism: str, history: list | None = None):
    from opacus.accountants import create_accountant

    accountant = create_accountant(mechanism=mechanism)
    accountant.history = [tuple(row) for row in (history or [])]
    return accountant


def epsilon_for(history: list, delta: float, mechanism: str) -> float:
    """Opacus' epsilon for a history of (noise multiplier, sample rate, steps) rows."""
    if not history:
        return 0.0
    return float(_accountant(mechanism, history).get_epsilon(delta=delta))


def _steps_within(history: list, noise: float, rate: float, delta: float, target: float, mechanism: str,
                  planned: int) -> int:
    """The most steps (<= planned) that keep the accountant's epsilon at or below the target."""
    def fits(steps: int) -> bool:
        return epsilon_for([*history, (noise, rate, steps)], delta, mechanism) <= target

    if fits(planned):
        return planned
    low, high = 0, planned  # fits(low), not fits(high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


# --------------------------------------------------------------------------------------------- data
class _PoissonCollator:
    """The recipe's collator; an empty Poisson batch (possible by design) becomes None: a noise-only step."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, items):
        return self.collator(items) if items else None


def _fingerprint(recipe: str, options: RecipeOptions, train_size: int) -> str:
    subset = bool(options.quick or options.max_train_samples)  # only then does the seed pick the examples
    facts = {"recipe": recipe, "max_train_samples": options.max_train_samples, "quick": options.quick,
             "seed": options.seed if subset else None, "train_size": train_size}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def _distributed() -> tuple[int, int]:
    """(rank, world size); starts the process group under torchrun (gloo on CPU, nccl on GPU)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _previous_run(privacy: PrivacyOptions, recipe: str, fingerprint: str) -> dict[str, Any] | None:
    if not privacy.resume_from:
        return None
    path = Path(privacy.resume_from) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"--dp-resume {privacy.resume_from}: no metrics.json there (not a zoo DP run folder)")
    previous = json.loads(path.read_text()).get(PRIVACY_FILE_KEY)
    if not previous:
        raise PrivacyError(f"--dp-resume {privacy.resume_from}: that run was not differentially private; "
                           "start a DP run from its weights with --pretrained instead")
    if previous.get("recipe") != recipe or previous.get("data_fingerprint") != fingerprint:
        raise PrivacyError(
            f"--dp-resume {privacy.resume_from}: refused, that run spent its budget on '{previous.get('recipe')}' "
            f"(data fingerprint {previous.get('data_fingerprint')}), this one trains on '{recipe}' ({fingerprint}). "
            "An accountant covers one data set: continuing it on another would report an epsilon that describes "
            "neither. Start a fresh DP run with --pretrained instead (its weights are a post-processed, "
            "already-private release of the first data set).")
    if previous.get("accountant") != privacy.accountant:
        raise PrivacyError(f"--dp-resume: the previous run used the {previous.get('accountant')} accountant; "
                           f"resume with the same one (got {privacy.accountant})")
    return previous


# --------------------------------------------------------------------------------------------- the run
def finetune_private(
    variant: str,
    recipe: str,
    out_dir: str | os.PathLike,
    privacy: PrivacyOptions,
    *,
    pretrained: str | os.PathLike | None = None,
    revision: str | None = None,
    epochs: float | None = None,
    max_steps: int = -1,
    learning_rate: float | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    options: RecipeOptions | None = None,
    overwrite: bool = False,
    card_template: str | os.PathLike | None = None,
    model_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """DP-SGD fine-tuning of a registered variant on a recipe; writes a publishable folder to `out_dir`.

    Returns the metrics written to `out_dir/metrics.json`, with the privacy spent under "privacy". Under
    `torchrun` it trains with Opacus' DPDDP and distributed Poisson sampling; rank 0 writes.
    """
    from opacus import PrivacyEngine
    from opacus.accountants.utils import get_noise_multiplier
    from opacus.distributed import DifferentiallyPrivateDistributedDataParallel as DPDDP

    from .hub import METRICS_FILE, write_card
    from .private_rules import dp_adapter

    check_finetune_inputs(variant, recipe, pretrained)  # a recipe / folder of another family stops here
    entry = model_info(variant)
    spec = get_recipe(recipe)
    unit = privacy_unit(recipe)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    adapter = dp_adapter(entry.family)
    overrides = {**(model_overrides or {}), **adapter.refuse_or_overrides(entry.family, privacy.swap_batchnorm)}
    options = options or RecipeOptions(seed=seed)
    data = spec.load(options)
    train_size = len(data.train)
    privacy.validate(train_size)
    fingerprint = _fingerprint(recipe, options, train_size)
    previous = _previous_run(privacy, recipe, fingerprint)
    rank, world = _distributed()
    if world > 1 and privacy.clipping == "adaptive":
        raise PrivacyError("--clipping adaptive is single-process only in Opacus; use flat or per-layer under torchrun")

    start = privacy.resume_from if previous else pretrained
    model = build_model(variant, data, pretrained=start, revision=revision, seed=seed, model_overrides=overrides)
    adapter.check_model(model, entry.family)
    model.train()

    batch = batch_size or spec.batch_size
    lr = learning_rate if learning_rate is not None else spec.learning_rate
    # Poisson sampling and the noise must stay secret to the adversary: fresh entropy, never the run's seed
    generator = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little"))
    loader = torch.utils.data.DataLoader(data.train, batch_size=batch, shuffle=True, generator=generator,
                                         collate_fn=_PoissonCollator(data.collator))
    steps_per_epoch = len(loader)
    sample_rate = 1 / steps_per_epoch
    planned = max_steps if max_steps > 0 else max(1, round((epochs if epochs is not None else spec.epochs)
                                                            * steps_per_epoch))
    history = [tuple(row) for row in previous["history"]] if previous else []
    if previous:
        noise = float(previous["noise_multiplier"])
        if abs(previous["sample_rate"] - sample_rate) > 1e-12:
            raise PrivacyError(f"--dp-resume: the previous run sampled at rate {previous['sample_rate']:.6g}, this "
                               f"one at {sample_rate:.6g}; resume with the same --batch-size ({previous['batch_size']})")
    else:
        noise = float(get_noise_multiplier(target_epsilon=privacy.epsilon, target_delta=privacy.delta,
                                           sample_rate=sample_rate, steps=planned, accountant=privacy.accountant,
                                           epsilon_tolerance=0.005))
    allowed = _steps_within(history, noise, sample_rate, privacy.delta, privacy.epsilon, privacy.accountant, planned)
    if allowed == 0:
        raise PrivacyError(
            f"the privacy budget is already spent: {privacy.resume_from} used epsilon "
            f"{epsilon_for(history, privacy.delta, privacy.accountant):.4f} and one more step (noise "
            f"{noise:.4f}, rate {sample_rate:.4g}) would go past the target {privacy.epsilon:g}; nothing was trained")

    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=spec.weight_decay)
    trainable = [p for p in model.parameters() if p.requires_grad]
    clipping, extra = _clipping_arguments(privacy, trainable, batch * 1.0, noise)
    wrapped = DPDDP(model) if world > 1 else model
    with warnings.catch_warnings():
        # secure_mode needs torchcsprng, which has no build for current torch; the noise comes from torch's RNG
        warnings.filterwarnings("ignore", message=".*Secure RNG turned off.*")
        engine = PrivacyEngine(accountant=privacy.accountant)
        engine.accountant.history = list(history)
        dp_model, dp_optimizer, dp_loader = engine.make_private(
            module=wrapped, optimizer=optimizer, data_loader=loader, noise_multiplier=noise,
            max_grad_norm=extra.pop("max_grad_norm"), poisson_sampling=True, clipping=clipping,
            noise_generator=torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little")), **extra,
        )
    adapter.attach(model)
    adapter.use_sparse_embeddings(model, dp_optimizer)
    warmup = int(spec.warmup_ratio * allowed)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        dp_optimizer.original_optimizer,
        lambda step: (step + 1) / max(warmup, 1) if step < warmup else max(0.0, (allowed - step) / max(allowed - warmup, 1)),
    )

    curves: dict[str, list[list[float]]] = {"loss": []}
    log_every = max(1, allowed // 20)
    step, started, losses, stopped = 0, time.perf_counter(), [], None
    from tqdm.auto import tqdm

    progress = tqdm(total=allowed, desc=f"DP fine-tuning {variant} on {recipe}", disable=rank != 0)
    epoch = 0
    warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with "
                            "respect to module outputs since no inputs require gradients")  # Opacus' hooks
    while step < allowed:
        for batch_data in dp_loader:
            if step >= allowed:
                break
            if batch_data is None:
                for p in trainable:
                    p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
            else:
                output = dp_model(**batch_data)
                output.loss.backward()
                adapter.after_backward(model, batch_data)
                complete_grad_samples(model, int(batch_data["labels"].shape[0]))
                losses.append(float(output.loss.detach()))
            dp_optimizer.step()
            dp_optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            progress.update(1)
            if step % log_every == 0 and losses:
                curves["loss"].append([step, float(np.mean(losses[-log_every:]))])
        epoch += 1
        if step < allowed and epoch > 10 * (planned / steps_per_epoch + 1):
            raise RuntimeError("the DP data loader stopped yielding batches")  # cannot happen with Poisson sampling
    progress.close()
    train_seconds = time.perf_counter() - started
    if allowed < planned:
        stopped = (f"stopped after {allowed} of {planned} planned steps: one more step would spend more than the "
                   f"target epsilon {privacy.epsilon:g} (delta {privacy.delta:g})")
        logger.warning("DP run %s", stopped)
        warnings.warn(f"DP run {stopped}", stacklevel=2)
    adapter.detach(model)
    if hasattr(dp_model, "remove_hooks"):
        dp_model.remove_hooks()

    spent = float(engine.accountant.get_epsilon(delta=privacy.delta))
    if spent > privacy.epsilon + 1e-9:
        raise PrivacyError(f"the accountant reports epsilon {spent:.4f} above the target {privacy.epsilon:g}; "
                           "nothing was written")
    eval_metrics = _evaluate(model, data, batch)
    record = {
        "epsilon": spent, "delta": privacy.delta, "target_epsilon": privacy.epsilon,
        "accountant": privacy.accountant, "noise_multiplier": noise, "sample_rate": sample_rate,
        "steps": step, "planned_steps": planned, "epochs": step / steps_per_epoch,
        "steps_this_run": step, "history": [list(row) for row in engine.accountant.history],
        "clipping": privacy.clipping, "max_grad_norm": privacy.max_grad_norm, "clipping_detail": _clip_detail(
            privacy, trainable, dp_optimizer), "poisson_sampling": True, "batch_size": batch,
        "expected_batch_size": sample_rate * train_size, "train_size": train_size, "privacy_unit": unit,
        "recipe": recipe, "data_fingerprint": fingerprint, "world_size": world,
        "opacus_version": _opacus_version(), "randomness": "sampling and noise from torch generators seeded with "
        "os.urandom (Opacus secure_mode needs torchcsprng, not available for this torch)", "resumed_from": privacy.resume_from, "stopped": stopped,
        "per_sample_rules": adapter.describe(),
    }
    if previous:
        record["steps"] = int(sum(row[2] for row in engine.accountant.history))
    metrics = {
        "variant": variant, "recipe": recipe, "dataset": spec.dataset, "base_model": _base_model(pretrained, variant),
        "train": {"train_loss": float(np.mean(losses)) if losses else float("nan"), "train_runtime": train_seconds,
                  "train_steps": step},
        "eval": eval_metrics, "curves": {**curves, **{k: [[step, v]] for k, v in eval_metrics.items()
                                                        if k.startswith("eval_") and isinstance(v, float)}},
        "metric_for_best_model": data.metric_for_best_model, "datasets": data.datasets or None,
        "results": _card_results(data, eval_metrics, spec), "tags": ["fine-tuned", entry.family, entry.task,
                                                                      "differential-privacy", "opacus"],
        "train_samples": train_size, "eval_samples": len(data.eval), "world_size": world,
        PRIVACY_FILE_KEY: record,
    }
    if rank == 0:
        with staged_folder(out_dir, overwrite=overwrite) as stage:
            model.save_pretrained(stage)
            if data.processor is not None:
                data.processor.save_pretrained(stage)
            atomic_write_json(stage / METRICS_FILE, metrics)
            plot_curves(metrics["curves"], stage / "training_curves.png", f"{variant} on {recipe} (DP)")
            write_card(stage, variant=variant, repo_id=out_dir.name, template=card_template)
            add_privacy_to_card(stage, record)
    return metrics


def _clipping_arguments(privacy: PrivacyOptions, trainable: list, expected_batch: float, noise: float):
    if privacy.clipping == "per-layer":
        # the per-tensor thresholds C / sqrt(P) bound the whole per-example gradient by C, as flat clipping does
        share = privacy.max_grad_norm / math.sqrt(len(trainable))
        return "per_layer", {"max_grad_norm": [share] * len(trainable)}
    if privacy.clipping == "adaptive":
        # Andrew et al. 2021: the count of unclipped examples is released with noise std ~ batch / 20
        count_std = max(expected_batch / 20, noise)
        return "adaptive", {
            "max_grad_norm": privacy.max_grad_norm, "target_unclipped_quantile": privacy.target_unclipped_quantile,
            "clipbound_learning_rate": privacy.clipbound_learning_rate, "max_clipbound": 100 * privacy.max_grad_norm,
            "min_clipbound": 1e-3 * privacy.max_grad_norm, "unclipped_num_std": count_std,
        }
    return "flat", {"max_grad_norm": privacy.max_grad_norm}


def _clip_detail(privacy: PrivacyOptions, trainable: list, optimizer) -> dict[str, Any]:
    if privacy.clipping == "per-layer":
        return {"tensors": len(trainable), "per_tensor_bound": privacy.max_grad_norm / math.sqrt(len(trainable))}
    if privacy.clipping == "adaptive":
        return {"final_bound": float(optimizer.max_grad_norm), "target_unclipped_quantile":
                privacy.target_unclipped_quantile, "unclipped_num_std": float(optimizer.unclipped_num_std)}
    return {}


def _opacus_version() -> str:
    import opacus

    return opacus.__version__


def complete_grad_samples(model: torch.nn.Module, batch_size: int) -> None:
    """Check that every trainable parameter has one per-example gradient per example.

    A parameter left out of this step's graph (a dropped branch, a layer the architecture never applies)
    has per-example gradient zero; one that got a gradient but no per-example gradient has no rule, and
    the step is refused rather than clipped wrongly.
    """
    for module in model.modules():
        # Opacus' nn.Embedding rule gives the padding row the gradients of padding positions; torch (and the
        # non-private run) gives it none. Dense per-example tables only: zoo's sparse rule already masks it.
        if not isinstance(module, torch.nn.Embedding) or module.padding_idx is None:
            continue
        sample = getattr(module.weight, "grad_sample", None)
        if isinstance(sample, torch.Tensor) and sample.shape[1:] == module.weight.shape:
            sample[:, module.padding_idx] = 0
    missing, wrong = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        sample = getattr(p, "grad_sample", None)
        if sample is None:
            if p.grad is None:
                p.grad_sample = torch.zeros((batch_size, *p.shape), dtype=p.dtype, device=p.device)
            else:
                missing.append(name)
        elif sample.shape[0] != batch_size:
            wrong.append(f"{name} ({sample.shape[0]} rows for {batch_size} examples)")
    if missing or wrong:
        raise PrivacyError("no correct per-example gradient rule for: " + "; ".join(missing + wrong)
                           + ". Refusing to train: clipping would not bound one example's influence.")


def _evaluate(model: torch.nn.Module, data, batch_size: int) -> dict[str, float]:
    from transformers import EvalPrediction

    model.eval()
    logits, labels, losses = [], [], []
    with torch.no_grad():
        for start in range(0, len(data.eval), batch_size):
            items = [data.eval[i] for i in range(start, min(start + batch_size, len(data.eval)))]
            inputs = data.collator(items)
            output = model(**inputs)
            losses.append(float(output.loss) * len(items))
            logits.append(output.logits.float().cpu().numpy())
            labels.append(inputs["labels"].cpu().numpy())
    model.train()
    metrics = {"eval_loss": float(sum(losses) / max(len(data.eval), 1))}
    if data.compute_metrics is not None and logits:
        prediction = EvalPrediction(predictions=np.concatenate(logits), label_ids=np.concatenate(labels))
        metrics.update({f"eval_{k}": float(v) for k, v in data.compute_metrics(prediction).items()})
    return metrics


def add_privacy_to_card(folder: Path, record: dict[str, Any]) -> None:
    """Add the privacy spent to README.md: a `privacy` block in the YAML and a "Privacy" section."""
    from huggingface_hub import ModelCard

    path = Path(folder) / "README.md"
    card = ModelCard(path.read_text(encoding="utf-8"))
    card.data.privacy = {
        "mechanism": "DP-SGD (Opacus)", "epsilon": round(record["epsilon"], 4), "delta": record["delta"],
        "target_epsilon": record["target_epsilon"], "accountant": record["accountant"],
        "noise_multiplier": round(record["noise_multiplier"], 6), "sample_rate": round(record["sample_rate"], 8),
        "steps": record["steps"], "clipping": record["clipping"], "max_grad_norm": record["max_grad_norm"],
        "privacy_unit": record["privacy_unit"],
    }
    stopped = f"\n\n**Stopped early:** {record['stopped']}." if record.get("stopped") else ""
    section = (
        "\n\n## Privacy\n\n"
        f"Fine-tuned with differentially private SGD (Opacus {record['opacus_version']}, Poisson sampling, "
        f"per-example clipping) on the recipe `{record['recipe']}`: the guarantee is "
        f"**(epsilon = {record['epsilon']:.3f}, delta = {record['delta']:g})** for {record['privacy_unit']} "
        f"of its {record['train_size']} training examples (target epsilon {record['target_epsilon']:g}, "
        f"{record['accountant'].upper()} accountant).\n\n"
        "| setting | value |\n| --- | --- |\n"
        f"| noise multiplier | {record['noise_multiplier']:.4f} |\n"
        f"| sampling rate | {record['sample_rate']:.6f} (expected batch {record['expected_batch_size']:.1f}) |\n"
        f"| steps | {record['steps']} |\n"
        f"| clipping | {record['clipping']}, max grad norm {record['max_grad_norm']:g} |\n"
        f"| processes | {record['world_size']} |"
        f"{stopped}\n\nThe base model's own training data (pre-training) is not covered by this guarantee.\n"
    )
    card.text = card.text.rstrip("\n") + section
    atomic_write_text(path, str(card))

