"""MusicBERT benchmarks: tokenizer throughput against miditoolkit's parse alone, and SDPA vs eager forward.

    python benchmarks/musicbert.py [--midi-dir DIR] [--repeats 5]

The floor is `miditoolkit.MidiFile(file=...)` on the same bytes (what the original pipeline does before
encoding); ours is MIDI bytes -> token ids (our own event reader, both note pairings). Forward time is
MusicBertModel (musicbert_small sizes) on 1,000-note inputs with each attention implementation.
Results are printed and written next to this script as musicbert.json and musicbert.png.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def midi_corpus(midi_dir: Path | None) -> list[bytes]:
    fixtures = HERE.parent / "tests" / "fixtures" / "musicbert" / "encoding_public" / "midi"
    paths = sorted((midi_dir or fixtures).rglob("*.mid"))
    return [p.read_bytes() for p in paths if "error" not in p.name]


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def tokenizer_benchmark(files: list[bytes], repeats: int) -> dict:
    import miditoolkit

    from zoo.models.musicbert import OctupleMidiTokenizer

    tokenizer = OctupleMidiTokenizer()
    parse = best_of(lambda: [miditoolkit.MidiFile(file=io.BytesIO(data)) for data in files], repeats)
    result = {"files": len(files), "notes": 0, "miditoolkit_parse_s": parse,
              "miditoolkit_parse_files_per_s": len(files) / parse}
    for pairing in ("legacy", "fifo"):
        def encode(pairing: str = pairing):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return [tokenizer.encode_midi(data, note_pairing=pairing) for data in files]
        ours = best_of(encode, repeats)
        result[f"ours_{pairing}_s"] = ours
        result[f"ours_{pairing}_files_per_s"] = len(files) / ours
        result[f"ours_{pairing}_over_parse"] = ours / parse
    result["notes"] = sum(len(tokenizer.midi_to_octuples(data)) for data in files)
    return result


def forward_benchmark(repeats: int, notes: int = 1000, batch: int = 2) -> dict:
    import torch

    from zoo.models.musicbert import MusicBertConfig, MusicBertModel

    torch.manual_seed(0)
    timings = {}
    ids = torch.randint(4, 1236, (batch, 8 * (notes + 2)))
    for implementation in ("sdpa", "eager"):
        config = MusicBertConfig(num_hidden_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048,
                                 attn_implementation=implementation)
        model = MusicBertModel(config).eval()
        with torch.inference_mode():
            model(ids)
            timings[f"{implementation}_s"] = best_of(lambda model=model: model(ids), repeats)
    timings["eager_over_sdpa"] = timings["eager_s"] / timings["sdpa_s"]
    timings.update({"notes": notes, "batch": batch, "config": "musicbert_small sizes (4L/512/8h/2048)",
                    "threads": torch.get_num_threads()})
    return timings


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tok, fwd = results["tokenizer"], results["forward"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.bar(["miditoolkit parse", "ours (legacy)", "ours (fifo)"],
             [tok["miditoolkit_parse_files_per_s"], tok["ours_legacy_files_per_s"], tok["ours_fifo_files_per_s"]])
    left.set_ylabel("MIDI files / s")
    left.set_title(f"tokenizer ({tok['files']} files, {tok['notes']} notes)")
    right.bar(["SDPA", "eager"], [fwd["sdpa_s"], fwd["eager_s"]])
    right.set_ylabel("seconds per forward")
    right.set_title(f"forward, batch {fwd['batch']} x {fwd['notes']} notes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--midi-dir", type=Path, help="folder of .mid files (default: the encoding fixtures)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--forward-repeats", type=int, default=3)
    args = parser.parse_args(argv)
    files = midi_corpus(args.midi_dir)
    results = {"tokenizer": tokenizer_benchmark(files, args.repeats), "forward": forward_benchmark(args.forward_repeats)}
    print(json.dumps(results, indent=2))
    (HERE / "musicbert.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, HERE / "musicbert.png")
    tok = results["tokenizer"]
    print(f"tokenizer: ours/parse = {tok['ours_legacy_over_parse']:.2f}x (legacy), "
          f"{tok['ours_fifo_over_parse']:.2f}x (fifo); target <= 1.5x")
    print(f"forward: eager/SDPA = {results['forward']['eager_over_sdpa']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
