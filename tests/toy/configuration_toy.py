from transformers import PretrainedConfig


class ToyConfig(PretrainedConfig):
    model_type = "zoo_toy"

    def __init__(self, vocab_size=32, hidden_size=8, num_layers=2, scale=0.5, **kwargs):
        kwargs.setdefault("auto_map", {
            "AutoConfig": "configuration_toy.ToyConfig",
            "AutoModel": "modeling_toy.ToyModel",
            "AutoModelForSequenceClassification": "modeling_toy.ToyForSequenceClassification",
        })
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.scale = scale
