"""OctupleMIDI: MIDI <-> 8-tuples of integers, as MusicBERT's `preprocess.py` defines them.

Every note becomes `(bar, position, program, pitch, duration, velocity, time_signature, tempo)`:
bar and position on a 16-per-beat grid, program 128 for drums (pitch + 128), durations and tempi
quantised on log-like tables, time signatures from a fixed table. The tables and rules follow the
original (microsoft/muzic musicbert/preprocess.py) exactly, quirks included, so the encodings are
the ones the released checkpoints were trained on.

This module needs only numpy and the standard library: MIDI bytes are read by a one-pass reader of
its own, and `mido` (the reference reader, and the fallback for unusual files) / `miditoolkit` are
imported lazily by the functions that need them.

    notes = read_midi("song.mid")                 # ParsedMidi, original (miditoolkit 0.1.14) note pairing
    octuples = encode_octuples(notes)             # sorted list of 8-tuples
    midi = decode_octuples(octuples)              # miditoolkit.MidiFile
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# The original's constants (preprocess.py); the vocabulary and every table derive from them.
POS_RESOLUTION = 16  # grid positions per beat (quarter note)
BAR_MAX = 256
VELOCITY_QUANT = 4
TEMPO_QUANT = 12  # tempo tokens are steps of 2 ** (1 / 12)
MIN_TEMPO = 16
MAX_TEMPO = 256
DURATION_MAX = 8  # durations up to 2 ** 8 beats
MAX_TS_DENOMINATOR_LOG2 = 6  # x/1 ... x/64
MAX_NOTES_PER_BAR = 2  # a bar is at most 2 whole notes long
BEAT_NOTE_FACTOR = 4  # MIDI beats are quarter notes
TRUNC_POS = 2 ** 16  # notes starting at or after this grid position are dropped (about 30 minutes)
SAMPLE_LEN_MAX = 1000  # notes per model input
SAMPLE_OVERLAP_RATE = 4  # windows of a long piece overlap by 3/4
MAX_TICK = 2 ** 31  # the original's sanity bound on note times and time-signature values
# Bounds on what a MIDI file may make the readers allocate or loop over (files from outside are hostile).
MAX_MIDI_EVENTS = 1_000_000  # events in all tracks together (at most 500,000 notes; mido takes ~0.4 GB for them)
MAX_MIDI_PAYLOAD = 4 << 20  # bytes of meta-event and sysex data in all tracks together
MAX_VLQ_BYTES = 4  # the MIDI specification's longest variable-length number

FIELD_NAMES = ("bar", "position", "program", "pitch", "duration", "velocity", "time_signature", "tempo")
DRUM_PROGRAM = 128


class OctupleError(ValueError):
    """A MIDI input that cannot be encoded; the message names the input and the problem."""


def _time_signature_table() -> list[tuple[int, int]]:
    table = []
    for log2_den in range(MAX_TS_DENOMINATOR_LOG2 + 1):
        denominator = 2 ** log2_den
        table.extend((numerator, denominator) for numerator in range(1, denominator * MAX_NOTES_PER_BAR + 1))
    return table


def _duration_tables() -> tuple[list[int], list[int]]:
    # Each of DURATION_MAX octaves holds POS_RESOLUTION tokens whose width doubles per octave.
    encode: list[int] = []
    decode: list[int] = []
    for octave in range(DURATION_MAX):
        for _ in range(POS_RESOLUTION):
            decode.append(len(encode))
            encode.extend([len(decode) - 1] * (2 ** octave))
    return encode, decode


TIME_SIGNATURES = _time_signature_table()
TIME_SIGNATURE_INDEX = {ts: index for index, ts in enumerate(TIME_SIGNATURES)}
DURATION_ENCODE, DURATION_DECODE = _duration_tables()
_DURATION_ENCODE_ARRAY = np.asarray(DURATION_ENCODE, dtype=np.int64)


def tempo_to_token(bpm: float) -> int:
    """Quantise a tempo in BPM (clipped to 16..256) to its token."""
    bpm = min(max(bpm, MIN_TEMPO), MAX_TEMPO)
    return round(math.log2(bpm / MIN_TEMPO) * TEMPO_QUANT)


def token_to_tempo(token: int) -> float:
    return 2 ** (token / TEMPO_QUANT) * MIN_TEMPO


def velocity_to_token(velocity: int) -> int:
    return velocity // VELOCITY_QUANT


def token_to_velocity(token: int) -> int:
    return token * VELOCITY_QUANT + VELOCITY_QUANT // 2


def duration_to_token(positions: int) -> int:
    return DURATION_ENCODE[min(positions, len(DURATION_ENCODE) - 1)]


def token_to_duration(token: int) -> int:
    return DURATION_DECODE[min(token, len(DURATION_DECODE) - 1)]


def reduce_time_signature(numerator: int, denominator: int) -> tuple[int, int]:
    """The original's rewrite of time signatures outside the table (e.g. 18/8 -> 9/8, 17/8 -> 1/8)."""
    while denominator > 2 ** MAX_TS_DENOMINATOR_LOG2 and denominator % 2 == 0 and numerator % 2 == 0:
        numerator //= 2
        denominator //= 2
    # A bar longer than MAX_NOTES_PER_BAR whole notes is divided by its numerator's smallest factor.
    while numerator > MAX_NOTES_PER_BAR * denominator:
        for factor in range(2, numerator + 1):
            if numerator % factor == 0:
                numerator //= factor
                break
    return numerator, denominator


