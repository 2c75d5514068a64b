"""Every family's published folder predicts from RAW input (SMILES, a MIDI file, text, a wav, images, atoms)
with `trust_remote_code=True` in a process where zoo is not importable, against a real `zoo hub serve`.

Per family: a tiny model and the family's processor are saved, the card is rendered and the folder is
published with the hub_upload logic; a clean subprocess loads processor and model from the repo id with
the Auto classes and predicts; its output must equal what zoo itself computes from the local folder
(same float32 code on the same input; atol 1e-5).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from tests.english_text import fortune_lines, needs_fortunes
from tests.fixture_samples import sample_midi, sample_wav
from zoo.hub import upload_folder, write_card
from zoo.hub_server import LocalHub

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Oc1ccccc1C(=O)O"]
MIDI = sample_midi()
WAV = sample_wav()
TEXT = ["The compiler crashed again, so the program never ran.", "A fool and his money are soon parted."]

# What the clean subprocess runs: {processor} and {model} are Auto classes; RAW is the raw input; the
# prediction code may only use transformers / torch / the objects loaded from the repo.
CHILD = """
import json, sys
sys.modules["zoo"] = None          # zoo must not be importable: the repo's own code has to suffice
sys.modules["conversion"] = None
import numpy as np, torch, transformers
torch.manual_seed(0)
repo, raw = sys.argv[1], json.loads(sys.argv[2])
processor = getattr(transformers, "{processor}").from_pretrained(repo, trust_remote_code=True)
model = getattr(transformers, "{model}").from_pretrained(repo, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
with torch.no_grad():
{predict}
print("RESULT " + json.dumps(np.asarray(result, dtype=np.float64).tolist()))
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = LocalHub.start(tmp_path_factory.mktemp("hub-root"))
    yield server
    server.stop()


def _publish(hub, folder: Path, variant: str, repo_id: str) -> None:
    write_card(folder, variant=variant)
    upload_folder(folder, repo_id, endpoint=hub.url, token=hub.token)
    assert f'"{repo_id}"' in (folder / "README.md").read_text()  # the card was rendered for its repo


def _remote(hub, tmp_path: Path, repo_id: str, raw, processor: str, model: str, predict: str) -> np.ndarray:
    code = CHILD.format(processor=processor, model=model, predict=textwrap.indent(textwrap.dedent(predict), "    "))
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": hub.token, "HF_HUB_DISABLE_XET": "1",
           "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf-home"), "PYTHONPATH": "",
           "OMP_NUM_THREADS": str(torch.get_num_threads())}
    result = subprocess.run([sys.executable, "-c", code, repo_id, json.dumps(raw)], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, f"remote prediction failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    line = next(li for li in result.stdout.splitlines() if li.startswith("RESULT "))
    return np.asarray(json.loads(line[len("RESULT "):]))


def _tiny(variant: str, folder: Path, **overrides):
    entry = zoo.model_info(variant)
    torch.manual_seed(0)
    model = zoo.create_model(variant, **{**entry.test_config, **overrides}).eval()
    model.save_pretrained(folder)
    return model


def test_graphormer_from_smiles(hub, tmp_path):
    from zoo.models.graphormer import GraphormerFeaturizer

    folder = tmp_path / "graphormer"
    model = _tiny("graphormer_slim_classifier", folder)
    GraphormerFeaturizer().save_pretrained(folder)
    _publish(hub, folder, "graphormer_slim_classifier", "lab/graphormer-tiny")
    with torch.no_grad():
        expected = model(**GraphormerFeaturizer()(SMILES)).logits.numpy()
    got = _remote(hub, tmp_path, "lab/graphormer-tiny", SMILES, "AutoFeatureExtractor",
                  "AutoModelForSequenceClassification", "result = model(**processor(raw)).logits")
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_dmp_from_smiles(hub, tmp_path):
    from zoo.models.dmp import DmpDataCollator, DmpFeaturizer, DmpProcessor, DmpTokenizer

    folder = tmp_path / "dmp"
    model = _tiny("dmp_small_molecule_cls", folder, num_labels=2, id2label={0: "BBB-", 1: "BBB+"})
    DmpProcessor(DmpTokenizer()).save_pretrained(folder)
    _publish(hub, folder, "dmp_small_molecule_cls", "lab/dmp-tiny")
    with torch.no_grad():  # the independent path: tokenizer + featurizer + collator used by hand
        batch = DmpDataCollator()(DmpFeaturizer().encode_molecules(SMILES, DmpTokenizer()))
        expected = model(**batch).logits.numpy()
    got = _remote(hub, tmp_path, "lab/dmp-tiny", SMILES, "AutoProcessor", "AutoModelForSequenceClassification",
                  "result = model(**processor(raw)).logits")
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_musicbert_from_midi_file(hub, tmp_path):
    from zoo.models.musicbert import OctupleMidiTokenizer

    variant = "musicbert_base"
    folder = tmp_path / "musicbert"
    model = _tiny(variant, folder)
    tokenizer = OctupleMidiTokenizer(max_notes=model.config.max_positions // 8 - 2)  # what the tiny model holds
    tokenizer.save_pretrained(folder)
    _publish(hub, folder, variant, "lab/musicbert-tiny")
    with torch.no_grad():
        expected = model(**tokenizer.encode_midi(MIDI, return_tensors="pt")).logits.numpy()
    auto = zoo.get_family("musicbert").auto_class_of(type(model))
    got = _remote(hub, tmp_path, "lab/musicbert-tiny", str(MIDI), "AutoTokenizer", auto,
                  "result = model(**processor.encode_midi(raw, return_tensors='pt')).logits")
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_nasbert_from_text(hub, tmp_path):
    from zoo.models.nasbert.resources import mlnet_tokenizer

    variant = "nasbert5_mlnet_text_classification"
    folder = tmp_path / "nasbert"
    tokenizer = mlnet_tokenizer()
    model = _tiny(variant, folder, vocab_size=len(tokenizer), max_position_embeddings=64)
    tokenizer.save_pretrained(folder)
    _publish(hub, folder, variant, "lab/nasbert-tiny")
    with torch.no_grad():
        expected = model(**tokenizer(TEXT, return_tensors="pt", padding=True)).logits.numpy()
    got = _remote(hub, tmp_path, "lab/nasbert-tiny", TEXT, "AutoTokenizer", "AutoModelForSequenceClassification",
                  "result = model(**processor(raw, return_tensors='pt', padding=True)).logits")
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_priorgrad_from_wav(hub, tmp_path):
    from zoo.models.priorgrad import PriorGradFeatureExtractor

    variant = zoo.list_models(family="priorgrad")[0]
    folder = tmp_path / "priorgrad"
    model = _tiny(variant, folder, energy_min=0.02, energy_max=4.7)
    fe = PriorGradFeatureExtractor(energy_min=0.02, energy_max=4.7)  # training-set statistics travel with it
    fe.save_pretrained(folder)
    _publish(hub, folder, variant, "lab/priorgrad-tiny")
    with torch.no_grad():
        mel = fe(fe.load_audio(WAV), sampling_rate=fe.sampling_rate)["spectrogram"]
        expected = model.generate(mel, num_inference_steps=6, generator=torch.Generator().manual_seed(0)).waveform
    auto = zoo.get_family("priorgrad").auto_class_of(type(model))
    got = _remote(hub, tmp_path, "lab/priorgrad-tiny", str(WAV), "AutoFeatureExtractor", auto, """
        mel = processor(processor.load_audio(raw), sampling_rate=processor.sampling_rate)["spectrogram"]
        result = model.generate(mel, num_inference_steps=6, generator=torch.Generator().manual_seed(0)).waveform
    """)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5, rtol=0)


def test_mdeq_from_images(hub, tmp_path):
    from sklearn.datasets import load_digits

    from zoo.recipes.deq import MODEL_OVERRIDES, digits_processor

    digits = load_digits().images[:3]  # raw 8x8 images, values 0..16
    folder = tmp_path / "mdeq"
    overrides = {**MODEL_OVERRIDES, "f_max_iter": 6}
    model = _tiny("mdeq_tiny_cifar10", folder, **overrides)
    digits_processor(0.3, 0.4).save_pretrained(folder)
    _publish(hub, folder, "mdeq_tiny_cifar10", "lab/mdeq-tiny")
    pixels = (torch.from_numpy(digits).float()[:, None] / 16 - 0.3) / 0.4  # the recipe's normalisation by hand
    with torch.no_grad():
        expected = model(pixel_values=pixels).logits.numpy()
    got = _remote(hub, tmp_path, "lab/mdeq-tiny", digits.tolist(), "AutoImageProcessor",
                  "AutoModelForImageClassification",
                  "result = model(**processor([np.asarray(image) for image in raw])).logits")
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_graphormer3d_from_atoms(hub, tmp_path):
    from zoo.models.graphormer3d import Graphormer3DFeaturizer
    from zoo.models.graphormer3d.processing_graphormer3d import example_system

    variant = zoo.list_models(family="graphormer3d")[0]
    folder = tmp_path / "graphormer3d"
    model = _tiny(variant, folder)
    Graphormer3DFeaturizer().save_pretrained(folder)
    _publish(hub, folder, variant, "lab/graphormer3d-tiny")
    system = {k: (np.asarray(v).tolist() if not isinstance(v, str) else v) for k, v in example_system().items()}
    with torch.no_grad():
        expected = model(**Graphormer3DFeaturizer()([system])).energy.numpy()
    auto = zoo.get_family("graphormer3d").auto_class_of(type(model))
    got = _remote(hub, tmp_path, "lab/graphormer3d-tiny", system, "AutoFeatureExtractor", auto,
                  "result = model(**processor([raw])).energy")
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


@needs_fortunes
def test_deq_transformer_from_text(hub, tmp_path):
    from zoo.models.deq import DeqTransformerTokenizer, build_vocabulary

    variant = "deq_transformer_wt103"
    lines = fortune_lines(58)
    vocab = build_vocabulary(lines)  # <eos> + 58 words + <unk>: the tiny model's 60 tokens
    folder = tmp_path / "deq_transformer"
    model = _tiny(variant, folder)
    assert model.config.vocab_size == len(vocab)
    DeqTransformerTokenizer(symbols=vocab).save_pretrained(folder)
    _publish(hub, folder, variant, "lab/deq-transformer-tiny")
    assert 'AutoTokenizer.from_pretrained("lab/deq-transformer-tiny", trust_remote_code=True)' in (
        folder / "README.md").read_text()  # the card shows the raw-text path when vocab.txt is there
    text = lines[0] + " zyzzyva\n" + lines[1]  # a word outside the vocabulary, and two lines
    ids = [vocab.index(w) for w in lines[0].split()] + [vocab.index("<unk>"), 0]
    ids += [vocab.index(w) for w in lines[1].split()] + [0]  # the original: <eos> (id 0) after every line
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([ids])).logits.numpy()
    got = _remote(hub, tmp_path, "lab/deq-transformer-tiny", text, "AutoTokenizer", "AutoModelForCausalLM",
                  "result = model(input_ids=processor(raw, return_tensors='pt')['input_ids']).logits")
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
