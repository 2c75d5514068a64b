"""DMP's graph view: 9 atom and 3 bond integer features (molecule/features.py of microsoft/DVMP), the batch
collator for both views, and the original pre-training masking of tokens and atoms.

    from zoo.models.dmp import DmpDataCollator, DmpFeaturizer, DmpTokenizer
    features = DmpFeaturizer().encode_molecules(["CCO", "c1ccccc1O"], DmpTokenizer(), labels=[0, 1])
    batch = DmpDataCollator()(features)          # input_ids, atom_features, edge_index, bond_features, ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .configuration_dmp import ATOM_FEATURE_DIMS, BOND_FEATURE_DIMS
from .tokenization_dmp import canonicalize_smiles, check_smiles_text, shorten

# The original index lists (not ogb's): atomic number 1..118 then [MASK], misc; bond types end with [MASK], [SELF].
ATOMIC_NUMBERS = list(range(1, 119)) + ["[MASK]", "misc"]
CHIRALITY = ["CHI_UNSPECIFIED", "CHI_TETRAHEDRAL_CW", "CHI_TETRAHEDRAL_CCW", "CHI_OTHER"]
DEGREES = list(range(11)) + ["misc"]
FORMAL_CHARGES = list(range(-5, 6)) + ["misc"]
NUM_HS = list(range(9)) + ["misc"]
RADICAL_ELECTRONS = list(range(5)) + ["misc"]
HYBRIDIZATIONS = ["SP", "SP2", "SP3", "SP3D", "SP3D2", "misc"]
BOND_TYPES = ["SINGLE", "DOUBLE", "TRIPLE", "AROMATIC", "[MASK]", "[SELF]", "misc"]
BOND_STEREO = ["STEREONONE", "STEREOZ", "STEREOE", "STEREOCIS", "STEREOTRANS", "STEREOANY"]

ATOM_MASK_INDEX = ATOMIC_NUMBERS.index("[MASK]")  # 118


def _checked_features(value: Any, dims: list[int], name: str, index: int) -> np.ndarray:
    """An integer feature matrix [rows, len(dims)] whose column c holds 0..dims[c] - 1, or ValueError naming it."""
    array = np.asarray(value)
    if array.size == 0:
        return np.zeros((0, len(dims)), dtype=np.int64)
    if array.ndim != 2 or array.shape[1] != len(dims) or array.dtype.kind not in "iub":
        raise ValueError(f"feature {index}: {name} must be an integer matrix [rows, {len(dims)}], got "
                         f"{array.dtype} of shape {array.shape}")
    array = array.astype(np.int64)
    bad = (array < 0) | (array >= np.asarray(dims))
    if bad.any():
        row, column = map(int, np.argwhere(bad)[0])
        raise ValueError(f"feature {index}: {name}[{row}, {column}] = {array[row, column]} is outside 0..{dims[column] - 1}")
    return array

# the whole 9-vector a masked atom gets: [MASK], unspecified chirality, misc elsewhere, not aromatic / in ring
MASKED_ATOM_FEATURES = np.array([ATOM_MASK_INDEX, 0, 11, 11, 9, 5, 5, 0, 0], dtype=np.int64)


def _index_or_misc(values: list, value: Any) -> int:
    try:
        return values.index(value)
    except ValueError:
        return len(values) - 1


def _strict_index(values: list[str], value: str, smiles: str, what: str) -> int:
    if value not in values:
        raise ValueError(
            f"SMILES {shorten(smiles)!r}: {what} {value} is not one DMP can encode (known: {', '.join(values)}); "
            "the original featurizer crashes here"
        )
    return values.index(value)


def atom_features(atom, smiles: str = "") -> list[int]:
    """The 9 feature indices of an RDKit atom."""
    return [
        _index_or_misc(ATOMIC_NUMBERS, atom.GetAtomicNum()),
        _strict_index(CHIRALITY, str(atom.GetChiralTag()), smiles, f"atom {atom.GetIdx()} chirality"),
        _index_or_misc(DEGREES, atom.GetTotalDegree()),
        _index_or_misc(FORMAL_CHARGES, atom.GetFormalCharge()),
        _index_or_misc(NUM_HS, atom.GetTotalNumHs()),
        _index_or_misc(RADICAL_ELECTRONS, atom.GetNumRadicalElectrons()),
        _index_or_misc(HYBRIDIZATIONS, str(atom.GetHybridization())),
        int(atom.GetIsAromatic()),
        int(atom.IsInRing()),
    ]


def bond_features(bond, smiles: str = "") -> list[int]:
    """The 3 feature indices of an RDKit bond."""
    return [
        _index_or_misc(BOND_TYPES, str(bond.GetBondType())),
        _strict_index(BOND_STEREO, str(bond.GetStereo()), smiles, f"bond {bond.GetIdx()} stereo"),
        int(bond.GetIsConjugated()),
    ]


class DmpFeaturizer:
    """SMILES -> DMP graph (atom features [N, 9], edge_index [2, E] with every bond twice, bond features [E, 3]).

    The graph is built from the canonical SMILES, so atom order follows the canonical string as in DMP.

        graph = DmpFeaturizer()("F/C=C/[C@H](Cl)Br")
        graph["atom_features"].shape, graph["edge_index"].shape   # (6, 9), (2, 10)
    """

    def __call__(self, smiles: str, canonical: bool = False) -> dict[str, Any]:
        return self.featurize(smiles, canonical=canonical)

    def featurize(self, smiles: str, canonical: bool = False) -> dict[str, Any]:
        """Featurize one molecule; `canonical=True` skips canonicalization (input already canonical)."""
        from rdkit import Chem, RDLogger

        if canonical:
            check_smiles_text(smiles)
        canonical_smiles = smiles if canonical else canonicalize_smiles(smiles)
        RDLogger.DisableLog("rdApp.*")
        try:
            mol = Chem.MolFromSmiles(canonical_smiles)
        finally:
            RDLogger.EnableLog("rdApp.*")
        if mol is None or mol.GetNumAtoms() == 0:
            raise ValueError(f"invalid SMILES {shorten(smiles)!r}: RDKit cannot build a molecule from it")
        atoms = np.array([atom_features(atom, smiles) for atom in mol.GetAtoms()], dtype=np.int64)
        edges, attrs = [], []
        for bond in mol.GetBonds():
            i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
            feature = bond_features(bond, smiles)
            edges += [(i, j), (j, i)]
            attrs += [feature, feature]
        edge_index = np.array(edges, dtype=np.int64).reshape(-1, 2).T.copy()
        bonds = np.array(attrs, dtype=np.int64).reshape(-1, 3)
        return {
            "canonical_smiles": canonical_smiles, "atom_features": atoms, "edge_index": edge_index,
            "bond_features": bonds, "num_atoms": len(atoms),
        }

    def encode_molecules(
        self,
        smiles: Sequence[str],
        tokenizer,
        labels: Sequence[Any] | None = None,
        errors: str = "raise",
    ) -> list[dict[str, Any]]:
        """Both views of each molecule as feature dicts for DmpDataCollator.

        `errors="raise"` stops at the first bad SMILES; `errors="skip"` leaves bad molecules out and
        reports them in the returned list's `.skipped` attribute as (index, smiles, reason).

            features = DmpFeaturizer().encode_molecules(smiles, tokenizer, labels, errors="skip")
            print(features.skipped)
        """
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
        if labels is not None and len(labels) != len(smiles):
            raise ValueError(f"{len(labels)} labels for {len(smiles)} molecules")
        encoded = EncodedMolecules()
        for index, text in enumerate(smiles):
            try:
                graph = self.featurize(text)
                ids = tokenizer.encode_smiles(graph["canonical_smiles"], canonical=True)
            except (ValueError, TypeError) as err:
                if errors == "raise":
                    raise ValueError(f"molecule {index}: {err}") from None
                encoded.skipped.append((index, text, str(err)))
                continue
            item = {"input_ids": ids, **{k: graph[k] for k in ("atom_features", "edge_index", "bond_features")}}
            if labels is not None:
                item["labels"] = labels[index]
            encoded.append(item)
        return encoded


class EncodedMolecules(list):
    """A list of feature dicts plus `skipped`: (index, smiles, reason) for molecules left out."""

    def __init__(self, *args):
        super().__init__(*args)
        self.skipped: list[tuple[int, str, str]] = []


# ------------------------------------------------------------------------------------------------------------------
# masking (fairseq MaskTokensDataset / DMP MaskedPyGDataset)
# ------------------------------------------------------------------------------------------------------------------


def fairseq_seed(seed: int, *extra: int) -> int:
    """The per-item numpy seed of fairseq's `data_utils.numpy_seed(seed, epoch, index)`."""
    return int(hash((seed, *extra)) % 1e6) if extra else seed


def _select(size: int, rng: np.random.RandomState, probability: float, leave: float, random: float):
    """Selected, replaced-by-mask and replaced-by-random positions, drawn in the original order."""
    selected = np.zeros(size, dtype=bool)
    count = int(probability * size + rng.rand())
    selected[rng.choice(size, count, replace=False)] = True
    mask, rand = selected.copy(), np.zeros(size, dtype=bool)
    if leave + random > 0:
        rand_or_unmask = selected & (rng.rand(size) < leave + random)
        decision = rng.rand(size) < leave / (leave + random)
        unmask, rand = rand_or_unmask & decision, rand_or_unmask & ~decision
        mask = selected ^ unmask
    return selected, mask, rand


def mask_tokens(
    ids: np.ndarray,
    rng: np.random.RandomState,
    vocab_size: int,
    mask_id: int,
    num_special: int = 4,
    probability: float = 0.15,
    leave_unmasked: float = 0.1,
    random_token: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """One molecule's masked ids and its MLM labels (original id where selected, -100 elsewhere).

    About `probability` of the positions (`</s>` included) are selected; 80 % become `[MASK]`, 10 % a
    random non-special token, 10 % stay.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if (ids == mask_id).any():
        raise ValueError("input ids already contain [MASK]; mask the clean sequence")
    selected, mask, rand = _select(len(ids), rng, probability, leave_unmasked, random_token)
    masked = ids.copy()
    masked[mask] = mask_id
    if rand.any():
        weights = np.ones(vocab_size)
        weights[:num_special] = 0
        masked[rand] = rng.choice(vocab_size, rand.sum(), p=weights / weights.sum())
    return masked, np.where(selected, ids, -100)


def mask_atoms(
    atoms: np.ndarray,
    rng: np.random.RandomState,
    probability: float = 0.15,
    leave_unmasked: float = 0.1,
    random_atom: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """One molecule's masked atom features and labels (atomic-number index where selected, -100 elsewhere).

    Selected atoms: 80 % get the whole [MASK] feature vector, 10 % copy the features of a random atom of
    the same molecule, 10 % stay.
    """
    atoms = np.asarray(atoms, dtype=np.int64)
    if (atoms[:, 0] == ATOM_MASK_INDEX).any():
        raise ValueError("atom features already contain the [MASK] atom; mask the clean graph")
    selected, mask, rand = _select(len(atoms), rng, probability, leave_unmasked, random_atom)
    masked = atoms.copy()
    masked[mask] = MASKED_ATOM_FEATURES
    if rand.any():
        masked[rand] = atoms[rng.choice(len(atoms), rand.sum())]
    return masked, np.where(selected, atoms[:, 0], -100)


# ------------------------------------------------------------------------------------------------------------------
# collation
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class DmpDataCollator:
    """Batch DMP features: left-padded `input_ids` + `attention_mask`, and the graphs concatenated PyG-style.

    Each feature is a dict with `input_ids`, `atom_features` [n, 9], `edge_index` [2, e], `bond_features`
    [e, 3] and optionally `labels`. With `mlm=True` the batch is masked the original way and gets
    `mlm_labels` / `atom_labels` for DmpForPreTraining (`seed` makes the draws reproducible).

        collator = DmpDataCollator(mlm=True, seed=1)
        batch = collator(features)
    """

    pad_token_id: int = 1
    mask_token_id: int = 2352
    vocab_size: int = 2353
    mlm: bool = False
    mlm_probability: float = 0.15
    atom_mask_probability: float = 0.15
    seed: int | None = None
    label_dtype: torch.dtype | None = None
    _rng: np.random.RandomState = field(init=False, repr=False)

    def __post_init__(self):
        self._rng = np.random.RandomState(self.seed)

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("cannot collate an empty list of molecules")
        ids, graphs, mlm_labels, atom_labels = [], [], [], []
        for index, feature in enumerate(features):
            missing = {"input_ids", "atom_features", "edge_index", "bond_features"} - feature.keys()
            if missing:
                raise ValueError(f"feature {index} lacks {sorted(missing)}")
            item_ids = np.asarray(feature["input_ids"])
            if item_ids.ndim != 1 or item_ids.dtype.kind not in "iu" or not len(item_ids):
                raise ValueError(f"feature {index}: input_ids must be a non-empty list of integers, got "
                                 f"{item_ids.dtype} of shape {item_ids.shape}")
            if item_ids.min() < 0 or item_ids.max() >= self.vocab_size:
                raise ValueError(f"feature {index}: input_ids hold {item_ids.min()}..{item_ids.max()}, outside the "
                                 f"vocabulary 0..{self.vocab_size - 1}")
            item_ids = item_ids.astype(np.int64)
            atoms = _checked_features(feature["atom_features"], ATOM_FEATURE_DIMS, "atom_features", index)
            bonds = _checked_features(feature["bond_features"], BOND_FEATURE_DIMS, "bond_features", index)
            edges = np.asarray(feature["edge_index"])
            edges = np.zeros((2, 0), dtype=np.int64) if edges.size == 0 else edges
            if edges.ndim != 2 or edges.shape[0] != 2 or edges.dtype.kind not in "iu":
                raise ValueError(f"feature {index}: edge_index must be an integer array [2, edges], got "
                                 f"{edges.dtype} of shape {edges.shape}")
            if edges.shape[1] != len(bonds):
                raise ValueError(f"feature {index}: {len(bonds)} bond_features rows for {edges.shape[1]} edges")
            if edges.size and (edges.min() < 0 or edges.max() >= len(atoms)):
                raise ValueError(f"feature {index}: edge_index refers to atoms outside 0..{len(atoms) - 1}")
            if self.mlm:
                item_ids, token_labels = mask_tokens(
                    item_ids, self._rng, self.vocab_size, self.mask_token_id, probability=self.mlm_probability
                )
                atoms, labels = mask_atoms(atoms, self._rng, probability=self.atom_mask_probability)
                mlm_labels.append(token_labels)
                atom_labels.append(labels)
            ids.append(item_ids)
            graphs.append((atoms, edges.astype(np.int64), bonds))
        batch = {"input_ids": left_pad(ids, self.pad_token_id)}
        batch["attention_mask"] = batch["input_ids"].ne(self.pad_token_id).long()
        batch.update(batch_graphs(graphs))
        if self.mlm:
            batch["mlm_labels"] = left_pad(mlm_labels, -100)
            batch["atom_labels"] = torch.from_numpy(np.concatenate(atom_labels))
        if "labels" in features[0]:
            labels = _stack_labels([f["labels"] for f in features])
            batch["labels"] = labels.to(self.label_dtype) if self.label_dtype is not None else labels
        return batch


def _stack_labels(values: Sequence[Any]) -> torch.Tensor:
    """Stack per-item labels: numbers of one shape, or ValueError naming the first item that differs."""
    arrays = [np.asarray(value) for value in values]
    for index, array in enumerate(arrays):
        if array.dtype.kind not in "biuf":
            raise ValueError(f"labels of item {index} are {array.dtype} ({str(values[index])[:40]}), not numbers")
        if array.shape != arrays[0].shape:
            raise ValueError(f"labels of item {index} have shape {array.shape}, item 0's have {arrays[0].shape}")
    return torch.as_tensor(np.stack(arrays))


def left_pad(rows: Sequence[np.ndarray], value: int) -> torch.Tensor:
    """Stack 1-d integer rows into [B, T], padding on the left (fairseq LeftPadDataset)."""
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if len(row):
            out[i, width - len(row):] = torch.as_tensor(np.asarray(row), dtype=torch.long)
    return out


def batch_graphs(graphs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Concatenate (atom_features, edge_index, bond_features) graphs with node offsets, as a PyG Batch."""
    sizes = [len(atoms) for atoms, _, _ in graphs]
    offsets = np.cumsum([0] + sizes[:-1])
    edge_index = np.concatenate(
        [np.asarray(e, dtype=np.int64).reshape(2, -1) + o for (_, e, _), o in zip(graphs, offsets)], axis=1
    )
    return {
        "atom_features": torch.from_numpy(np.concatenate([np.asarray(a, dtype=np.int64) for a, _, _ in graphs])),
        "edge_index": torch.from_numpy(edge_index),
        "bond_features": torch.from_numpy(
            np.concatenate([np.asarray(b, dtype=np.int64).reshape(-1, 3) for _, _, b in graphs])
        ),
        "atom_batch": torch.from_numpy(np.repeat(np.arange(len(graphs)), sizes)),
    }
