"""PriorGrad sampling speed on CPU: real-time factor of 6-step fast vs 50-step full sampling, and chunked
vs whole-input agreement, with the released configuration (30 layers, 64 channels; random weights).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/priorgrad.py --seconds 5 --threads 1

Writes benchmarks/priorgrad.json and benchmarks/priorgrad.png (or --out PREFIX). Real-time factor =
time / audio duration (below 1 is faster than real time), given for wall time and for the CPU time of
the process (the fair figure on a shared machine: with one thread, CPU time is what the work costs).
The reference in the same run is the full 50-step schedule (`--full-seconds` shorter audio keeps it
affordable: sampling cost is linear in length, so the real-time factor does not depend on it).
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


def timed(fn) -> tuple[float, float, object]:
    """Wall seconds, process CPU seconds and the result of fn()."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="audio duration to vocode")
    parser.add_argument("--full-seconds", type=float, default=None, help="audio for the 50-step run (default --seconds)")
    parser.add_argument("--chunk-seconds", type=float, default=2.0, help="audio for the chunked-agreement check")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunk-frames", type=int, default=40)
    parser.add_argument("--out", default=str(Path(__file__).with_suffix("")), help="output prefix (.json, .png)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    vocoder = released_vocoder()
    config = vocoder.config
    def mel_of(seconds: float) -> torch.Tensor:
        frames = int(round(seconds * config.sample_rate / config.hop_samples))
        return torch.randn(config.n_mels, frames, generator=torch.Generator().manual_seed(0)) * 1.5 - 5.0

    def run(mel, **kwargs):
        return vocoder.generate(mel, generator=torch.Generator().manual_seed(1), **kwargs).waveform

    def seconds_of(mel) -> float:
        return mel.shape[1] * config.hop_samples / config.sample_rate

    results: dict = {
        "threads": args.threads, "torch": torch.__version__, "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(), "load_average": os.getloadavg(),
        "config": "released (30 layers, 64 channels, dilation cycle 10), random weights",
    }
    rows = {}
    runs = (("fast_6", args.seconds, {"num_inference_steps": 6}),
            ("full_50", args.full_seconds or args.seconds, {"full_schedule": True}))
    for name, seconds, kwargs in runs:
        mel = mel_of(seconds)
        duration = seconds_of(mel)
        wall, cpu, _ = timed(lambda kw=kwargs, m=mel: run(m, **kw))
        rows[name] = {"audio_seconds": duration, "wall_seconds": wall, "cpu_seconds": cpu,
                      "rtf_wall": wall / duration, "rtf_cpu": cpu / duration}
        print(f"{name:>8}: {duration:.2f} s of audio, wall {wall:8.1f} s (RTF {wall / duration:.2f}), "
              f"CPU {cpu:8.1f} s (RTF {cpu / duration:.2f})")
    results["sampling"] = rows
    results["speedup_fast_vs_full_cpu"] = rows["full_50"]["rtf_cpu"] / rows["fast_6"]["rtf_cpu"]
    print(f"fast (6 steps) costs {results['speedup_fast_vs_full_cpu']:.2f}x less CPU per audio second than full (50)")

    mel = mel_of(args.chunk_seconds)
    whole_wall, _, whole = timed(lambda: run(mel, num_inference_steps=6))
    chunk_wall, _, chunked = timed(lambda: run(mel, num_inference_steps=6, chunk_frames=args.chunk_frames))
    no_context = run(mel, num_inference_steps=6, chunk_frames=args.chunk_frames, overlap_frames=0)
    results["chunked"] = {
        "audio_seconds": seconds_of(mel), "chunk_frames": args.chunk_frames,
        "overlap_frames": config.receptive_field_frames,
        "max_abs_diff_vs_whole": float((chunked - whole).abs().max()),
        "max_abs_diff_without_overlap": float((no_context - whole).abs().max()),
        "time_ratio_vs_whole": chunk_wall / whole_wall,
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
    axes[0].bar(names, [results["sampling"][n]["rtf_cpu"] for n in names], color=["tab:green", "tab:gray"])
    axes[0].axhline(1.0, color="k", lw=0.8, ls="--")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("real-time factor (CPU time)")
    axes[0].set_title(f"released config, {results['threads']} thread(s)")
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
