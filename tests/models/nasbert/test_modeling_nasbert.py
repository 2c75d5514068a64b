"""NAS-BERT model, heads, supernet and block rules."""

import pytest
import torch

from tests.model_tester import ModelTesterMixin
from zoo.models.nasbert import (
    NasBertConfig,
    NasBertForSequenceClassification,
    NasBertForTokenClassification,
    NasBertModel,
    NasBertSupernet,
    build_op_table,
)

# Tiny ML.NET-style table with widths 16 and 32: 0 id, 1 mha, 2 ffn, 3/4/5 sepconv 3/5/7 at 16; 6..11 at 32.
TINY = dict(vocab_size=40, embedding_size=8, max_position_embeddings=16, num_blocks=4, op_widths=[16, 32],
            attention_head_dim=8, default_hidden_size=32)
TINY_ARCHES = [1, 3, 2, 0, 7, 11, 8, 0]  # widths [16, 16, 32, 32]: embed + hidden transfers, every op kind


def tiny_ids() -> torch.Tensor:
    ids = torch.tensor([[0, 5, 9, 13, 22, 7, 30], [0, 11, 4, 39, 2, 1, 1]])
    return ids


class TestNasBertModel(ModelTesterMixin):
    family = "nasbert"

    def get_config(self):
        return NasBertConfig(arches=TINY_ARCHES, num_labels=3, **TINY)

    def get_inputs(self, model_class, config, with_labels):
        ids = tiny_ids()
        inputs = {"input_ids": ids, "attention_mask": (ids != config.pad_token_id).long()}
        if with_labels and model_class is NasBertForSequenceClassification:
            inputs["labels"] = torch.tensor([0, 2])
        if with_labels and model_class is NasBertForTokenClassification:
            labels = torch.randint(0, config.num_labels, ids.shape, generator=torch.Generator().manual_seed(3))
            inputs["labels"] = labels.masked_fill(ids == config.pad_token_id, -100)
        return inputs


def test_block_widths_and_transfers():
    model = NasBertModel(NasBertConfig(arches=TINY_ARCHES, **TINY))
    assert model.config.block_hidden_sizes == [16, 16, 32, 32]
    assert model.embed_transfer.weight.shape == (16, 8)
    assert isinstance(model.hidden_transfers[0], torch.nn.Identity)
    assert model.hidden_transfers[1].weight.shape == (32, 16)
    assert model(tiny_ids()).last_hidden_state.shape == (2, 7, 32)


def test_all_identity_first_block_takes_default_width():
    config = NasBertConfig(arches=[0, 0, 3, 0, 0, 0, 0, 0], **TINY)
    assert config.block_hidden_sizes == [32, 16, 16, 16]
    config = NasBertConfig(arches=[0] * 24)  # ML.NET: 768 when block 0 is all identity
    assert config.block_hidden_sizes == [768] * 4


@pytest.mark.parametrize("arches, message", [
    ([1, 7, 0, 0, 0, 0, 0, 0], "mixes widths"),
    ([1, 12, 0, 0, 0, 0, 0, 0], "not an op index"),
    ([1, 0, 0, 0, 0, 0, 0], "not a multiple of 4 blocks"),
])
def test_arches_violating_block_rules_are_rejected(arches, message):
    with pytest.raises(ValueError, match=message):
        NasBertConfig(arches=arches, **TINY)


def test_paper_op_table():
    ops = build_op_table("paper")
    assert len(ops) == 26 and ops[0].kind == "identity"
    assert sorted({op.width for op in ops[1:]}) == [128, 192, 256, 384, 512]
    assert [op.name for op in ops[1:6]] == ["mha@128", "ffn@128", "sepconv3@128", "sepconv5@128", "sepconv7@128"]
    config = NasBertConfig(op_table="paper", arches=[1, 3, 0, 0, 0, 0] + [7, 8, 0, 0, 0, 0] + [0] * 12)
    assert config.block_hidden_sizes == [128, 192, 192, 192]
    with pytest.raises(ValueError, match="unknown op_table"):
        build_op_table("other")


