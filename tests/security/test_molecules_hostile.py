"""Hostile molecule input to the Graphormer and DMP featurizers: bounded work before allocating, the family's
own error naming the input and the problem, nothing silently reinterpreted or dropped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from zoo.models.dmp import DmpFeaturizer, DmpProcessor, DmpTokenizer
from zoo.models.graphormer import GraphormerFeaturizer, MoleculeError
from zoo.models.graphormer.featurization_graphormer import MAX_ATOMS, MAX_FEATURE_VALUE, smiles_to_graph

pytest.importorskip("rdkit")

ROOT = Path(__file__).resolve().parents[2]

# -- allocation and time bounds (a subprocess, so that a regression cannot take the test machine down) -------

_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    from zoo.models.dmp import DmpProcessor
    from zoo.models.graphormer import GraphormerFeaturizer
    case = json.loads(sys.argv[1])
    smiles = case["unit"] * case["repeat"] + case.get("tail", "")
    call = {
        "graphormer": lambda: GraphormerFeaturizer(**case.get("options", {}))([smiles]),
        "dmp": lambda: DmpProcessor()([smiles]),
    }[case["family"]]
    # at most 1.5 GiB more address space than the imports took: a blow-up is a MemoryError, not a dead machine
    with open("/proc/self/statm") as handle:
        used = int(handle.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + (3 << 29), resource.RLIM_INFINITY))
    before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.monotonic()
    try:
        call()
        outcome = {"error": None, "message": ""}
    except BaseException as err:
        outcome = {"error": type(err).__name__, "message": str(err)}
    outcome["seconds"] = time.monotonic() - start
    outcome["grew_mib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(json.dumps(outcome))
""")

BOUND_CASES = {
    "graphormer-1MB-chain": ({"family": "graphormer", "unit": "C", "repeat": 1_000_000},
                             "MoleculeError", "1000000 characters, over the limit of 10000"),
    "graphormer-100k-branches": ({"family": "graphormer", "unit": "C(", "repeat": 100_000, "tail": "C" + ")" * 100_000},
                                 "MoleculeError", "300001 characters, over the limit of 10000"),
    "graphormer-ring-closures": ({"family": "graphormer", "unit": "C1", "repeat": 10_000},
                                 "MoleculeError", "20000 characters, over the limit of 10000"),
    # no max_nodes and no hop limit: the multi-hop edge features of a 500-atom chain are cubic (about 9 GiB)
    "graphormer-500-chain-all-hops": ({"family": "graphormer", "unit": "C", "repeat": 500,
                                       "options": {"max_nodes": None, "multi_hop_max_dist": None}},
                                      "MoleculeError", "499 hops) would take about"),
    # 510 fragments: every pair unreachable, so every hop of the original's 510 is kept
    "graphormer-fragments-all-hops": ({"family": "graphormer", "unit": "C.", "repeat": 300, "tail": "C",
                                       "options": {"max_nodes": None, "multi_hop_max_dist": None}},
                                      "MoleculeError", "510 hops) would take about"),
    "graphormer-over-atom-limit": ({"family": "graphormer", "unit": "C", "repeat": 2000, "options": {"max_nodes": None}},
                                   "MoleculeError", "2000 atoms exceed the limit of 510"),
    "dmp-1MB-chain": ({"family": "dmp", "unit": "C", "repeat": 1_000_000},
                      "ValueError", "1000000 characters, over the limit of 10000"),
    "dmp-100k-branches": ({"family": "dmp", "unit": "C(", "repeat": 100_000, "tail": "C" + ")" * 100_000},
                          "ValueError", "300001 characters, over the limit of 10000"),
}


