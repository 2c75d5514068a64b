"""Featurizer and collator against the original Graphormer preprocessing (tests/fixtures/graphormer)."""


import numpy as np
import pytest
import torch

from tests.models.graphormer._fixtures import ITEM_KEYS, cases
from zoo.models.graphormer import GraphormerFeaturizer, MoleculeError, smiles_to_graph
from zoo.models.graphormer.featurization_graphormer import UNREACHABLE, floyd_warshall

BATCH_NAMES = {"x": "input_nodes", "edge_input": "input_edges"}
# the kinds whose folders hold SMILES, the original's OGB graphs and preprocessed items (fixtures README)
ITEM_CASES = cases("featurize", "fairseq")


def read_smiles(case):
    name = case.meta["inputs"]["smiles_file"] if "inputs" in case.meta else "smiles.txt"
    smiles = [line for line in case.file(name).read_text().splitlines() if line]
    count = case.meta["inputs"]["n_graphs"] if "inputs" in case.meta else case.meta["n_molecules"]
    assert len(smiles) == count, f"{case.where}: {len(smiles)} SMILES, meta.json says {count}"
    return smiles


def featurizer_for(case):
    # items store `edge_input_hops_stored` hops where the fixture says so, else the original full length
    return GraphormerFeaturizer(multi_hop_max_dist=case.meta.get("edge_input_hops_stored"), max_nodes=None)


def assert_items_equal(case, items):
    expected = case.tensors("items_preprocessed.safetensors")
    keys = case.meta.get("per_item_keys", ITEM_KEYS)
    assert {key.split(".", 1)[1] for key in expected} == set(keys), f"{case.where}: item entries vs per_item_keys"
    assert len(items) == len({key.split(".")[0] for key in expected})
    for index, item in enumerate(items):
        for key in keys:
            want, got = expected[f"item{index}.{key}"], torch.from_numpy(np.asarray(item[key]))
            assert got.shape == want.shape, f"molecule {index} {key}: shape {tuple(got.shape)} != {tuple(want.shape)}"
            assert got.dtype == want.dtype, f"molecule {index} {key}: dtype {got.dtype} != {want.dtype}"
            assert torch.equal(got, want), f"molecule {index} {key} differs"


@pytest.mark.parametrize("case", ITEM_CASES)
def test_smiles_to_ogb_graph(case):
    graphs = case.json("ogb_graphs.json")
    for index, (smiles, want) in enumerate(zip(read_smiles(case), graphs, strict=True)):
        assert want["smiles"] == smiles
        got = smiles_to_graph(smiles)
        for key in ("node_feat", "edge_index", "edge_feat"):
            expected = np.asarray(want[key], dtype=np.int64).reshape(got[key].shape)
            np.testing.assert_array_equal(got[key], expected, err_msg=f"molecule {index} {smiles} {key}")


@pytest.mark.parametrize("case", ITEM_CASES)
def test_items_from_ogb_graphs(case):
    """Stage 2 alone: the fixture's raw ogb graphs -> original preprocess_item tensors."""
    graphs = case.json("ogb_graphs.json")
    items, skipped = featurizer_for(case).featurize(graphs)
    assert not skipped
    assert_items_equal(case, items)


@pytest.mark.parametrize("case", ITEM_CASES)
def test_items_from_smiles_and_mols(case):
    from rdkit import Chem

    smiles = read_smiles(case)
    featurizer = featurizer_for(case)
    assert_items_equal(case, featurizer.featurize(smiles)[0])
    assert_items_equal(case, featurizer.featurize([Chem.MolFromSmiles(s) for s in smiles])[0])


@pytest.mark.parametrize("case", ITEM_CASES)
def test_items_from_pyg_data(case):
    from torch_geometric.data import Data

    graphs = case.json("ogb_graphs.json")
    data = [Data(x=torch.tensor(g["node_feat"]).reshape(g["num_nodes"], -1),
                 edge_index=torch.tensor(g["edge_index"], dtype=torch.long).reshape(2, -1),
                 edge_attr=torch.tensor(g["edge_feat"], dtype=torch.long).reshape(-1, 3)) for g in graphs]
    assert_items_equal(case, featurizer_for(case).featurize(data)[0])


