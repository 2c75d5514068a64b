"""Molecules -> Graphormer inputs, bit-exact with the original `preprocess_item` + `collator`.

Stage 1 (`molecule_to_graph`): SMILES / rdkit `Mol` -> ogb-style integer features (9 per atom, 3 per
bond, both bond directions), computed with rdkit directly (no ogb dependency).
Stage 2 (`GraphormerFeaturizer.featurize`): graph -> per-molecule item (offset features, degrees,
Floyd–Warshall shortest paths with the original tie-breaking, multi-hop edge features), batched and
vectorised with numpy. Stage 3 (`GraphormerFeaturizer.collate`): items -> padded batch for the model.

    from zoo.models.graphormer import GraphormerFeaturizer
    featurizer = GraphormerFeaturizer()
    batch = featurizer(["CCO", "c1ccccc1"])       # dict of tensors for GraphormerModel / heads
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature, FeatureExtractionMixin

__all__ = [
    "GraphormerFeaturizer", "MoleculeError", "SkippedItem", "molecule_to_graph", "smiles_to_graph",
]

logger = logging.getLogger(__name__)

UNREACHABLE = 510  # the original algos.pyx distance (and path marker) for disconnected node pairs
FEATURE_OFFSET = 512  # convert_to_single_emb: feature + 1 + 512 * column
# Bounds on input from outside (SECURITY.md): a SMILES longer than this is refused before rdkit parses it;
# a molecule of more atoms is refused whatever max_nodes says (a path of 511 atoms would reach the
# unreachable marker 510, and the degree and distance tables have 512 rows); the multi-hop edge features
# of one featurized group may take at most this many bytes (multi_hop_max_dist=None makes them cubic).
MAX_SMILES_LENGTH = 10_000
MAX_ATOMS = 510
MAX_EDGE_INPUT_BYTES = 1 << 30
# a graph feature must stay inside its column's 512-row slot of the embedding tables once shifted (atoms:
# feature + 2 + 512 * column after the collator's +1; multi-hop edges: feature + 3 + 512 * column)
MAX_FEATURE_VALUE = FEATURE_OFFSET - 3

# ogb 1.3.6 `allowable_features` (facts of the format; the last entry of each list is the "misc" bucket)
_ATOMIC_NUM = list(range(1, 119))
_CHIRALITY = ["CHI_UNSPECIFIED", "CHI_TETRAHEDRAL_CW", "CHI_TETRAHEDRAL_CCW", "CHI_OTHER"]
_DEGREE = list(range(11))
_FORMAL_CHARGE = list(range(-5, 6))
_NUM_HS = list(range(9))
_RADICAL_E = list(range(5))
_HYBRIDIZATION = ["SP", "SP2", "SP3", "SP3D", "SP3D2"]
_BOND_TYPE = ["SINGLE", "DOUBLE", "TRIPLE", "AROMATIC"]
_BOND_STEREO = ["STEREONONE", "STEREOZ", "STEREOE", "STEREOCIS", "STEREOTRANS", "STEREOANY"]


class MoleculeError(ValueError):
    """A molecule that cannot be featurized; the message names its index and the input."""


class _TooLarge(MoleculeError):
    """A featurized group whose multi-hop edge features would exceed MAX_EDGE_INPUT_BYTES."""


@dataclass(frozen=True)
class SkippedItem:
    """An input left out by `featurize(..., on_error="skip")` or the collator's `on_oversize="skip"`."""

    index: int
    input: str
    reason: str


def _vocabulary(values: list) -> dict:
    return {value: index for index, value in enumerate(values)}


_ATOM_VOCABS = [_vocabulary(v) for v in (_ATOMIC_NUM, _CHIRALITY, _DEGREE, _FORMAL_CHARGE, _NUM_HS, _RADICAL_E,
                                          _HYBRIDIZATION)]
_BOND_TYPE_VOCAB = _vocabulary(_BOND_TYPE)