@pytest.mark.parametrize("case", BOUND_CASES, ids=list(BOUND_CASES))
def test_large_molecules_are_refused_before_allocating(case):
    spec, error, phrase = BOUND_CASES[case]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    try:
        run = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(spec)], capture_output=True, text=True,
                             timeout=120, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case}: still featurizing after 120 s")
    assert run.returncode == 0, run.stderr[-2000:]
    outcome = json.loads(run.stdout.strip().splitlines()[-1])
    assert outcome["error"] == error, outcome
    assert phrase in outcome["message"]
    assert outcome["message"].startswith("molecule 0")  # names the input
    assert len(outcome["message"]) < 600  # a long input is shortened, not echoed whole
    assert outcome["seconds"] < 10, outcome
    assert outcome["grew_mib"] < 256, outcome


# -- text that rdkit would misread -------------------------------------------------------------------------


@pytest.mark.parametrize("smiles", ["CC\nO", "CC O", "CC\tO", "CC\x00O", "C\x1bC"])
def test_whitespace_or_control_inside_a_smiles_is_refused(smiles):
    # rdkit reads "CC\nO" and "CC O" as ethane named "O": the old featurizers encoded ethane silently
    position = repr(smiles[2] if smiles[1] != "\x1b" else smiles[1])
    with pytest.raises(MoleculeError, match=r"molecule 0 .*invalid SMILES .* at position \d is whitespace or a control"):
        GraphormerFeaturizer()([smiles])
    with pytest.raises(MoleculeError, match="is whitespace or a control character"):
        smiles_to_graph(smiles)
    with pytest.raises(ValueError, match=r"molecule 0: invalid SMILES .*" + position.replace("\\", "\\\\")):
        DmpProcessor()([smiles])
    with pytest.raises(ValueError, match="is whitespace or a control character"):
        DmpFeaturizer()(smiles, canonical=True)


def test_surrounding_whitespace_is_still_accepted():
    featurizer = GraphormerFeaturizer()
    assert np.array_equal(featurizer([" CCO\n"])["input_nodes"], featurizer(["CCO"])["input_nodes"])
    assert np.array_equal(DmpProcessor()([" CCO\n"])["input_ids"], DmpProcessor()(["CCO"])["input_ids"])


# -- graph dicts -------------------------------------------------------------------------------------------


def _graph(**changes):
    graph = {"node_feat": np.zeros((3, 9), np.int64), "edge_index": np.array([[0, 1], [1, 0]]),
             "edge_feat": np.zeros((2, 3), np.int64)}
    graph.update(changes)
    return graph


BAD_GRAPHS = {
    # the old featurizer took all of these silently except the first (KeyError) and the last two (numpy text)
    "missing keys": ({"node_feat": [[0] * 9]}, r"graph dict lacks \['edge_index', 'edge_feat'\]"),
    "negative atom feature": (_graph(node_feat=-np.ones((3, 9), np.int64)), r"node_feat values must be in 0\.\.509"),
    "atom feature in the next column's rows": (_graph(node_feat=np.full((3, 9), 600)), r"node_feat values must be in 0\.\.509 .*got 600\.\.600"),
    "negative bond feature": (_graph(edge_feat=-np.ones((2, 3), np.int64)), r"edge_feat values must be in 0\.\.509"),
    "fractional feature": (_graph(node_feat=np.full((3, 9), 0.7)), "node_feat holds non-integer values"),
    "NaN feature": (_graph(node_feat=np.full((3, 9), np.nan)), "node_feat holds NaN or infinite values"),
    "3-D features": (_graph(node_feat=np.zeros((3, 9, 2), np.int64)),
                     r"node_feat must be a \[rows, features\] matrix, got shape \(3, 9, 2\)"),
    "float edge_index": (_graph(edge_index=np.array([[0.5, 1.0], [1.0, 0.0]])),
                         "edge_index must hold integer atom indices, not float64"),
    "[E, 2] edge_index": (_graph(edge_index=np.array([[0, 1], [1, 2], [2, 0]]), edge_feat=np.zeros((3, 3), np.int64)),
                          r"edge_index must have shape \[2, edges\], got \(3, 2\)"),
    "string features": (_graph(node_feat=np.array([["a"] * 9] * 3)), "node_feat must hold integers, not <U1"),
    "flat odd edge_index": (_graph(edge_index=np.array([0, 1, 1])), r"edge_index must have shape \[2, edges\], got \(3,\)"),
}


