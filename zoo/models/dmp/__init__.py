"""DMP (dual-view molecule pre-training): SMILES Transformer + molecular-graph GNN, trained to agree.

    from zoo.models.dmp import DmpDataCollator, DmpFeaturizer, DmpForSequenceClassification, DmpTokenizer
    features = DmpFeaturizer().encode_molecules(["CCO"], DmpTokenizer())
    logits = DmpForSequenceClassification.from_pretrained("path/to/dmp")(**DmpDataCollator()(features)).logits
"""

from .configuration_dmp import DmpConfig
from .featurization_dmp import DmpDataCollator, DmpFeaturizer, EncodedMolecules, mask_atoms, mask_tokens
from .modeling_dmp import (
    DmpForPreTraining,
    DmpForPreTrainingOutput,
    DmpForSequenceClassification,
    DmpModel,
    DmpModelOutput,
    DmpPreTrainedModel,
    DmpSequenceClassifierOutput,
    consistency_loss,
)
from .processing_dmp import DmpProcessor
from .tokenization_dmp import DmpTokenizer, canonicalize_smiles, split_smiles

__all__ = [
    "DmpConfig", "DmpDataCollator", "DmpFeaturizer", "DmpForPreTraining", "DmpForPreTrainingOutput",
    "DmpForSequenceClassification", "DmpModel", "DmpModelOutput", "DmpPreTrainedModel", "DmpProcessor",
    "DmpSequenceClassifierOutput", "DmpTokenizer", "EncodedMolecules", "canonicalize_smiles", "consistency_loss",
    "mask_atoms", "mask_tokens", "split_smiles",
]
