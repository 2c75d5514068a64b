"""PriorGrad 6-step sampling on CPU: zoo now, zoo before (a git revision of the model file), and the
original NeuralSpeech `inference.predict` on the same mel, weights and noise; real-time factors.
Protocol: benchmarks/_protocol.py (alternating sides, warm-up, pinned threads, outputs checked, median
with min/max, load average).

    git -C /tmp clone ... ; python benchmarks/priorgrad.py --neuralspeech /tmp/NeuralSpeech/PriorGrad-vocoder \\
        --seconds 1 --repeats 3 --threads 1

The original is imported from `--neuralspeech` at run time (never copied into zoo); its inference
module's dataset / torchaudio imports are stubbed (predict uses neither) and its device set to the CPU.
Weights: the released configuration (30 layers, 64 channels) with random weights (the output
projection drawn too, so that the network's output is not trivially zero), shared by all sides.
Noise: every side draws from the global torch RNG seeded alike, in the original's order, so the
waveforms are compared directly (max |difference| reported). Real-time factor = seconds / audio seconds;
seconds are the process's CPU time by default (all sides run in this process on one thread, so on a
shared machine CPU time is what each side's work costs; `--clock wall` for wall time).
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import _protocol as protocol  # noqa: E402

from zoo.models.priorgrad import PriorGradConfig, PriorGradVocoder  # noqa: E402

BEFORE_REV = "1b32fb4c3977bf0e4b1c5fa44caab1f10a530020"  # the model file before step-independent work was hoisted


def released_vocoder(cls=PriorGradVocoder, config_cls=PriorGradConfig, seed: int = 0):
    torch.manual_seed(seed)
    vocoder = cls(config_cls(energy_min=0.03, energy_max=4.7)).eval()
    with torch.no_grad():  # zero in the original init: random so that the network's work is not trivial
        vocoder.priorgrad.output_projection.weight.normal_(0, 0.05)
    return vocoder


def before_vocoder(rev: str, state_dict: dict):
    """PriorGradVocoder as it was at `rev` (the family folder exported from git into a temporary package)."""
    folder = Path(tempfile.mkdtemp(prefix="priorgrad_before_")) / "priorgrad_before"
    folder.mkdir()
    for name in ("__init__.py", "configuration_priorgrad.py", "modeling_priorgrad.py",
                 "feature_extraction_priorgrad.py"):
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:zoo/models/priorgrad/{name}"],
                              capture_output=True, text=True, check=True).stdout
        (folder / name).write_text("" if name == "__init__.py" else text)
    sys.path.insert(0, str(folder.parent))
    modeling = importlib.import_module("priorgrad_before.modeling_priorgrad")
    configuration = importlib.import_module("priorgrad_before.configuration_priorgrad")
    vocoder = modeling.PriorGradVocoder(configuration.PriorGradConfig(energy_min=0.03, energy_max=4.7)).eval()
    vocoder.load_state_dict(state_dict)
    return vocoder


def original_predict(folder: Path, state_dict: dict):
    """The original model and `inference.predict`, run on the CPU with the same weights."""
    for name in ("torchaudio", "dataset", "learner"):  # imported by inference.py, unused by predict
        stub = types.ModuleType(name)
        stub.from_path_valid = stub._nested_map = None
        sys.modules.setdefault(name, stub)
    sys.path.insert(0, str(folder))
    params = importlib.import_module("params").params
    model_module = importlib.import_module("model")
    inference = importlib.import_module("inference")
    inference.device = torch.device("cpu")
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the original prints its settings
        model = model_module.PriorGrad(params).eval()
    model.load_state_dict({k.removeprefix("priorgrad."): v for k, v in state_dict.items()})
    return inference.predict, model, params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="audio duration to vocode")
    parser.add_argument("--neuralspeech", type=Path, help="the original PriorGrad-vocoder folder (NeuralSpeech)")
    parser.add_argument("--before-rev", default=BEFORE_REV)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                        help="process CPU time (default: all sides run in this one process, single-threaded) or wall")
    parser.add_argument("--out", type=Path, default=HERE / "priorgrad")
    args = parser.parse_args(argv)
    threads = protocol.pin_threads(args.threads)
    env = protocol.environment(threads, config="released (30 layers, 64 channels, dilation cycle 10), random weights",
                               before_rev=args.before_rev, clock=args.clock)
    vocoder = released_vocoder()
    config = vocoder.config
    frames = int(round(args.seconds * config.sample_rate / config.hop_samples))
    mel = torch.randn(config.n_mels, frames, generator=torch.Generator().manual_seed(0)) * 1.5 - 5.0
    audio_seconds = frames * config.hop_samples / config.sample_rate
    std = vocoder._padded_std(None, mel.unsqueeze(0), torch.tensor([frames]))

    def zoo_side(model):
        def run():
            torch.manual_seed(1)
            return model.generate(mel, num_inference_steps=6).waveform
        return run

    sides = {"zoo now": zoo_side(vocoder),
             "zoo before": zoo_side(before_vocoder(args.before_rev, vocoder.state_dict()))}
    checks = {"zoo now vs before": protocol.compare_outputs(sides["zoo now"](), sides["zoo before"](), atol=1e-5,
                                                            what="zoo now vs before")}
    if args.neuralspeech:
        predict, model, params = original_predict(args.neuralspeech, vocoder.state_dict())
        params.inference_noise_schedule = [0.0001, 0.001, 0.01, 0.05, 0.2, 0.5]  # the official 6-step schedule

        def original():
            torch.manual_seed(1)
            return predict(model, mel, std, fast_sampling=True)

        sides["NeuralSpeech original"] = original
        checks["zoo now vs original"] = protocol.compare_outputs(sides["zoo now"](), original(), atol=1e-4,
                                                                 what="zoo vs the original predict")
    times = protocol.alternate(sides, args.repeats, progress="sampling rounds", clock=args.clock)
    protocol.finish(env)
    summary = protocol.summarize(times, work=audio_seconds, unit="audio_seconds")
    for row in summary.values():
        row.update({"rtf_median": row["median_s"] / audio_seconds, "rtf_min": row["min_s"] / audio_seconds,
                    "rtf_max": row["max_s"] / audio_seconds})
    results = {"env": env, "audio_seconds": audio_seconds, "steps": 6, "checks": checks, "sides": summary,
               "before_over_now": protocol.ratio(times, "zoo before", "zoo now")}
    if "NeuralSpeech original" in times:
        results["original_over_now"] = protocol.ratio(times, "NeuralSpeech original", "zoo now")
    protocol.save(results, args.out, panels=[
        {"title": f"6-step sampling, {audio_seconds:.2f} s of audio", "ylabel": "real-time factor",
         "bars": {name: {"median_s": r["rtf_median"], "min_s": r["rtf_min"], "max_s": r["rtf_max"]}
                  for name, r in summary.items()}},
    ])
    print(f"load average {env['load_average_start']} -> {env['load_average_end']}, {threads} thread(s)")
    for name, row in summary.items():
        print(f"{name:>22}: RTF median {row['rtf_median']:.2f} (min {row['rtf_min']:.2f}, max {row['rtf_max']:.2f})")
    for key in ("before_over_now", "original_over_now"):
        if key in results:
            r = results[key]
            print(f"{r['of']}: median {r['median']:.2f}x (min {r['min']:.2f}, max {r['max']:.2f})")
    for name, check in checks.items():
        print(f"{name}: max |diff| {check['max_abs_diff']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
