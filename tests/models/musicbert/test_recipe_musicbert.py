"""The music21 dance-type recipe pieces, the piano-roll helper and the demo (no training here)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from transformers import EvalPrediction

import zoo  # noqa: F401
from zoo.demo import list_demos
from zoo.finetune import RecipeOptions, get_recipe
from zoo.models.musicbert import OctupleMidiTokenizer
from zoo.recipes.musicbert import (
    PadCollator,
    abc_to_midi,
    classification_metrics,
    dance_tunes,
    demo,
    plot_piano_roll,
    select_tunes,
)

from .fixture_cases import first


@pytest.fixture(scope="module")
def tunes():
    return dance_tunes()


def test_dance_labels_from_corpus(tunes):
    assert Counter(t["label"] for t in tunes) == {"reel": 715, "jig": 514, "hornpipe": 462, "slip jig": 97}
    assert len({t["id"] for t in tunes}) == len(tunes)


def test_split_is_disjoint_and_quick_is_balanced():
    train, evaluation = select_tunes(RecipeOptions(quick=True))
    assert not {t["id"] for t in train} & {t["id"] for t in evaluation}
    assert set(Counter(t["label"] for t in train).values()) == {16}
    assert set(Counter(t["label"] for t in evaluation).values()) == {6}
    full_train, full_eval = select_tunes(RecipeOptions())
    assert len(full_train) + len(full_eval) == 1788 and 0.15 < len(full_eval) / 1788 < 0.25


def test_one_tune_to_model_input(tunes):
    tune = next(t for t in tunes if t["label"] == "slip jig")
    ids = OctupleMidiTokenizer().encode_midi(abc_to_midi(tune["abc"]))["input_ids"][0]
    octuples = OctupleMidiTokenizer().ids_to_octuples(ids)
    assert len(octuples) > 20
    assert {o[6] for o in octuples} == {22}  # time-signature token of 9/8


def test_collator_and_metrics():
    batch = PadCollator(1)([{"input_ids": [0] * 8 + [2] * 8, "labels": 2}, {"input_ids": [0] * 8 + [5] * 8 + [2] * 8,
                                                                           "labels": 0}])
    assert batch["input_ids"].shape == (2, 24) and batch["input_ids"][0, 16:].tolist() == [1] * 8
    assert batch["attention_mask"].sum().item() == 40 and batch["labels"].tolist() == [2, 0]
    logits = np.array([[2.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 1.0, 0]])
    metrics = classification_metrics(4, majority_label=0)(EvalPrediction(logits, np.array([0, 1, 2, 0])))
    assert metrics["accuracy"] == 0.75 and metrics["majority_baseline_accuracy"] == 0.5
    assert metrics["f1_macro"] == pytest.approx((2 / 3 + 1 + 2 / 3 + 0) / 4)


def test_recipe_is_registered():
    recipe = get_recipe("music21_dance")
    assert recipe.family == "musicbert" and recipe.variant == "musicbert_tiny"
    assert zoo.model_info("musicbert_tiny").recipe == "music21_dance"


def test_piano_roll_plot(tmp_path):
    case = first("encoding")
    midi = case.file("midi/" + min(n for n, f in case.meta["files"].items() if f["error"] is None))
    decoded = OctupleMidiTokenizer().decode_midi(OctupleMidiTokenizer().encode_midi(midi)["input_ids"][0])
    path = plot_piano_roll(midi, tmp_path / "roll.png", "source", decoded, "decoded")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_converts_and_predicts(tmp_path):
    assert "musicbert" in list_demos()
    result = demo(tmp_path, quick=True)
    assert result.summary["parity_max_abs_diff"] < 1e-5
    line = result.predict(str(result.folder))
    # the fixture's max_positions (256 element tokens) holds 30 notes of the chorale's 163
    assert line.startswith("bwv66.6 (first 30 of 163 notes, the model's length) -> top genres ")
