"""MusicBERT benchmarks: OctupleMIDI encoding against miditoolkit's bare parse and miditok's Octuple, and
SDPA vs eager forward. Protocol: benchmarks/_protocol.py (alternating sides, warm-up, pinned threads,
outputs checked before timing, median with min/max, load average).

    python benchmarks/musicbert.py --music21-corpus /tmp/m21-midi --repeats 3   # the whole music21 corpus
    python benchmarks/musicbert.py --quick                                      # the encoding fixtures

Sides of the tokenizer benchmark, all on the same MIDI bytes:
- `miditoolkit parse`: `miditoolkit.MidiFile(file=...)` alone (what the original pipeline does before encoding);
- `zoo fast` (default reader) and `zoo reference` (`midi_reader="mido"`, the reader verified identical to
  the original): MIDI bytes -> token ids, in the 0.1.14 note pairing (and the fast reader in 1.x's too);
- `miditok Octuple`: symusic parse + miditok 3's Octuple tokenizer (a different token layout, so only the
  work is compared, not the ids);
- `symusic parse`: symusic's C++ parse alone, the floor for any encoder built on it.
Before timing, the fast reader's ids are checked identical to the reference reader's on every file in
both note pairings; symusic's notes are compared with the reference's to show why it is not the reader
(it pairs note-offs first-in-first-out, drops notes left open and assigns the program at the note-on, so
it cannot give the original's encoding).
"""

from __future__ import annotations

import argparse
import io
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import _protocol as protocol  # noqa: E402


def midi_corpus(midi_dir: Path | None, music21_cache: Path | None) -> tuple[list[bytes], str]:
    if music21_cache is not None:
        from zoo.recipes.musicbert import cached_midi, dance_tunes

        exported = cached_midi(dance_tunes(), music21_cache)
        files = [data for data in exported.values() if data is not None]
        return files, f"music21 corpus dance tunes exported to MIDI ({len(files)} of {len(exported)} exported)"
    fixtures = HERE.parent / "tests" / "fixtures" / "musicbert" / "encoding_public" / "midi"
    paths = sorted((midi_dir or fixtures).rglob("*.mid"))
    return [p.read_bytes() for p in paths if "error" not in p.name], str(midi_dir or "encoding fixtures")


def _encode_all(tokenizer, files: list[bytes], pairing: str) -> list:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for data in files:
            try:
                out.append(tokenizer.encode_midi(data, note_pairing=pairing)["input_ids"])
            except Exception as err:  # noqa: BLE001 - an error is an output too, compared like one
                out.append(f"{type(err).__name__}: {str(err).split(': ', 1)[-1]}")
    return out


def symusic_agreement(files: list[bytes]) -> dict:
    """Files whose symusic notes (start, end, pitch, velocity, program, drum) differ from the reference reader's."""
    import symusic

    from zoo.models.musicbert.octuple import read_midi

    differ = {"legacy": 0, "fifo": 0}
    for data in files:
        score = symusic.Score.from_midi(data)
        notes = sorted((n.start, n.end, n.pitch, n.velocity, t.program, int(t.is_drum)) for t in score.tracks
                       for n in t.notes)
        for pairing in differ:
            reference = sorted(map(tuple, read_midi(data, note_pairing=pairing, reader="mido").notes.tolist()))
            differ[pairing] += notes != reference
    return {"files": len(files), "files_where_symusic_notes_differ": differ}


