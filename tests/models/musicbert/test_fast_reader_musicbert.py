"""The fast MIDI reader (one pass over the bytes) against the reference reader (mido + miditoolkit's pairing).

The reference reader is the one verified identical to the original encoder (the encoding fixtures and
the music21 corpus); the fast reader must give the same ParsedMidi, hence the same encodings, in both
note pairings. Files the fast reader does not handle itself must reach the reference reader, so that
errors and quirks stay the reference's.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

from zoo.models.musicbert import OctupleMidiTokenizer
from zoo.models.musicbert.octuple import (
    NOTE_PAIRINGS,
    _NeedsGeneralReader,
    _parse_bytes,
    _scan_bytes,
    encode_octuples,
    read_midi,
)

from .fixture_cases import cases

ENCODING_CASES = cases("encoding")


def _outcome(function, data: bytes, pairing: str):
    """A comparable summary of a read: the parsed fields, or the error's type and message."""
    try:
        parsed = function(data, "<case>", pairing)
    except Exception as err:  # noqa: BLE001 - the error itself is what is compared
        return ("error", type(err).__name__, str(err))
    return (parsed.ticks_per_beat, parsed.notes.tolist(), parsed.time_signatures, parsed.tempos,
            [{k: v for k, v in inst.items()} for inst in parsed.instruments])


def _fixture_files():
    params = []
    for case in ENCODING_CASES:
        folder = getattr(case.values[0], "folder", None)
        if folder is None:  # a broken case or no case: the tokenization tests fail on it, naming why
            continue
        for path in sorted((folder / "midi").glob("*.mid")):
            params.append(pytest.param(path, id=f"{folder.name}/{path.name}"))
    return params


def test_fixture_midi_files_are_found():
    assert _fixture_files(), "no MIDI file in any encoding case: the fast-reader parity tests would not run"