def _atom_features(atom) -> list[int]:
    """ogb atom_to_feature_vector; a value outside a vocabulary gets its trailing "misc" index."""
    atomic, chirality, degree, charge, hydrogens, radicals, hybridization = _ATOM_VOCABS
    return [
        atomic.get(atom.GetAtomicNum(), len(atomic)),
        chirality.get(str(atom.GetChiralTag()), len(chirality)),
        degree.get(atom.GetTotalDegree(), len(degree)),
        charge.get(atom.GetFormalCharge(), len(charge)),
        hydrogens.get(atom.GetTotalNumHs(), len(hydrogens)),
        radicals.get(atom.GetNumRadicalElectrons(), len(radicals)),
        hybridization.get(str(atom.GetHybridization()), len(hybridization)),
        int(atom.GetIsAromatic()),
        int(atom.IsInRing()),
    ]


def _bond_features(bond) -> list[int]:
    stereo = str(bond.GetStereo())
    if stereo not in _BOND_STEREO:
        raise ValueError(f"bond stereo {stereo} is outside the ogb vocabulary")
    bond_type = _BOND_TYPE_VOCAB.get(str(bond.GetBondType()), len(_BOND_TYPE_VOCAB))
    return [bond_type, _BOND_STEREO.index(stereo), int(bond.GetIsConjugated())]


def molecule_to_graph(mol) -> dict[str, np.ndarray]:
    """ogb `smiles2graph` features of an rdkit `Mol`: node_feat [N,9], edge_index [2,E], edge_feat [E,3]."""
    node_feat = np.array([_atom_features(atom) for atom in mol.GetAtoms()], dtype=np.int64).reshape(-1, 9)
    pairs, feats = [], []
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        feature = _bond_features(bond)
        pairs += [(i, j), (j, i)]
        feats += [feature, feature]
    edge_index = np.array(pairs, dtype=np.int64).reshape(-1, 2).T.copy()
    edge_feat = np.array(feats, dtype=np.int64).reshape(-1, 3)
    return {"node_feat": node_feat, "edge_index": edge_index, "edge_feat": edge_feat}


def _shorten(text: str, limit: int = 80) -> str:
    """`text` for an error message: long inputs are cut, keeping their length."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _check_smiles_text(smiles: str) -> None:
    """Refuse what rdkit would misread or take long over: over-long text, and whitespace or control
    characters inside the SMILES (rdkit reads 'CC\\nO' as ethane named 'O', silently)."""
    if len(smiles) > MAX_SMILES_LENGTH:
        raise MoleculeError(
            f"SMILES {_shorten(smiles)!r} has {len(smiles)} characters, over the limit of {MAX_SMILES_LENGTH}")
    stripped = smiles.strip()
    bad = next((i for i, char in enumerate(stripped) if char.isspace() or not char.isprintable()), None)
    if bad is not None:
        raise MoleculeError(f"invalid SMILES {_shorten(smiles)!r}: {stripped[bad]!r} at position {bad} is whitespace "
                            "or a control character inside the SMILES (rdkit would read only the text before it)")


def _check_atom_count(mol, limit: int | None) -> None:
    count = mol.GetNumAtoms()
    ceiling = MAX_ATOMS if limit is None else min(limit, MAX_ATOMS)
    if count > ceiling:
        which = f"max_nodes={limit}" if limit is not None and limit <= MAX_ATOMS else f"the limit of {MAX_ATOMS}"
        raise MoleculeError(f"{count} atoms exceed {which}")


def smiles_to_graph(smiles: str, max_atoms: int | None = None) -> dict[str, np.ndarray]:
    """ogb `smiles2graph` computed with rdkit: raises `MoleculeError` for SMILES rdkit cannot parse, over
    `MAX_SMILES_LENGTH` characters, with whitespace inside, or with more than `max_atoms` (and `MAX_ATOMS`) atoms."""
    from rdkit import Chem, RDLogger

    if not isinstance(smiles, str):
        raise MoleculeError(f"a SMILES must be a string, not {type(smiles).__name__}")
    _check_smiles_text(smiles)
    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise MoleculeError(f"invalid SMILES {_shorten(smiles)!r}: rdkit could not parse it")
    _check_atom_count(mol, max_atoms)
    return molecule_to_graph(mol)


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return _shorten(value)
    try:
        from rdkit import Chem

        if isinstance(value, Chem.Mol):
            return _shorten(Chem.MolToSmiles(value)) if value.GetNumAtoms() <= MAX_ATOMS else (
                f"a Mol of {value.GetNumAtoms()} atoms")
    except ImportError:
        pass
    return type(value).__name__


def _reported(value: Any) -> str:
    """The input as a skipped item reports it: a SMILES in full (skip lists name the exact line)."""
    return value if isinstance(value, str) else _describe(value)


def _feature_matrix(value: Any, name: str, columns_at_most: int | None = None) -> np.ndarray:
    """An integer feature matrix [rows, columns] of a graph from outside: refuses what the original
    would have silently cast, reshaped or shifted into another column's embedding rows."""
    try:
        array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError) as err:
        raise MoleculeError(f"{name} is not an array ({err})") from None
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise MoleculeError(f"{name} must be a [rows, features] matrix, got shape {array.shape}")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise MoleculeError(f"{name} holds NaN or infinite values")
        if (array != np.round(array)).any():
            raise MoleculeError(f"{name} holds non-integer values (features are category indices)")
    elif array.dtype.kind not in "iub":
        raise MoleculeError(f"{name} must hold integers, not {array.dtype}")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() > MAX_FEATURE_VALUE):
        raise MoleculeError(f"{name} values must be in 0..{MAX_FEATURE_VALUE} (the 512-row slot of each feature "
                            f"column), got {array.min()}..{array.max()}")
    return array


