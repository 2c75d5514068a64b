"""`zoo embed` / `zoo.embed` for every family on real offline inputs (tiny random-weight models: the
pipeline, not the quality): shapes follow the inputs (atoms from RDKit, notes from the tokenizer, tokens
from the attention mask), mean-pooled families' vectors are the mean of their per-item vectors, and the
.npy / .parquet files read back equal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from tests.english_text import fortune_lines, needs_fortunes
from tests.fixture_samples import sample_midi, sample_wav
from zoo import cli
from zoo.embed import EmbedError, batches, embed, write_embeddings

MIDI = sample_midi()
WAV = sample_wav()
FORTUNES = Path("/usr/share/games/fortunes/computers")


def _b3db_smiles(count: int) -> list[str]:
    from zoo.recipes.dmp import b3db_molecules

    return [smiles for smiles, _ in b3db_molecules()[:count]]


def _folder(tmp_path: Path, variant: str, processor=None, **overrides) -> Path:
    entry = zoo.model_info(variant)
    torch.manual_seed(0)
    model = zoo.create_model(variant, **{**entry.test_config, **overrides})
    folder = tmp_path / variant
    model.save_pretrained(folder)
    if processor is not None:
        processor.save_pretrained(folder)
    return folder


def _heavy_atoms(smiles: str) -> int:
    from rdkit import Chem

    return Chem.MolFromSmiles(smiles).GetNumAtoms()


@pytest.mark.parametrize("variant", ["graphormer_slim_classifier", "dmp_small_molecule_cls"])
def test_molecules_per_molecule_and_per_atom(tmp_path, variant):
    smiles = _b3db_smiles(5)
    listing = tmp_path / "molecules.smi"
    listing.write_text("SMILES\n" + "\n".join(smiles) + "\n")
    folder = _folder(tmp_path, variant)
    pooled = embed([str(listing)], folder, batch_size=2)
    assert pooled.vectors.shape[0] == 5 and pooled.vectors.dtype == np.float32
    assert pooled.inputs[0] == "molecules.smi:2"
    assert np.isfinite(pooled.vectors).all()
    per_atom = embed(smiles, folder, per_item=True)
    assert [len(v) for v in per_atom.vectors] == [_heavy_atoms(s) for s in smiles]
    # the batch does not change a molecule's vector (padding is masked)
    alone = embed([smiles[3]], folder).vectors[0]
    np.testing.assert_allclose(alone, pooled.vectors[3], atol=1e-5)


def test_music_notes_from_a_midi_file(tmp_path):
    from zoo.models.musicbert import OctupleMidiTokenizer

    folder = _folder(tmp_path, "musicbert_base", processor=OctupleMidiTokenizer(max_notes=30))
    notes = embed([str(MIDI)], folder, per_item=True).vectors[0]
    encoded = OctupleMidiTokenizer(max_notes=30).encode_midi(MIDI)
    assert len(notes) == len(encoded["input_ids"][0]) // 8 - 2  # every note, no <s> / </s>
    pooled = embed([str(MIDI)], folder).vectors[0]
    np.testing.assert_allclose(pooled, notes.mean(0), atol=1e-5)


@pytest.mark.skipif(not FORTUNES.is_file(), reason="Debian fortunes is not installed (the Makefile installs it)")
def test_text_from_a_fortune_file(tmp_path):
    from zoo.models.nasbert.resources import mlnet_tokenizer

    tokenizer = mlnet_tokenizer()
    folder = _folder(tmp_path, "nasbert5_mlnet_text_classification", processor=tokenizer,
                     vocab_size=len(tokenizer), max_position_embeddings=512)
    result = embed([str(FORTUNES)], folder, batch_size=8)
    items = [block.strip() for block in FORTUNES.read_text().split("\n%\n") if block.strip()]
    assert len(result.inputs) == len(items)
    first = embed([" ".join(line.strip() for line in items[0].splitlines())], folder, per_item=True).vectors[0]
    assert len(first) == len(tokenizer(" ".join(line.strip() for line in items[0].splitlines()))["input_ids"])
    np.testing.assert_allclose(result.vectors[0], first.mean(0), atol=1e-5)


def test_images_and_utterances_and_atoms(tmp_path):
    from sklearn.datasets import load_digits

    from zoo.models.graphormer3d.processing_graphormer3d import example_system
    from zoo.models.priorgrad import PriorGradFeatureExtractor
    from zoo.recipes.deq import MODEL_OVERRIDES, digits_processor

    images = []
    for index, image in enumerate(load_digits().images[:3]):
        np.save(tmp_path / f"digit{index}.npy", image)
        images.append(str(tmp_path / f"digit{index}.npy"))
    folder = _folder(tmp_path, "mdeq_tiny_cifar10", processor=digits_processor(0.3, 0.4),
                     **{**MODEL_OVERRIDES, "f_max_iter": 4})
    pooled = embed(images, folder)
    assert pooled.vectors.shape == (3, sum(MODEL_OVERRIDES["num_channels"]))
    assert [v.shape for v in embed(images, folder, per_item=True).vectors] == [(64, 8)] * 3  # 8x8 pixels

    variant = zoo.list_models(family="priorgrad")[0]
    fe = PriorGradFeatureExtractor(energy_min=0.02, energy_max=4.7)
    folder = _folder(tmp_path, variant, processor=fe, energy_min=0.02, energy_max=4.7)
    frames = embed([str(WAV)], folder, per_item=True).vectors[0]
    mel = fe(fe.load_audio(WAV), sampling_rate=fe.sampling_rate)["spectrogram"]
    assert frames.shape[0] == np.asarray(mel).shape[-1]
    np.testing.assert_allclose(embed([str(WAV)], folder).vectors[0], frames.mean(0), atol=1e-5)

    system = {k: (np.asarray(v).tolist() if not isinstance(v, str) else v) for k, v in example_system().items()}
    (tmp_path / "system.json").write_text(json.dumps(system))
    folder = _folder(tmp_path, zoo.list_models(family="graphormer3d")[0])
    atoms = embed([str(tmp_path / "system.json")], folder, per_item=True).vectors[0]
    assert len(atoms) == len(system["tags"])  # real atoms only, not the periodic images


def test_deq_transformer_tokens(tmp_path):
    variant = zoo.list_models(family="deq_transformer")[0]
    folder = _folder(tmp_path, variant)
    result = embed([[5, 6, 7, 8], [9, 10]], folder, per_item=True)
    assert [len(v) for v in result.vectors] == [4, 2]
    with pytest.raises(EmbedError, match="no tokenizer"):
        embed(["raw text needs a vocabulary"], folder)


@needs_fortunes
def test_deq_transformer_text(tmp_path, capsys):
    from zoo.models.deq import DeqTransformerTokenizer, build_vocabulary

    variant = zoo.list_models(family="deq_transformer")[0]
    lines = fortune_lines(58)
    vocab = build_vocabulary(lines)  # 60 symbols: the tiny model's vocabulary
    folder = _folder(tmp_path, variant, processor=DeqTransformerTokenizer(symbols=vocab))
    sentences = [lines[0], lines[1] + " zyzzyva"]
    per_token = embed(sentences, folder, per_item=True)
    assert [len(v) for v in per_token.vectors] == [len(lines[0].split()) + 1, len(lines[1].split()) + 2]  # + <eos>
    by_ids = embed([[vocab.index(w) for w in lines[0].split()] + [0]], folder, per_item=True)
    np.testing.assert_allclose(by_ids.vectors[0], per_token.vectors[0], atol=1e-5)
    pooled = embed(sentences, folder)
    np.testing.assert_allclose(pooled.vectors[1], per_token.vectors[1].mean(0), atol=1e-5)
    (tmp_path / "sentences.txt").write_text("\n".join(sentences) + "\n")
    out = tmp_path / "s.npy"
    assert cli.main(["embed", str(tmp_path / "sentences.txt"), "--model", str(folder), "--output", str(out)]) == 0
    assert "deq_transformer: 2 input(s)" in capsys.readouterr().out
    np.testing.assert_allclose(np.load(out), pooled.vectors, atol=1e-5)


def test_outputs_read_back_and_cli(tmp_path, capsys):
    folder = _folder(tmp_path, "graphormer_slim_classifier")
    smiles = _b3db_smiles(3)
    pooled = embed(smiles, folder)
    write_embeddings(pooled, tmp_path / "v.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy", allow_pickle=False), pooled.vectors)
    per_atom = embed(smiles, folder, per_item=True)
    write_embeddings(per_atom, tmp_path / "atoms.npy")
    rows, offsets = np.load(tmp_path / "atoms.npy"), np.load(tmp_path / "atoms.offsets.npy")
    np.testing.assert_array_equal(rows[offsets[1]:offsets[2]], per_atom.vectors[1])
    import pyarrow.parquet as pq

    write_embeddings(per_atom, tmp_path / "atoms.parquet")
    table = pq.read_table(tmp_path / "atoms.parquet")
    assert table.num_rows == sum(len(v) for v in per_atom.vectors)
    assert table.schema.metadata[b"zoo.family"] == b"graphormer"
    np.testing.assert_allclose(np.asarray(table.column("vector").to_pylist()[0]), per_atom.vectors[0][0])

    assert cli.main(["embed", *smiles, "--model", str(folder), "--output", str(tmp_path / "c.parquet")]) == 0
    assert "graphormer: 3 input(s), pooling: graph token" in capsys.readouterr().out
    assert cli.main(["embed", "CCO", "--model", str(folder), "--output", str(tmp_path / "x.csv")]) == 2
    assert not (tmp_path / "x.csv").exists()


def test_bad_inputs_are_named(tmp_path):
    folder = _folder(tmp_path, "graphormer_slim_classifier")
    with pytest.raises(EmbedError, match="not-a-molecule"):
        embed(["CCO", "not-a-molecule"], folder)
    with pytest.raises(EmbedError, match="batch_size"):
        list(batches([1], 0))
    with pytest.raises(EmbedError, match="no such file"):
        embed(["missing.mid"], _folder(tmp_path, "musicbert_base"))


def test_sized_batches_cover_every_index_once_and_group_similar_sizes():
    sizes = [9, 1, 5, 1, 7, 3, 2, 8]
    got = list(batches(sizes, 3, sizes))
    assert sorted(i for batch in got for i in batch) == list(range(len(sizes)))
    assert all(len(batch) <= 3 for batch in got)
    # each batch's largest item is no larger than the next batch's smallest (ascending buckets)
    assert all(max(sizes[i] for i in a) <= min(sizes[i] for i in b) for a, b in zip(got, got[1:]))
