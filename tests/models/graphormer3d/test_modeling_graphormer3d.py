"""Shared mixin checks plus closed-form and symmetry properties of Graphormer-3D."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import zoo  # noqa: F401
from tests.model_tester import ModelTesterMixin
from zoo.models.graphormer3d import (
    Graphormer3DConfig,
    Graphormer3DFeaturizer,
    Graphormer3DForIS2RE,
    Graphormer3DModel,
    example_system,
)
from zoo.models.graphormer3d.modeling_graphormer3d import Graphormer3DPairKernel


def tiny_config(**overrides) -> Graphormer3DConfig:
    values = dict(
        num_layers=2,
        num_blocks=2,
        hidden_size=16,
        intermediate_size=24,
        num_attention_heads=4,
        num_kernels=8,
        attention_dropout=0.0,
        energy_dropout=0.0,
        node_attention_dropout=0.0,
    )
    values.update(overrides)
    return Graphormer3DConfig(**values)


def two_systems() -> list[dict]:
    second = example_system()
    second.update(
        name="Pd_CO",
        atomic_numbers=[46, 46, 46, 6, 8],
        tags=[0, 1, 1, 2, 2],
        positions=[[0.0, 0.0, 4.0], [1.0, 0.6, 6.2], [3.0, 1.7, 6.2], [2.9, 1.7, 8.1], [3.0, 1.8, 9.3]],
        cell=[[4.0, 0.0, 0.0], [2.0, 3.464, 0.0], [0.0, 0.0, 18.0]],
    )
    return [example_system(), second]


def with_targets(systems: list[dict]) -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    out = []
    for index, system in enumerate(systems):
        shift = 0.1 * torch.randn(len(system["tags"]), 3, generator=generator)
        out.append(
            {
                **system,
                "relaxed_positions": (torch.tensor(system["positions"]) + shift).tolist(),
                "relaxed_energy": -1.0 + 0.5 * index,
            }
        )
    return out


class TestGraphormer3D(ModelTesterMixin):
    family = "graphormer3d"

    def get_config(self):
        return tiny_config()

    def get_inputs(self, model_class, config, with_labels):
        batch = Graphormer3DFeaturizer()(with_targets(two_systems()))
        keys = ["atom_ids", "tags", "positions", "real_mask"]
        if with_labels and model_class is Graphormer3DForIS2RE:
            keys += ["labels", "delta_pos_labels"]
        return {key: batch[key] for key in keys}


def random_rotation(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(
        torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    )
    return (q * torch.sign(torch.linalg.det(q))).float()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Graphormer3DForIS2RE(tiny_config()).eval()


def molecule_batch():
    system = {
        "atomic_numbers": [6, 8, 1, 1, 7],
        "tags": [1, 2, 2, 0, 1],
        "positions": [[0.0, 0.0, 0.0], [1.2, 0.1, 0.0], [-0.5, 0.9, 0.3], [-0.4, -0.9, 0.2], [0.3, 0.2, 1.4]],
    }
    return Graphormer3DFeaturizer()([system])


def test_energy_invariant_and_displacement_equivariant_under_rotation(model):
    """Energy is E(3)-invariant; the node head is equivariant when its three per-axis projections coincide
    (the original learns them separately, which breaks exact equivariance, so they are tied here)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for proj in (model.node_head.proj_y, model.node_head.proj_z):
            proj.weight.copy_(model.node_head.proj_x.weight)
        for proj in (model.node_head.proj_x, model.node_head.proj_y, model.node_head.proj_z):
            proj.bias.zero_()
    batch = molecule_batch()
    rotation = random_rotation(3)
    rotated = {**batch, "positions": batch["positions"] @ rotation.T + torch.tensor([1.0, -2.0, 0.5])}
    with torch.no_grad():
        out, out_rot = model(**batch), model(**rotated)
    real = batch["atom_ids"].ne(0)
    torch.testing.assert_close(out_rot.energy, out.energy, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        out_rot.node_output[real], out.node_output[real] @ rotation.T, atol=1e-4, rtol=1e-4
    )


def test_energy_invariant_to_atom_order_and_extra_padding(model):
    batch = molecule_batch()
    order = torch.tensor([3, 0, 4, 1, 2, 5, 6, 7])
    permuted = {key: value[:, order] for key, value in batch.items()}
    padded = {key: torch.cat([value, torch.zeros_like(value)], dim=1) for key, value in batch.items()}
    with torch.no_grad():
        out, out_perm, out_pad = model(**batch), model(**permuted), model(**padded)
    torch.testing.assert_close(out_perm.energy, out.energy, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out_perm.node_output[0], out.node_output[0, order], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out_pad.energy, out.energy, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out_pad.node_output[:, :8], out.node_output, atol=1e-5, rtol=1e-4)


def test_energy_counts_only_real_surface_and_adsorbate_atoms(model):
    """Energy = sum over real tag-1/2 atoms of proj(h) * tag factor; images and tag-0 atoms are excluded."""
    batch = Graphormer3DFeaturizer()([example_system()])
    with torch.no_grad():
        out = model(**batch)
        hidden = model.graphormer3d(**batch).last_hidden_state
        per_atom = (model.energy_head.proj(hidden) * model.energy_head.tag_weight(batch["tags"])).squeeze(-1)
    mask = batch["real_mask"] & batch["tags"].gt(0)
    assert (~batch["real_mask"] & batch["atom_ids"].ne(0)).any(), "the example must have periodic images"
    torch.testing.assert_close(out.energy, (per_atom * mask).sum(-1), atol=1e-6, rtol=1e-6)
    assert torch.equal(out.node_target_mask.squeeze(-1), mask)
    torch.testing.assert_close(out.energy_ev, out.energy * model.config.energy_std + model.config.energy_mean)


