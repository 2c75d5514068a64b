"""DMP: registers the family with the Auto classes and lists its variants.

No DMP weights were ever published (see the open requests on microsoft/DVMP), so every variant has
`original=None`; the configurations are the paper's (arch `dmp`, README pre-training flags), checked
against the state-dict shapes of the original classes (tests/fixtures/dmp/released_config_shapes).
"""

from __future__ import annotations

import torch
from transformers import PretrainedConfig, PreTrainedModel

from zoo.auto import register_family
from zoo.models.dmp import (
    DmpConfig,
    DmpForPreTraining,
    DmpForSequenceClassification,
    DmpModel,
    DmpProcessor,
    DmpTokenizer,
)
from zoo.registry import ModelEntry, register_model

PAPER = "Dual-view Molecular Pre-training (Zhu, Xia, Qin, Zhou, Li, Liu; KDD 2023)"
PAPER_URL = "https://arxiv.org/abs/2106.10234"
# parameter groups counted with the original classes at the default size (released_config_shapes/shapes.json)
_ORIGINAL_GROUPS = {
    "encoder0.sentence_encoder": 87_257_857, "encoder0.lm_head": 594_481, "encoder1.gcns": 7_156_224,
    "encoder1.norms": 18_444, "encoder1.atom_encoder": 66_816, "encoder1.atom_head": 149_497,
    "classification_heads": 1_182_722, "projection_heads": 9_469_442, "prediction_heads": 9_469_442,
}
_ENCODERS = ("encoder0.sentence_encoder", "encoder1.gcns", "encoder1.norms", "encoder1.atom_encoder")
_PRETRAINING = ("encoder0.lm_head", "encoder1.atom_head", "projection_heads", "prediction_heads")
_SMALL = {
    "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 512,
    "gnn_num_layers": 4, "gnn_hidden_size": 128, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
}
_TINY = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
    "gnn_num_layers": 3, "gnn_hidden_size": 24,
}


def dummy_inputs(config: PretrainedConfig, model_class: type[PreTrainedModel]) -> dict[str, torch.Tensor]:
    """Two left-padded molecules (3 and 4 atoms) with valid feature indices for `config`."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(4, config.vocab_size - 1, (2, 6), generator=generator)
    input_ids[:, -1] = config.eos_token_id
    input_ids[0, :2] = config.pad_token_id
    atoms = torch.stack(
        [torch.randint(0, dim - 2 if i == 0 else dim, (7,), generator=generator)
         for i, dim in enumerate(config.atom_feature_dims)], dim=1,
    )
    chain = [(0, 1), (1, 2), (3, 4), (4, 5), (5, 6)]
    edge_index = torch.tensor([[a for i, j in chain for a in (i, j)], [b for i, j in chain for b in (j, i)]])
    bonds = torch.stack(
        [torch.randint(0, dim, (len(chain),), generator=generator).repeat_interleave(2)
         for dim in config.bond_feature_dims], dim=1,
    )
    inputs = {
        "input_ids": input_ids, "atom_features": atoms, "edge_index": edge_index, "bond_features": bonds,
        "atom_batch": torch.tensor([0, 0, 0, 1, 1, 1, 1]),
    }
    return inputs


register_family(
    "dmp",
    DmpConfig,
    DmpModel,
    {"AutoModelForPreTraining": DmpForPreTraining, "AutoModelForSequenceClassification": DmpForSequenceClassification},
    processors={"AutoTokenizer": DmpTokenizer, "AutoProcessor": DmpProcessor},
    dummy_inputs=dummy_inputs,
)

_COMMON = dict(
    family="dmp", original=None, converter="conversion/convert_dmp.py", card="cards/dmp.md", paper=PAPER,
    paper_url=PAPER_URL, license="mit", test_config=_TINY,
)

register_model(ModelEntry(
    name="dmp_base",
    task="pre-training",
    architecture="DmpForPreTraining",
    description="DMP at paper size (Transformer 12x768 + GNN 12x384) with the consistency, MLM and masked-atom "
    "heads; no published weights: train it or convert your own fairseq-train checkpoint",
    params=sum(_ORIGINAL_GROUPS[g] for g in _ENCODERS + _PRETRAINING),
    **_COMMON,
))
register_model(ModelEntry(
    name="dmp_base_molecule_cls",
    task="graph-classification",
    architecture="DmpForSequenceClassification",
    config={"num_labels": 2},
    description="DMP property head over both branches (the original `molecule_head`, 2 classes), as fine-tuned by "
    "finetune_alltasks.sh; set coeff_transformer / coeff_gnn to 0 for a single branch",
    params=sum(_ORIGINAL_GROUPS[g] for g in _ENCODERS + ("classification_heads",)),
    recipe="dmp_b3db_bbb",
    **_COMMON,
))
register_model(ModelEntry(
    name="dmp_base_regression",
    task="graph-regression",
    architecture="DmpForSequenceClassification",
    config={"num_labels": 1, "problem_type": "regression"},
    description="DMP property regression head over both branches (the original graph_sp --regression-target)",
    params=sum(_ORIGINAL_GROUPS[g] for g in _ENCODERS) + 1_182_722 - 769,
    **_COMMON,
))
register_model(ModelEntry(
    name="dmp_small_molecule_cls",
    task="graph-classification",
    architecture="DmpForSequenceClassification",
    config={**_SMALL, "num_labels": 2},
    description="a CPU-sized DMP (Transformer 4x128, GNN 4x128) for fine-tuning from scratch, e.g. on B3DB; "
    "not a paper configuration",
    recipe="dmp_b3db_bbb",
    **{**_COMMON, "test_config": {}},
))
