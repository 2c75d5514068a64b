"""MusicBERT fine-tuning recipe and demo on real, offline symbolic music (the music21 corpus).

`music21_dance`: the dance type of Irish and Scottish folk tunes, from the abc `R:` field of the music21
corpus collections `ryansMammoth` and `oneills1850` (reel 715, jig 514 incl. double jigs, hornpipe 462,
slip jig 97; 1,788 tunes). Each tune is exported to MIDI with music21 once and cached; the split is
fixed by a hash of the tune's id (20% evaluation).

    zoo finetune musicbert_tiny --dataset music21_dance --out runs/dance --quick
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from zoo.demo import DemoResult, register_demo
from zoo.finetune import Recipe, RecipeData, RecipeOptions, register_recipe
from zoo.recipes.metrics import macro_f1

DANCE_TYPES = ("reel", "jig", "hornpipe", "slip jig")
_R_FIELD = {"reel": "reel", "jig": "jig", "double jig": "jig", "hornpipe": "hornpipe", "slip jig": "slip jig",
            "slipjig": "slip jig"}
COLLECTIONS = ("ryansMammoth", "oneills1850")
QUICK_PER_CLASS = (16, 6)  # train, eval tunes per class in quick mode


def dance_tunes() -> list[dict[str, Any]]:
    """Every tune of the two collections whose `R:` field names one of the four dance types, in corpus order."""
    import music21

    root = Path(music21.__file__).parent / "corpus"
    tunes = []
    for collection in COLLECTIONS:
        for path in sorted((root / collection).glob("*.abc")):
            text = path.read_text(encoding="latin-1")
            for tune in re.split(r"\n(?=X:)", text):
                if not tune.lstrip().startswith("X:"):
                    continue
                rhythm = re.search(r"^R:\s*(.*)$", tune, re.M)
                label = _R_FIELD.get(rhythm.group(1).strip().lower()) if rhythm else None
                if label is None:
                    continue
                number = re.match(r"\s*X:\s*(\S+)", tune).group(1)
                tunes.append({"id": f"{collection}/{path.stem}/{number}", "label": label, "abc": tune})
    return tunes


def _is_eval(tune_id: str) -> bool:
    return int(hashlib.sha256(tune_id.encode()).hexdigest()[:8], 16) % 5 == 0


def abc_to_midi(abc: str) -> bytes:
    """One abc tune -> MIDI bytes, through music21."""
    from music21 import converter

    score = converter.parseData(abc, format="abc")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tune.mid"
        score.write("midi", fp=str(path))
        return path.read_bytes()


def cached_midi(tunes: list[dict[str, Any]], cache: Path) -> dict[str, bytes | None]:
    """MIDI bytes per tune id, exported once into `cache` (None where music21 could not export it)."""
    from tqdm.auto import tqdm

    cache.mkdir(parents=True, exist_ok=True)
    failures_path = cache / "failures.json"
    failures = json.loads(failures_path.read_text()) if failures_path.is_file() else {}
    result: dict[str, bytes | None] = {}
    todo = []
    for tune in tunes:
        path = cache / (hashlib.sha256(tune["id"].encode()).hexdigest()[:20] + ".mid")
        if path.is_file():
            result[tune["id"]] = path.read_bytes()
        elif tune["id"] in failures:
            result[tune["id"]] = None
        else:
            todo.append((tune, path))
    for tune, path in tqdm(todo, desc="music21 abc -> MIDI", unit="tune", disable=not todo):
        try:
            data = abc_to_midi(tune["abc"])
        except Exception as err:  # noqa: BLE001 - music21 raises many kinds; the tune is reported and skipped
            failures[tune["id"]] = f"{type(err).__name__}: {err}"
            result[tune["id"]] = None
            continue
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        result[tune["id"]] = data
    if failures:
        failures_path.write_text(json.dumps(failures, indent=1, sort_keys=True))
    return result


def select_tunes(options: RecipeOptions) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The train / eval tunes: the fixed hash split, cut per class in quick mode, then to the sample limits."""
    tunes = sorted(dance_tunes(), key=lambda t: hashlib.sha256(f"{options.seed}:{t['id']}".encode()).hexdigest())
    train = [t for t in tunes if not _is_eval(t["id"])]
    evaluation = [t for t in tunes if _is_eval(t["id"])]
    if options.quick:
        def per_class(rows, limit):
            counts: Counter = Counter()
            kept = []
            for row in rows:
                if counts[row["label"]] < limit:
                    counts[row["label"]] += 1
                    kept.append(row)
            return kept
        train, evaluation = per_class(train, QUICK_PER_CLASS[0]), per_class(evaluation, QUICK_PER_CLASS[1])
    if options.max_train_samples:
        train = train[:options.max_train_samples]
    if options.max_eval_samples:
        evaluation = evaluation[:options.max_eval_samples]
    return train, evaluation