def _edge_index(value: Any) -> np.ndarray:
    try:
        array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError) as err:
        raise MoleculeError(f"edge_index is not an array ({err})") from None
    if array.size == 0:
        return np.zeros((2, 0), dtype=np.int64)
    if array.ndim != 2 or array.shape[0] != 2:
        raise MoleculeError(f"edge_index must have shape [2, edges], got {array.shape}")
    if array.dtype.kind not in "iu":
        raise MoleculeError(f"edge_index must hold integer atom indices, not {array.dtype}")
    return array.astype(np.int64)


def _graph_from_arrays(node_feat: Any, edge_index: Any, edge_feat: Any) -> dict[str, np.ndarray]:
    node_feat = _feature_matrix(node_feat, "node_feat")
    if node_feat.shape[0] > MAX_ATOMS:
        raise MoleculeError(f"{node_feat.shape[0]} atoms exceed the limit of {MAX_ATOMS}")
    return {"node_feat": node_feat, "edge_index": _edge_index(edge_index),
            "edge_feat": _feature_matrix(edge_feat, "edge_feat")}


def _to_graph(value: Any, max_atoms: int | None = None) -> dict[str, np.ndarray]:
    """Accept SMILES, rdkit Mol, PyG `Data` (x, edge_index, edge_attr) or an ogb graph dict."""
    if isinstance(value, str):
        return smiles_to_graph(value, max_atoms)
    if isinstance(value, dict) and "node_feat" in value:
        missing = [key for key in ("node_feat", "edge_index", "edge_feat") if key not in value]
        if missing:
            raise MoleculeError(f"graph dict lacks {missing} (an ogb graph has node_feat, edge_index, edge_feat)")
        return _graph_from_arrays(value["node_feat"], value["edge_index"], value["edge_feat"])
    if hasattr(value, "edge_index") and hasattr(value, "x"):  # torch_geometric.data.Data
        edge_attr = getattr(value, "edge_attr", None)
        if edge_attr is None:
            raise MoleculeError("PyG Data without edge_attr: Graphormer needs bond features")
        return _graph_from_arrays(value.x, value.edge_index, edge_attr)
    try:
        from rdkit import Chem
    except ImportError as err:
        raise MoleculeError(f"cannot featurize a {type(value).__name__} (rdkit is not installed)") from err
    if isinstance(value, Chem.Mol):
        _check_atom_count(value, max_atoms)
        return molecule_to_graph(value)
    raise MoleculeError(
        f"cannot featurize a {type(value).__name__}: pass a SMILES string, an rdkit Mol, a PyG Data or an ogb graph dict"
    )