@pytest.mark.parametrize("path", _fixture_files())
@pytest.mark.parametrize("pairing", NOTE_PAIRINGS)
def test_fast_reader_equals_reference_on_fixtures(path, pairing):
    data = path.read_bytes()
    fast = _scan_bytes(data, "<case>", pairing)  # no fallback: these files are the fast reader's own work
    assert _outcome(lambda *a: fast, data, pairing) == _outcome(_parse_bytes, data, pairing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            reference = encode_octuples(read_midi(data, note_pairing=pairing, reader="mido"))
        except Exception as err:  # noqa: BLE001
            with pytest.raises(type(err), match=str(err).split(": ", 1)[-1].replace("(", r"\(").replace(")", r"\)")):
                encode_octuples(read_midi(data, note_pairing=pairing))
            return
        assert encode_octuples(read_midi(data, note_pairing=pairing)) == reference


def test_music21_corpus_sample_identical_in_both_pairings():
    """Real tunes from the music21 corpus (where the two pairings disagree on about one file in five)."""
    pytest.importorskip("music21")
    from zoo.recipes.musicbert import abc_to_midi, dance_tunes

    files = []
    for tune in dance_tunes()[:8]:
        try:
            files.append(abc_to_midi(tune["abc"]))
        except Exception:  # noqa: BLE001 - music21 cannot export some tunes (badly formed repeats); not ours to test
            continue
    assert len(files) >= 5
    encodings = {}
    for pairing in NOTE_PAIRINGS:
        for index, data in enumerate(files):
            fast = _scan_bytes(data, "<tune>", pairing)
            reference = _parse_bytes(data, "<tune>", pairing)
            assert np.array_equal(fast.notes, reference.notes), (index, pairing)
            assert (fast.tempos, fast.time_signatures, fast.ticks_per_beat) == (
                reference.tempos, reference.time_signatures, reference.ticks_per_beat)
            encodings[pairing, index] = encode_octuples(fast)
            assert encodings[pairing, index] == encode_octuples(reference)
    # The sample is a real check of both rules only if they disagree on some tune.
    assert any(encodings["legacy", i] != encodings["fifo", i] for i in range(len(files)))


def _file(*tracks: bytes, ticks_per_beat: int = 480, header_extra: bytes = b"") -> bytes:
    header = (6 + len(header_extra)).to_bytes(4, "big") + (1).to_bytes(2, "big") + len(tracks).to_bytes(2, "big")
    header += ticks_per_beat.to_bytes(2, "big") + header_extra
    return b"MThd" + header + b"".join(b"MTrk" + len(t).to_bytes(4, "big") + t for t in tracks)


END = b"\x00\xff\x2f\x00"
NOTES = b"\x00\x90\x3c\x40" + b"\x60\x3c\x00" + b"\x00\x3e\x50" + b"\x83\x60\x80\x3e\x00"  # running status
CRAFTED = {
    "running status and long delta": _file(NOTES + END),
    "sysex": _file(b"\x00\xf0\x05\x7e\x7f\x09\x01\xf7" + NOTES + END),
    "sysex data byte above 127": _file(b"\x00\xf0\x03\x7e\x80\xf7" + NOTES + END),
    "running status without a status": _file(b"\x00\x3c\x40" + END),
    "data byte above 127": _file(b"\x00\x90\x3c\xc0" + END),
    "undefined status": _file(b"\x00\xf4" + END),
    "track runs past the file": _file(NOTES + END)[:-3],
    "event crosses the chunk end": _file(NOTES + b"\x00\x90\x3c") + b"\x40" + END,
    "tempo zero": _file(b"\x00\xff\x51\x03\x00\x00\x00" + NOTES + END),
    "short tempo": _file(b"\x00\xff\x51\x02\x07\xa1" + NOTES + END),
    "tempo changes": _file(b"\x00\xff\x51\x03\x07\xa1\x20\x60\xff\x51\x03\x07\xa1\x20\x60\xff\x51\x03\x06\x1a\x80"
                           + NOTES + END),
    "short time signature": _file(b"\x00\xff\x58\x02\x03\x02" + NOTES + END),
    "time signature 4/2**29 (mido refuses it)": _file(b"\x00\xff\x58\x04\x04\x1d\x18\x08" + NOTES + END),
    "time signature 4/2**28": _file(b"\x00\xff\x58\x04\x04\x1c\x18\x08" + NOTES + END),
    "unknown meta type (mido drops its delta)": _file(b"\x00\x90\x3c\x40\x60\xff\x43\x00\x00\x3c\x41"
                                                      b"\x60\x80\x3c\x00" + END),
    "bad key signature": _file(b"\x00\xff\x59\x02\x09\x00" + NOTES + END),
    "key signature": _file(b"\x00\xff\x59\x02\xfd\x01" + NOTES + END),
    "bad smpte offset": _file(b"\x00\xff\x54\x05\xe0\x00\x00\x00\x00" + NOTES + END),
    "one-byte sequence number": _file(b"\x00\xff\x00\x01\x05" + NOTES + END),
    "empty channel prefix": _file(b"\x00\xff\x20\x00" + NOTES + END),
    "track names": _file(b"\x00\xff\x03\x00\x00\xff\x03\x03abc\x00\xff\x03\x03def" + NOTES + END),
    "zero-length and stacked notes": _file(
        b"\x00\x90\x3c\x40\x00\x80\x3c\x00\x00\x90\x3c\x41\x10\x90\x3c\x42\x10\x80\x3c\x00\x10\x80\x3c\x00" + END),
    "program change between on and off": _file(b"\x00\xc0\x05\x00\x90\x3c\x40\x10\xc0\x07\x10\x80\x3c\x00" + END),
    "drums and channels": _file(b"\x00\x99\x24\x40\x00\x91\x24\x40\x10\x89\x24\x00\x00\x81\x24\x00" + END,
                                b"\x00\x90\x30\x40\x10\x90\x30\x00" + END),
    "not MThd": b"RIFF" + _file(NOTES + END)[4:],
    "short header": _file(NOTES + END)[:12],
    "long header": _file(NOTES + END, header_extra=b"\x00\x00"),
    "not MTrk": _file(NOTES + END).replace(b"MTrk", b"XTrk"),
    "no tracks": _file(),
    "negative division": _file(NOTES + END, ticks_per_beat=0xE728),
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
@pytest.mark.parametrize("pairing", NOTE_PAIRINGS)
def test_fast_reader_equals_reference_on_crafted_files(name, pairing):
    data = CRAFTED[name]
    fast = _outcome(lambda d, s, p: read_midi(d, note_pairing=p), data, pairing)
    fast = fast[:2] + (fast[2].replace(f"<{len(data)} bytes of MIDI>", "<case>"),) if fast[0] == "error" else fast
    assert fast == _outcome(_parse_bytes, data, pairing)


def test_fast_reader_reads_well_formed_files_itself():
    # The crafted files the scanner must read on its own (not by falling back), so the comparison above tests it.
    own = ["running status and long delta", "tempo changes", "key signature", "track names",
           "zero-length and stacked notes", "program change between on and off", "drums and channels",
           "long header", "no tracks"]
    for name in own:
        _scan_bytes(CRAFTED[name], "<case>", "legacy")
    for name in ("sysex", "tempo zero", "bad key signature", "track runs past the file", "not MThd"):
        with pytest.raises(_NeedsGeneralReader):
            _scan_bytes(CRAFTED[name], "<case>", "legacy")


def test_reader_option():
    data = CRAFTED["zero-length and stacked notes"]
    tokenizer = OctupleMidiTokenizer(midi_reader="mido")
    assert tokenizer.midi_reader == "mido"
    assert tokenizer.midi_to_octuples(data) == OctupleMidiTokenizer().midi_to_octuples(data)
    with pytest.raises(ValueError, match="reader must be one of"):
        read_midi(data, reader="symusic")
    with pytest.raises(ValueError, match="midi_reader must be one of"):
        OctupleMidiTokenizer(midi_reader="pretty_midi")
    assert read_midi(io.BytesIO(data)).num_notes == read_midi(data, reader="mido").num_notes
