"""OctupleMidiTokenizer against the original encoder's outputs (tests/fixtures/musicbert/*/ encoding cases)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from transformers import AutoTokenizer

import zoo  # noqa: F401
from tests.fixture_cases import BrokenCase
from tests.fixture_usage import record_read
from zoo.models.musicbert import MusicBertConfig, OctupleError, OctupleMidiTokenizer
from zoo.models.musicbert.octuple import (
    DURATION_DECODE,
    DURATION_ENCODE,
    TIME_SIGNATURES,
    decode_octuples,
    encode_octuples,
    read_midi,
    reduce_time_signature,
    tempo_to_token,
    token_to_tempo,
    token_to_velocity,
)
from zoo.models.musicbert.tokenization_musicbert import build_field_tokens, build_vocab

from .fixture_cases import cases

ENCODING_CASES = cases("encoding")


def file_params(decodable_only: bool = False, pairings=("legacy", "fifo")):
    """(case, MIDI file name, note pairing) for every file meta.json lists; a broken case passes through (it fails)."""
    params = []
    for param in ENCODING_CASES:
        case = param.values[0]
        if isinstance(case, BrokenCase):
            params.append(pytest.param(case, None, None, id=param.id))
            continue
        for name in sorted(case.meta["files"]):
            if decodable_only and case.meta["files"][name]["error"] is not None:
                continue
            for pairing in pairings:
                params.append(pytest.param(case, name, pairing, id=f"{case.name}/{name}/{pairing}"))
    return params


def reference(case, name: str, pairing: str) -> dict:
    """What the original produced with miditoolkit 0.1.14 (legacy) or 1.0.1 (fifo)."""
    primary = case.json(f"expected/{Path(name).stem}.json")
    if pairing == "legacy":
        return primary
    alt = primary["alt_parser"]
    if alt.get("encoding_identical"):
        return {**primary, "parsed": alt.get("parsed", primary["parsed"])}
    return {**primary, **alt}


def canonical_instruments(instruments: list[dict]) -> list:
    return sorted((inst["program"], inst["is_drum"], sorted(map(list, inst["notes"]))) for inst in instruments)


@pytest.fixture(scope="module")
def tokenizer():
    return OctupleMidiTokenizer()


@pytest.mark.parametrize("case,name,pairing", file_params())
def test_encoding_matches_original(tokenizer, case, name, pairing):
    expected = reference(case, name, pairing)
    path = case.file(f"midi/{name}")
    if expected.get("error"):
        message = expected["error"].split(": ", 1)[1]
        with pytest.raises(OctupleError, match=r".*" + message.replace("(", r"\(").replace(")", r"\)")) as info:
            tokenizer.encode_midi(path, note_pairing=pairing)
        assert str(path) in str(info.value)
        return
    parsed = read_midi(path, note_pairing=pairing)
    if "parsed" in expected:
        assert parsed.ticks_per_beat == expected["parsed"]["ticks_per_beat"]
        assert [list(ts) for ts in parsed.time_signatures] == expected["parsed"]["time_signature_changes"]
        assert [list(t) for t in parsed.tempos] == expected["parsed"]["tempo_changes"]
        notes = [{"program": i["program"], "is_drum": i["is_drum"], "notes": i["notes"]} for i in parsed.instruments]
        assert canonical_instruments(notes) == canonical_instruments(expected["parsed"]["instruments"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [list(o) for o in encode_octuples(parsed)] == expected["encoding"]
    assert all("dropped, as the original encoder does" in str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = tokenizer.encode_midi(path, note_pairing=pairing)
    assert batch["input_ids"][0] == expected["input_ids"]
    assert " ".join(tokenizer.convert_ids_to_tokens(batch["input_ids"][0])[:-1]) == expected["encoding_to_str"]
    # an original text line (already holding <s> / </s>) through the text path, plus fairseq's appended </s>
    text_ids = tokenizer(expected["encoding_to_str"], add_special_tokens=False)["input_ids"]
    assert text_ids + [tokenizer.eos_token_id] == expected["input_ids"]


@pytest.mark.parametrize("case,name,pairing", file_params(True, pairings=("legacy",)))
def test_decoder_matches_original(tokenizer, case, name, pairing, tmp_path):
    import miditoolkit

    expected = reference(case, name, pairing)
    decoded_ref = expected["encoding_to_MIDI"]
    midi = decode_octuples(expected["encoding"])
    midi.dump(tmp_path / "ours.mid")
    ours = miditoolkit.MidiFile(str(tmp_path / "ours.mid"))
    theirs = miditoolkit.MidiFile(str(case.file(decoded_ref["decoded_midi"])))
    assert ours.ticks_per_beat == theirs.ticks_per_beat
    assert [(t.numerator, t.denominator, t.time) for t in ours.time_signature_changes] == \
        [(t.numerator, t.denominator, t.time) for t in theirs.time_signature_changes]
    assert [(round(t.tempo, 6), t.time) for t in ours.tempo_changes] == \
        [(round(t.tempo, 6), t.time) for t in theirs.tempo_changes]
    summary = lambda m: sorted(  # noqa: E731
        (i.program, i.is_drum, i.name, sorted((n.start, n.end, n.pitch, n.velocity) for n in i.notes)) for i in m.instruments)
    assert summary(ours) == summary(theirs)
    reencoded = encode_octuples(read_midi(tmp_path / "ours.mid"))
    assert [list(o) for o in reencoded] == decoded_ref["reencoded"]


@pytest.mark.parametrize("case", ENCODING_CASES)
def test_vocabulary_built_in_code(case):
    meta = case.meta
    assert build_vocab() == case.json("vocab.json")["id_to_token"]
    assert [line.split()[0] for line in case.file("dict.txt").read_text().splitlines()] == build_field_tokens()
    assert len(build_vocab()) == meta["vocab"]["size"]
    tables = case.json("tables.json")
    assert [list(ts) for ts in TIME_SIGNATURES] == tables["ts_list"]
    for text, result in tables["time_signature_reduce_examples"].items():
        assert list(reduce_time_signature(*map(int, text.split("/")))) == result
    for bpm, token in tables["b2e_examples"].items():
        assert tempo_to_token(float(bpm)) == token
    assert [token_to_tempo(t) for t in range(len(tables["tempo_token_to_bpm"]))] == tables["tempo_token_to_bpm"]
    assert [token_to_velocity(t) for t in range(len(tables["velocity_token_to_velocity"]))] == \
        tables["velocity_token_to_velocity"]
    assert DURATION_ENCODE == tables["dur_enc"] and DURATION_DECODE == tables["dur_dec"]


def test_save_and_load_round_trip(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    MusicBertConfig().save_pretrained(tmp_path)
    assert (tmp_path / "dict.txt").read_text().splitlines()[0] == "<0-0> 0"
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(reloaded) is OctupleMidiTokenizer
    assert reloaded.get_vocab() == tokenizer.get_vocab() and len(reloaded) == 1237
    assert reloaded.mask_token_id == 1236 and reloaded.pad_token_id == 1
    (tmp_path / "dict.txt").write_text("<0-0> 0\n<9-9> 0\n")
    with pytest.raises(ValueError, match="not the OctupleMIDI dictionary"):
        OctupleMidiTokenizer(vocab_file=str(tmp_path / "dict.txt"))


def test_ids_round_trip(tokenizer):
    octuples = [(0, 0, 0, 60, 8, 20, 9, 31), (3, 17, 128, 166, 2, 31, 100, 48)]
    ids = tokenizer.octuples_to_ids(octuples)
    assert len(ids) == 8 * 4 and ids[:8] == [0] * 8 and ids[-8:] == [2] * 8
    assert tokenizer.ids_to_octuples(ids + [1] * 8) == octuples
    with pytest.raises(ValueError, match="field 3"):
        tokenizer.octuples_to_ids([(0, 0, 0, 300, 8, 20, 9, 31)])


@pytest.mark.parametrize("case", ENCODING_CASES)
def test_case_files_agree(case):
    """meta.json's file list = index.json = the MIDI folder = the sources record = the expected files."""
    import hashlib

    files = case.meta["files"]
    assert case.json("index.json") == files
    assert sorted(p.name for p in (case.folder / "midi").glob("*.mid")) == sorted(files)
    assert sorted(case.json("midi/midi_sources.json")) == sorted(files), "every MIDI file has a recorded source"
    for name, summary in files.items():
        expected = case.json(f"expected/{Path(name).stem}.json")
        assert expected["midi_file"] == f"midi/{name}"
        assert hashlib.sha256(case.file(f"midi/{name}").read_bytes()).hexdigest() == expected["midi_sha256"]
        assert expected["error"] == summary["error"]
        if summary["error"] is None:
            assert expected["n_notes"] == summary["n_notes"] == len(expected["encoding"])
            assert len(expected["input_ids"]) == summary["n_input_ids"]


@pytest.mark.parametrize("case", ENCODING_CASES)
def test_tokenizer_loads_with_remote_code_without_zoo(tokenizer, case, tmp_path):
    import os
    import subprocess
    import sys

    tokenizer.save_pretrained(tmp_path)
    MusicBertConfig().save_pretrained(tmp_path)
    name = min(n for n, f in case.meta["files"].items() if f["error"] is None)  # any file the original encodes
    midi = case.file(f"midi/{name}")
    expected = reference(case, name, "legacy")["input_ids"]
    script = (
        "import sys; sys.modules['zoo'] = None\n"
        "from transformers import AutoTokenizer\n"
        f"t = AutoTokenizer.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)\n"
        "assert type(t).__module__.startswith('transformers_modules'), type(t).__module__\n"
        f"print(t.encode_midi({str(midi)!r})['input_ids'][0])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "HF_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    record_read(midi)  # read by the subprocess
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected
