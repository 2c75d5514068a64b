"""A two-layer, one-head model defined only in tests, to test the shared tester mixin and the registry."""

from zoo.auto import register_family
from zoo.registry import ModelEntry, register_model

from .configuration_toy import ToyConfig
from .modeling_toy import ToyForSequenceClassification, ToyModel


def toy_dummy_inputs(config, model_class):
    import torch

    generator = torch.Generator().manual_seed(0)
    inputs = {"input_ids": torch.randint(0, config.vocab_size, (2, 5), generator=generator)}
    return inputs


FAMILY = register_family(
    "toy", ToyConfig, ToyModel, {"AutoModelForSequenceClassification": ToyForSequenceClassification},
    dummy_inputs=toy_dummy_inputs,
)
register_model(ModelEntry(
    name="toy_tiny", family="toy", task="sequence-classification", architecture="ToyForSequenceClassification",
    config={"hidden_size": 8, "num_layers": 2}, params=None,
))
register_model(ModelEntry(
    name="toy_wide", family="toy", task="feature-extraction", architecture="ToyModel",
    config={"hidden_size": 32, "num_layers": 2}, params=32 * 32 + 2 * (32 * 32 + 32),
))

from . import recipe  # noqa: E402,F401  (registers the toy fine-tuning recipe)
