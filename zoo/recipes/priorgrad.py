"""Train a small PriorGrad vocoder on offline speech synthesised with espeak-ng (22,050 Hz) and evaluate it.

The data: a few hundred English sentences taken from the docstrings of Python's standard library,
spoken by espeak-ng (Debian package `espeak-ng`, GPL-3; its audio output is ours to use) with several
voices, accents and speeds. The recipe `priorgrad_espeak` plugs into `zoo finetune` (training loss =
the inverse-prior-weighted L2; eval = the same loss on held-out sentences). Running this module also
vocodes held-out sentences from their mels and reports log-mel L1 and multi-resolution STFT distance
against the recordings, for the trained model and for the same architecture untrained, with plots and wavs:

    PYTHONPATH=$PWD python -m zoo.recipes.priorgrad --out runs/priorgrad_espeak --max-steps 300
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.demo import register_demo
from zoo.finetune import Recipe, RecipeData, RecipeOptions, register_recipe
from zoo.models.priorgrad import PriorGradFeatureExtractor, PriorGradVocoder

__all__ = ["VOICES", "load_espeak", "log_mel_l1", "mr_stft_distance", "espeak_corpus", "main"]

RECIPE_NAME = "priorgrad_espeak"
VOICES = [
    ("en-us", 170), ("en-us+f3", 160), ("en-gb", 180), ("en-gb+f2", 150), ("en-gb-scotland", 165),
    ("en-029+m3", 175), ("en-gb-x-rp+f4", 155), ("en-us+m7", 145),
]
MODULES_FOR_TEXT = [
    "string", "textwrap", "json", "csv", "random", "collections", "itertools", "functools", "pathlib", "heapq",
    "bisect", "fractions", "decimal", "statistics", "calendar", "datetime", "difflib", "shutil", "tempfile",
    "logging", "argparse", "contextlib", "dataclasses", "enum", "abc", "inspect", "operator", "copy", "pprint",
]
# A small vocoder that learns something in minutes on a laptop CPU (the released one has 30 x 64).
SMALL_MODEL = {"residual_layers": 6, "residual_channels": 24, "dilation_cycle_length": 3, "crop_mel_frames": 12}


def _sentences(count: int, seed: int) -> list[str]:
    import importlib

    found: list[str] = []
    for name in MODULES_FOR_TEXT:
        module = importlib.import_module(name)
        texts = [module.__doc__] + [getattr(obj, "__doc__", None) for obj in vars(module).values()]
        for text in filter(lambda t: isinstance(t, str), texts):
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
                words = sentence.split()
                if 5 <= len(words) <= 18 and re.fullmatch(r"[A-Z][A-Za-z ,;'\-]+[.!?]", sentence):
                    found.append(sentence)
    unique = sorted(set(found))
    random.Random(seed).shuffle(unique)
    if len(unique) < count:
        raise RuntimeError(f"only {len(unique)} usable sentences found for {count} requested")
    return unique[:count]


def espeak_corpus(folder: Path, count: int = 240, seed: int = 0) -> list[Path]:
    """Synthesise `count` sentences with espeak-ng into `folder` (cached by content); returns the wavs."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed: apt-get install espeak-ng (Debian/Ubuntu)")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    from tqdm.auto import tqdm

    for index, sentence in enumerate(tqdm(_sentences(count, seed), desc="espeak-ng", unit="utt")):
        voice, speed = VOICES[index % len(VOICES)]
        key = hashlib.sha1(f"{voice}|{speed}|{sentence}".encode()).hexdigest()[:12]
        path = folder / f"{index:04d}_{key}.wav"
        if not path.is_file():
            partial = path.with_suffix(".tmp.wav")
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(partial), sentence],
                           check=True, capture_output=True)
            partial.replace(path)
            path.with_suffix(".txt").write_text(f"{voice}\t{speed}\t{sentence}\n")
        paths.append(path)
    return paths


def _crops(fe: PriorGradFeatureExtractor, paths: list[Path], frames: int, per_clip: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    items = []
    hop = fe.hop_length
    for path in paths:
        audio = fe.normalize(fe.load_audio(path), name=str(path))
        if len(audio) < frames * hop:
            continue
        for _ in range(per_clip):
            start = rng.randint(0, len(audio) - frames * hop)
            crop = torch.from_numpy(audio[start: start + frames * hop])
            mel = fe.log_mel(crop)
            items.append({"spectrogram": mel, "labels": crop, "target_std": fe.prior_std(mel)})
    return items


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([item[key] for item in items]) for key in ("spectrogram", "labels", "target_std")}