@pytest.mark.parametrize("name", BAD_GRAPHS, ids=list(BAD_GRAPHS))
def test_bad_graph_dicts_are_refused(name):
    graph, message = BAD_GRAPHS[name]
    with pytest.raises(MoleculeError, match=r"molecule 0 \('dict'\): " + message):
        GraphormerFeaturizer()([graph])


def test_good_graph_dict_features_at_the_bound_are_kept():
    graph = _graph(node_feat=np.full((3, 9), MAX_FEATURE_VALUE), edge_feat=np.full((2, 3), float(MAX_FEATURE_VALUE)))
    batch = GraphormerFeaturizer()([graph])
    # convert_to_single_emb: feature + 1 + 512 * column, then the collator's + 1
    assert batch["input_nodes"][0, 0].tolist() == [MAX_FEATURE_VALUE + 2 + 512 * c for c in range(9)]


def test_graph_dict_with_too_many_atoms_is_refused_whatever_max_nodes():
    graph = _graph(node_feat=np.zeros((MAX_ATOMS + 1, 9), np.int64))
    with pytest.raises(MoleculeError, match=rf"{MAX_ATOMS + 1} atoms exceed the limit of {MAX_ATOMS}"):
        GraphormerFeaturizer(max_nodes=None)([graph])


def test_mixed_feature_layouts_are_refused_naming_both_molecules():
    one_column = _graph(node_feat=np.zeros((3, 1), np.int64))
    with pytest.raises(MoleculeError, match=r"molecule 1 \('dict'\): 1 atom feature columns, but molecule 0 has 9"):
        GraphormerFeaturizer()(["CCO", one_column])


# -- non-strings, skip reporting ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, 3.5, b"CCO"], ids=["None", "float", "bytes"])
def test_non_strings_are_refused_and_skips_reported(value):
    name = type(value).__name__
    with pytest.raises(MoleculeError, match=rf"molecule 1 \('{name}'\): cannot featurize a {name}"):
        GraphormerFeaturizer()(["CCO", value])
    with pytest.raises(MoleculeError, match=f"a SMILES must be a string, not {name}"):
        smiles_to_graph(value)
    with pytest.raises(ValueError, match=f"molecule 1: SMILES must be a string, got {name}"):
        DmpProcessor()(["CCO", value])
    # skip mode: reported, the good molecule kept (the old DMP code raised a bare TypeError here)
    batch = DmpProcessor()(["CCO", value], errors="skip")
    assert batch["input_ids"].shape[0] == 1
    assert [(index, reason) for index, _, reason in batch["skipped"]] == [
        (1, f"SMILES must be a string, got {name}: {value!r}")]
    features = DmpFeaturizer().encode_molecules([value, "CCO"], DmpTokenizer(), errors="skip")
    assert len(features) == 1 and features.skipped[0][0] == 0


def test_too_large_multi_hop_features_are_skipped_and_reported():
    featurizer = GraphormerFeaturizer(max_nodes=None, multi_hop_max_dist=None)
    chain = "C" * 500
    items, skipped = featurizer.featurize(["CCO", chain, "CC"], on_error="skip", log_skipped=False)
    assert [len(item["x"]) for item in items] == [3, 2]
    assert len(skipped) == 1 and skipped[0].index == 1 and skipped[0].input == chain
    assert "499 hops) would take about" in skipped[0].reason and "set multi_hop_max_dist" in skipped[0].reason


def test_out_of_vocabulary_charge_goes_to_the_ogb_misc_bucket():
    # by design (ogb's allowable_features): an atom value outside a vocabulary gets the list's trailing "misc" index
    graph = smiles_to_graph("[999C+15]")
    assert graph["node_feat"][0, 3] == 11  # formal charges -5..5 take 0..10