class PadCollator:
    """Right-pads `input_ids` with `<pad>` (whole octuples) and stacks integer labels."""

    def __init__(self, pad_token_id: int = 1) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        length = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(features), length), dtype=torch.long)
        for row, feature in enumerate(features):
            ids[row, :len(feature["input_ids"])] = torch.tensor(feature["input_ids"])
            mask[row, :len(feature["input_ids"])] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        return batch


def classification_metrics(num_labels: int, majority_label: int):
    """Accuracy, macro F1 and the accuracy of always predicting the training set's majority class."""
    def compute(prediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predicted = np.asarray(logits).argmax(-1)
        truth = np.asarray(prediction.label_ids)
        return {"accuracy": float((predicted == truth).mean()), "f1_macro": macro_f1(predicted, truth, num_labels),
                "majority_baseline_accuracy": float((truth == majority_label).mean())}
    return compute


def load_dance(options: RecipeOptions) -> RecipeData:
    from zoo.models.musicbert import OctupleError, OctupleMidiTokenizer

    tokenizer = OctupleMidiTokenizer()
    train_tunes, eval_tunes = select_tunes(options)
    midi = cached_midi(train_tunes + eval_tunes, Path(options.cache_dir) / "musicbert" / "music21_dance")
    label_ids = {name: i for i, name in enumerate(DANCE_TYPES)}

    def features(tunes):
        rows, skipped = [], []
        for tune in tunes:
            data = midi.get(tune["id"])
            if data is None:
                skipped.append(tune["id"])
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # a tune too long for one sequence is reported, not cut
                    ids = tokenizer.encode_midi(data)["input_ids"][0]
            except (OctupleError, UserWarning) as err:
                skipped.append(f"{tune['id']}: {err}")
                continue
            rows.append({"input_ids": ids, "labels": label_ids[tune["label"]]})
        if skipped:
            warnings.warn(f"music21_dance: {len(skipped)} tunes skipped, e.g. {skipped[:3]}", stacklevel=3)
        return rows

    train, evaluation = features(train_tunes), features(eval_tunes)
    majority = Counter(row["labels"] for row in train).most_common(1)[0][0]
    return RecipeData(
        train=train, eval=evaluation, collator=PadCollator(tokenizer.pad_token_id),
        model_overrides={"num_labels": len(DANCE_TYPES), "id2label": dict(enumerate(DANCE_TYPES)),
                         "label2id": label_ids, "problem_type": "single_label_classification"},
        compute_metrics=classification_metrics(len(DANCE_TYPES), majority),
        metric_for_best_model="accuracy", processor=tokenizer,
        results_spec={"task_type": "text-classification", "dataset_type": "music21-corpus-dance",
                      "dataset_name": "music21 corpus dance types (ryansMammoth + oneills1850)",
                      "dataset_split": "hash-20%-eval",
                      "metrics": {"accuracy": "accuracy", "f1_macro": "f1",
                                  "majority_baseline_accuracy": "accuracy"}},
        datasets=["music21-corpus"],
    )


register_recipe(Recipe(
    name="music21_dance", family="musicbert", variant="musicbert_tiny",
    description="Dance type (reel / jig / hornpipe / slip jig) of folk tunes from their MIDI rendering.",
    dataset="music21 10.5 corpus, ryansMammoth + oneills1850 abc collections (public-domain tunes; music21 "
            "is BSD-3), exported to MIDI with music21; 1,788 tunes in 4 classes, 20% held out by hash",
    load=load_dance, learning_rate=5e-4, epochs=3.0, batch_size=8,
))


def plot_piano_roll(midi: Any, path: str | Path, title: str = "", other: Any = None, other_title: str = "") -> Path:
    """Draw a piano roll of a MIDI file (path, bytes or miditoolkit object), optionally next to a second
    one (for example its OctupleMIDI decode), and save it as PNG.

        plot_piano_roll("song.mid", "roll.png", other=tokenizer.decode_midi(ids), other_title="decoded")
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from zoo.models.musicbert.octuple import read_midi

    rolls = [(read_midi(midi), title)] + ([(read_midi(other), other_title)] if other is not None else [])
    fig, axes = plt.subplots(len(rolls), 1, figsize=(10, 3 * len(rolls)), squeeze=False, sharex=True)
    for axis, (parsed, name) in zip(axes[:, 0], rolls):
        notes = parsed.notes
        beats = notes[:, :2] / parsed.ticks_per_beat
        colors = plt.get_cmap("tab10")
        for (start, end), pitch, program, drum in zip(beats, notes[:, 2], notes[:, 4], notes[:, 5]):
            axis.add_patch(Rectangle((start, pitch - 0.4), max(end - start, 0.05), 0.8,
                                     color=colors(9 if drum else program % 9), alpha=0.8))
        if len(notes):
            axis.set_xlim(0, beats.max() + 1)
            axis.set_ylim(notes[:, 2].min() - 2, notes[:, 2].max() + 2)
        axis.set_ylabel("pitch")
        axis.set_title(name or parsed.source)
    axes[-1, 0].set_xlabel("beat")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def _fixture_dir() -> Path:
    return Path(__file__).resolve().parent.parent.parent / "tests" / "fixtures" / "musicbert"


def demo(workdir: Path, quick: bool) -> DemoResult:
    """Convert the bundled original-format genre checkpoint (tiny, random weights), check parity, and
    classify a real Bach chorale with the converted folder."""
    from conversion.convert_musicbert import convert

    fixtures = _fixture_dir()
    model_dir = fixtures / "model_public"
    folder = Path(workdir) / "musicbert_genre_fixture"
    record = convert(
        model_dir / "checkpoint_last_genre_topmagd_0_checkpoint_last_musicbert_base.pt", folder,
        label_dict=model_dir / "label_dict.txt", expected=model_dir / "expected_outputs.safetensors", overwrite=True,
    )
    from zoo.models.musicbert import OctupleMidiTokenizer

    chorale = fixtures / "encoding_public" / "midi" / "m21_bach_bwv66_6.mid"
    tokenizer = OctupleMidiTokenizer()
    decoded = tokenizer.decode_midi(tokenizer.encode_midi(chorale)["input_ids"][0])
    plot_piano_roll(chorale, Path(workdir) / "bwv66_6_piano_roll.png", "bwv66.6 (music21 export)", decoded,
                    "after OctupleMIDI encode + decode")

    def predict(path_or_repo_id: str) -> str:
        import warnings

        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path_or_repo_id)
        model = AutoModelForSequenceClassification.from_pretrained(path_or_repo_id).eval()
        with warnings.catch_warnings():  # the cut is stated in the line below
            warnings.simplefilter("ignore", UserWarning)
            batch = tokenizer.encode_midi(chorale, return_tensors="pt")
        total = len(OctupleMidiTokenizer().encode_midi(chorale)["input_ids"][0]) // 8 - 2
        used = batch["input_ids"].shape[1] // 8 - 2
        notes = f"{used} notes" if used == total else f"first {used} of {total} notes, the model's length"
        with torch.no_grad():
            probabilities = model(**batch).logits.sigmoid()[0]
        top = probabilities.argsort(descending=True)[:3].tolist()
        labels = ", ".join(f"{model.config.id2label[i]} {probabilities[i]:.2f}" for i in top)
        return (f"bwv66.6 ({notes}) -> top genres {labels} "
                "(tiny random-weight fixture checkpoint: the pipeline, not a trained model)")

    return DemoResult(folder=folder, predict=predict,
                      summary={"parity_max_abs_diff": max(record["parity"]["max_abs_diff"].values())})


register_demo("musicbert", demo)
