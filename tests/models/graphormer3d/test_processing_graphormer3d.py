"""Graphormer-3D featurizer: periodic expansion rules, padding, ASE input, save/load, and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoFeatureExtractor

import zoo  # noqa: F401
from tests.models.graphormer3d._fixtures import featurizer_for, first
from zoo.models.graphormer3d import Graphormer3DFeaturizer, Graphormer3DInputError, example_system

# a reference case's systems and the original's items for them, as inputs (parity: test_parity_graphormer3d.py)
CASE_OBJ = first()
CASE = CASE_OBJ.folder


@pytest.fixture()
def featurizer():
    return Graphormer3DFeaturizer()


def fixture_systems() -> list[dict]:
    return json.loads((CASE / "systems.json").read_text())


def test_images_follow_cutoff_rule(featurizer):
    """Every kept image is a non-adsorbate copy within 8 Å of an adsorbate; every dropped copy is not."""
    system = example_system()
    item = featurizer.featurize(system)
    pos = torch.tensor(system["positions"])
    tags = torch.tensor(system["tags"])
    cell = torch.tensor(system["cell"])
    adsorbates = pos[tags == 2]
    kept = {tuple(round(v, 4) for v in p) for p in item["positions"][~item["real_mask"]].tolist()}
    expected = set()
    for i, j in [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]:
        for atom in range(len(pos)):
            copy = pos[atom] + i * cell[0] + j * cell[1]
            if tags[atom] != 2 and (copy - adsorbates).norm(dim=-1).min() < 8.0:
                expected.add(tuple(round(v, 4) for v in copy.tolist()))
    assert kept == expected and len(kept) > 0
    assert item["real_mask"].sum() == len(pos)
    assert (item["tags"][~item["real_mask"]] != 2).all()


def test_no_adsorbate_or_no_cell_means_no_images(featurizer):
    slab = {**example_system(), "tags": [0, 0, 1, 1, 1]}
    assert featurizer.featurize(slab)["real_mask"].all()
    molecule = {**example_system(), "cell": None}
    item = featurizer.featurize(molecule)
    assert len(item["atom_ids"]) == 5 and item["real_mask"].all()


def test_padding_to_multiple_of_eight(featurizer):
    batch = featurizer([example_system(), {**example_system(), "cell": None}])
    n = batch["atom_ids"].shape[1]
    assert n % 8 == 0 and n - 8 < batch["atom_ids"].ne(0).sum(1).max() <= n
    row = batch["atom_ids"][1]
    assert row[:5].ne(0).all() and row[5:].eq(0).all()
    assert batch["positions"][1, 5:].eq(0).all() and not batch["real_mask"][1, 5:].any()
    assert "labels" not in batch and "delta_pos_labels" not in batch


def test_element_ids(featurizer):
    ids = featurizer.atom_ids(torch.tensor([1, 83, 3, 6, 118]))
    assert ids.tolist() == [1, 56, 57, 3, 57]


def test_ase_atoms_input_matches_mapping_input():
    ase = pytest.importorskip("ase")
    featurizer = featurizer_for(CASE_OBJ.meta)
    expected = CASE_OBJ.tensors("items_pbc.safetensors")
    pad = CASE_OBJ.meta["data_pipeline"]["pad_multiple"]
    for index, system in enumerate(fixture_systems()):
        atoms = ase.Atoms(
            numbers=system["atomic_numbers"],
            positions=system["pos"],
            cell=system["cell"][0],
            tags=system["tags"],
            pbc=[True, True, True],
        )
        item = featurizer.featurize(atoms)
        for theirs, ours in {
            "pos": "positions",
            "atoms": "atom_ids",
            "tags": "tags",
            "real_mask": "real_mask",
        }.items():
            assert torch.equal(item[ours], expected[f"item{index}.{theirs}"]), ours
        with_images = CASE_OBJ.meta["inputs"]["num_atoms_with_images"][index]
        assert featurizer(atoms)["atom_ids"].shape == (1, math.ceil(with_images / pad) * pad)
    non_periodic = ase.Atoms(numbers=[6, 8], positions=[[0, 0, 0], [1.2, 0, 0]], tags=[1, 2], pbc=False)
    assert featurizer.featurize(non_periodic)["real_mask"].all()


def test_duck_typed_atoms_object(featurizer):
    class Structure:
        pbc = np.array([True, True, False])

        def get_atomic_numbers(self):
            return np.array(example_system()["atomic_numbers"])

        def get_positions(self):
            return np.array(example_system()["positions"])

        def get_tags(self):
            return np.array(example_system()["tags"])

        def get_cell(self):
            return np.array(example_system()["cell"])

    ours = featurizer.featurize(Structure())
    reference = featurizer.featurize(example_system())
    for key in ("positions", "atom_ids", "tags", "real_mask"):
        assert torch.equal(ours[key], reference[key]), key


def test_save_and_auto_load(featurizer, tmp_path):
    custom = Graphormer3DFeaturizer(cutoff=6.0, pad_to_multiple_of=4)
    custom.save_pretrained(tmp_path)
    loaded = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert type(loaded) is Graphormer3DFeaturizer
    assert (
        loaded.cutoff == 6.0 and loaded.pad_to_multiple_of == 4 and loaded.atom_list == featurizer.atom_list
    )
    assert (tmp_path / "processing_graphormer3d.py").is_file()
    batch, reference = loaded([example_system()]), custom([example_system()])
    assert all(torch.equal(batch[k], reference[k]) for k in reference)


def test_pad_as_trainer_collator(featurizer):
    systems = [{**s, "relaxed_positions": s["pos_relaxed"]} for s in fixture_systems()]
    items = [featurizer.featurize(s) for s in systems]
    batch = featurizer.pad(items)
    inputs = load_file(str(CASE / "inputs.safetensors"))
    assert torch.equal(batch["delta_pos_labels"], inputs["deltapos"])
    assert torch.equal(batch["labels"], inputs["relaxed_energy"])


# -- bad input ----------------------------------------------------------------------------------------------
BAD = [
    ("mismatched positions", {"positions": [[0.0, 0.0, 0.0]] * 4}, r"4 positions for 5 atomic numbers"),
    ("mismatched tags", {"tags": [0, 1, 2]}, r"3 tags for 5 atomic numbers"),
    (
        "nan position",
        {"positions": [[0.0, 0.0, 5.0]] * 3 + [[math.nan, 1.0, 1.0], [0.0, 0.0, 9.0]]},
        r"positions of atoms \[3\] are not finite",
    ),
    (
        "inf position",
        {"positions": [[0.0, 0.0, 5.0]] * 4 + [[0.0, math.inf, 9.0]]},
        r"atoms \[4\] are not finite",
    ),
    ("empty system", {"atomic_numbers": [], "positions": np.zeros((0, 3)), "tags": []}, r"no atoms"),
    (
        "zero atomic number",
        {"atomic_numbers": [29, 29, 0, 29, 8]},
        r"unknown elements: atomic numbers \[0\] are not elements",
    ),
    ("too large atomic number", {"atomic_numbers": [29, 29, 29, 200, 8]}, r"unknown elements.*200"),
    ("fractional atomic number", {"atomic_numbers": [29, 29, 29, 29, 8.5]}, r"unknown elements.*8\.5"),
    ("symbol instead of number", {"atomic_numbers": ["Cu", "Cu", "Cu", "Cu", "O"]}, r"must be numbers"),
    ("bad tag", {"tags": [0, 0, 1, 3, 2]}, r"tags must be 0, 1 or 2, got \[3\]"),
    ("positions not 3d", {"positions": [[0.0, 0.0]] * 5}, r"shape \[n, 3\]"),
    ("nan cell", {"cell": [[math.nan, 0, 0], [0, 5, 0], [0, 0, 20]]}, r"cell is not finite"),
    ("degenerate cell", {"cell": [[5.0, 0, 0], [10.0, 0, 0], [0, 0, 20]]}, r"parallel or zero"),
    ("bad cell shape", {"cell": [5.0, 5.0, 20.0]}, r"cell must be \[3, 3\]"),
    ("nan relaxed energy", {"relaxed_energy": math.nan}, r"relaxed energy is nan"),
    ("missing tags", {"tags": None}, r"no tags"),
]


@pytest.mark.parametrize(("change", "message"), [pytest.param(c, m, id=name) for name, c, m in BAD])
def test_bad_input_names_system_and_problem(featurizer, change, message):
    system = {**example_system(), **change}
    with pytest.raises(Graphormer3DInputError, match=message) as error:
        featurizer.featurize(system)
    assert "Cu_O_example" in str(error.value)


def test_bad_item_in_batch_is_named_by_index(featurizer):
    bad = {k: v for k, v in example_system().items() if k != "name"}
    bad["positions"] = bad["positions"][:2]
    with pytest.raises(Graphormer3DInputError, match=r"system '#1'"):
        featurizer([example_system(), bad])


def test_unlisted_elements_rejected_when_asked(featurizer):
    lithium = {**example_system(), "atomic_numbers": [29, 29, 3, 29, 8]}
    assert featurizer.featurize(lithium)["atom_ids"][2] == 57  # the original's shared "unknown" id
    with pytest.raises(Graphormer3DInputError, match=r"elements \[3\] have no embedding"):
        Graphormer3DFeaturizer(allow_unlisted_elements=False).featurize(lithium)


def test_not_a_system(featurizer):
    with pytest.raises(Graphormer3DInputError, match="expected a mapping, an ase.Atoms or an OC20 record"):
        featurizer.featurize("Cu4O")
    with pytest.raises(Graphormer3DInputError, match="zero systems"):
        featurizer([])


def test_oc20_lmdb_style_record(featurizer):
    """OC20 LMDBs hold torch_geometric Data objects with float atomic numbers and a [1, 3, 3] cell."""
    data_module = pytest.importorskip("torch_geometric.data")
    expected = CASE_OBJ.tensors("items_pbc.safetensors")
    for index, system in enumerate(fixture_systems()):
        record = data_module.Data(
            atomic_numbers=torch.tensor(system["atomic_numbers"], dtype=torch.float32),
            pos=torch.tensor(system["pos"]),
            pos_relaxed=torch.tensor(system["pos_relaxed"]),
            tags=torch.tensor(system["tags"]),
            cell=torch.tensor(system["cell"]),
            y_relaxed=system["y_relaxed"],
            sid=system["sid"],
        )
        item = featurizer_for(CASE_OBJ.meta).featurize(record)
        for theirs, ours in {
            "pos": "positions",
            "atoms": "atom_ids",
            "tags": "tags",
            "deltapos": "delta_pos",
        }.items():
            assert torch.equal(item[ours], expected[f"item{index}.{theirs}"]), ours
        assert item["relaxed_energy"].item() == pytest.approx(system["y_relaxed"])
    bad = data_module.Data(
        atomic_numbers=torch.tensor([8.0]),
        pos=torch.tensor([[0.0, 0.0, float("nan")]]),
        tags=torch.tensor([2]),
        sid=77,
    )
    with pytest.raises(Graphormer3DInputError, match=r"system 77: positions of atoms \[0\] are not finite"):
        featurizer.featurize(bad)