def tokenizer_benchmark(files: list[bytes], repeats: int) -> dict:
    import miditoolkit
    import symusic
    from miditok import Octuple, TokenizerConfig

    from zoo.models.musicbert import OctupleMidiTokenizer

    fast, reference = OctupleMidiTokenizer(), OctupleMidiTokenizer(midi_reader="mido")
    checks = {}
    for pairing in ("legacy", "fifo"):
        checks[pairing] = protocol.compare_outputs(_encode_all(fast, files, pairing),
                                                   _encode_all(reference, files, pairing),
                                                   what=f"fast vs reference reader ids ({pairing})")
    miditok = Octuple(TokenizerConfig(use_programs=True, use_tempos=True, use_time_signatures=True))

    def miditok_encode():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [miditok.encode(symusic.Score.from_midi(data)) for data in files]

    sides = {
        "miditoolkit parse": lambda: [miditoolkit.MidiFile(file=io.BytesIO(data)) for data in files],
        "zoo fast (0.1.14)": lambda: _encode_all(fast, files, "legacy"),
        "zoo fast (1.x)": lambda: _encode_all(fast, files, "fifo"),
        "zoo reference (0.1.14)": lambda: _encode_all(reference, files, "legacy"),
        "miditok Octuple": miditok_encode,
        "symusic parse": lambda: [symusic.Score.from_midi(data) for data in files],
    }
    times = protocol.alternate(sides, repeats, progress="tokenizer rounds")
    notes = sum(OctupleMidiTokenizer().midi_to_octuples(data).__len__() for data in files
                if not isinstance(_encode_all(fast, [data], "legacy")[0], str))
    return {
        "files": len(files), "notes": notes, "checks": checks, "symusic": symusic_agreement(files),
        "sides": protocol.summarize(times, work=len(files), unit="files"),
        "zoo_fast_over_miditoolkit_parse": protocol.ratio(times, "zoo fast (0.1.14)", "miditoolkit parse"),
        "zoo_fast_1x_over_miditoolkit_parse": protocol.ratio(times, "zoo fast (1.x)", "miditoolkit parse"),
        "zoo_before_over_miditoolkit_parse": protocol.ratio(times, "zoo reference (0.1.14)", "miditoolkit parse"),
        "miditok_over_zoo_fast": protocol.ratio(times, "miditok Octuple", "zoo fast (0.1.14)"),
        "reference_over_fast": protocol.ratio(times, "zoo reference (0.1.14)", "zoo fast (0.1.14)"),
    }


def forward_benchmark(repeats: int, notes: int = 1000, batch: int = 2) -> dict:
    import torch

    from zoo.models.musicbert import MusicBertConfig, MusicBertModel

    torch.manual_seed(0)
    ids = torch.randint(4, 1236, (batch, 8 * (notes + 2)))
    models = {}
    for implementation in ("sdpa", "eager"):
        config = MusicBertConfig(num_hidden_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048,
                                 attn_implementation=implementation)
        torch.manual_seed(0)
        models[implementation] = MusicBertModel(config).eval()
    models["eager"].load_state_dict(models["sdpa"].state_dict())
    with torch.inference_mode():
        check = protocol.compare_outputs(models["sdpa"](ids).last_hidden_state, models["eager"](ids).last_hidden_state,
                                         atol=1e-4, what="SDPA vs eager hidden states")
        times = protocol.alternate({name: (lambda m=model: m(ids)) for name, model in models.items()}, repeats)
    return {"check": check, "sides": protocol.summarize(times), "eager_over_sdpa": protocol.ratio(times, "eager", "sdpa"),
            "notes": notes, "batch": batch, "config": "musicbert_small sizes (4L/512/8h/2048)"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--midi-dir", type=Path, help="folder of .mid files (default: the encoding fixtures)")
    parser.add_argument("--music21-corpus", type=Path, metavar="CACHE",
                        help="export the music21 corpus dance tunes to MIDI once into CACHE and use them")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--forward-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="fixtures only, 2 rounds")
    parser.add_argument("--out", type=Path, default=HERE / "musicbert")
    args = parser.parse_args(argv)
    threads = protocol.pin_threads(args.threads)
    if args.quick:
        args.repeats = args.forward_repeats = 2
    files, corpus = midi_corpus(args.midi_dir, None if args.quick else args.music21_corpus)
    env = protocol.environment(threads, corpus=corpus)
    results = {"env": env, "tokenizer": tokenizer_benchmark(files, args.repeats),
               "forward": forward_benchmark(args.forward_repeats)}
    protocol.finish(env)
    tok = results["tokenizer"]
    protocol.save(results, args.out, panels=[
        {"title": f"OctupleMIDI encode, {tok['files']} files ({tok['notes']} notes)", "ylabel": "MIDI files / s",
         "bars": tok["sides"], "key": "median_files_per_s", "log": True, "rotation": 30},
        {"title": f"forward, batch {results['forward']['batch']} x {results['forward']['notes']} notes",
         "ylabel": "seconds per forward", "bars": results["forward"]["sides"]},
    ])
    print(f"corpus: {corpus}; load average {env['load_average_start']} -> {env['load_average_end']}")
    for key in ("zoo_fast_over_miditoolkit_parse", "zoo_fast_1x_over_miditoolkit_parse",
                "zoo_before_over_miditoolkit_parse", "miditok_over_zoo_fast", "reference_over_fast"):
        r = tok[key]
        print(f"{r['of']}: median {r['median']:.3f} (min {r['min']:.3f}, max {r['max']:.3f})")
    print(f"symusic notes differ from the reference on {tok['symusic']['files_where_symusic_notes_differ']} "
          f"of {tok['files']} files")
    r = results["forward"]["eager_over_sdpa"]
    print(f"forward eager / SDPA: median {r['median']:.2f}x (min {r['min']:.2f}, max {r['max']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
