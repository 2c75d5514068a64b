"""zoo.inference: size buckets (properties), bucketed predictions equal to per-molecule runs, and
multi-process featurization equal to in-process featurization."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.inference import (
    featurize_to_parquet,
    iter_size_buckets,
    predict_dmp,
    predict_graphormer,
    read_parquet_items,
)

pytest.importorskip("rdkit")

# Varied sizes (1 to 40 atoms), charges, rings, aromatics, and two bad inputs.
SMILES = [
    "C", "CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "CN1C=NC2=C1C(=O)N(C(=O)N2C)C", "not a smiles",
    "C1CCC(CC1)NC(=O)c1ccc(cc1)S(=O)(=O)N", "[NH4+]", "OC(=O)C(N)Cc1c[nH]c2ccccc12",
    "CC(C)CC1=CC=C(C=C1)C(C)C(=O)O", "", "CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC",
    "O=C(O)c1ccc(cc1)N=Nc1ccc(O)c(c1)C(=O)O", "Clc1ccc(Cl)cc1", "CC1=C(C(=O)N(N1C)c1ccccc1)N(C)CS(=O)(=O)O",
]


@pytest.mark.parametrize("sizes,batch_size,max_cost", [
    ([5, 1, 3, 2, 9, 9, 4, 1], 3, None), ([5, 1, 3, 2, 9, 9, 4, 1], 8, 100), ([10, 2, 2, 2], 4, 50), ([], 4, None),
])
def test_size_buckets_properties(sizes, batch_size, max_cost):
    buckets = list(iter_size_buckets(sizes, batch_size, max_cost))
    assert sorted(i for bucket in buckets for i in bucket) == list(range(len(sizes)))  # each index once
    flat = [sizes[i] for bucket in buckets for i in bucket]
    assert flat == sorted(sizes)  # ascending sizes
    for bucket in buckets:
        assert 1 <= len(bucket) <= batch_size
        if max_cost is not None and len(bucket) > 1:
            assert len(bucket) * max(sizes[i] for i in bucket) ** 2 <= max_cost
    if max_cost is not None:  # an item over the budget on its own still gets a batch
        assert [10] in [[sizes[i] for i in b] for b in buckets] or 10 not in sizes


def test_size_buckets_bad_arguments():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        list(iter_size_buckets([1], 0))
    with pytest.raises(ValueError, match="max_cost must be >= 1"):
        list(iter_size_buckets([1], 2, 0))


def _graphormer():
    from zoo.models.graphormer import GraphormerConfig, GraphormerFeaturizer, GraphormerForGraphClassification

    torch.manual_seed(0)
    model = GraphormerForGraphClassification(GraphormerConfig(
        num_hidden_layers=2, hidden_size=32, intermediate_size=32, num_attention_heads=4, num_classes=3)).eval()
    for param in model.parameters():  # trained-like scale everywhere (zero-initialised parts would hide errors)
        torch.nn.init.normal_(param, std=0.05)
    return model, GraphormerFeaturizer()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_graphormer_buckets_equal_per_molecule_runs(attn):
    model, featurizer = _graphormer()
    model.config._attn_implementation = attn
    result = predict_graphormer(model, featurizer, SMILES, batch_size=4, max_cost=4 * 20 * 20, on_error="skip")
    assert [index for index, _, _ in result.skipped] == [5, 10]
    assert result.batches > 3
    logits = result.outputs["logits"]
    assert logits.shape == (len(SMILES), 3)
    assert np.isnan(logits[[5, 10]]).all() and result.ok.sum() == len(SMILES) - 2
    with torch.no_grad():
        for index, smiles in enumerate(SMILES):
            if index in (5, 10):
                continue
            single = model(**featurizer(smiles)).logits[0].numpy()
            np.testing.assert_allclose(logits[index], single, atol=1e-5, rtol=0)


def test_graphormer_bad_input_raises_naming_it():
    model, featurizer = _graphormer()
    with pytest.raises(ValueError, match="molecule 5 .*not a smiles"):
        predict_graphormer(model, featurizer, SMILES)


def test_dmp_buckets_equal_per_molecule_runs():
    from zoo.models.dmp import (
        DmpConfig,
        DmpDataCollator,
        DmpFeaturizer,
        DmpForSequenceClassification,
        DmpTokenizer,
    )

    torch.manual_seed(0)
    model = DmpForSequenceClassification(DmpConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, gnn_num_layers=3,
        gnn_hidden_size=24, num_labels=2)).eval()
    tokenizer, featurizer = DmpTokenizer(), DmpFeaturizer()
    result = predict_dmp(model, tokenizer, featurizer, SMILES, batch_size=3, on_error="skip")
    assert sorted(index for index, _, _ in result.skipped) == [5, 10]
    with torch.no_grad():
        for index, smiles in enumerate(SMILES):
            if index in (5, 10):
                assert np.isnan(result.outputs["logits"][index]).all()
                continue
            single = model(**DmpDataCollator()(featurizer.encode_molecules([smiles], tokenizer))).logits[0].numpy()
            np.testing.assert_allclose(result.outputs["logits"][index], single, atol=1e-5, rtol=0)


@pytest.mark.parametrize("num_proc", [1, 2])
def test_parquet_shards_equal_in_process_featurization(tmp_path, num_proc):
    from zoo.models.graphormer import GraphormerFeaturizer

    summary = featurize_to_parquet(SMILES, tmp_path / "shards", num_proc=num_proc, shard_size=4)
    assert len(summary["shards"]) == 4 and summary["items"] == len(SMILES) - 2
    assert sorted(index for index, _, _ in summary["skipped"]) == [5, 10]
    indices, items = read_parquet_items(summary["shards"])
    assert indices == [i for i in range(len(SMILES)) if i not in (5, 10)]
    featurizer = GraphormerFeaturizer()
    expected, _ = featurizer.featurize(SMILES, on_error="skip")
    for got, want in zip(items, expected):
        assert got.keys() == want.keys()
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
    batch, reference = featurizer.collate(items), featurizer.collate(expected)
    for name in reference:
        torch.testing.assert_close(batch[name], reference[name], atol=0, rtol=0)


def test_parquet_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_proc and shard_size must be >= 1"):
        featurize_to_parquet(SMILES, tmp_path, num_proc=0)


def test_featurize_cli_writes_shards_skipped_and_manifest(tmp_path, capsys):
    import json

    from zoo.cli import main
    from zoo.models.graphormer import GraphormerFeaturizer

    source = tmp_path / "molecules.csv"
    kept = [s for s in SMILES if s]
    source.write_text("smiles,label\n# a comment line\n" + "".join(f"{s},1\n" for s in kept))
    out = tmp_path / "shards"
    assert main(["featurize", str(source), str(out), "--num-proc", "2", "--shard-size", "5", "--max-nodes", "30"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["molecules"] == len(kept) and len(manifest["shards"]) == 3
    # file lines: 1 header, 2 comment, molecules from line 3; the 40-carbon chain is over --max-nodes
    assert manifest["lines"] == list(range(3, 3 + len(kept)))
    skipped = (out / "skipped.tsv").read_text().splitlines()
    assert skipped[0] == "line\tsmiles\treason"
    assert {row.split("\t")[1] for row in skipped[1:]} == {"not", "C" * 40}
    bad_line = 3 + kept.index("not a smiles")
    assert f"{bad_line}\tnot\t" in (out / "skipped.tsv").read_text()
    indices, items = read_parquet_items([out / name for name in manifest["shards"]])
    expected, errors = GraphormerFeaturizer(max_nodes=30).featurize([s.split(" ")[0] for s in kept], on_error="skip")
    assert len(indices) == len(expected) == manifest["items"] and len(errors) == 2
    for got, want in zip(items, expected):
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
    assert "skipped (listed in skipped.tsv)" in capsys.readouterr().out
    # a second run into the same folder is refused without --overwrite, and replaces the shards with it
    assert main(["featurize", str(source), str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["featurize", str(source), str(out), "--overwrite", "--num-proc", "1", "--shard-size", "100"]) == 0
    assert sorted(p.name for p in out.glob("shard-*.parquet")) == ["shard-00000.parquet"]


def test_featurize_cli_bad_inputs_are_named(tmp_path, capsys):
    from zoo.cli import main

    assert main(["featurize", str(tmp_path / "missing.smi"), str(tmp_path / "o")]) == 2
    assert "missing.smi: no such SMILES file" in capsys.readouterr().err
    empty = tmp_path / "empty.smi"
    empty.write_text("smiles\n\n# nothing\n")
    assert main(["featurize", str(empty), str(tmp_path / "o")]) == 2
    assert "empty.smi: no SMILES in the file" in capsys.readouterr().err
    binary = tmp_path / "binary.smi"
    binary.write_bytes(b"\xff\xfe\x00CCO\n")
    assert main(["featurize", str(binary), str(tmp_path / "o")]) == 2
    assert "binary.smi: not UTF-8 text" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_parquet_skipped_are_logged_once_with_input_indices(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.WARNING):
        featurize_to_parquet(SMILES, tmp_path / "shards", num_proc=1, shard_size=4)
    messages = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    # one message for the whole input, naming input positions 5 and 10 (shard-local they would be 1 and 2)
    assert len(messages) == 1 and messages[0].startswith("skipped 2 molecule(s): 5: ")
    assert "; 10: " in messages[0]


def test_featurize_cli_escapes_control_characters_in_skipped_tsv(tmp_path):
    from zoo.cli import main

    source = tmp_path / "molecules.smi"
    source.write_text("CCO\nC\x00C\nc1ccccc1\n")
    assert main(["featurize", str(source), str(tmp_path / "out"), "--num-proc", "1"]) == 0
    rows = (tmp_path / "out" / "skipped.tsv").read_text().splitlines()
    assert len(rows) == 2 and "\x00" not in rows[1]
    line, smiles, reason = rows[1].split("\t")
    assert line == "2" and smiles == "C\\x00C" and reason