def _split(options: RecipeOptions) -> tuple[list[Path], list[Path], PriorGradFeatureExtractor]:
    count = 64 if options.quick else 240
    paths = espeak_corpus(Path(options.cache_dir) / "priorgrad_espeak", count=count, seed=options.seed)
    held_out = max(4, count // 10)
    train, evaluation = paths[held_out:], paths[:held_out]
    fe = PriorGradFeatureExtractor()
    stats = fe.compute_energy_stats(train)
    fe.energy_min, fe.energy_max = stats["energy_min"], stats["energy_max"]
    return train, evaluation, fe


def load_espeak(options: RecipeOptions) -> RecipeData:
    """`zoo finetune` data: random crops of the training sentences, prior statistics from them."""
    train_paths, eval_paths, fe = _split(options)
    frames = SMALL_MODEL["crop_mel_frames"]
    train = _crops(fe, train_paths, frames, per_clip=8, seed=options.seed)
    evaluation = _crops(fe, eval_paths, frames, per_clip=2, seed=options.seed + 1)
    if options.max_train_samples:
        train = train[: options.max_train_samples]
    if options.max_eval_samples:
        evaluation = evaluation[: options.max_eval_samples]
    return RecipeData(
        train=train, eval=evaluation, collator=collate,
        model_overrides={**SMALL_MODEL, "energy_min": fe.energy_min, "energy_max": fe.energy_max},
        processor=fe, datasets=["espeak-ng synthetic English speech (stdlib docstring sentences)"],
    )


# -- evaluation by vocoding ----------------------------------------------------------------------------
def log_mel_l1(fe: PriorGradFeatureExtractor, audio: torch.Tensor, reference_mel: torch.Tensor) -> float:
    """Mean |log-mel(generated) - reference log-mel| (the original validation loop's `loss_lsmae`)."""
    return float((fe.log_mel(audio) - reference_mel).abs().mean())


def mr_stft_distance(generated: torch.Tensor, reference: torch.Tensor) -> float:
    """Multi-resolution STFT distance: spectral convergence + log-magnitude L1, averaged over three
    resolutions (FFT 512/1024/2048, hop 50/120/240, window 240/600/1200), as in Parallel WaveGAN."""
    total = 0.0
    resolutions = ((512, 50, 240), (1024, 120, 600), (2048, 240, 1200))
    for n_fft, hop, win in resolutions:
        window = torch.hann_window(win)
        mags = [
            torch.stft(x, n_fft, hop, win, window, return_complex=True).abs().clamp(min=1e-7)
            for x in (generated, reference)
        ]
        convergence = torch.linalg.norm(mags[1] - mags[0]) / torch.linalg.norm(mags[1])
        log_l1 = (mags[1].log() - mags[0].log()).abs().mean()
        total += float(convergence + log_l1)
    return total / len(resolutions)


def evaluate_vocoding(folder: Path, eval_paths: list[Path], steps: int, seed: int = 0) -> dict[str, Any]:
    """Vocode held-out sentences from their mels with the trained folder and an untrained twin."""
    fe = PriorGradFeatureExtractor.from_pretrained(folder)
    trained = PriorGradVocoder.from_pretrained(folder).eval()
    torch.manual_seed(seed)
    untrained = PriorGradVocoder(trained.config).eval()
    rows: dict[str, list[dict[str, float]]] = {"trained": [], "untrained": []}
    examples = {}
    for path in eval_paths:
        audio = torch.from_numpy(fe.normalize(fe.load_audio(path), name=str(path)))
        mel = fe.log_mel(audio)
        for name, model in (("trained", trained), ("untrained", untrained)):
            out = model.generate(mel, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed))
            wave = out.waveform[0]
            rows[name].append({"log_mel_l1": log_mel_l1(fe, wave, mel), "mr_stft": mr_stft_distance(wave, audio)})
            if path == eval_paths[0]:
                examples[name] = wave
        examples.setdefault("reference", audio)
        examples.setdefault("mel", mel)
    summary = {
        name: {metric: float(np.mean([r[metric] for r in values])) for metric in ("log_mel_l1", "mr_stft")}
        for name, values in rows.items()
    }
    return {"steps": steps, "clips": len(eval_paths), "summary": summary, "examples": examples}


