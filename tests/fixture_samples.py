"""Sample data from the reference cases for tests that need one real file (a checkpoint, a MIDI piece, a wav),
chosen by what the cases' meta.json declare, never by a case's name: a new case from the original code is
picked up, or can take over, with no test edit.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from tests.fixture_cases import FIXTURES

PRIORGRAD_RELEASED = json.loads((FIXTURES / "priorgrad" / "released_config.json").read_text())["params_py_defaults"]


def _first(found: list, what: str):
    assert found, f"no fixture case holds {what}"
    return found[0]


@cache
def released_vocoder_case():
    """The first PriorGrad case at the LJSpeech release's settings: a prior without conditioning, at the
    released mel settings."""
    from tests.models.priorgrad.test_parity_priorgrad import FAMILY as PRIORGRAD

    mel = ("n_mels", "fmin", "fmax", "condition_prior", "condition_prior_global")
    return _first([c for c in PRIORGRAD.all() if all(c.meta["params"].get(k) == PRIORGRAD_RELEASED.get(k) for k in mel)],
                  "a PriorGrad vocoder at the released mel settings")


def released_vocoder_checkpoint() -> Path:
    case = released_vocoder_case()
    return case.file(case.meta["checkpoint"]["file"])


def sample_wav() -> Path:
    """The held-out clip the released-settings vocoder case declares (meta `wavs`: its `test` entry)."""
    case = released_vocoder_case()
    assert "test" in case.meta["wavs"], f"{case.where}: meta.json declares no test clip"
    return case.file("wav/test.wav")


@cache
def sample_midi() -> Path:
    """A MIDI piece every reader encodes: the first file of an encoding case that the original encodes without
    error, that is not parser-sensitive, and that has at least 30 notes (the tiny models' length)."""
    from tests.models.musicbert.fixture_cases import FAMILY as MUSICBERT

    found = [c.file(f"midi/{name}") for c in MUSICBERT.all() if c.kind == "encoding"
             for name, info in sorted(c.meta["files"].items())
             if info["error"] is None and not info["parser_sensitive"] and (info["n_notes"] or 0) >= 30]
    return _first(found, "a MIDI file the original encodes, with 30 notes or more")


def musicbert_classifier() -> tuple[Path, Path]:
    """(checkpoint, label dict) of the first MusicBERT model case fine-tuned with a classification head."""
    from tests.models.musicbert.fixture_cases import FAMILY as MUSICBERT
    from tests.models.musicbert.fixture_cases import head_names

    found = [(c.file(name), c.file(c.meta["finetune"]["label_dict_file"])) for c in MUSICBERT.all()
             if c.kind == "model" and c.meta.get("finetune", {}).get("label_dict_file")
             for name, info in sorted(c.meta["checkpoints"].items()) if head_names(info)]
    return _first(found, "a MusicBERT checkpoint with a classification head and its label dict")
