"""Tokenizer, featurizer, masking and collator against the original encodings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.models.dmp._fixtures import CLEAN_INPUTS, FIXTURES_DMP, cases, dictionary
from zoo.models.dmp import DmpDataCollator, DmpFeaturizer, DmpTokenizer, canonicalize_smiles, split_smiles
from zoo.models.dmp.featurization_dmp import fairseq_seed, mask_atoms, mask_tokens


@pytest.fixture(scope="module")
def tokenizer():
    return DmpTokenizer()


@pytest.mark.parametrize("case", cases("featurize"))
def test_canonical_tokens_and_ids(case, tokenizer):
    vocab = dictionary(case.meta)
    unk = case.meta["dictionary"]["specials"]["<unk>"]
    for record in case.json("featurization.json"):
        assert canonicalize_smiles(record["input"]) == record["canonical"]
        tokens = split_smiles(record["canonical"]) + [tokenizer.eos_token]
        assert tokens == record["tokens"]
        # fairseq's encode_line: a token outside the dictionary becomes <unk>
        assert record["ids"] == [vocab.get(token, unk) for token in record["tokens"]]
        assert tokenizer.encode_smiles(record["input"]) == record["ids"]
        assert tokenizer(record["input"])["input_ids"] == record["ids"]
        id_to_token = {index: token for token, index in vocab.items()}
        assert tokenizer.convert_ids_to_tokens(record["ids"]) == [id_to_token[i] for i in record["ids"]]


@pytest.mark.parametrize("case", cases("featurize"))
def test_dictionary_facts(case, tokenizer):
    meta = case.meta
    facts = meta["dictionary"]
    vocab = dictionary(meta)
    assert tokenizer.get_vocab() == vocab
    assert tokenizer.vocab_size == facts["vocab_size_with_mask"]
    assert tokenizer.mask_token_id == facts["[MASK]"]
    for token, index in facts["specials"].items():
        assert tokenizer.convert_tokens_to_ids(token) == index
    for token, index in meta["token_to_id_seen"].items():
        assert tokenizer.convert_tokens_to_ids(token) == index


@pytest.mark.parametrize("case", cases("featurize"))
def test_graph_integers(case):
    meta = case.meta
    featurizer = DmpFeaturizer()
    records = case.json("featurization.json")
    assert len(records) == meta["n_molecules"]
    assert [r["input"] for r in records] == case.file("smiles.txt").read_text().split()
    for record in records:
        graph = featurizer(record["input"])
        assert graph["atom_features"].tolist() == record["node_attr"]
        assert graph["edge_index"].tolist() == record["edge_index"]
        assert graph["bond_features"].tolist() == record["edge_attr"]
        assert graph["num_atoms"] == record["num_nodes"]
        for features, dims in ((graph["atom_features"], meta["atom_feature_dims"]),
                               (graph["bond_features"], meta["bond_feature_dims"])):
            if len(features):
                assert features.shape[1] == len(dims)
                assert all(0 <= int(v) < d for v, d in zip(features.min(axis=0), dims))
                assert all(int(v) < d for v, d in zip(features.max(axis=0), dims))


@pytest.mark.parametrize("case", cases("pretrain", "finetune"))
def test_collator_rebuilds_the_original_batch(case, tokenizer):
    smiles = case.file("smiles.txt").read_text().split()
    labels = None
    if case.kind == "finetune":
        numbers = [float(x) for x in case.file("labels.txt").read_text().split()]
        regression = case.meta["checkpoint"]["cfg_task"]["regression_target"]
        labels = numbers if regression else [int(x) for x in numbers]
    batch = DmpDataCollator()(DmpFeaturizer().encode_molecules(smiles, tokenizer, labels=labels))
    clean = case.tensors(CLEAN_INPUTS[case.kind])
    assert torch.equal(batch["input_ids"], clean["src_tokens"])
    assert torch.equal(batch["attention_mask"].sum(1), clean["src_lengths"])
    assert torch.equal(batch["atom_features"], clean["graph_x"])
    assert torch.equal(batch["edge_index"], clean["graph_edge_index"])
    assert torch.equal(batch["bond_features"], clean["graph_edge_attr"])
    assert torch.equal(batch["atom_batch"], clean["graph_batch"])
    assert torch.equal(torch.bincount(batch["atom_batch"]), clean["graph_ptr"].diff())
    if labels is not None:
        assert batch["labels"].reshape(-1).tolist() == clean["target"].reshape(-1).to(batch["labels"].dtype).tolist()


@pytest.mark.parametrize("case", cases("pretrain"))
def test_masking_reproduces_the_original_draws(case, tokenizer):
    """fairseq seeds each item with (seed, epoch, index): the case's task seed and recorded masking epoch."""
    task = case.meta["checkpoint"]["cfg_task"]
    draw = case.meta["case_settings"]["masking_draw"]
    assert draw["seed"] == task["seed"]
    masked = case.tensors("inputs_masked.safetensors")
    clean = case.tensors("inputs_clean.safetensors")
    ptr = clean["graph_ptr"]
    vocab_size, mask_id = len(tokenizer), tokenizer.mask_token_id
    for index, length in enumerate(clean["src_lengths"].tolist()):
        row = slice(clean["src_tokens"].shape[1] - length, None)  # left padded
        ids = clean["src_tokens"][index, row].numpy()
        rng = np.random.RandomState(fairseq_seed(draw["seed"], draw["epoch"], index))
        new_ids, labels = mask_tokens(ids, rng, vocab_size, mask_id, probability=task["seq_mask_prob"])
        assert new_ids.tolist() == masked["src_tokens"][index, row].tolist()
        assert (labels != -100).tolist() == masked["masked_tokens"][index, row].bool().tolist()
        selected = labels != -100
        assert labels[selected].tolist() == masked["target_tokens"][index, row].numpy()[selected].tolist()
        nodes = slice(int(ptr[index]), int(ptr[index + 1]))
        rng = np.random.RandomState(fairseq_seed(draw["seed"], draw["epoch"], index))
        atoms, atom_labels = mask_atoms(clean["graph_x"][nodes].numpy(), rng, probability=task["graph_mask_prob"])
        assert atoms.tolist() == masked["graph_x"][nodes].tolist()
        assert (atom_labels != -100).tolist() == masked["masked_atoms"][nodes].bool().tolist()
        chosen = atom_labels != -100
        assert atom_labels[chosen].tolist() == masked["target_atoms"][nodes].numpy()[chosen].tolist()
    assert torch.equal(masked["src_tokens"][clean["src_tokens"] == tokenizer.pad_token_id],
                       clean["src_tokens"][clean["src_tokens"] == tokenizer.pad_token_id])


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
    assert (tmp_path / "dict.txt").read_text() == (FIXTURES_DMP / "vocab" / "dict.txt").read_text()


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