def save_examples(folder: Path, result: dict[str, Any], fe: PriorGradFeatureExtractor) -> list[str]:
    """A wav of the first held-out sentence vocoded, and a plot of mels and waveforms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.io import wavfile

    examples = result["examples"]
    written = []
    for name in ("trained", "reference"):
        path = folder / f"example_{name}.wav"
        wavfile.write(path, fe.sampling_rate, (examples[name].numpy() * 32767).astype(np.int16))
        written.append(path.name)
    fig, axes = plt.subplots(3, 2, figsize=(11, 7))
    for row, name in enumerate(("reference", "trained", "untrained")):
        wave = examples[name]
        mel = examples["mel"] if name == "reference" else fe.log_mel(wave)
        axes[row, 0].imshow(mel.numpy(), origin="lower", aspect="auto", vmin=-11.5, vmax=2)
        axes[row, 0].set_title(f"{name}: log-mel")
        axes[row, 1].plot(np.arange(len(wave)) / fe.sampling_rate, wave.numpy(), lw=0.4)
        axes[row, 1].set_ylim(-1, 1)
        axes[row, 1].set_title(f"{name}: waveform")
    axes[2, 1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(folder / "vocoding_examples.png", dpi=100)
    plt.close(fig)
    written.append("vocoding_examples.png")
    return written


# -- demo ----------------------------------------------------------------------------------------------
FIXTURE_CASE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "priorgrad" / "tiny_prior"


def run_demo(workdir: Path, quick: bool):
    """`zoo demo`: convert the bundled original-format checkpoint (tiny random weights, LJSpeech-style
    params) and vocode the mel of a real espeak-ng recording; the summary carries the parity check of
    6-step sampling against the original code's output for the same noise."""
    from safetensors.torch import load_file

    from conversion.convert_priorgrad import convert
    from zoo.demo import DemoResult

    folder = convert(FIXTURE_CASE / "weights-123.pt", Path(workdir) / "priorgrad_tiny_prior", overwrite=True,
                     command="zoo demo: python conversion/convert_priorgrad.py tests/fixtures/priorgrad/tiny_prior/"
                             "weights-123.pt")
    fixture = load_file(FIXTURE_CASE / "sample_fast.safetensors")
    vocoder = PriorGradVocoder.from_pretrained(folder).eval()
    replay = vocoder.generate(fixture["inputs.log_mel"], noise=fixture["inputs.noise"]).waveform
    parity = float((replay - fixture["expected.audio"]).abs().max())
    if parity > 1e-4:
        raise RuntimeError(f"converted demo model differs from the original sampling output by {parity:.2e}")

    def predict(path_or_repo_id: str) -> str:
        fe = PriorGradFeatureExtractor.from_pretrained(path_or_repo_id)
        model = PriorGradVocoder.from_pretrained(path_or_repo_id).eval()
        wav = FIXTURE_CASE / "wav" / "test.wav"
        audio = torch.from_numpy(fe.normalize(fe.load_audio(wav), name=str(wav)))
        mel = fe.log_mel(audio)
        wave = model.generate(mel, num_inference_steps=6, generator=torch.Generator().manual_seed(0)).waveform[0]
        return (
            f"vocoded {wav.name} ({len(audio) / fe.sampling_rate:.2f} s, {mel.shape[1]} frames) in 6 steps: "
            f"{len(wave)} samples, log-mel L1 {log_mel_l1(fe, wave, mel):.2f} (random tiny weights), "
            f"parity vs original {parity:.1e}"
        )

    return DemoResult(folder=folder, predict=predict, summary={"sampling_parity_max_abs_diff": parity})


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from zoo.fileio import atomic_write_json
    from zoo.finetune import finetune
    from zoo.hub import METRICS_FILE, write_card

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--steps", type=int, default=6, help="reverse steps when vocoding (6 or 12: fast schedules)")
    parser.add_argument("--eval-clips", type=int, default=8)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    options = RecipeOptions(seed=args.seed, quick=args.quick)
    metrics = finetune(
        "priorgrad_vocoder_ljspeech", RECIPE_NAME, args.out, max_steps=args.max_steps, batch_size=args.batch_size,
        learning_rate=args.lr, seed=args.seed, options=options, overwrite=args.overwrite,
        eval_steps=max(1, args.max_steps // 5),
    )
    out = Path(args.out)
    _, eval_paths, _ = _split(options)
    result = evaluate_vocoding(out, eval_paths[: args.eval_clips], args.steps, seed=args.seed)
    fe = PriorGradFeatureExtractor.from_pretrained(out)
    files = save_examples(out, result, fe)
    summary = result["summary"]
    metrics["vocoding"] = {"steps": result["steps"], "clips": result["clips"], **summary, "files": files}
    metrics["results"] = metrics.get("results", []) + [
        {"task_type": "audio-to-audio", "dataset_type": "espeak-ng", "dataset_name": "espeak-ng English sentences",
         "dataset_split": "held-out", "metric_type": metric, "metric_name": f"{metric} ({args.steps} steps)",
         "metric_value": round(summary["trained"][metric], 4)}
        for metric in ("log_mel_l1", "mr_stft")
    ]
    atomic_write_json(out / METRICS_FILE, metrics)
    write_card(out, variant="priorgrad_vocoder_ljspeech", repo_id=out.name)
    print(json.dumps({"eval_loss": metrics["eval"].get("eval_loss"), **metrics["vocoding"]}, indent=2))
    return metrics


if __name__ != "__main__":  # `python -m zoo.recipes.priorgrad` already registered the package's copy
    register_recipe(Recipe(
        name="priorgrad_espeak",
        family="priorgrad",
        variant="priorgrad_vocoder_ljspeech",
        description=(
            "Train a small PriorGrad vocoder (6 layers x 24 channels) from scratch on espeak-ng speech; "
            "`python -m zoo.recipes.priorgrad` also reports log-mel L1 / MR-STFT of vocoded held-out sentences."
        ),
        dataset="espeak-ng (Debian, GPL-3) speaking English sentences from Python docstrings, 22,050 Hz, 8 voices",
        load=load_espeak,
        learning_rate=2e-3,
        epochs=1.0,
        batch_size=8,
    ))
    register_demo("priorgrad", run_demo)


if __name__ == "__main__":
    main(sys.argv[1:])
