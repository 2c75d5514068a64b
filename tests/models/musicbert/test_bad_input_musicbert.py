"""Bad MIDI and bad checkpoints get clear errors that name the input; batches can skip bad files."""

from __future__ import annotations

import io
import shutil
import warnings

import miditoolkit
import pytest
import torch

import zoo  # noqa: F401
from conversion.convert_musicbert import ConversionError, convert
from conversion.safe_checkpoint import CheckpointReadError
from zoo.models.musicbert import OctupleError, OctupleMidiTokenizer
from zoo.models.musicbert.octuple import read_midi

from .fixture_cases import FAMILY, first, head_names

# real files of the reference cases, used here as inputs for error handling (parity is checked elsewhere)
ENCODING = first("encoding")
FILES = ENCODING.meta["files"]
MIDI = ENCODING.folder / "midi"
GOOD = sorted(name for name, f in FILES.items() if f["error"] is None)
FAILING = sorted(name for name, f in FILES.items() if f["error"] is not None)


def _checkpoint(with_head: bool):
    """A checkpoint file of some model case, with or without a classification head."""
    for case in FAMILY.all():
        for name, info in (case.meta["checkpoints"].items() if case.kind == "model" else ()):
            if bool(head_names(info)) == with_head:
                return case.folder / name
    raise AssertionError(f"no musicbert model case has a checkpoint {'with' if with_head else 'without'} a head")


PRETRAINED = _checkpoint(with_head=False)
FINETUNED = _checkpoint(with_head=True)


@pytest.fixture(scope="module")
def tokenizer():
    return OctupleMidiTokenizer()


def _midi(notes, ts=None, drum=False) -> miditoolkit.MidiFile:
    midi = miditoolkit.MidiFile()
    inst = miditoolkit.Instrument(program=0, is_drum=drum)
    inst.notes = [miditoolkit.Note(velocity=80, pitch=p, start=s, end=e) for s, e, p in notes]
    midi.instruments = [inst]
    if ts:
        midi.time_signature_changes = [miditoolkit.TimeSignature(*ts, 0)]
    return midi


def test_not_a_midi_file(tokenizer, tmp_path):
    path = tmp_path / "notes.mid"
    path.write_text("this is not MIDI")
    with pytest.raises(OctupleError, match=r"notes\.mid: not a readable MIDI file"):
        tokenizer.encode_midi(path)


def test_truncated_midi_file(tokenizer, tmp_path):
    path = tmp_path / "cut.mid"
    path.write_bytes((MIDI / GOOD[0]).read_bytes()[:300])
    with pytest.raises(OctupleError, match=r"cut\.mid: not a readable MIDI file"):
        tokenizer.encode_midi(path)