def test_padding_does_not_change_real_tokens():
    """Right-padding a sequence leaves its tokens' outputs unchanged (masks, zeroed conv inputs, positions)."""
    torch.manual_seed(0)
    model = NasBertModel(NasBertConfig(arches=TINY_ARCHES, **TINY)).eval()
    short = torch.tensor([[0, 11, 4, 39, 2]])
    padded = torch.tensor([[0, 11, 4, 39, 2, 1, 1, 1]])
    with torch.no_grad():
        a = model(short).last_hidden_state
        b = model(padded).last_hidden_state[:, :5]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_positions_start_at_one_and_padding_position_is_zero():
    model = NasBertModel(NasBertConfig(arches=TINY_ARCHES, **TINY)).eval()
    seen = []
    model.embeddings.embed_positions.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    model(torch.tensor([[0, 5, 6, 1, 1]]))
    assert seen[0].tolist() == [[1, 2, 3, 0, 0]]


def test_over_long_input_is_rejected():
    model = NasBertModel(NasBertConfig(arches=TINY_ARCHES, **TINY))
    with pytest.raises(ValueError, match="longer than max_position_embeddings"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_regression_and_similarity_head():
    torch.manual_seed(0)
    model = NasBertForSequenceClassification(NasBertConfig(arches=TINY_ARCHES, num_labels=1, **TINY))
    out = model(tiny_ids(), labels=torch.tensor([0.5, -1.0]))
    assert out.logits.shape == (2, 1)
    expected = torch.nn.functional.mse_loss(out.logits.squeeze(-1), torch.tensor([0.5, -1.0]))
    torch.testing.assert_close(out.loss, expected)
    assert model.config.problem_type == "regression"


def test_sequence_head_reads_first_token():
    torch.manual_seed(0)
    model = NasBertForSequenceClassification(NasBertConfig(arches=TINY_ARCHES, num_labels=3, **TINY)).eval()
    with torch.no_grad():
        hidden = model.nasbert(tiny_ids()).last_hidden_state
        torch.testing.assert_close(model(tiny_ids()).logits, model.classifier(hidden[:, 0]))


SUPERNET_PATHS = [
    TINY_ARCHES,
    [4, 5, 0, 2, 0, 0, 1, 3],  # one width throughout: no hidden transfer
    [0, 0, 9, 10, 0, 0, 2, 1],  # block 0 all identity (default width 32), then 32 -> 16
    [0] * 8,
]


@pytest.mark.parametrize("arches", SUPERNET_PATHS, ids=lambda a: "-".join(map(str, a)))
def test_extracted_subnet_equals_supernet_path(arches):
    torch.manual_seed(0)
    supernet = NasBertSupernet(NasBertConfig(arches=TINY_ARCHES, **TINY)).eval()
    subnet = supernet.extract_subnet(arches).eval()
    assert subnet.config.arches == arches
    ids = tiny_ids()
    with torch.no_grad():
        expected = supernet(ids, arches=arches).last_hidden_state
        got = subnet(ids).last_hidden_state
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    # the subnet owns copies: training it does not touch the supernet
    first = next(subnet.parameters())
    with torch.no_grad():
        first.add_(1.0)
        torch.testing.assert_close(supernet(ids, arches=arches).last_hidden_state, expected, atol=0, rtol=0)


def test_supernet_paths_differ_and_reject_bad_arches():
    torch.manual_seed(0)
    supernet = NasBertSupernet(NasBertConfig(arches=TINY_ARCHES, **TINY)).eval()
    ids = tiny_ids()
    with torch.no_grad():
        a = supernet(ids, arches=SUPERNET_PATHS[0]).last_hidden_state
        b = supernet(ids, arches=[1, 3, 2, 0, 7, 10, 8, 0]).last_hidden_state
    assert not torch.allclose(a, b)
    assert len(supernet.layers[0]) == len(build_op_table("mlnet", [16, 32]))
    with pytest.raises(ValueError, match="mixes widths"):
        supernet.extract_subnet([1, 7, 0, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="supernet has 8 layers"):
        supernet(ids, arches=[0] * 4)
