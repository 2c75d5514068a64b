"""PriorGrad sampling speed on CPU: real-time factor of 6-step fast vs 50-step full sampling, and chunked
vs whole-input agreement, with the released configuration (30 layers, 64 channels; random weights).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/priorgrad.py --seconds 5 --threads 1

Writes benchmarks/priorgrad.json and benchmarks/priorgrad.png (or --out PREFIX). Real-time factor =
wall time / audio duration (below 1 is faster than real time). The reference in the same run is the
full 50-step schedule; the ratio says how much the fast schedule saves.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from zoo.models.priorgrad import PriorGradConfig, PriorGradVocoder


def released_vocoder(seed: int = 0) -> PriorGradVocoder:
    torch.manual_seed(seed)
    vocoder = PriorGradVocoder(PriorGradConfig(energy_min=0.03, energy_max=4.7)).eval()
    with torch.no_grad():  # zero in the original init: random so that the network's work is not trivial
        vocoder.priorgrad.output_projection.weight.normal_(0, 0.05)
    return vocoder


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="audio duration to vocode")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunk-frames", type=int, default=100)
    parser.add_argument("--out", default=str(Path(__file__).with_suffix("")), help="output prefix (.json, .png)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    vocoder = released_vocoder()
    config = vocoder.config
    frames = int(round(args.seconds * config.sample_rate / config.hop_samples))
    duration = frames * config.hop_samples / config.sample_rate
    mel = torch.randn(config.n_mels, frames, generator=torch.Generator().manual_seed(0)) * 1.5 - 5.0

    def run(**kwargs):
        return vocoder.generate(mel, generator=torch.Generator().manual_seed(1), **kwargs).waveform

    results: dict = {
        "audio_seconds": duration, "frames": frames, "threads": args.threads, "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "config": "released (30 layers, 64 channels, dilation cycle 10), random weights",
    }
    rows = {}
    for name, kwargs in (("fast_6", {"num_inference_steps": 6}), ("full_50", {"full_schedule": True})):
        seconds, _ = timed(lambda kw=kwargs: run(**kw))
        rows[name] = {"seconds": seconds, "rtf": seconds / duration}
        print(f"{name:>10}: {seconds:8.2f} s for {duration:.2f} s of audio, real-time factor {seconds / duration:.3f}")
    results["sampling"] = rows
    results["speedup_fast_vs_full"] = rows["full_50"]["seconds"] / rows["fast_6"]["seconds"]
    print(f"fast (6 steps) is {results['speedup_fast_vs_full']:.2f}x faster than full (50 steps)")

    whole = run(num_inference_steps=6)
    chunk_seconds, chunked = timed(lambda: run(num_inference_steps=6, chunk_frames=args.chunk_frames))
    no_context = run(num_inference_steps=6, chunk_frames=args.chunk_frames, overlap_frames=0)
    results["chunked"] = {
        "chunk_frames": args.chunk_frames, "overlap_frames": config.receptive_field_frames,
        "max_abs_diff_vs_whole": float((chunked - whole).abs().max()),
        "max_abs_diff_without_overlap": float((no_context - whole).abs().max()),
        "seconds": chunk_seconds, "time_ratio_vs_whole": chunk_seconds / rows["fast_6"]["seconds"],
    }
    print(
        f"chunked ({args.chunk_frames} frames, overlap {config.receptive_field_frames}): max |diff| vs whole "
        f"{results['chunked']['max_abs_diff_vs_whole']:.2e}; without overlap "
        f"{results['chunked']['max_abs_diff_without_overlap']:.2e}; time x{results['chunked']['time_ratio_vs_whole']:.2f}"
    )
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out.with_suffix(".png"))
    return results


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["fast_6", "full_50"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].bar(names, [results["sampling"][n]["rtf"] for n in names], color=["tab:green", "tab:gray"])
    axes[0].axhline(1.0, color="k", lw=0.8, ls="--")
    axes[0].set_ylabel("real-time factor (CPU)")
    axes[0].set_title(f"{results['audio_seconds']:.1f} s audio, {results['threads']} thread(s)")
    chunked = results["chunked"]
    axes[1].bar(["overlap = RF", "no overlap"],
                [chunked["max_abs_diff_vs_whole"], chunked["max_abs_diff_without_overlap"]], color=["tab:blue", "tab:red"])
    axes[1].set_yscale("log")
    axes[1].set_title(f"chunked ({chunked['chunk_frames']} frames) vs whole: max |diff|")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
