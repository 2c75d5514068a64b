"""PriorGrad vocoder: configuration, noise predictor, vocoder with prior and sampling, audio front end."""

from .configuration_priorgrad import FAST_SCHEDULES, RELEASED_NOISE_SCHEDULE, PriorGradConfig
from .feature_extraction_priorgrad import PriorGradFeatureExtractor, load_energy_stats
from .modeling_priorgrad import (
    PriorGradGenerateOutput,
    PriorGradModel,
    PriorGradModelOutput,
    PriorGradPreTrainedModel,
    PriorGradVocoder,
    PriorGradVocoderOutput,
    continuous_step_index,
    inference_schedule,
    prior_std_from_log_mel,
    step_embedding_table,
)

__all__ = [
    "FAST_SCHEDULES", "RELEASED_NOISE_SCHEDULE", "PriorGradConfig", "PriorGradFeatureExtractor",
    "PriorGradGenerateOutput", "PriorGradModel", "PriorGradModelOutput", "PriorGradPreTrainedModel",
    "PriorGradVocoder", "PriorGradVocoderOutput", "continuous_step_index", "inference_schedule",
    "load_energy_stats", "prior_std_from_log_mel", "step_embedding_table",
]
