"""DEQ family: the equilibrium core, MDEQ image classification and the DEQ-Transformer language model."""

from .configuration_deq_transformer import DeqTransformerConfig
from .configuration_mdeq import MdeqConfig
from .equilibrium_deq import (
    SOLVERS,
    EquilibriumResult,
    SolverSettings,
    SolverStats,
    anderson,
    broyden,
    fixed_point_iteration,
    hutchinson_jacobian_loss,
    phantom_gradient,
    solve_equilibrium,
)
from .image_processing_mdeq import MdeqImageProcessor
from .modeling_deq_transformer import (
    DeqTransformerForCausalLM,
    DeqTransformerLMOutput,
    DeqTransformerModel,
    DeqTransformerModelOutput,
    DeqTransformerPreTrainedModel,
)
from .modeling_mdeq import (
    DeqConvergenceWarning,
    MdeqForImageClassification,
    MdeqImageClassifierOutput,
    MdeqModel,
    MdeqModelOutput,
    MdeqPreTrainedModel,
)
from .tokenization_deq_transformer import DeqTransformerTokenizer, build_vocabulary

__all__ = [
    "DeqTransformerConfig", "DeqTransformerForCausalLM", "DeqTransformerLMOutput", "DeqTransformerModel",
    "DeqTransformerModelOutput", "DeqTransformerPreTrainedModel", "DeqTransformerTokenizer", "build_vocabulary",
    "SOLVERS", "DeqConvergenceWarning", "EquilibriumResult", "MdeqConfig", "MdeqForImageClassification",
    "MdeqImageClassifierOutput", "MdeqImageProcessor", "MdeqModel", "MdeqModelOutput", "MdeqPreTrainedModel", "SolverSettings",
    "SolverStats", "anderson", "broyden", "fixed_point_iteration", "hutchinson_jacobian_loss", "phantom_gradient",
    "solve_equilibrium",
]
