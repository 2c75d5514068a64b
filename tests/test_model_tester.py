"""The shared tester mixin, tested on the toy model defined only in tests/toy/."""

import pytest
import torch
from torch import nn
from transformers import PreTrainedModel

from tests.model_tester import ModelTesterMixin, check_save_load, unused_parameter_names
from tests.toy import FAMILY
from tests.toy.configuration_toy import ToyConfig
from tests.toy.modeling_toy import ToyForSequenceClassification, ToyModel


class TestToyModel(ModelTesterMixin):
    family = "toy"

    def get_config(self):
        return ToyConfig(hidden_size=8, num_layers=2, num_labels=3)

    def get_inputs(self, model_class, config, with_labels):
        generator = torch.Generator().manual_seed(1)
        inputs = {"input_ids": torch.randint(0, config.vocab_size, (2, 5), generator=generator)}
        if with_labels and model_class is not ToyModel:
            inputs["labels"] = torch.tensor([0, 2])
        return inputs


def test_save_load_check_catches_unrebuilt_buffer(tmp_path):
    torch.manual_seed(0)
    model = ToyModel(ToyConfig())
    with torch.no_grad():
        model.scale.fill_(0.9)  # state the saved folder cannot carry (non-persistent)
    with pytest.raises(AssertionError):
        check_save_load(model, "AutoModel", {"input_ids": torch.tensor([[1, 2, 3]])}, tmp_path)


def test_save_load_check_catches_extra_keys(tmp_path):
    class Extra(ToyModel):
        def __init__(self, config):
            super().__init__(config)
            self.unused = nn.Linear(2, 2)

    model = Extra(ToyConfig())
    model.save_pretrained(tmp_path / "raw")
    from transformers import AutoModel

    _, info = AutoModel.from_pretrained(tmp_path / "raw", output_loading_info=True)
    assert any("unused" in key for key in info["unexpected_keys"])


def test_unused_parameters_are_reported():
    model = ToyForSequenceClassification(ToyConfig(num_labels=2))
    output = model(input_ids=torch.tensor([[1, 2]]), labels=torch.tensor([1]))
    output.loss.backward()
    model.classifier.bias.grad = None
    assert unused_parameter_names(model, []) == ["classifier.bias"]
    assert unused_parameter_names(model, [r"classifier\.bias"]) == []


def test_family_knows_auto_class_of_each_class():
    assert FAMILY.auto_class_of(ToyModel) == "AutoModel"
    assert FAMILY.auto_class_of(ToyForSequenceClassification) == "AutoModelForSequenceClassification"
    with pytest.raises(KeyError):
        FAMILY.auto_class_of(PreTrainedModel)
