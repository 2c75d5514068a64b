"""Graphormer-3D (OC20 IS2RE): config, model with energy and delta-position heads, 3D featurizer."""

from .configuration_graphormer3d import Graphormer3DConfig
from .modeling_graphormer3d import (
    Graphormer3DForIS2RE,
    Graphormer3DIS2REOutput,
    Graphormer3DModel,
    Graphormer3DModelOutput,
    Graphormer3DNodeLossDecay,
    Graphormer3DPreTrainedModel,
)
from .processing_graphormer3d import Graphormer3DFeaturizer, Graphormer3DInputError, example_system

__all__ = [
    "Graphormer3DConfig",
    "Graphormer3DFeaturizer",
    "Graphormer3DForIS2RE",
    "Graphormer3DInputError",
    "Graphormer3DIS2REOutput",
    "Graphormer3DModel",
    "Graphormer3DModelOutput",
    "Graphormer3DNodeLossDecay",
    "Graphormer3DPreTrainedModel",
    "example_system",
]