@pytest.mark.parametrize("kind", ["gaussian", "rbf"])
def test_pair_kernel_closed_form(kind):
    kernel = Graphormer3DPairKernel(tiny_config(pair_kernel=kind, num_kernels=3))
    with torch.no_grad():
        kernel.means.copy_(torch.tensor([0.5, 1.5, 3.0]))
        kernel.widths.copy_(torch.tensor([0.7, -1.2, 2.0]))
        kernel.pair_scale.weight.fill_(1.0)
        kernel.pair_shift.weight.zero_()
        kernel.pair_scale.weight[2 * 64 + 5] = 0.8  # pair (id 2, id 5), in that order
        kernel.pair_shift.weight[2 * 64 + 5] = 0.25
    atom_ids = torch.tensor([[2, 5]])
    distance = torch.tensor([[[0.0, 1.3], [1.3, 0.0]]])
    features = kernel(distance, atom_ids)
    x = 0.8 * 1.3 + 0.25
    for k, (mean, width) in enumerate([(0.5, 0.7), (1.5, -1.2), (3.0, 2.0)]):
        if kind == "rbf":
            expected = math.exp(-abs(width) * (x - mean) ** 2)
        else:
            std = abs(width) + 1e-5
            expected = math.exp(-0.5 * ((x - mean) / std) ** 2) / (math.sqrt(2 * 3.14159) * std)
        assert features[0, 0, 1, k].item() == pytest.approx(expected, rel=1e-5)
    # the reverse pair (5, 2) has its own (default) affine map: x = distance
    reverse = math.exp(-abs(0.7) * (1.3 - 0.5) ** 2) if kind == "rbf" else None
    if reverse is not None:
        assert features[0, 1, 0, 0].item() == pytest.approx(reverse, rel=1e-5)


def test_loss_matches_original_criterion(model):
    batch = Graphormer3DFeaturizer()(with_targets(two_systems()))
    with torch.no_grad():
        out = model(**batch)
    config = model.config
    energy_target = (batch["labels"] - config.energy_mean) / config.energy_std
    energy_loss = (out.energy - energy_target).abs()
    mask = out.node_target_mask.float()
    target = (batch["delta_pos_labels"] - torch.tensor(config.delta_pos_mean)) / torch.tensor(
        config.delta_pos_std
    )
    node = (out.node_output * mask - target * mask).abs().mean(-1).sum(-1) / mask.sum((1, 2))
    expected = (energy_loss + config.node_loss_weight * node).mean()
    torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=1e-5)


def test_energy_only_labels_give_energy_loss(model):
    batch = Graphormer3DFeaturizer()(with_targets(two_systems()))
    with torch.no_grad():
        out = model(**{k: v for k, v in batch.items() if k != "delta_pos_labels"})
    target = (batch["labels"] - model.config.energy_mean) / model.config.energy_std
    torch.testing.assert_close(out.loss, (out.energy - target).abs().mean())


def test_base_model_hidden_states_count():
    config = tiny_config(num_layers=3, num_blocks=2)
    base = Graphormer3DModel(config).eval()
    with torch.no_grad():
        out = base(**molecule_batch(), output_hidden_states=True)
    assert len(out.hidden_states) == 1 + 3 * 2
    assert len(base.layers) == 3


def test_config_rejects_unknown_kernel_and_bad_heads():
    with pytest.raises(ValueError, match="pair_kernel"):
        Graphormer3DConfig(pair_kernel="bessel")
    with pytest.raises(ValueError, match="divisible"):
        Graphormer3DConfig(hidden_size=30, num_attention_heads=4)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param(
            lambda b: b.update(positions=b["positions"][:, :4]), "positions must be", id="positions-shape"
        ),
        pytest.param(lambda b: b.update(tags=b["tags"][:, :4]), "differ in shape", id="tags-shape"),
        pytest.param(lambda b: b["positions"].__setitem__((0, 1, 2), float("nan")), "NaN", id="nan-position"),
        pytest.param(
            lambda b: b["atom_ids"].__setitem__((0, 0), 64), "atom_ids must lie", id="atom-id-range"
        ),
        pytest.param(lambda b: b["tags"].__setitem__((0, 0), 3), "tags must lie", id="tag-range"),
        pytest.param(lambda b: b["atom_ids"].zero_(), "at least one atom", id="empty-system"),
    ],
)
def test_model_rejects_bad_tensors(model, edit, message):
    batch = molecule_batch()
    edit(batch)
    with pytest.raises(ValueError, match=message):
        model(**batch)


def test_node_loss_weight_decays_linearly_over_training(tmp_path):
    from transformers import Trainer, TrainingArguments

    from zoo.models.graphormer3d import Graphormer3DNodeLossDecay

    torch.manual_seed(0)
    model = Graphormer3DForIS2RE(tiny_config(node_loss_weight=15.0, min_node_loss_weight=1.0))
    seen = []

    class Record(Graphormer3DNodeLossDecay):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            super().on_step_begin(args, state, control, model=model, **kwargs)
            seen.append(model.node_loss_weight)

    batch = Graphormer3DFeaturizer()(with_targets(two_systems()))
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=4,
        per_device_train_batch_size=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        learning_rate=1e-3,
    )
    Trainer(
        model=model,
        args=args,
        train_dataset=[batch] * 4,
        data_collator=lambda items: items[0],
        callbacks=[Record()],
    ).train()
    assert seen == pytest.approx([15.0, 11.5, 8.0, 4.5])
    assert model.config.node_loss_weight == 15.0
