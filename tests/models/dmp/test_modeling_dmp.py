"""Shared mixin checks for every DMP class, plus DMP-specific behaviour and bad-input errors."""

from __future__ import annotations

import pytest
import torch

from tests.model_tester import ModelTesterMixin
from zoo.catalog.dmp import dummy_inputs
from zoo.models.dmp import (
    DmpConfig,
    DmpForPreTraining,
    DmpForSequenceClassification,
    DmpModel,
    consistency_loss,
)

TINY = dict(
    vocab_size=40, mask_token_id=39, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=32, max_position_embeddings=20, gnn_num_layers=3, gnn_hidden_size=12,
    projection_ratio=2.0, num_labels=3,
)


def tiny_config(**overrides) -> DmpConfig:
    return DmpConfig(**{**TINY, **overrides})


def batch_for(model_class, config, with_labels):
    inputs = dummy_inputs(config, model_class)
    if with_labels and model_class is DmpForPreTraining:
        inputs["mlm_labels"] = torch.full_like(inputs["input_ids"], -100)
        inputs["mlm_labels"][:, -3:] = inputs["input_ids"][:, -3:]
        inputs["atom_labels"] = torch.full((inputs["atom_features"].shape[0],), -100)
        inputs["atom_labels"][::2] = inputs["atom_features"][::2, 0]
    elif with_labels and model_class is DmpForSequenceClassification:
        inputs["labels"] = torch.tensor([0, 2])
    return inputs


class TestDmpModel(ModelTesterMixin):
    family = "dmp"

    def get_config(self):
        return tiny_config()

    def get_inputs(self, model_class, config, with_labels):
        return batch_for(model_class, config, with_labels)


# -- behaviour ----------------------------------------------------------------------------------------------------


def test_left_padding_does_not_change_a_molecule():
    """Positions ignore left padding: a molecule alone and padded inside a batch gives the same vector."""
    config = tiny_config()
    torch.manual_seed(0)
    model = DmpModel(config).eval()
    inputs = dummy_inputs(config, DmpModel)
    alone = inputs["input_ids"][:1, 2:]
    with torch.no_grad():
        batched = model(input_ids=inputs["input_ids"]).sequence_embedding[0]
        single = model(input_ids=alone).sequence_embedding[0]
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_sdpa_matches_eager():
    config = tiny_config()
    torch.manual_seed(0)
    eager = DmpModel(tiny_config()).eval()
    eager.config._attn_implementation = "eager"
    sdpa = DmpModel(config).eval()
    sdpa.load_state_dict(eager.state_dict())
    sdpa.config._attn_implementation = "sdpa"
    inputs = dummy_inputs(config, DmpModel)
    with torch.no_grad():
        a, b = eager(**inputs).last_hidden_state, sdpa(**inputs).last_hidden_state
    real = inputs["input_ids"] != config.pad_token_id
    torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=1e-5)


def test_consistency_loss_closed_form():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    # cos rows: (1, 1/sqrt2); both directions identical here
    expected = -2 * (1 + 2**-0.5)
    assert consistency_loss(a, b, b, a).item() == pytest.approx(expected)
    anchor = a.clone().requires_grad_()
    target = b.clone().requires_grad_()
    consistency_loss(anchor, target, anchor, target).backward()
    assert anchor.grad is not None and target.grad is None, "targets are under stop-gradient"


def test_zero_coefficient_switches_a_branch_off():
    config = tiny_config(coeff_gnn=0.0)
    model = DmpForSequenceClassification(config).train()
    inputs = batch_for(DmpForSequenceClassification, config, with_labels=True)
    out = model(**inputs)
    out.loss.backward()
    assert out.gnn_logits is None and out.graph_embedding is None
    assert all(p.grad is None for p in model.dmp.gnn.parameters())
    gnn_only = DmpForSequenceClassification(tiny_config(coeff_transformer=0.0)).eval()
    no_ids = {k: v for k, v in inputs.items() if k != "input_ids"}
    assert gnn_only(**no_ids).transformer_logits is None


def test_gradient_multiplier_scales_encoder_gradients_only():
    inputs = batch_for(DmpForSequenceClassification, tiny_config(), with_labels=True)
    grads = {}
    for scale in (1.0, 0.1):
        torch.manual_seed(0)
        model = DmpForSequenceClassification(tiny_config(gradient_multiplier=scale)).eval()
        model(**inputs).loss.backward()
        grads[scale] = (model.dmp.embed_tokens.weight.grad.clone(), model.classifier.out_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0.1][0], grads[1.0][0] * 0.1)
    torch.testing.assert_close(grads[0.1][1], grads[1.0][1])


