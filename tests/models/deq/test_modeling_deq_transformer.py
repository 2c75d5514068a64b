"""DEQ-Transformer: the shared mixin checks, memory, tying, the registry entry and bad input."""

from __future__ import annotations

import warnings

import pytest
import torch

from tests.model_tester import ModelTesterMixin
from zoo.models.deq import DeqConvergenceWarning, DeqTransformerConfig, DeqTransformerForCausalLM
from zoo.registry import build_config, model_info


def tiny_config(**overrides) -> DeqTransformerConfig:
    values = dict(vocab_size=30, d_model=8, n_head=2, d_head=4, d_inner=16, d_embed=8, div_val=2, cutoffs=[10, 20],
                  tie_projs=[False, True, True], dropout=0.0, tgt_len=5, mem_len=4, n_layer=2, eval_n_layer=3,
                  f_solver="broyden", f_max_iter=6, b_max_iter=6, f_tol=1e-4, b_tol=1e-4)
    values.update(overrides)
    return DeqTransformerConfig(**values)


class TestDeqTransformer(ModelTesterMixin):
    family = "deq_transformer"

    def get_config(self):
        return tiny_config()

    def get_inputs(self, model_class, config, with_labels):
        generator = torch.Generator().manual_seed(3)
        ids = torch.randint(0, config.vocab_size, (2, 6), generator=generator)
        inputs = {"input_ids": ids[:, :-1]}
        if with_labels and model_class is DeqTransformerForCausalLM:
            inputs["labels"] = ids[:, 1:]
        return inputs


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DeqTransformerForCausalLM(tiny_config()).eval()


def test_tying_follows_the_original(model):
    emb, crit = model.transformer.word_emb, model.crit
    assert all(crit.out_layers[i].weight is emb.emb_layers[i].weight for i in range(3))
    assert crit.out_projs[0].weight is not emb.emb_projs[0].weight  # tie_projs[0] is False
    assert all(crit.out_projs[i].weight is emb.emb_projs[i].weight for i in (1, 2))


def test_log_probs_are_normalised_and_memory_has_mem_len(model):
    ids = torch.randint(0, 30, (2, 5))
    with torch.no_grad():
        out = model(input_ids=ids)
        torch.testing.assert_close(out.logits.exp().sum(-1), torch.ones(2, 5))
        assert out.mems[0].shape == (2, 4, 8) and out.mems[1].shape == (2, 4, 24)
        nxt = model(input_ids=ids, mems=out.mems)
        _, _, context = model.transformer.equilibrium_function(ids, out.mems)
    # memory = the last mem_len positions of (old memory, this segment): here this segment's positions 1..4
    torch.testing.assert_close(nxt.mems[1], context["u1s"][:, :, 1:].transpose(1, 2))
    torch.testing.assert_close(nxt.mems[0], nxt.last_hidden_state[:, 1:])


def test_memory_changes_the_prediction(model):
    ids = torch.randint(0, 30, (2, 5))
    with torch.no_grad():
        first = model(input_ids=ids)
        without = model(input_ids=ids)
        with_mem = model(input_ids=ids, mems=first.mems)
    assert not torch.allclose(without.logits, with_mem.logits)


def test_pre_lnorm_variant_trains():
    torch.manual_seed(0)
    lm = DeqTransformerForCausalLM(tiny_config(pre_lnorm=True, backward="phantom", phantom_steps=2)).train()
    ids = torch.randint(0, 30, (2, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeqConvergenceWarning)
        out = lm(input_ids=ids[:, :-1], labels=ids[:, 1:])
    out.loss.backward()
    assert torch.isfinite(out.loss) and lm.transformer.func.pos_ff.ff1_net.weight_v.grad is not None


def test_ignored_labels(model):
    ids = torch.randint(0, 30, (2, 6))
    labels = ids[:, 1:].clone()
    labels[0, :2] = -100
    with torch.no_grad():
        out = model(input_ids=ids[:, :-1], labels=labels)
    assert torch.all(out.nll[0, :2] == 0)
    assert float(out.loss) == pytest.approx(float(out.nll.sum() / 8))


def test_registry_entry():
    entry = model_info("deq_transformer_wt103")
    with torch.device("meta"):
        full = DeqTransformerForCausalLM(build_config("deq_transformer_wt103"))
    count = sum(p.numel() for p in full.parameters())
    assert abs(count - entry.params) <= 0.02 * entry.params
    small = DeqTransformerForCausalLM(build_config("deq_transformer_wt103", **entry.test_config)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeqConvergenceWarning)
        out = small(input_ids=torch.randint(0, 60, (1, 6)))
    assert out.logits.shape == (1, 6, 60)


def test_bad_token_ids(model):
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 30\)"):
        model(input_ids=torch.tensor([[1, 2, 30]]))
    with pytest.raises(ValueError, match="integer \\(batch, length\\)"):
        model(input_ids=torch.zeros(2, 3))


def test_bad_labels(model):
    with pytest.raises(ValueError, match="labels must have the shape of input_ids"):
        model(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2]]))


def test_bad_mems(model):
    with pytest.raises(ValueError, match="mems must be"):
        model(input_ids=torch.tensor([[1, 2, 3]]), mems=(torch.zeros(1, 4, 7), torch.zeros(1, 4, 24)))


def test_bad_config():
    with pytest.raises(ValueError, match="n_head \\* d_head"):
        tiny_config(d_head=3)
    with pytest.raises(ValueError, match="tie_projs needs one entry per softmax cluster"):
        tiny_config(tie_projs=[False])


def test_non_finite_mems_are_refused_naming_the_samples(model):
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    mems = model(input_ids=ids).mems
    states = mems[0].clone()
    states[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"mems: the states hold NaN or infinite values for sample\(s\) \[1\]"):
        model(input_ids=ids, mems=(states, mems[1]))
    injections = mems[1].clone()
    injections[0, -1, 3] = float("inf")
    with pytest.raises(ValueError, match=r"mems: the injections hold NaN or infinite values for sample\(s\) \[0\]"):
        model(input_ids=ids, mems=(mems[0], injections))
    model(input_ids=ids, mems=mems)  # the untouched memory still works


@pytest.mark.parametrize("unrolled", [None, 2])
def test_non_finite_weights_give_a_named_error_not_nan_output(unrolled):
    torch.manual_seed(0)
    broken = DeqTransformerForCausalLM(tiny_config()).eval()
    with torch.no_grad():
        broken.transformer.inject_conv.weight[0, 0, 0] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeqConvergenceWarning)
        with pytest.raises(ValueError, match=r"input_ids: the equilibrium solve produced NaN or infinite states for "
                                             r"sample\(s\) \[0, 1\]; non-finite weights: inject_conv.weight"):
            broken(input_ids=torch.tensor([[1, 2, 3], [4, 5, 6]]), unrolled_steps=unrolled)
