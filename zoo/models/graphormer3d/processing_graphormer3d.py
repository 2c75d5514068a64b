"""Input pipeline of Graphormer-3D: OC20-style slab + adsorbate systems -> padded model batches.

Reproduces the original `graphormer/tasks/is2re.py` (PBCDataset, AtomDataset, pad_1d): in-plane periodic
copies of non-adsorbate atoms within 8 Å of an adsorbate atom, element ids from the original's atom list,
zero padding to a multiple of 8 atoms.

    from zoo.models.graphormer3d import Graphormer3DFeaturizer
    featurizer = Graphormer3DFeaturizer()
    batch = featurizer([{"atomic_numbers": [29, 29, 8], "positions": pos, "tags": [0, 1, 2], "cell": cell}])

A system is a mapping (keys below), an ASE `Atoms` object (`ase` is optional; any object with
`get_atomic_numbers()` and `get_positions()` works) or an attribute-style OC20 record such as the
torch_geometric `Data` objects stored in the OC20 LMDBs (`atomic_numbers`, `pos`, `tags`, `cell`, ...).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import FeatureExtractionMixin

# Elements the original model embeds, in its order: element id = 1-based position; other elements share
# `unknown_atom_id` (57); 0 is padding.
OC20_ATOM_LIST = [
    1,
    5,
    6,
    7,
    8,
    11,
    13,
    14,
    15,
    16,
    17,
    19,
    20,
    21,
    22,
    23,
    24,
    25,
    26,
    27,
    28,
    29,
    30,
    31,
    32,
    33,
    34,
    37,
    38,
    39,
    40,
    41,
    42,
    43,
    44,
    45,
    46,
    47,
    48,
    49,
    50,
    51,
    52,
    55,
    72,
    73,
    74,
    75,
    76,
    77,
    78,
    79,
    80,
    81,
    82,
    83,
]
# In-plane neighbour cells in the original's order (no offset along c).
CELL_OFFSETS = [[-1, -1, 0], [-1, 0, 0], [-1, 1, 0], [0, -1, 0], [0, 1, 0], [1, -1, 0], [1, 0, 0], [1, 1, 0]]
MAX_ATOMIC_NUMBER = 118
MODEL_INPUTS = ("atom_ids", "tags", "positions", "real_mask")

_KEY_ALIASES = {
    "atomic_numbers": ("atomic_numbers", "numbers", "z"),
    "positions": ("positions", "pos"),
    "tags": ("tags",),
    "cell": ("cell",),
    "relaxed_positions": ("relaxed_positions", "pos_relaxed"),
    "relaxed_energy": ("relaxed_energy", "y_relaxed"),
}


class Graphormer3DInputError(ValueError):
    """A system the featurizer cannot turn into model inputs; the message names the system and the problem."""


def example_system() -> dict[str, Any]:
    """A small Cu slab with an O adsorbate in a 5.1 Å square cell (for smoke tests and demos)."""
    return {
        "name": "Cu_O_example",
        "atomic_numbers": [29, 29, 29, 29, 8],
        "tags": [0, 0, 1, 1, 2],
        "positions": [
            [0.0, 0.0, 5.0],
            [2.55, 2.55, 5.0],
            [2.55, 0.0, 6.8],
            [0.0, 2.55, 6.8],
            [1.2, 1.4, 8.7],
        ],
        "cell": [[5.1, 0.0, 0.0], [0.0, 5.1, 0.0], [0.0, 0.0, 20.0]],
    }


def _lookup(system: Mapping[str, Any], field: str) -> Any:
    for key in _KEY_ALIASES[field]:
        if key in system:
            return system[key]
    return None


def _from_ase(atoms: Any) -> dict[str, Any]:
    """Fields of an ASE Atoms object; the cell is used only when the system is periodic in-plane."""
    pbc = np.asarray(getattr(atoms, "pbc", [True, True, True]), dtype=bool).reshape(-1)
    cell = np.asarray(atoms.get_cell(), dtype=np.float64) if pbc[:2].any() else None
    tags = atoms.get_tags() if hasattr(atoms, "get_tags") else None
    return {
        "atomic_numbers": atoms.get_atomic_numbers(),
        "positions": atoms.get_positions(),
        "tags": tags,
        "cell": cell,
        "name": atoms.get_chemical_formula() if hasattr(atoms, "get_chemical_formula") else None,
    }


def _from_attributes(record: Any) -> dict[str, Any]:
    """Fields of an attribute-style record, e.g. the torch_geometric `Data` objects of the OC20 LMDBs."""
    fields = {}
    for field, aliases in _KEY_ALIASES.items():
        for key in aliases:
            value = getattr(record, key, None)
            if value is not None:
                fields[field] = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
                break
    sid = getattr(record, "sid", None)
    fields["sid"] = sid.item() if isinstance(sid, torch.Tensor) else sid
    return fields


class Graphormer3DFeaturizer(FeatureExtractionMixin):
    """Turns 3D systems into Graphormer-3D batches exactly as the original IS2RE data pipeline does.

    System fields (mapping keys, aliases in brackets):
        atomic_numbers [numbers]: n atomic numbers (integers, or integral floats as OC20 stores them);
        positions [pos]: [n, 3] Cartesian coordinates in Å;
        tags: n values, 0 sub-surface slab, 1 surface slab, 2 adsorbate;
        cell: [3, 3] (or [1, 3, 3]) lattice vectors as rows; None for a non-periodic system (no images);
        relaxed_positions [pos_relaxed], relaxed_energy [y_relaxed]: optional training targets.

    Output of `__call__`: atom_ids [B, N] long, tags [B, N] long, positions [B, N, 3] float32,
    real_mask [B, N] bool, plus `labels` [B] (relaxed energy, eV) and `delta_pos_labels` [B, N, 3] when every
    system carries the targets. N = the largest atom count (images included) rounded up to a multiple of 8.

        featurizer = Graphormer3DFeaturizer()
        batch = featurizer([system_a, system_b])          # dict of tensors for Graphormer3DForIS2RE
        items = [featurizer.featurize(s) for s in data]; batch = featurizer.pad(items)   # as a collator
    """

    model_input_names = list(MODEL_INPUTS)

    def __init__(
        self,
        atom_list: Sequence[int] = tuple(OC20_ATOM_LIST),
        unknown_atom_id: int | None = None,
        cutoff: float = 8.0,
        cell_offsets: Sequence[Sequence[int]] = tuple(map(tuple, CELL_OFFSETS)),
        filter_by_tag: bool = True,
        pad_to_multiple_of: int = 8,
        allow_unlisted_elements: bool = True,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.atom_list = [int(z) for z in atom_list]
        self.unknown_atom_id = len(self.atom_list) + 1 if unknown_atom_id is None else int(unknown_atom_id)
        self.cutoff = float(cutoff)
        self.cell_offsets = [[int(v) for v in offset] for offset in cell_offsets]
        self.filter_by_tag = bool(filter_by_tag)
        self.pad_to_multiple_of = int(pad_to_multiple_of)
        self.allow_unlisted_elements = bool(allow_unlisted_elements)

    # -- elements -------------------------------------------------------------------------------------------
    def atom_ids(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """Element ids of the original `AtomDataset`: listed elements by position, others unknown."""
        mapper = torch.full((MAX_ATOMIC_NUMBER + 1,), self.unknown_atom_id, dtype=torch.long)
        mapper[torch.tensor(self.atom_list, dtype=torch.long)] = torch.arange(1, len(self.atom_list) + 1)
        return mapper[atomic_numbers]

    # -- one system -----------------------------------------------------------------------------------------
    def expand_periodic(
        self,
        atomic_numbers: torch.Tensor,
        positions: torch.Tensor,
        tags: torch.Tensor,
        cell: torch.Tensor | None,
        relaxed_positions: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The original `PBCDataset` item: real atoms, then kept images per cell offset in order (float32).

        An image of a non-adsorbate atom is kept when it lies strictly closer than `cutoff` to an adsorbate
        atom (tag 2; any atom when `filter_by_tag` is False). Image displacement targets are zero, as the
        original builds the images' relaxed copies from the initial positions.
        """
        relaxed = positions if relaxed_positions is None else relaxed_positions
        if cell is None or not self.cell_offsets:
            used = torch.zeros(0, dtype=torch.bool)
            image_pos = positions.new_zeros((0, 3))
            image_index = torch.zeros(0, dtype=torch.long)
        else:
            n_cells = len(self.cell_offsets)
            offsets = torch.matmul(torch.tensor(self.cell_offsets, dtype=torch.float32), cell.view(1, 3, 3))
            expanded = (positions.unsqueeze(0).expand(n_cells, -1, -1) + offsets.view(n_cells, 1, 3)).view(
                -1, 3
            )
            sources = positions[tags > 1] if self.filter_by_tag else positions
            distance = torch.norm(expanded.unsqueeze(1) - sources.unsqueeze(0), p=2, dim=-1)
            used = (distance < self.cutoff).any(dim=-1) & tags.ne(2).repeat(n_cells)
            image_pos = expanded[used]
            image_index = torch.arange(len(positions)).repeat(n_cells)[used]
        numbers = torch.cat([atomic_numbers, atomic_numbers[image_index]])
        return {
            "positions": torch.cat([positions, image_pos]),
            "atomic_numbers": numbers,
            "atom_ids": self.atom_ids(numbers),
            "tags": torch.cat([tags, tags[image_index]]),
            "real_mask": torch.cat(
                [
                    torch.ones(len(positions), dtype=torch.bool),
                    torch.zeros_like(image_index, dtype=torch.bool),
                ]
            ),
            "delta_pos": torch.cat([relaxed - positions, torch.zeros_like(image_pos)]),
        }

    def featurize(self, system: Any, name: str | None = None) -> dict[str, torch.Tensor]:
        """Validate one system (mapping, ASE Atoms or OC20 record) and expand it; see the class docstring.

        Raises `Graphormer3DInputError` naming the system for: no atoms, arrays of different lengths,
        non-finite or misshapen positions/cell, atomic numbers that are no element (or, with
        `allow_unlisted_elements=False`, elements the model has no embedding for), tags outside 0/1/2.
        """
        if not isinstance(system, Mapping):
            if hasattr(system, "get_atomic_numbers") and hasattr(system, "get_positions"):
                system = _from_ase(system)
            elif hasattr(system, "atomic_numbers") and hasattr(system, "pos"):
                system = _from_attributes(system)
            else:
                raise Graphormer3DInputError(
                    f"system {name or '?'}: expected a mapping, an ase.Atoms or an OC20 record, "
                    f"got {type(system).__name__}"
                )
        label = name or system.get("name") or system.get("sid")
        label = f"system {label!r}" if label is not None else "system"

        def fail(problem: str) -> Graphormer3DInputError:
            return Graphormer3DInputError(f"{label}: {problem}")

        numbers = self._atomic_numbers(_lookup(system, "atomic_numbers"), fail)
        n = len(numbers)
        positions = self._coordinates(_lookup(system, "positions"), n, "positions", fail)
        tags = self._tags(_lookup(system, "tags"), n, fail)
        cell = self._cell(_lookup(system, "cell"), fail)
        relaxed = _lookup(system, "relaxed_positions")
        relaxed = None if relaxed is None else self._coordinates(relaxed, n, "relaxed positions", fail)
        item = self.expand_periodic(numbers, positions, tags, cell, relaxed)
        if relaxed is None:
            del item["delta_pos"]
        energy = _lookup(system, "relaxed_energy")
        if energy is not None:
            energy = float(energy)
            if not math.isfinite(energy):
                raise fail(f"relaxed energy is {energy}")
            item["relaxed_energy"] = torch.tensor(energy, dtype=torch.float32)
        return item

    def _atomic_numbers(self, value: Any, fail) -> torch.Tensor:
        if value is None:
            raise fail("no atomic numbers (key 'atomic_numbers')")
        try:
            array = np.asarray(value, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise fail(f"atomic numbers must be numbers, got {value!r}") from None
        if array.size == 0:
            raise fail("the system has no atoms")
        bad = (
            [v for v in array.tolist() if not (v == int(v) and 1 <= v <= MAX_ATOMIC_NUMBER)]
            if np.isfinite(array).all()
            else [v for v in array.tolist() if not math.isfinite(v)]
        )
        if bad:
            shown = sorted({int(v) if math.isfinite(v) and v == int(v) else v for v in bad})
            raise fail(f"unknown elements: atomic numbers {shown} are not elements (1..118)")
        numbers = torch.from_numpy(array.astype(np.int64))
        if not self.allow_unlisted_elements:
            unlisted = sorted(set(numbers.tolist()) - set(self.atom_list))
            if unlisted:
                raise fail(
                    f"elements {unlisted} have no embedding in this model (allow_unlisted_elements=False)"
                )
        return numbers

    @staticmethod
    def _coordinates(value: Any, n: int, what: str, fail) -> torch.Tensor:
        if value is None:
            raise fail(f"no {what}")
        array = np.asarray(value, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != 3:
            raise fail(f"{what} must have shape [n, 3], got {list(array.shape)}")
        if len(array) != n:
            raise fail(f"{len(array)} {what} for {n} atomic numbers (lengths must match)")
        if not np.isfinite(array).all():
            rows = sorted(set(np.nonzero(~np.isfinite(array))[0].tolist()))
            raise fail(f"{what} of atoms {rows} are not finite (NaN or inf)")
        return torch.from_numpy(array.astype(np.float32))

    @staticmethod
    def _tags(value: Any, n: int, fail) -> torch.Tensor:
        if value is None:
            raise fail("no tags (0 sub-surface, 1 surface, 2 adsorbate)")
        array = np.asarray(value).reshape(-1)
        if len(array) != n:
            raise fail(f"{len(array)} tags for {n} atomic numbers (lengths must match)")
        if not np.isin(array, (0, 1, 2)).all():
            raise fail(f"tags must be 0, 1 or 2, got {sorted(set(array.tolist()) - {0, 1, 2})}")
        return torch.from_numpy(array.astype(np.int64))

    @staticmethod
    def _cell(value: Any, fail) -> torch.Tensor | None:
        if value is None:
            return None
        array = np.asarray(value, dtype=np.float64)
        if array.size != 9:
            raise fail(f"cell must be [3, 3] lattice vectors, got shape {list(array.shape)}")
        array = array.reshape(3, 3)
        if not np.isfinite(array).all():
            raise fail("cell is not finite (NaN or inf)")
        if np.linalg.norm(np.cross(array[0], array[1])) < 1e-6:
            raise fail(
                "the in-plane cell vectors a and b are parallel or zero; pass cell=None for a molecule"
            )
        return torch.from_numpy(array.astype(np.float32))

    # -- batches --------------------------------------------------------------------------------------------
    def padded_length(self, n: int) -> int:
        multiple = max(self.pad_to_multiple_of, 1)
        return (n + multiple - 1) // multiple * multiple

    def pad(self, items: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Zero-pad featurized systems into a batch (usable as a Trainer data collator)."""
        if not items:
            raise Graphormer3DInputError("cannot build a batch from zero systems")
        length = self.padded_length(max(len(item["atom_ids"]) for item in items))
        batch = {
            "atom_ids": torch.zeros(len(items), length, dtype=torch.long),
            "tags": torch.zeros(len(items), length, dtype=torch.long),
            "positions": torch.zeros(len(items), length, 3, dtype=torch.float32),
            "real_mask": torch.zeros(len(items), length, dtype=torch.bool),
        }
        for row, item in enumerate(items):
            n = len(item["atom_ids"])
            for key in MODEL_INPUTS:
                batch[key][row, :n] = item[key]
        if all("relaxed_energy" in item for item in items):
            batch["labels"] = torch.stack([item["relaxed_energy"] for item in items])
        if all("delta_pos" in item for item in items):
            batch["delta_pos_labels"] = torch.zeros(len(items), length, 3, dtype=torch.float32)
            for row, item in enumerate(items):
                batch["delta_pos_labels"][row, : len(item["delta_pos"])] = item["delta_pos"]
        return batch

    def __call__(self, systems: Any | Sequence[Any]) -> dict[str, torch.Tensor]:
        """Featurize one system or a list of systems and pad them into one batch."""
        if isinstance(systems, Mapping) or hasattr(systems, "get_atomic_numbers"):
            systems = [systems]
        items = [
            self.featurize(system, name=None if _has_name(system) else f"#{i}")
            for i, system in enumerate(systems)
        ]
        return self.pad(items)


def _has_name(system: Any) -> bool:
    return (
        isinstance(system, Mapping)
        and (system.get("name") is not None or system.get("sid") is not None)
        or hasattr(system, "get_chemical_formula")
    )


__all__ = ["Graphormer3DFeaturizer", "Graphormer3DInputError", "OC20_ATOM_LIST", "example_system"]