def _stack_labels(values: Sequence[Any]) -> torch.Tensor:
    """Stack per-item labels: numbers of one shape, or MoleculeError naming the first item that differs."""
    arrays = [np.asarray(value) for value in values]
    for index, array in enumerate(arrays):
        if array.dtype.kind not in "biuf":
            raise MoleculeError(f"labels of item {index} are {array.dtype} ({str(values[index])[:40]}), not numbers")
        if array.shape != arrays[0].shape:
            raise MoleculeError(f"labels of item {index} have shape {array.shape}, item 0's have {arrays[0].shape}")
    return torch.as_tensor(np.stack(arrays))


def floyd_warshall(adjacency: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batched all-pairs shortest paths with the original algos.pyx choice of intermediate node.

    adjacency: bool [B, n, n]. Returns (dist, path) int64 [B, n, n]: hop counts (0 on the diagonal,
    510 when unreachable) and the last intermediate node k that improved (i, j) (-1 for a direct bond
    or the diagonal, 510 when unreachable). The original relaxes in (k, i, j) order with a strict
    `>`; row and column k cannot change during step k, so relaxing all (i, j) at once is identical.
    """
    batch, n, _ = adjacency.shape
    dist = np.where(adjacency, 1, UNREACHABLE).astype(np.int64)
    diagonal = np.arange(n)
    dist[:, diagonal, diagonal] = 0
    path = np.full((batch, n, n), -1, dtype=np.int64)
    for k in range(n):
        cost = dist[:, :, k, None] + dist[:, None, k, :]
        better = dist > cost
        np.copyto(dist, cost, where=better)
        path[better] = k
    unreachable = dist >= UNREACHABLE
    dist[unreachable] = UNREACHABLE
    path[unreachable] = UNREACHABLE
    return dist, path


def path_nodes(dist: np.ndarray, path: np.ndarray, hops: int) -> np.ndarray:
    """Node at each of the first `hops` + 1 positions of the original recursive path (-1 past its end).

    The original expands (i, j) into path(i, k) + path(k, j) with k = path[i, j]; both halves are
    shorter, so filling pairs in order of increasing distance resolves every dependency.
    """
    batch, n, _ = dist.shape
    flat_dist = dist.reshape(-1)
    nodes = np.full((batch * n * n, hops + 1), -1, dtype=np.int64)
    pair = np.arange(batch * n * n)
    i_of, j_of = (pair // n) % n, pair % n
    reachable = flat_dist < UNREACHABLE
    nodes[reachable, 0] = i_of[reachable]
    if hops == 0:
        return nodes.reshape(batch, n, n, 1)
    direct = flat_dist == 1
    nodes[direct, 1] = j_of[direct]
    order = np.argsort(np.where(reachable, flat_dist, -1), kind="stable")
    sorted_dist = flat_dist[order] * reachable[order]
    longest = int(sorted_dist[-1]) if sorted_dist.size else 0
    bounds = np.searchsorted(sorted_dist, np.arange(2, longest + 2))
    positions = np.arange(hops + 1)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if lo == hi:
            continue
        pairs = order[lo:hi]
        graph_row = pairs - pairs % (n * n)  # first pair index of the molecule
        i, j = i_of[pairs], j_of[pairs]
        k = path.reshape(-1)[pairs]
        first_half = graph_row + i * n + k
        second_half = graph_row + k * n + j
        d_ik = flat_dist[first_half][:, None]
        second = nodes[second_half[:, None], np.clip(positions[None, :] - d_ik, 0, hops)]
        nodes[pairs] = np.where(positions[None, :] <= d_ik, nodes[first_half], second)
    return nodes.reshape(batch, n, n, hops + 1)


def offset_features(features: np.ndarray) -> np.ndarray:
    """convert_to_single_emb: column c of a feature matrix moves to feature + 1 + 512 * c."""
    return features + 1 + FEATURE_OFFSET * np.arange(features.shape[-1], dtype=np.int64)


class GraphormerFeaturizer(FeatureExtractionMixin):
    """Featurizer + collator of the original Graphormer (ogb features, Floyd–Warshall, multi-hop edges).

    `multi_hop_max_dist` (5), `spatial_pos_max` (1024) and `max_nodes` (128) are the original collator
    options of the released PCQM4M models. `featurize` returns per-molecule items, `collate` pads a list of
    items into a batch, and calling the featurizer does both.

        featurizer = GraphormerFeaturizer(multi_hop_max_dist=5, spatial_pos_max=1024, max_nodes=128)
        items, skipped = featurizer.featurize(["CCO", "not a smiles"], on_error="skip")
        batch = featurizer.collate(items)
    """

    model_input_names = [
        "input_nodes", "input_edges", "attn_bias", "in_degree", "out_degree", "spatial_pos", "attn_edge_type",
    ]

    def __init__(
        self, multi_hop_max_dist: int | None = 5, spatial_pos_max: int = 1024, max_nodes: int = 128,
        group_budget: int = 1 << 16, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.multi_hop_max_dist = multi_hop_max_dist
        self.spatial_pos_max = spatial_pos_max
        self.max_nodes = max_nodes
        self.group_budget = group_budget  # molecules featurized together: about this many padded atom pairs

    # -- stage 2: per-molecule items ----------------------------------------------------------------------
    def featurize(
        self, molecules: Iterable[Any], labels: Sequence[Any] | None = None, on_error: str = "raise",
        progress: bool = False, log_skipped: bool = True,
    ) -> tuple[list[dict[str, np.ndarray]], list[SkippedItem]]:
        """Items (numpy arrays, the original `preprocess_item` fields) for each molecule, and what was skipped.

        `on_error="raise"` raises `MoleculeError` naming the first bad molecule's index and input;
        `"skip"` leaves bad molecules (invalid SMILES, no atoms, more than `max_nodes` atoms) out and
        reports them (and logs them unless `log_skipped=False`). `edge_input` keeps min(longest distance, multi_hop_max_dist) hops (all when None).
        """
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        molecules = list(molecules)
        if labels is not None and len(labels) != len(molecules):
            raise ValueError(f"{len(labels)} labels for {len(molecules)} molecules")
        graphs: list[tuple[int, dict[str, np.ndarray]]] = []
        skipped: list[SkippedItem] = []
        layout: dict[str, tuple[int, int]] = {}  # feature key -> (first molecule with rows, its column count)
        iterator = molecules
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(molecules, desc="featurizing", unit="mol")
        for index, molecule in enumerate(iterator):
            try:
                graph = _to_graph(molecule, self.max_nodes)
                self._check_graph(graph)
                for key, what in (("node_feat", "atom"), ("edge_feat", "bond")):  # one layout per batch
                    if len(graph[key]):
                        first, width = layout.setdefault(key, (index, graph[key].shape[1]))
                        if graph[key].shape[1] != width:
                            raise MoleculeError(f"{graph[key].shape[1]} {what} feature columns, but molecule {first} "
                                                f"has {width}: one batch needs one layout")
            except (MoleculeError, ValueError) as err:
                reason = str(err)
                if on_error == "raise":
                    raise MoleculeError(f"molecule {index} ({_describe(molecule)!r}): {reason}") from err
                skipped.append(SkippedItem(index, _reported(molecule), reason))
                continue
            graphs.append((index, graph))
        items: dict[int, dict[str, np.ndarray]] = {}
        order = sorted(range(len(graphs)), key=lambda g: graphs[g][1]["node_feat"].shape[0])
        start = 0
        while start < len(order):
            # sorted by size, so the last molecule of a group is its largest: size the group by it
            stop = start + 1
            while stop < len(order) and (stop - start + 1) * graphs[order[stop]][1]["node_feat"].shape[0] ** 2 <= (
                    self.group_budget):
                stop += 1
            pending = [[graphs[g] for g in order[start:stop]]]
            start = stop
            while pending:
                group = pending.pop()
                try:
                    group_items = self._preprocess_group([graph for _, graph in group])
                except _TooLarge as err:
                    if len(group) > 1:  # padding made the group too large: one molecule at a time
                        pending.extend([member] for member in group)
                        continue
                    index = group[0][0]
                    if on_error == "raise":
                        raise MoleculeError(f"molecule {index} ({_describe(molecules[index])!r}): {err}") from None
                    skipped.append(SkippedItem(index, _reported(molecules[index]), str(err)))
                    continue
                for (index, _), item in zip(group, group_items):
                    if labels is not None:
                        item["labels"] = np.asarray(labels[index])
                    items[index] = item
        skipped.sort(key=lambda s: s.index)
        if skipped and log_skipped:
            logger.warning("skipped %d molecule(s): %s", len(skipped), "; ".join(f"{s.index}: {s.reason}" for s in skipped))
        return [items[index] for index, _ in graphs if index in items], skipped

    def _check_graph(self, graph: dict[str, np.ndarray]) -> None:
        n = graph["node_feat"].shape[0]
        if n == 0:
            raise MoleculeError("the molecule has no atoms")
        if self.max_nodes is not None and n > self.max_nodes:
            raise MoleculeError(f"{n} atoms exceed max_nodes={self.max_nodes}")
        edge_index = graph["edge_index"]
        if edge_index.size and (edge_index.min() < 0 or edge_index.max() >= n):
            raise MoleculeError(f"edge_index refers to atoms outside 0..{n - 1}")
        if graph["edge_feat"].shape[0] != edge_index.shape[1]:
            raise MoleculeError(f"{graph['edge_feat'].shape[0]} edge features for {edge_index.shape[1]} edges")

    def _preprocess_group(self, graphs: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """preprocess_item for several graphs at once, padded to the largest (padding is unreachable)."""
        sizes = [g["node_feat"].shape[0] for g in graphs]
        batch, n = len(graphs), max(sizes)
        n_edge_feat = max(g["edge_feat"].shape[1] for g in graphs) if graphs else 3
        adjacency = np.zeros((batch, n, n), dtype=bool)
        edge_type = np.zeros((batch, n, n, n_edge_feat), dtype=np.int64)
        for b, graph in enumerate(graphs):
            src, dst = graph["edge_index"]
            adjacency[b, src, dst] = True
            if src.size:
                edge_type[b, src, dst] = offset_features(graph["edge_feat"]) + 1
        dist, path = floyd_warshall(adjacency)
        item_hops = []
        for b, size in enumerate(sizes):
            longest = int(dist[b, :size, :size].max())
            item_hops.append(longest if self.multi_hop_max_dist is None else min(longest, self.multi_hop_max_dist))
        hops = max(item_hops)
        # path nodes, bond indices, edge_input and its per-item copies
        needed = batch * n * n * (hops + 1) * 8 * (2 * n_edge_feat + 3)
        if needed > MAX_EDGE_INPUT_BYTES:
            raise _TooLarge(f"its multi-hop edge features ({n} atoms, {hops} hops) would take about "
                            f"{needed >> 20} MiB, over the limit of {MAX_EDGE_INPUT_BYTES >> 20} MiB; "
                            "set multi_hop_max_dist (the original models use 5) or split the molecule")
        nodes = path_nodes(dist, path, hops)
        # hop h exists exactly when the path has a node at position h + 1 (-1 past its end, on the
        # diagonal and for unreachable pairs); missing hops read a sentinel row of -1
        table = np.concatenate([edge_type.reshape(-1, n_edge_feat), np.full((1, n_edge_feat), -1, np.int64)])
        start, end = nodes[..., :-1], nodes[..., 1:]
        bond = (np.arange(batch) * n * n)[:, None, None, None] + start * n + end
        np.copyto(bond, len(table) - 1, where=end < 0)
        edge_input = table[bond]
        items = []
        for b, (graph, size) in enumerate(zip(graphs, sizes)):
            degree = adjacency[b, :size, :size].sum(axis=1).astype(np.int64)
            items.append({
                "x": offset_features(graph["node_feat"]),
                "attn_bias": np.zeros((size + 1, size + 1), dtype=np.float32),
                "attn_edge_type": edge_type[b, :size, :size].copy(),
                "spatial_pos": dist[b, :size, :size].copy(),
                "in_degree": degree,
                "edge_input": np.ascontiguousarray(edge_input[b, :size, :size, :item_hops[b]]),
            })
        return items

    # -- stage 3: batches ---------------------------------------------------------------------------------
    def collate(self, items: Sequence[dict[str, Any]], on_oversize: str = "raise") -> dict[str, torch.Tensor]:
        """The original `collator`: +1 shifts (0 = padding), -inf attention bias on padded keys and beyond
        `spatial_pos_max`, `edge_input` truncated to `multi_hop_max_dist`. Items over `max_nodes` raise
        (the original dropped them silently) unless `on_oversize="skip"`, which logs their positions.
        """
        items = list(items)
        if not items:
            raise ValueError("cannot collate an empty list of items")
        too_big = [i for i, item in enumerate(items) if self.max_nodes is not None and len(item["x"]) > self.max_nodes]
        if too_big:
            message = f"items {too_big} have more than max_nodes={self.max_nodes} atoms"
            if on_oversize != "skip":
                raise MoleculeError(message + "; raise max_nodes or pass on_oversize='skip'")
            logger.warning("skipped %s", message)
            items = [item for i, item in enumerate(items) if i not in set(too_big)]
            if not items:
                raise MoleculeError(message + ": nothing left to collate")
        limit = self.multi_hop_max_dist
        sizes = [len(item["x"]) for item in items]
        n = max(sizes)
        hops = max(np.shape(item["edge_input"])[2] if limit is None else min(np.shape(item["edge_input"])[2], limit)
                   for item in items)
        batch = len(items)
        n_feat = np.shape(items[0]["x"])[1]
        n_edge_feat = np.shape(items[0]["attn_edge_type"])[2]
        x = np.zeros((batch, n, n_feat), dtype=np.int64)
        in_degree = np.zeros((batch, n), dtype=np.int64)
        spatial_pos = np.zeros((batch, n, n), dtype=np.int64)
        attn_edge_type = np.zeros((batch, n, n, n_edge_feat), dtype=np.int64)
        edge_input = np.zeros((batch, n, n, hops, n_edge_feat), dtype=np.int64)
        attn_bias = np.full((batch, n + 1, n + 1), -np.inf, dtype=np.float32)
        for b, (item, size) in enumerate(zip(items, sizes)):
            np.add(item["x"], 1, out=x[b, :size])
            np.add(item["in_degree"], 1, out=in_degree[b, :size])
            raw_spatial = np.asarray(item["spatial_pos"])
            np.add(raw_spatial, 1, out=spatial_pos[b, :size, :size])
            attn_edge_type[b, :size, :size] = item["attn_edge_type"]
            item_edges = np.asarray(item["edge_input"])[:, :, :hops]
            np.add(item_edges, 1, out=edge_input[b, :size, :size, :item_edges.shape[2]])
            bias = np.array(item["attn_bias"], dtype=np.float32)
            bias[1:, 1:][raw_spatial >= self.spatial_pos_max] = -np.inf
            attn_bias[b, :size + 1, :size + 1] = bias
            attn_bias[b, size + 1:, :size + 1] = 0.0
        batch_dict = {
            "input_nodes": torch.from_numpy(x), "input_edges": torch.from_numpy(edge_input),
            "attn_bias": torch.from_numpy(attn_bias), "in_degree": torch.from_numpy(in_degree),
            "out_degree": torch.from_numpy(in_degree.copy()), "spatial_pos": torch.from_numpy(spatial_pos),
            "attn_edge_type": torch.from_numpy(attn_edge_type),
        }
        if all("labels" in item for item in items):
            batch_dict["labels"] = _stack_labels([item["labels"] for item in items])
        elif any("labels" in item for item in items):
            raise ValueError("some items carry labels and others do not")
        return batch_dict

    def __call__(self, molecules: Any, labels: Sequence[Any] | None = None, **kwargs: Any) -> BatchFeature:
        """Featurize and collate one molecule or a list of them (errors name the bad molecule)."""
        if isinstance(molecules, str) or not isinstance(molecules, (list, tuple)):
            molecules = [molecules]
        items, _ = self.featurize(molecules, labels=labels, on_error="raise")
        return BatchFeature(self.collate(items))
