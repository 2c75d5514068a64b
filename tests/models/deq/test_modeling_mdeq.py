"""MDEQ: the shared mixin checks, the registry entries, and bad input."""

from __future__ import annotations

import warnings

import pytest
import torch

import zoo
from tests.model_tester import ModelTesterMixin
from zoo.models.deq import DeqConvergenceWarning, MdeqConfig, MdeqForImageClassification, MdeqModel
from zoo.registry import build_config, model_info


def tiny_config(**overrides) -> MdeqConfig:
    values = dict(num_channels=[4, 8], head_channels=[2, 4], final_chansize=8, expansion_factor=2, num_groups=2,
                  image_size=[8, 8], num_labels=3, f_max_iter=4, b_max_iter=4, f_tol=1e-4, b_tol=1e-4)
    values.update(overrides)
    return MdeqConfig(**values)


class TestMdeq(ModelTesterMixin):
    family = "mdeq"

    def get_config(self):
        return tiny_config()

    def get_inputs(self, model_class, config, with_labels):
        generator = torch.Generator().manual_seed(1)
        inputs = {"pixel_values": torch.randn(2, 3, 8, 8, generator=generator)}
        if with_labels and model_class is MdeqForImageClassification:
            inputs["labels"] = torch.tensor([0, 2])
        return inputs


@pytest.mark.parametrize("backward", ["phantom", "unrolled"])
def test_other_backward_modes_train(backward):
    torch.manual_seed(0)
    model = MdeqForImageClassification(tiny_config(backward=backward, phantom_steps=2, phantom_tau=0.6)).train()
    out = model(pixel_values=torch.randn(2, 3, 8, 8), labels=torch.tensor([0, 1]))
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_jacobian_regulariser_enters_the_loss():
    torch.manual_seed(0)
    model = MdeqForImageClassification(tiny_config(jac_loss_weight=2.0, jac_loss_freq=1.0)).train()
    images, labels = torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
    out = model(pixel_values=images, labels=labels)
    assert out.jac_loss is not None and float(out.jac_loss) > 0
    ce = torch.nn.functional.cross_entropy(out.logits, labels)
    assert float(out.loss) == pytest.approx(float(ce + 2.0 * out.jac_loss), rel=1e-6)
    model.config.jac_incremental = 1  # +0.1 per training step
    assert model.mdeq.jacobian_weight() == pytest.approx(2.0 + 0.1 * model.mdeq._train_forward_count)


def test_variational_dropout_mask_is_fixed_within_a_solve():
    torch.manual_seed(0)
    model = MdeqModel(tiny_config(dropout=0.5)).train()
    f, z0, _ = model.equilibrium_function(torch.randn(2, 3, 8, 8))
    assert torch.equal(f(z0), f(z0))  # the same mask in every evaluation of f
    assert model.fullstage.branches[0].blocks[0].mask is not None
    model.eval()
    model.equilibrium_function(torch.randn(2, 3, 8, 8))
    assert model.fullstage.branches[0].blocks[0].mask is None


@pytest.mark.parametrize("name", zoo.list_models("mdeq*"))
def test_registry_entries(name):
    entry = model_info(name)
    with torch.device("meta"):
        full = MdeqForImageClassification(build_config(name))
    count = sum(p.numel() for p in full.parameters())
    assert abs(count - entry.params) <= 0.02 * entry.params, (count, entry.params)
    small = MdeqForImageClassification(build_config(name, **entry.test_config)).eval()
    h, w = small.config.image_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeqConvergenceWarning)
        out = small(pixel_values=torch.randn(1, 3, h, w))
    assert out.logits.shape == (1, small.config.num_labels)


# -- bad input -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MdeqForImageClassification(tiny_config()).eval()


def test_wrong_channels(model):
    with pytest.raises(ValueError, match="1 channels but this MDEQ expects 3"):
        model(pixel_values=torch.randn(2, 1, 8, 8))


def test_wrong_image_size(model):
    with pytest.raises(ValueError, match="7x8 is not divisible by 2"):
        model(pixel_values=torch.randn(2, 3, 7, 8))


def test_wrong_rank(model):
    with pytest.raises(ValueError, match=r"\(batch, channels, height, width\)"):
        model(pixel_values=torch.randn(3, 8, 8))


def test_nan_input(model):
    images = torch.randn(2, 3, 8, 8)
    images[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        model(pixel_values=images)


def test_bad_labels(model):
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        model(pixel_values=torch.randn(2, 3, 8, 8), labels=torch.tensor([0, 7]))


def test_non_converging_solve_is_reported_with_a_warning(model):
    model.config.f_max_iter, model.config.f_tol = 2, 1e-14
    try:
        with pytest.warns(DeqConvergenceWarning, match="did NOT converge to rel tolerance 1e-14"):
            out = model(pixel_values=torch.randn(2, 3, 8, 8))
    finally:
        model.config.f_max_iter, model.config.f_tol = 4, 1e-4
    assert not bool(out.converged.any())
    assert out.rel_residual.shape == (2,) and torch.isfinite(out.rel_residual).all()
    assert torch.isfinite(out.logits).all()


def test_unknown_solver_and_backward(model):
    model.config.f_solver = "newton"
    try:
        with pytest.raises(ValueError, match="unknown solver 'newton'"):
            model(pixel_values=torch.randn(2, 3, 8, 8))
    finally:
        model.config.f_solver = "broyden"
    with pytest.raises(ValueError, match="num_blocks has 1 entries but num_channels has 2"):
        MdeqConfig(num_channels=[4, 8], num_blocks=[1])
