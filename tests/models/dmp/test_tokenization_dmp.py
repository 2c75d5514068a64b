"""Tokenizer, featurizer, masking and collator against the original encodings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.models.dmp._fixtures import FIXTURES, cases
from zoo.models.dmp import DmpDataCollator, DmpFeaturizer, DmpTokenizer, canonicalize_smiles, split_smiles
from zoo.models.dmp.featurization_dmp import fairseq_seed, mask_atoms, mask_tokens


@pytest.fixture(scope="module")
def tokenizer():
    return DmpTokenizer()


def records(folder):
    return json.loads((folder / "featurization.json").read_text())


@pytest.mark.parametrize("folder,meta", cases("featurize"))
def test_canonical_tokens_and_ids(folder, meta, tokenizer):
    for record in records(folder):
        assert canonicalize_smiles(record["input"]) == record["canonical"]
        tokens = split_smiles(record["canonical"]) + [tokenizer.eos_token]
        assert tokens == record["tokens"]
        assert tokenizer.encode_smiles(record["input"]) == record["ids"]
        assert tokenizer(record["input"])["input_ids"] == record["ids"]
        assert tokenizer.convert_ids_to_tokens(record["ids"]) == record["tokens"]


@pytest.mark.parametrize("folder,meta", cases("featurize"))
def test_dictionary_facts(folder, meta, tokenizer):
    facts = meta["dictionary"]
    assert tokenizer.vocab_size == facts["vocab_size_with_mask"]
    assert tokenizer.mask_token_id == facts["[MASK]"]
    for token, index in facts["specials"].items():
        assert tokenizer.convert_tokens_to_ids(token) == index
    for token, index in meta["token_to_id_seen"].items():
        assert tokenizer.convert_tokens_to_ids(token) == index


@pytest.mark.parametrize("folder,meta", cases("featurize"))
def test_graph_integers(folder, meta):
    featurizer = DmpFeaturizer()
    for record in records(folder):
        graph = featurizer(record["input"])
        assert graph["atom_features"].tolist() == record["node_attr"]
        assert graph["edge_index"].tolist() == record["edge_index"]
        assert graph["bond_features"].tolist() == record["edge_attr"]
        assert graph["num_atoms"] == record["num_nodes"]
        assert graph["atom_features"].max(axis=0).tolist() < meta["atom_feature_dims"]


def test_collator_rebuilds_the_original_batch(tokenizer):
    smiles = (FIXTURES / "pretrain_tiny" / "smiles.txt").read_text().split()
    batch = DmpDataCollator()(DmpFeaturizer().encode_molecules(smiles, tokenizer))
    clean = load_file(FIXTURES / "pretrain_tiny" / "inputs_clean.safetensors")
    assert torch.equal(batch["input_ids"], clean["src_tokens"])
    assert torch.equal(batch["attention_mask"].sum(1), clean["src_lengths"])
    assert torch.equal(batch["atom_features"], clean["graph_x"])
    assert torch.equal(batch["edge_index"], clean["graph_edge_index"])
    assert torch.equal(batch["bond_features"], clean["graph_edge_attr"])
    assert torch.equal(batch["atom_batch"], clean["graph_batch"])


def test_masking_reproduces_the_original_draws():
    """fairseq seeds each item with (seed, epoch, index); the fixture is seed 1, epoch 0."""
    masked = load_file(FIXTURES / "pretrain_tiny" / "inputs_masked.safetensors")
    ptr = load_file(FIXTURES / "pretrain_tiny" / "inputs_clean.safetensors")["graph_ptr"]
    for index, record in enumerate(records(FIXTURES / "featurize_public")):
        ids = np.array(record["ids"])
        new_ids, labels = mask_tokens(ids, np.random.RandomState(fairseq_seed(1, 0, index)), 2353, 2352)
        row = slice(masked["src_tokens"].shape[1] - len(ids), None)
        assert new_ids.tolist() == masked["src_tokens"][index, row].tolist()
        assert (labels != -100).tolist() == masked["masked_tokens"][index, row].bool().tolist()
        assert np.where(labels == -100, 1, labels).tolist() == masked["target_tokens"][index, row].tolist()
        atoms, atom_labels = mask_atoms(np.array(record["node_attr"]), np.random.RandomState(fairseq_seed(1, 0, index)))
        nodes = slice(int(ptr[index]), int(ptr[index + 1]))
        assert atoms.tolist() == masked["graph_x"][nodes].tolist()
        assert np.where(atom_labels == -100, 118, atom_labels).tolist() == masked["target_atoms"][nodes].tolist()


def test_mlm_collator_labels_are_consistent(tokenizer):
    features = DmpFeaturizer().encode_molecules(["CCO", "c1ccccc1O", "CC(=O)Oc1ccccc1C(=O)O"], tokenizer)
    batch = DmpDataCollator(mlm=True, seed=0)(features)
    clean = DmpDataCollator()(features)
    selected = batch["mlm_labels"] != -100
    assert torch.equal(batch["mlm_labels"][selected], clean["input_ids"][selected])
    assert torch.equal(batch["input_ids"][~selected], clean["input_ids"][~selected])
    assert (batch["mlm_labels"][clean["input_ids"] == 1] == -100).all()
    atoms = batch["atom_labels"] != -100
    assert torch.equal(batch["atom_labels"][atoms], clean["atom_features"][atoms, 0])


def test_left_padding_and_truncation(tokenizer):
    batch = tokenizer(["C", "CCO"], padding=True, return_tensors="pt")
    assert batch["input_ids"].tolist() == [[1, 1, 5, 2], [5, 5, 9, 2]]
    assert batch["attention_mask"].tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    long_chain = "C" * 600
    assert tokenizer(long_chain)["input_ids"] == [5] * 511 + [2]
    assert tokenizer.encode_smiles(long_chain) == [5] * 511 + [2]


def test_save_and_reload(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path)
    reloaded = DmpTokenizer.from_pretrained(tmp_path)
    assert reloaded.get_vocab() == tokenizer.get_vocab()
    assert reloaded.padding_side == "left"
    assert (tmp_path / "dict.txt").read_text() == (FIXTURES / "vocab" / "dict.txt").read_text()


# -- bad input ----------------------------------------------------------------------------------------------------


def test_invalid_smiles_is_reported(tokenizer):
    with pytest.raises(ValueError, match="invalid SMILES 'C1CC'"):
        tokenizer("C1CC")
    with pytest.raises(ValueError, match="invalid SMILES 'not a molecule'"):
        DmpFeaturizer()("not a molecule")
    with pytest.raises(ValueError, match="no atoms"):
        canonicalize_smiles("")


def test_tokens_that_do_not_rejoin_are_reported():
    with pytest.raises(ValueError, match="cannot be split into DMP tokens"):
        split_smiles("CC&O")
    with pytest.raises(ValueError, match="cannot be split"):
        DmpTokenizer(canonicalize=False)("CCX")


def test_unknown_tokens_warn_or_raise():
    # [Og] is a valid atom but not in the DMP dictionary
    assert DmpTokenizer().encode_smiles("[Og]") == [3, 2]
    with pytest.raises(ValueError, match=r"missing from the DMP dictionary: \['\[Og\]'\]"):
        DmpTokenizer(unknown_tokens="error").encode_smiles("[Og]")


def test_non_tetrahedral_chirality_is_reported():
    with pytest.raises(ValueError, match="chirality CHI_SQUAREPLANAR"):
        DmpFeaturizer()("F[Pt@SP1](F)(Cl)Cl")


def test_batch_job_skips_and_reports(tokenizer):
    features = DmpFeaturizer().encode_molecules(["CCO", "C1CC", "c1ccccc1"], tokenizer, labels=[0, 1, 0], errors="skip")
    assert len(features) == 2 and [f["labels"] for f in features] == [0, 0]
    assert features.skipped[0][:2] == (1, "C1CC") and "invalid SMILES" in features.skipped[0][2]
    with pytest.raises(ValueError, match="molecule 1: invalid SMILES"):
        DmpFeaturizer().encode_molecules(["CCO", "C1CC"], tokenizer)