def test_missing_file(tokenizer, tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.mid"):
        tokenizer.encode_midi(tmp_path / "absent.mid")


def test_empty_midi(tokenizer):
    buffer = io.BytesIO()
    miditoolkit.MidiFile().dump(file=buffer)
    with pytest.raises(OctupleError, match="no notes"):
        tokenizer.encode_midi(buffer.getvalue())


def test_time_signature_outside_table(tokenizer):
    with pytest.raises(OctupleError, match=r"unsupported time signature: \(3, 128\)"):
        tokenizer.encode_midi(_midi([(0, 240, 60)], ts=(3, 128)))


def test_drums_are_program_128(tokenizer):
    octuples = tokenizer.midi_to_octuples(_midi([(0, 240, 36)], drum=True))
    assert octuples == [(0, 0, 128, 36 + 128, 8, 20, 9, 35)]


def test_huge_file_refused(tmp_path):
    path = tmp_path / "big.mid"
    path.write_bytes(b"MThd" + b"\0" * 2048)
    with pytest.raises(OctupleError, match=r"big\.mid: file is 2052 bytes, above max_file_bytes=1024"):
        read_midi(path, max_file_bytes=1024)


def test_note_times_outside_range(tokenizer):
    with pytest.raises(OctupleError, match="bad note time"):
        tokenizer.encode_midi(_midi([(0, 2 ** 31, 60)]))


def test_long_piece_truncates_with_warning_or_windows(tokenizer):
    limit = ENCODING.meta["original_constants"]["sample_len_max"]
    long_pieces = [name for name in GOOD if FILES[name]["n_notes"] > limit]
    assert long_pieces, f"{ENCODING.where}: no file longer than sample_len_max={limit}"
    name = long_pieces[0]
    path = MIDI / name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        single = tokenizer.encode_midi(path)
    n_ids = FILES[name]["n_input_ids"]
    assert f"{FILES[name]['n_notes']} notes, of which {n_ids // 8 - 2} fit one sequence" in str(caught[-1].message)
    assert len(single["input_ids"]) == 1 and len(single["input_ids"][0]) == n_ids  # the original's selection
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        windows = tokenizer.encode_midi(path, overflow="window")
        all_notes = tokenizer.midi_to_octuples(path)
    assert len(caught) == 2 and all(
        "start at or after grid position 65536 (about 30 minutes) and are dropped, as the original encoder does"
        in str(w.message) for w in caught)
    assert len(windows["input_ids"]) > 1 and len(all_notes) == FILES[name]["n_notes"]
    covered = set()
    for row in windows["input_ids"]:
        notes = tokenizer.ids_to_octuples([i for i in row if i != tokenizer.pad_token_id])
        assert len(notes) <= limit and all(n[0] < ENCODING.meta["original_constants"]["bar_max"] for n in notes)
        covered.update(n[1:] for n in notes)
    assert covered == {n[1:] for n in all_notes}
    with pytest.raises(OctupleError, match="overflow='truncate' or 'window'"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the dropped-note warning, checked above
        tokenizer.encode_midi(path, overflow="error")


def test_batch_reports_bad_files_and_goes_on(tokenizer, tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"garbage")
    short = sorted(GOOD, key=lambda n: FILES[n]["n_input_ids"])
    sources = [MIDI / short[1], bad, MIDI / FAILING[0], MIDI / short[0]]
    with pytest.raises(OctupleError, match="bad.mid"):
        tokenizer.batch_encode_midi(sources)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = tokenizer.batch_encode_midi(sources, errors="skip", return_tensors="pt")
    assert [str(w.message).split(":")[0] for w in caught] == ["skipping input 1", "skipping input 2"]
    assert batch.source_index == [0, 3]
    assert [name for name, _ in batch.failures] == [str(bad), str(sources[2])]
    assert FILES[FAILING[0]]["error"].split(": ", 1)[1] in batch.failures[1][1]
    assert batch["input_ids"].shape == (2, FILES[short[1]]["n_input_ids"])
    assert batch["attention_mask"][1].sum() == FILES[short[0]]["n_input_ids"]


def test_checkpoint_with_extra_key(tmp_path):
    from conversion import convert_musicbert as module

    original = module.read_checkpoint(PRETRAINED)
    original["model"]["encoder.sentence_encoder.layers.0.extra.weight"] = torch.zeros(1)
    checkpoint = tmp_path / "extra.pt"
    torch.save(original, checkpoint)
    with pytest.raises(ConversionError, match=r"not used by the conversion: \['encoder\.sentence_encoder\.layers\.0\.extra\.weight'\]"):
        convert(checkpoint, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_checkpoint_with_missing_key(tmp_path):
    from conversion import convert_musicbert as module

    original = module.read_checkpoint(PRETRAINED)
    del original["model"]["encoder.lm_head.dense.bias"]
    checkpoint = tmp_path / "missing.pt"
    torch.save(original, checkpoint)
    with pytest.raises(ConversionError, match=r"encoder\.lm_head\.dense\.bias"):
        convert(checkpoint, tmp_path / "out")


def test_truncated_checkpoint(tmp_path):
    checkpoint = tmp_path / "cut.pt"
    checkpoint.write_bytes((PRETRAINED).read_bytes()[:5000])
    with pytest.raises(CheckpointReadError):
        convert(checkpoint, tmp_path / "out")


def test_existing_output_is_kept_without_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    shutil.copy(PRETRAINED, tmp_path / "c.pt")
    with pytest.raises(FileExistsError):
        convert(tmp_path / "c.pt", out)
    assert (out / "keep.txt").read_text() == "x"


def test_checkpoint_with_unknown_finetuning_task(tmp_path):
    """A head trained under a task the converter does not know has an unknown loss: refused, naming the task."""
    from conversion import convert_musicbert as module

    original = module.read_checkpoint(FINETUNED)
    original["cfg"]["task"]["_name"] = "sentence_prediction_ranking"
    checkpoint = tmp_path / "unknown_task.pt"
    torch.save(original, checkpoint)
    with pytest.raises(ConversionError, match="fine-tuning task 'sentence_prediction_ranking' is not one"):
        convert(checkpoint, tmp_path / "out")
    assert not (tmp_path / "out").exists()