@pytest.mark.parametrize("case", cases("fairseq"))
def test_collated_batch(case):
    args = case.meta["collator_args"]
    featurizer = GraphormerFeaturizer(multi_hop_max_dist=args["multi_hop_max_dist"],
                                      spatial_pos_max=args["spatial_pos_max"], max_nodes=args["max_node"])
    batch = featurizer(read_smiles(case))
    expected = case.tensors("inputs.safetensors")
    for key in ("x", "edge_input", "attn_bias", "in_degree", "out_degree", "spatial_pos", "attn_edge_type"):
        got, want = batch[BATCH_NAMES.get(key, key)], expected[key]
        assert got.dtype == want.dtype and got.shape == want.shape, key
        assert torch.equal(got, want), f"{key} differs from the original collator"
    node_mask = torch.cat([torch.ones(len(batch["input_nodes"]), 1, dtype=torch.bool),
                           batch["input_nodes"][:, :, 0] > 0], 1)
    assert torch.equal(node_mask, expected["node_mask"])


def test_spatial_pos_max_masks_far_pairs():
    featurizer = GraphormerFeaturizer(spatial_pos_max=3)
    batch = featurizer(["CCCCCC"])  # hexane: atoms 0 and 5 are 5 bonds apart
    bias = batch["attn_bias"][0]
    assert bias[1, 6] == float("-inf") and bias[1, 3] == 0 and bias[1, 4] == float("-inf")
    assert torch.all(bias[0] == 0) and torch.all(bias[:, 0] == 0)


def test_floyd_warshall_distances_are_shortest_paths():
    """Property: Floyd–Warshall hop counts equal breadth-first distances (only path choice may differ)."""
    generator = np.random.default_rng(0)
    adjacency = generator.random((6, 9, 9)) < 0.25
    adjacency = adjacency | adjacency.transpose(0, 2, 1)
    adjacency[:, np.arange(9), np.arange(9)] = False
    dist, path = floyd_warshall(adjacency)
    for b in range(6):
        for source in range(9):
            seen, frontier, depth = {source: 0}, [source], 0
            while frontier:
                depth += 1
                frontier = [j for i in frontier for j in np.nonzero(adjacency[b, i])[0] if j not in seen]
                for j in frontier:
                    seen.setdefault(j, depth)
            for target in range(9):
                assert dist[b, source, target] == seen.get(target, UNREACHABLE)
    assert np.all(path[dist == UNREACHABLE] == UNREACHABLE)


def test_labels_are_collated():
    featurizer = GraphormerFeaturizer()
    batch = featurizer(["CCO", "CCN"], labels=[0.5, 1.5])
    assert torch.equal(batch["labels"], torch.tensor([0.5, 1.5], dtype=torch.float64))


# -- bad input ---------------------------------------------------------------------------------------------
def test_invalid_smiles_names_index_and_string():
    with pytest.raises(MoleculeError, match=r"molecule 1 \('C1CC'\).*invalid SMILES"):
        GraphormerFeaturizer()(["CCO", "C1CC", "CCN"])


def test_empty_molecule_is_refused():
    with pytest.raises(MoleculeError, match="molecule 0.*no atoms"):
        GraphormerFeaturizer()([""])


def test_skip_reports_bad_items_and_keeps_the_rest():
    items, skipped = GraphormerFeaturizer(max_nodes=10).featurize(
        ["CCO", "not-a-smiles", "CCCCCCCCCCCC", "", "O"], on_error="skip")
    assert len(items) == 2 and [len(item["x"]) for item in items] == [3, 1]
    assert [(s.index, s.input) for s in skipped] == [(1, "not-a-smiles"), (2, "CCCCCCCCCCCC"), (3, "")]
    assert "max_nodes=10" in skipped[1].reason


def test_molecule_over_max_nodes_raises_in_featurizer_and_collator():
    with pytest.raises(MoleculeError, match="molecule 0.*13 atoms exceed max_nodes=12"):
        GraphormerFeaturizer(max_nodes=12)(["C" * 13])
    items, _ = GraphormerFeaturizer(max_nodes=None).featurize(["C" * 13, "CC"])
    collator = GraphormerFeaturizer(max_nodes=12)
    with pytest.raises(MoleculeError, match=r"items \[0\] have more than max_nodes=12"):
        collator.collate(items)
    batch = collator.collate(items, on_oversize="skip")
    assert batch["input_nodes"].shape[:2] == (1, 2)


def test_single_atom_and_salt():
    batch = GraphormerFeaturizer()(["[Na+].[Cl-]", "O"])
    assert batch["spatial_pos"][0].tolist() == [[1, 511], [511, 1]]  # 510 hops apart, +1 shift
    assert batch["input_edges"].shape[3] == 5 and int(batch["input_edges"].max()) == 0  # no bond on any path
    assert batch["input_nodes"][1, 1].eq(0).all()  # water is padded to the salt's two atoms


def test_unsupported_input_type():
    with pytest.raises(MoleculeError, match="molecule 0.*cannot featurize a int"):
        GraphormerFeaturizer()([42])
