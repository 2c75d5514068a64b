import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput

from .configuration_toy import ToyConfig


class ToyPreTrainedModel(PreTrainedModel):
    config_class = ToyConfig
    base_model_prefix = "toy"

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            init.normal_(module.weight, std=0.2)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        if isinstance(module, ToyModel):
            init.constant_(module.scale, self.config.scale)


class ToyModel(ToyPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(nn.Linear(config.hidden_size, config.hidden_size) for _ in range(config.num_layers))
        # non-persistent: rebuilt in _init_weights, as every such buffer must be under meta-device loading
        self.register_buffer("scale", torch.full((), config.scale), persistent=False)
        self.post_init()

    def forward(self, input_ids, **kwargs):
        hidden = self.embed(input_ids)
        for layer in self.layers:
            hidden = torch.tanh(layer(hidden)) * self.scale + hidden
        return BaseModelOutput(last_hidden_state=hidden)


class ToyForSequenceClassification(ToyPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.toy = ToyModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids, labels=None, **kwargs):
        hidden = self.toy(input_ids).last_hidden_state
        logits = self.classifier(hidden.mean(dim=1))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)