def test_problem_types():
    inputs = dummy_inputs(tiny_config(), DmpForSequenceClassification)
    regression = DmpForSequenceClassification(tiny_config(num_labels=1)).eval()
    out = regression(**inputs, labels=torch.tensor([0.5, -1.0]))
    assert out.loss.item() == pytest.approx(((out.logits.view(-1) - torch.tensor([0.5, -1.0])) ** 2).mean().item())
    multi = DmpForSequenceClassification(tiny_config(num_labels=3)).eval()
    labels = torch.tensor([[1.0, 0.0, float("nan")], [0.0, 1.0, 1.0]])
    out = multi(**inputs, labels=labels)
    present = ~labels.isnan()
    reference = torch.nn.functional.binary_cross_entropy_with_logits(out.logits[present], labels[present])
    assert out.loss.item() == pytest.approx(reference.item(), rel=1e-6)


def test_dropnet_drops_one_branch_in_training():
    model = DmpForSequenceClassification(tiny_config(use_dropnet=0.3)).train()
    seen = set()
    torch.manual_seed(0)
    for _ in range(40):
        seen.add(model._branch_weights())
    assert seen == {(1.0, 1.0), (1.0, 0.0), (0.0, 1.0)}
    assert model.eval()._branch_weights() == (1.0, 1.0)


# -- bad input ----------------------------------------------------------------------------------------------------


def test_batch_of_one_in_training_mode_is_a_clear_error():
    config = tiny_config()
    model = DmpForPreTraining(config).train()
    inputs = dummy_inputs(config, DmpForPreTraining)
    single = {
        "input_ids": inputs["input_ids"][1:], "atom_features": inputs["atom_features"][3:],
        "edge_index": inputs["edge_index"][:, 4:] - 3, "bond_features": inputs["bond_features"][4:],
        "atom_batch": inputs["atom_batch"][3:] - 1,
    }
    with pytest.raises(ValueError, match="BatchNorm, which needs at least 2 rows in training mode"):
        model(**single)
    model.eval()(**single)  # running statistics: fine in eval mode


def test_right_padding_is_rejected():
    config = tiny_config()
    ids = torch.tensor([[5, 6, 2, 1]])
    with pytest.raises(ValueError, match="LEFT-padded"):
        DmpModel(config)(input_ids=ids)


def test_too_long_and_inconsistent_inputs_are_rejected():
    config = tiny_config()
    model = DmpForSequenceClassification(config).eval()
    inputs = dummy_inputs(config, DmpForSequenceClassification)
    with pytest.raises(ValueError, match="positions for at most 18 tokens"):
        model.dmp(input_ids=torch.full((1, 19), 5))
    with pytest.raises(ValueError, match="but bond_features has"):
        model(**{**inputs, "bond_features": inputs["bond_features"][:-1]})
    with pytest.raises(ValueError, match="2 sequences but 3 graphs"):
        model(**{**inputs, "atom_batch": torch.tensor([0, 0, 1, 1, 2, 2, 2])})
    with pytest.raises(ValueError, match="coeff_gnn > 0 needs"):
        model(input_ids=inputs["input_ids"])


def test_invalid_config():
    with pytest.raises(ValueError, match="at least one > 0"):
        DmpConfig(coeff_transformer=0.0, coeff_gnn=0.0)
    with pytest.raises(ValueError, match="not a multiple"):
        DmpConfig(hidden_size=30, num_attention_heads=4)


def test_pretraining_with_the_masking_collator_and_trainer(tmp_path):
    from transformers import Trainer, TrainingArguments

    from zoo.models.dmp import DmpDataCollator, DmpFeaturizer, DmpTokenizer

    smiles = ["CCO", "c1ccccc1O", "CC(=O)Oc1ccccc1C(=O)O", "N#Cc1ccc2[nH]ccc2c1", "CC(=O)[O-].[Na+]", "OCC(O)CO"]
    features = DmpFeaturizer().encode_molecules(smiles, DmpTokenizer())
    model = DmpForPreTraining(tiny_config(vocab_size=2353, mask_token_id=2352, max_position_embeddings=514))
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=3, learning_rate=1e-3, report_to=[],
        save_strategy="no", use_cpu=True, disable_tqdm=True, remove_unused_columns=False, logging_steps=1,
    )
    trainer = Trainer(model=model, args=args, train_dataset=features, data_collator=DmpDataCollator(mlm=True, seed=0))
    assert trainer.train().global_step == 2
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert len(losses) == 2 and all(loss == loss for loss in losses)