def time_signature_to_token(numerator: int, denominator: int, source: str = "<midi>") -> int:
    reduced = reduce_time_signature(numerator, denominator)
    if reduced not in TIME_SIGNATURE_INDEX:
        raise OctupleError(f"{source}: unsupported time signature: {reduced}")
    return TIME_SIGNATURE_INDEX[reduced]


DEFAULT_TIME_SIGNATURE_TOKEN = TIME_SIGNATURE_INDEX[reduce_time_signature(4, 4)]
DEFAULT_TEMPO_TOKEN = tempo_to_token(120.0)
FIELD_SIZES = (
    BAR_MAX,
    BEAT_NOTE_FACTOR * MAX_NOTES_PER_BAR * POS_RESOLUTION,
    DRUM_PROGRAM + 1,
    2 * 128,
    DURATION_MAX * POS_RESOLUTION,
    velocity_to_token(127) + 1,
    len(TIME_SIGNATURES),
    tempo_to_token(MAX_TEMPO) + 1,
)


# -- reading MIDI -------------------------------------------------------------------------------------------
NOTE_PAIRINGS = ("legacy", "fifo")
READERS = ("fast", "mido")


@dataclass
class ParsedMidi:
    """What the encoder needs from a MIDI file.

    `notes` is an int64 array [N, 6] of (start_tick, end_tick, pitch, velocity, program, is_drum);
    `time_signatures` holds (numerator, denominator, tick) and `tempos` (bpm, tick), in file order.
    """

    ticks_per_beat: int
    notes: np.ndarray
    time_signatures: list[tuple[int, int, int]] = field(default_factory=list)
    tempos: list[tuple[float, int]] = field(default_factory=list)
    source: str = "<midi>"
    instruments: list[dict[str, Any]] = field(default_factory=list)  # program, is_drum, name, note rows
    unclosed_notes: int = 0  # note-ons that no note-off closed before their track ended (dropped)

    @property
    def num_notes(self) -> int:
        return int(self.notes.shape[0])