def test_parquet_items_with_a_forged_atom_count_are_refused(tmp_path):
    # the old reader built a (num_nodes + 1)^2 float32 array from the file's count: 10^6 atoms is 4 TB
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from zoo.inference import featurize_to_parquet, read_parquet_items

    summary = featurize_to_parquet(["CCO", "c1ccccc1"], tmp_path / "shards")
    table = pq.read_table(summary["shards"][0])
    forged = table.set_column(table.schema.get_field_index("num_nodes"), "num_nodes",
                              pa.array([3, 1_000_000], type=table.schema.field("num_nodes").type))
    path = tmp_path / "forged.parquet"
    pq.write_table(forged, path)
    assert read_parquet_items(summary["shards"])[0] == [0, 1]
    with pytest.raises(ValueError, match=r"forged.parquet: row 1 says num_nodes=1000000 but its x has shape \(6, 9\)"):
        read_parquet_items([path])


def _dmp_feature(**changes):
    feature = {"input_ids": [5, 5, 9, 2], "atom_features": np.zeros((3, 9), np.int64),
               "edge_index": np.array([[0, 1], [1, 0]]), "bond_features": np.zeros((2, 3), np.int64)}
    feature.update(changes)
    return feature


BAD_DMP_FEATURES = {
    # the old collator passed all of these on (the model then failed with an IndexError or read another row)
    "edge to a missing atom": (_dmp_feature(edge_index=np.array([[0, 7], [7, 0]])), r"edge_index refers to atoms outside 0\.\.2"),
    "atomic number past the table": (_dmp_feature(atom_features=np.full((3, 9), 1)
                                                  + np.eye(3, 9, dtype=np.int64) * 500),
                                     r"atom_features\[0, 0\] = 501 is outside 0\.\.119"),
    "negative bond type": (_dmp_feature(bond_features=-np.ones((2, 3), np.int64)), r"bond_features\[0, 0\] = -1 is outside 0\.\.6"),
    "bond rows for edges": (_dmp_feature(bond_features=np.zeros((3, 3), np.int64)), "3 bond_features rows for 2 edges"),
    "float atoms": (_dmp_feature(atom_features=np.full((3, 9), 0.5)), r"atom_features must be an integer matrix \[rows, 9\]"),
    "token past the vocabulary": (_dmp_feature(input_ids=[5, 99999, 2]), r"input_ids hold 2\.\.99999, outside the vocabulary"),
}


@pytest.mark.parametrize("name", BAD_DMP_FEATURES, ids=list(BAD_DMP_FEATURES))
def test_dmp_collator_refuses_features_outside_the_embedding_tables(name):
    from zoo.models.dmp import DmpDataCollator

    feature, message = BAD_DMP_FEATURES[name]
    good = _dmp_feature()
    assert DmpDataCollator()([good])["atom_features"].shape == (3, 9)
    with pytest.raises(ValueError, match="feature 1: " + message):
        DmpDataCollator()([good, feature])


@pytest.mark.parametrize("labels, message", [([1, [1, 2]], r"labels of item 1 have shape \(2,\), item 0's have \(\)"),
                                             (["a", "b"], r"labels of item 0 are <U1 \(a\), not numbers")],
                         ids=["ragged", "strings"])
def test_ragged_or_non_numeric_labels_are_refused_naming_the_item(labels, message):
    # the old collators raised numpy's "inhomogeneous shape" ValueError or torch's TypeError
    with pytest.raises(MoleculeError, match=message):
        GraphormerFeaturizer()(["CCO", "CC"], labels=labels)
    with pytest.raises(ValueError, match=message):
        DmpProcessor()(["CCO", "CC"], labels=labels)
    # numbers of one shape (NaN included: ogb multi-task sets mark missing targets with NaN) stay as they were
    assert GraphormerFeaturizer()(["CCO", "CC"], labels=[[1.0, float("nan")], [0.0, 1.0]])["labels"].shape == (2, 2)
