"""Graphormer: configuration, model and heads, and the molecule featurizer / collator."""

from .configuration_graphormer import GraphormerConfig
from .featurization_graphormer import (
    GraphormerFeaturizer,
    MoleculeError,
    SkippedItem,
    molecule_to_graph,
    smiles_to_graph,
)
from .modeling_graphormer import (
    GraphormerForGraphClassification,
    GraphormerForGraphRegression,
    GraphormerModel,
    GraphormerModelOutput,
    GraphormerPreTrainedModel,
    GraphPredictionOutput,
)

__all__ = [
    "GraphPredictionOutput", "GraphormerConfig", "GraphormerFeaturizer", "GraphormerForGraphClassification",
    "GraphormerForGraphRegression", "GraphormerModel", "GraphormerModelOutput", "GraphormerPreTrainedModel",
    "MoleculeError", "SkippedItem", "molecule_to_graph", "smiles_to_graph",
]