def _source_name(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes of MIDI>"
    return f"<{type(source).__name__}>"


def _pair_notes(track, pairing: str, unclosed: list[int] | None = None,
                ) -> list[tuple[tuple[int, int, int], list[tuple[int, int, int, int]]]]:
    """Notes of one mido track (cumulative times), grouped by (program, channel) instrument.

    `legacy` is miditoolkit 0.1.14's rule (also pretty_midi's): a note-off closes every open note of
    that pitch that started at an earlier tick, and a note-off at a note-on's own tick leaves it open
    (so a zero-length note disappears). `fifo` is miditoolkit >= 1.0's rule: a note-off closes the
    oldest open note of that pitch, zero-length notes included. Notes still open at the end of the track
    are dropped (both rules); their number is appended to `unclosed`.
    """
    instruments: dict[tuple[int, int], list[tuple[int, int, int, int]]] = {}
    open_notes: dict[tuple[int, int], Any] = defaultdict(list if pairing == "legacy" else deque)
    programs = [0] * 16
    tick = 0
    for event in track:
        tick += event.time
        kind = event.type
        if kind == "program_change":
            programs[event.channel] = event.program
        elif kind == "note_on" and event.velocity > 0:
            open_notes[(event.channel, event.note)].append((tick, event.velocity))
        elif kind == "note_off" or kind == "note_on":
            key = (event.channel, event.note)
            pending = open_notes.get(key)
            if not pending:
                continue
            if pairing == "legacy":
                closing = [n for n in pending if n[0] != tick]
                keeping = [n for n in pending if n[0] == tick]
            else:  # the oldest open note; a deque, so that thousands of stacked notes stay linear
                closing, keeping = [pending.popleft()], pending
            if closing:
                bucket = instruments.setdefault((programs[event.channel], event.channel), [])
                bucket.extend((start, tick, event.note, velocity) for start, velocity in closing)
            if closing and keeping:
                open_notes[key] = keeping
            else:
                del open_notes[key]
    if unclosed is not None:
        unclosed.append(sum(len(pending) for pending in open_notes.values()))
    return list(instruments.items())


class _Limits:
    """What one file may still use of the event and payload bounds (shared by its tracks)."""

    def __init__(self, source: str, max_events: int = MAX_MIDI_EVENTS, max_payload: int = MAX_MIDI_PAYLOAD):
        self.source, self.events, self.payload = source, max_events, max_payload
        self.max_events, self.max_payload = max_events, max_payload

    def too_many_events(self) -> OctupleError:
        return OctupleError(f"{self.source}: more than {self.max_events} MIDI events (max_events); refused before "
                            "reading further")

    def too_much_payload(self) -> OctupleError:
        return OctupleError(f"{self.source}: more than {self.max_payload} bytes of meta-event and sysex data "
                            "(max_payload); refused before reading further")

    def long_number(self, pos: int) -> OctupleError:
        return OctupleError(f"{self.source}: a variable-length number at byte {pos} is longer than {MAX_VLQ_BYTES} "
                            "bytes (the MIDI limit)")


def _read_vlq(data: bytes, pos: int, limits: _Limits) -> tuple[int, int]:
    """A variable-length number at `pos`: (value, next position); IndexError past the end of the data."""
    value = 0
    for count in range(MAX_VLQ_BYTES):
        byte = data[pos + count]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, pos + count + 1
    raise limits.long_number(pos)


def _num_tracks(data: bytes, source: str) -> int:
    """The header's track count; one above 32767 (read as negative by mido, so no track at all) is refused."""
    count = int.from_bytes(data[10:12], "big")
    if count > 0x7FFF:
        raise OctupleError(f"{source}: the header claims {count} tracks, more than the 32767 MIDI readers accept "
                           "(mido would read none)")
    return count


def _check_bounds(data: bytes, limits: _Limits) -> None:
    """Walk the chunks and events as mido will, refusing what would make it allocate or loop without bound.

    Numbers longer than 4 bytes, more events than `max_events` and more meta/sysex data than `max_payload`
    are refused. Anything else mido cannot read (truncation, an undefined status) ends the walk there and is
    left to mido, whose errors are the reference.
    """
    from mido.messages.specs import SPEC_BY_STATUS

    if len(data) < 14 or data[:4] != b"MThd":
        return
    pos = 8 + int.from_bytes(data[4:8], "big")
    num_tracks = _num_tracks(data, limits.source)
    try:
        for _ in range(num_tracks):
            if data[pos:pos + 4] != b"MTrk":
                return
            start, size = pos + 8, int.from_bytes(data[pos + 4:pos + 8], "big")
            pos = start
            last_status = -1
            while pos - start != size:  # mido stops only at exactly the chunk's end
                limits.events -= 1
                if limits.events < 0:
                    raise limits.too_many_events()
                _, pos = _read_vlq(data, pos, limits)
                status = data[pos]
                pos += 1
                if status < 0x80:
                    if last_status < 0:
                        return
                    status = last_status
                    pos -= status not in (0xF0, 0xF7)  # mido reads a sysex's length after the peeked byte
                elif status != 0xFF:
                    last_status = status
                if status == 0xFF or status in (0xF0, 0xF7):
                    pos += status == 0xFF  # the meta type
                    length, pos = _read_vlq(data, pos, limits)
                    if length > 1_000_000:  # mido refuses it before reading
                        return
                    limits.payload -= length
                    if limits.payload < 0:
                        raise limits.too_much_payload()
                    pos += length
                elif status in SPEC_BY_STATUS:
                    pos += SPEC_BY_STATUS[status]["length"] - 1
                else:
                    return
                if pos > len(data):
                    return
    except IndexError:  # truncated: mido says so
        return


def _parse_bytes(data: bytes, source: str, pairing: str, limits: _Limits | None = None) -> ParsedMidi:
    import mido

    if pairing not in NOTE_PAIRINGS:
        raise ValueError(f"note_pairing must be one of {NOTE_PAIRINGS}, got {pairing!r}")
    _check_bounds(data, limits or _Limits(source))
    try:
        midi = mido.MidiFile(file=io.BytesIO(data), clip=False, charset="latin1")
    except Exception as err:  # mido raises OSError, EOFError, KeyError, ValueError... on bad files
        detail = str(err) or ("the data ends before the file does" if isinstance(err, EOFError) else repr(err))
        raise OctupleError(f"{source}: not a readable MIDI file ({type(err).__name__}: {detail})") from err
    try:
        return _parsed_from_mido(midi, source, pairing)
    except (OctupleError, MemoryError):
        raise
    except Exception as err:  # a value mido accepts but cannot convert; never a bare backend error
        raise OctupleError(f"{source}: not a readable MIDI file ({type(err).__name__}: {err})") from err


def _parsed_from_mido(midi: Any, source: str, pairing: str) -> ParsedMidi:
    import mido

    tempos: list[tuple[float, int]] = [(120.0, 0)]
    time_signatures: list[tuple[int, int, int]] = []
    instruments: list[dict[str, Any]] = []
    rows: list[tuple[int, int, int, int, int, int]] = []
    unclosed: list[int] = []
    for track_index, track in enumerate(midi.tracks):
        tick = 0
        name = ""
        for event in track:
            tick += event.time
            if event.type == "set_tempo":
                if event.tempo == 0:
                    raise OctupleError(f"{source}: track {track_index} sets a tempo of 0 microseconds per beat "
                                       f"at tick {tick}")
                bpm = mido.tempo2bpm(event.tempo)
                if tick == 0:
                    tempos = [(bpm, 0)]
                elif bpm != tempos[-1][0]:
                    tempos.append((bpm, tick))
            elif event.type == "time_signature":
                time_signatures.append((event.numerator, event.denominator, tick))
            elif event.type == "track_name" and not name:
                name = event.name
        for (program, channel), notes in _pair_notes(track, pairing, unclosed):
            is_drum = int(channel == 9)
            instruments.append({"program": program, "is_drum": bool(is_drum), "name": name, "notes": notes,
                                "track": track_index})
            rows.extend((s, e, p, v, program, is_drum) for s, e, p, v in notes)
    time_signatures.sort(key=lambda ts: ts[2])
    notes_array = np.asarray(rows, dtype=np.int64).reshape(-1, 6)
    return ParsedMidi(midi.ticks_per_beat, notes_array, time_signatures, tempos, source, instruments, sum(unclosed))


# -- the fast reader: one pass over the bytes -----------------------------------------------------------------
class _NeedsGeneralReader(Exception):
    """The byte scanner met something it leaves to mido (whose errors and quirks are the reference)."""


# Meta events the scanner decodes or skips exactly as mido does; any other case goes to the general reader.
_KEY_SIGNATURE_OK = {(key, mode) for key in range(-7, 8) for mode in (0, 1)}
# mido 1.3's meta types; it gives any other meta event time 0, dropping its delta (a quirk the reference keeps).
_MIDO_META_TYPES = frozenset({0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x09, 0x20, 0x21, 0x2F, 0x51, 0x54,
                              0x58, 0x59, 0x7F})
# Denominator exponents whose power of 2 mido refuses, because math.log(2 ** k, 2) is not exactly k.
_MIDO_BAD_DENOMINATOR_LOG2 = frozenset(k for k in range(256) if math.log(2 ** k, 2) != int(math.log(2 ** k, 2)))


def _scan_track(data: bytes, pos: int, end: int, pairing: str, tempos: list, time_signatures: list,
                track_index: int, instruments: list, blocks: list, limits: _Limits) -> int:
    """Read one MTrk body `data[pos:end]`: tempo / time-signature changes, the first track name, paired notes.

    Pairing follows `_pair_notes` (legacy: a note-off closes every open note of its key that started at an
    earlier tick, and drops those that started at its own tick; fifo: it closes the oldest open note).
    Raises _NeedsGeneralReader on anything unusual. Returns the number of notes left open at the end.
    """
    legacy = pairing == "legacy"
    tick = 0
    last_status = -1
    name = ""
    programs = [0] * 16
    open_notes: dict[int, list] = {}
    by_instrument: dict[tuple[int, int], list] = {}
    channel_notes: list = [None] * 16  # the note list of (programs[channel], channel), while it is current
    events = limits.events
    while pos < end:
        events -= 1
        if events < 0:
            raise limits.too_many_events()
        byte = data[pos]
        pos += 1
        if byte < 0x80:
            tick += byte
        else:
            delta = byte & 0x7F
            count = 1
            while byte & 0x80:
                if count == MAX_VLQ_BYTES:
                    raise limits.long_number(pos - count)
                byte = data[pos]
                pos += 1
                count += 1
                delta = (delta << 7) | (byte & 0x7F)
            tick += delta
        status = data[pos]
        if status < 0x80:  # running status: the data starts here
            status = last_status
            if status < 0:
                raise _NeedsGeneralReader
        elif status < 0xF0:
            last_status = status
            pos += 1
        elif status == 0xFF:
            meta_type = data[pos + 1]
            if meta_type not in _MIDO_META_TYPES:
                raise _NeedsGeneralReader
            pos += 2
            length, pos = _read_vlq(data, pos, limits)
            if length > 1_000_000 or pos + length > end:
                raise _NeedsGeneralReader
            limits.payload -= length
            if limits.payload < 0:
                raise limits.too_much_payload()
            body = data[pos:pos + length]
            pos += length
            if meta_type == 0x51:
                if length < 3:
                    raise _NeedsGeneralReader
                tempo = (body[0] << 16) | (body[1] << 8) | body[2]
                if tempo == 0:
                    raise _NeedsGeneralReader
                bpm = 60 * 1e6 / tempo * 4 / 4.  # mido.tempo2bpm, operation for operation
                if tick == 0:
                    tempos[:] = [(bpm, 0)]
                elif bpm != tempos[-1][0]:
                    tempos.append((bpm, tick))
            elif meta_type == 0x58:
                if length < 4 or body[1] in _MIDO_BAD_DENOMINATOR_LOG2:
                    raise _NeedsGeneralReader
                time_signatures.append((body[0], 2 ** body[1], tick))
            elif meta_type == 0x03:
                if not name:
                    name = body.decode("latin1")
            elif ((meta_type == 0x00 and length == 1) or (meta_type == 0x20 and length == 0)
                  or (meta_type == 0x54 and (length < 5 or body[0] >> 5 > 3))
                  or (meta_type == 0x59 and (length < 2 or (body[0] - 256 * (body[0] > 127), body[1])
                                             not in _KEY_SIGNATURE_OK))):
                raise _NeedsGeneralReader  # mido raises or decodes these specially
            continue
        else:
            raise _NeedsGeneralReader  # sysex and system messages: rare, and mido's checks on them apply
        first = data[pos]
        if status >= 0xC0 and status < 0xE0:  # program change, channel pressure: one data byte
            pos += 1
            if first > 127:
                raise _NeedsGeneralReader
            if status < 0xD0:
                programs[status & 0x0F] = first
                channel_notes[status & 0x0F] = None
            continue
        second = data[pos + 1]
        pos += 2
        if first > 127 or second > 127:
            raise _NeedsGeneralReader
        if status >= 0xA0:
            continue
        key = ((status & 0x0F) << 7) | first
        if status >= 0x90 and second:
            pending = open_notes.get(key)
            if pending is None:
                open_notes[key] = [(tick, second)] if legacy else deque([(tick, second)])
            else:
                pending.append((tick, second))
            continue
        pending = open_notes.get(key)
        if not pending:
            continue
        if len(pending) == 1:
            del open_notes[key]
            if legacy and pending[0][0] == tick:
                continue
            closing = pending
        else:
            if legacy:
                closing = [n for n in pending if n[0] != tick]
                keeping = [n for n in pending if n[0] == tick]
            else:  # the oldest open note; a deque, so that thousands of stacked notes stay linear
                closing, keeping = [pending.popleft()], pending
            if closing and keeping:
                open_notes[key] = keeping
            else:
                del open_notes[key]
            if not closing:
                continue
        channel = status & 0x0F
        notes = channel_notes[channel]
        if notes is None:
            instrument = (programs[channel], channel)
            notes = by_instrument.get(instrument)
            if notes is None:
                notes = by_instrument[instrument] = []
            channel_notes[channel] = notes
        for start, velocity in closing:
            notes.append((start, tick, first, velocity))
    if pos != end:
        raise _NeedsGeneralReader
    limits.events = events
    for (program, channel), notes in by_instrument.items():
        is_drum = channel == 9
        instruments.append({"program": program, "is_drum": is_drum, "name": name, "notes": notes,
                            "track": track_index})
        block = np.empty((len(notes), 6), dtype=np.int64)
        block[:, :4] = notes
        block[:, 4] = program
        block[:, 5] = is_drum
        blocks.append(block)
    return sum(len(pending) for pending in open_notes.values())


def _scan_bytes(data: bytes, source: str, pairing: str, limits: _Limits | None = None) -> ParsedMidi:
    """The fast reader: the same ParsedMidi as `_parse_bytes` (mido), or _NeedsGeneralReader."""
    limits = limits or _Limits(source)
    size = len(data)
    if size < 14 or data[:4] != b"MThd":
        raise _NeedsGeneralReader
    header_size = int.from_bytes(data[4:8], "big")
    if header_size < 6 or 8 + header_size > size:
        raise _NeedsGeneralReader
    _format, num_tracks, ticks_per_beat = struct.unpack_from(">hhh", data, 8)
    num_tracks = _num_tracks(data, source)
    pos = 8 + header_size
    tempos: list[tuple[float, int]] = [(120.0, 0)]
    time_signatures: list[tuple[int, int, int]] = []
    instruments: list[dict[str, Any]] = []
    blocks: list[np.ndarray] = []
    unclosed = 0
    for track_index in range(num_tracks):
        if pos + 8 > size or data[pos:pos + 4] != b"MTrk":
            raise _NeedsGeneralReader
        end = pos + 8 + int.from_bytes(data[pos + 4:pos + 8], "big")
        if end > size:
            raise _NeedsGeneralReader
        try:
            unclosed += _scan_track(data, pos + 8, end, pairing, tempos, time_signatures, track_index, instruments,
                                    blocks, limits)
        except IndexError:  # an event runs past the end of the file
            raise _NeedsGeneralReader from None
        pos = end
    time_signatures.sort(key=lambda ts: ts[2])
    notes_array = np.concatenate(blocks) if blocks else np.zeros((0, 6), dtype=np.int64)
    return ParsedMidi(ticks_per_beat, notes_array, time_signatures, tempos, source, instruments, unclosed)


def parsed_from_miditoolkit(midi_obj: Any, source: str | None = None) -> ParsedMidi:
    """Wrap an already-parsed `miditoolkit.MidiFile` (its own note pairing applies)."""
    source = source or _source_name(midi_obj)
    rows = [
        (note.start, note.end, note.pitch, note.velocity, int(inst.program), int(bool(inst.is_drum)))
        for inst in midi_obj.instruments for note in inst.notes
    ]
    instruments = [
        {"program": int(inst.program), "is_drum": bool(inst.is_drum), "name": inst.name,
         "notes": [(n.start, n.end, n.pitch, n.velocity) for n in inst.notes]}
        for inst in midi_obj.instruments
    ]
    return ParsedMidi(
        int(midi_obj.ticks_per_beat), np.asarray(rows, dtype=np.int64).reshape(-1, 6),
        [(ts.numerator, ts.denominator, ts.time) for ts in midi_obj.time_signature_changes],
        [(tc.tempo, tc.time) for tc in midi_obj.tempo_changes], source, instruments,
    )


def read_midi(
    source: str | os.PathLike | bytes | Any, note_pairing: str = "legacy", max_file_bytes: int | None = 64 << 20,
    reader: str = "fast", max_events: int = MAX_MIDI_EVENTS, max_payload: int = MAX_MIDI_PAYLOAD,
) -> ParsedMidi:
    """Read a MIDI file (path, bytes or binary file object) or wrap a `miditoolkit.MidiFile`.

    `note_pairing="legacy"` (default) pairs note-ons and note-offs as miditoolkit 0.1.14 did when the
    released checkpoints were trained; `"fifo"` as miditoolkit >= 1.0 does. A `miditoolkit.MidiFile`
    passed in keeps the pairing of whatever parsed it. Files larger than `max_file_bytes` are refused, and so
    are files with more than `max_events` events or `max_payload` bytes of meta/sysex data (all tracks) and
    variable-length numbers longer than 4 bytes, before the reader allocates for them (OctupleError).

    `reader="fast"` (default) reads the bytes in one pass of its own and hands any file it does not
    read exactly like mido (sysex, truncated or malformed events, odd meta events) to the reference
    reader, `reader="mido"`: mido's messages paired like miditoolkit, verified identical to the
    original encoder. Both give the same ParsedMidi.

        parsed = read_midi("song.mid")
    """
    if reader not in READERS:
        raise ValueError(f"reader must be one of {READERS}, got {reader!r}")
    if hasattr(source, "instruments") and hasattr(source, "ticks_per_beat"):
        return parsed_from_miditoolkit(source)
    name = _source_name(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{name}: no such MIDI file")
        size = path.stat().st_size
        if max_file_bytes is not None and size > max_file_bytes:
            raise OctupleError(f"{name}: file is {size} bytes, above max_file_bytes={max_file_bytes}")
        data = path.read_bytes()
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        name = getattr(source, "name", name)
        data = source.read() if max_file_bytes is None else source.read(max_file_bytes + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise OctupleError(f"{name}: read() returned {type(data).__name__}, not bytes (open the file in 'rb' mode)")
    else:
        raise TypeError(f"cannot read MIDI from {type(source).__name__}; pass a path, bytes or a miditoolkit.MidiFile")
    if max_file_bytes is not None and len(data) > max_file_bytes:
        size = f"{len(data)} bytes" if isinstance(source, (bytes, bytearray, memoryview)) else "longer"
        raise OctupleError(f"{name}: file is {size}, above max_file_bytes={max_file_bytes}")
    if reader == "fast" and note_pairing in NOTE_PAIRINGS:
        try:
            return _scan_bytes(data, str(name), note_pairing, _Limits(str(name), max_events, max_payload))
        except _NeedsGeneralReader:
            pass
    return _parse_bytes(data, str(name), note_pairing, _Limits(str(name), max_events, max_payload))


def check_parsed(parsed: ParsedMidi) -> None:
    """The sanity checks the original applies after parsing (its `F()`), as errors naming the input."""
    notes = parsed.notes
    if notes.size and (notes[:, :2].min() < 0 or notes[:, :2].max() >= MAX_TICK):
        raise OctupleError(f"{parsed.source}: bad note time (outside 0 .. 2**31)")
    if notes.size and (notes[:, 1] < notes[:, 0]).any():
        raise OctupleError(f"{parsed.source}: bad note time (a note ends before it starts)")
    if not all(0 < num < MAX_TICK and 0 < den < MAX_TICK for num, den, _ in parsed.time_signatures):
        raise OctupleError(f"{parsed.source}: bad time signature value")
    if not 0 < parsed.ticks_per_beat < MAX_TICK:
        raise OctupleError(f"{parsed.source}: bad ticks per beat ({parsed.ticks_per_beat})")


# -- encoding -----------------------------------------------------------------------------------------------
def _to_positions(ticks: np.ndarray | int, ticks_per_beat: int) -> np.ndarray:
    # Python's round() (half to even) on the same float64 quotient: np.rint matches it exactly.
    return np.rint(np.asarray(ticks, dtype=np.int64) * POS_RESOLUTION / ticks_per_beat).astype(np.int64)


def _fill_changes(length: int, changes: list[tuple[int, Any]], default: int, to_token) -> np.ndarray:
    """Token per grid position: each change holds until the next one (the last until the end)."""
    tokens = np.full(length, default, dtype=np.int64)
    for index, (position, value) in enumerate(changes):
        end = changes[index + 1][0] if index + 1 < len(changes) else length
        start, end = max(position, 0), min(end, length)
        # The original only converts (and so only rejects) a change that covers at least one position.
        if start < end:
            tokens[start:end] = to_token(value)
    return tokens


def encode_octuples(parsed: ParsedMidi) -> list[tuple[int, ...]]:
    """The original `MIDI_to_encoding`: sorted 8-tuples, one per note starting before `TRUNC_POS`.

        octuples = encode_octuples(read_midi("song.mid"))
    """
    return [tuple(row) for row in encode_octuple_array(parsed).tolist()]


def encode_octuple_array(parsed: ParsedMidi) -> np.ndarray:
    """`encode_octuples` as an int64 array [N, 8] (rows in the same sorted order)."""
    check_parsed(parsed)
    if parsed.unclosed_notes:
        warnings.warn(f"{parsed.source}: {parsed.unclosed_notes} note-ons have no note-off before the end of their "
                      "track and are dropped, as the original encoder does", stacklevel=2)
    notes = parsed.notes
    empty = np.zeros((0, len(FIELD_NAMES)), dtype=np.int64)
    if notes.shape[0] == 0:
        return empty
    tpb = parsed.ticks_per_beat
    starts = _to_positions(notes[:, 0], tpb)
    ends = _to_positions(notes[:, 1], tpb)
    length = int(min(starts.max() + 1, TRUNC_POS))
    ts_positions = _to_positions([t for _, _, t in parsed.time_signatures], tpb).tolist()
    ts_changes = [(p, (n, d)) for p, (n, d, _) in zip(ts_positions, parsed.time_signatures)]
    tempo_positions = _to_positions([t for _, t in parsed.tempos], tpb).tolist()
    tempo_changes = [(p, bpm) for p, (bpm, _) in zip(tempo_positions, parsed.tempos)]
    ts_tokens = _fill_changes(length, ts_changes, DEFAULT_TIME_SIGNATURE_TOKEN,
                              lambda ts: time_signature_to_token(*ts, source=parsed.source))
    tempo_tokens = _fill_changes(length, tempo_changes, DEFAULT_TEMPO_TOKEN, tempo_to_token)
    # A time-signature change takes effect on the bar length only at the next bar line.
    bars = np.empty(length, dtype=np.int64)
    in_bar = np.empty(length, dtype=np.int64)
    changes = np.flatnonzero(ts_tokens[1:] != ts_tokens[:-1]) + 1  # positions where the token changes
    position, bar = 0, 0
    while position < length:
        numerator, denominator = TIME_SIGNATURES[ts_tokens[position]]
        measure = numerator * BEAT_NOTE_FACTOR * POS_RESOLUTION // denominator
        # Every bar that starts before the next change has this bar's length.
        index = int(np.searchsorted(changes, position, side="right"))
        change = int(changes[index]) if index < len(changes) else length
        count = -(-(change - position) // measure)
        stop = min(position + count * measure, length)
        offsets = np.arange(stop - position)
        bars[position:stop] = bar + offsets // measure
        in_bar[position:stop] = offsets % measure
        position, bar = position + count * measure, bar + count
    keep = starts < TRUNC_POS
    if not keep.all():
        warnings.warn(f"{parsed.source}: {int((~keep).sum())} notes start at or after grid position {TRUNC_POS} "
                      "(about 30 minutes) and are dropped, as the original encoder does", stacklevel=2)
    starts, ends, notes = starts[keep], ends[keep], notes[keep]
    if notes.shape[0] == 0:
        return empty
    drum = notes[:, 5].astype(bool)
    columns = np.stack([
        bars[starts], in_bar[starts],
        np.where(drum, DRUM_PROGRAM, notes[:, 4]),
        np.where(drum, notes[:, 2] + 128, notes[:, 2]),
        _DURATION_ENCODE_ARRAY[np.minimum(ends - starts, len(DURATION_ENCODE) - 1)],
        notes[:, 3] // VELOCITY_QUANT,
        ts_tokens[starts], tempo_tokens[starts],
    ], axis=1)
    order = np.lexsort(columns.T[::-1])
    return columns[order]


def select_for_input(octuples: list[tuple[int, ...]], max_notes: int = SAMPLE_LEN_MAX) -> list[tuple[int, ...]]:
    """The original `encoding_to_str` selection: the first `max_notes` notes, then those in bars < 256."""
    return [octuple for octuple in octuples[:max_notes] if octuple[0] < BAR_MAX]


def window_octuples(
    octuples: list[tuple[int, ...]], max_notes: int = SAMPLE_LEN_MAX, overlap_rate: int = SAMPLE_OVERLAP_RATE
) -> list[list[tuple[int, ...]]]:
    """Cut a long piece into overlapping windows of at most `max_notes` notes that fit in 256 bars.

    A deterministic form of the original's `F()` windowing (which draws random offsets for data
    augmentation): windows start every `max_notes // overlap_rate` notes, bar numbers are shifted
    so that each window starts in bar 0, and a window ends early at the first note in bar >= 256.
    """
    if not octuples:
        return []
    step = max(round(max_notes / overlap_rate), 1)
    windows = []
    for start in range(0, len(octuples), step):
        chunk = octuples[start:start + max_notes]
        offset = chunk[0][0]
        window = []
        for octuple in chunk:
            if octuple[0] - offset >= BAR_MAX:
                break
            window.append((octuple[0] - offset, *octuple[1:]))
        windows.append(window)
        if start + max_notes >= len(octuples):
            break
    return windows


# -- decoding -----------------------------------------------------------------------------------------------
def _majority(values: list[int]) -> int:
    # The original's tie rule: the first maximum in set iteration order.
    return max(set(values), key=values.count)


def decode_octuples(octuples: list[tuple[int, ...]] | np.ndarray, ticks_per_beat: int = 480) -> Any:
    """The original `encoding_to_MIDI`: a `miditoolkit.MidiFile` (lossy: bar time signature by majority
    vote, tempo averaged per position, quantised durations and velocities).

        decode_octuples(octuples).dump("decoded.mid")
    """
    import miditoolkit

    octuples = [tuple(int(v) for v in octuple) for octuple in octuples]
    if not octuples:
        raise OctupleError("cannot decode an empty OctupleMIDI sequence (no notes)")
    for octuple in octuples:
        # Bars may exceed the 256 of the vocabulary here: a full encoding (before selection) decodes too. An
        # encoding has fewer than TRUNC_POS bars (a bar is at least one grid position); more would only allocate.
        bad = [FIELD_NAMES[i] for i, v in enumerate(octuple)
               if v < 0 or v >= (FIELD_SIZES[i] if i > 0 else TRUNC_POS)]
        if len(octuple) != 8 or bad:
            raise OctupleError(f"invalid octuple {octuple}: fields {bad or 'count'} out of range")
    num_bars = max(o[0] for o in octuples) + 1
    votes: list[list[int]] = [[] for _ in range(num_bars)]
    for octuple in octuples:
        votes[octuple[0]].append(octuple[6])
    bar_ts: list[int] = []
    for index, bar_votes in enumerate(votes):
        if bar_votes:
            bar_ts.append(_majority(bar_votes))
        else:
            bar_ts.append(DEFAULT_TIME_SIGNATURE_TOKEN if index == 0 else bar_ts[-1])
    bar_start = []
    cursor = 0
    for token in bar_ts:
        bar_start.append(cursor)
        numerator, denominator = TIME_SIGNATURES[token]
        cursor += numerator * BEAT_NOTE_FACTOR * POS_RESOLUTION // denominator
    tempo_votes: list[list[int]] = [[] for _ in range(cursor + max(o[1] for o in octuples))]
    for octuple in octuples:
        tempo_votes[bar_start[octuple[0]] + octuple[1]].append(octuple[7])
    position_tempo: list[int] = []
    for index, tempos in enumerate(tempo_votes):
        if tempos:
            position_tempo.append(round(sum(tempos) / len(tempos)))
        else:
            position_tempo.append(DEFAULT_TEMPO_TOKEN if index == 0 else position_tempo[-1])

    midi = miditoolkit.MidiFile(ticks_per_beat=ticks_per_beat)

    def tick(bar: int, position: int) -> int:
        return (bar_start[bar] + position) * ticks_per_beat // POS_RESOLUTION

    instruments = [
        miditoolkit.Instrument(program=0 if p == DRUM_PROGRAM else p, is_drum=p == DRUM_PROGRAM, name=str(p))
        for p in range(DRUM_PROGRAM + 1)
    ]
    for bar, position, program, pitch, duration, velocity, _, _ in octuples:
        start = tick(bar, position)
        # A zero-length note is written one tick long, as the original's MIDI writer (miditoolkit 0.1.14)
        # stored it; written with zero length, the note-off would precede the note-on and the note be lost.
        end = max(start + token_to_duration(duration) * ticks_per_beat // POS_RESOLUTION, start + 1)
        instruments[program].notes.append(miditoolkit.Note(
            velocity=token_to_velocity(velocity), pitch=pitch - 128 if program == DRUM_PROGRAM else pitch,
            start=start, end=end,
        ))
    midi.instruments = [inst for inst in instruments if inst.notes]
    current = None
    for bar, token in enumerate(bar_ts):
        if token != current:
            numerator, denominator = TIME_SIGNATURES[token]
            midi.time_signature_changes.append(miditoolkit.TimeSignature(numerator, denominator, tick(bar, 0)))
            current = token
    current = None
    for position, token in enumerate(position_tempo):
        if token != current:
            midi.tempo_changes.append(miditoolkit.TempoChange(token_to_tempo(token), tick(0, position)))
            current = token
    return midi


__all__ = [
    "FIELD_NAMES", "FIELD_SIZES", "NOTE_PAIRINGS", "OctupleError", "ParsedMidi", "READERS", "TIME_SIGNATURES",
    "check_parsed", "decode_octuples", "encode_octuple_array", "encode_octuples", "parsed_from_miditoolkit", "read_midi",
    "reduce_time_signature", "select_for_input", "tempo_to_token", "window_octuples",
]
