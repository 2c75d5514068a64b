"""Graphormer model: shared mixin checks, parity with the original code through the converter, SDPA."""

import json

import pytest
import torch
from transformers import AutoConfig

from conversion.convert_graphormer import convert
from tests.model_tester import ModelTesterMixin
from tests.models.graphormer._fixtures import EXPECTED_OUTPUTS, cases, expected_head, source
from zoo.models.graphormer import (
    GraphormerConfig,
    GraphormerFeaturizer,
    GraphormerForGraphClassification,
    GraphormerForGraphRegression,
    GraphormerModel,
)

TINY = {"num_hidden_layers": 2, "hidden_size": 16, "intermediate_size": 24, "num_attention_heads": 4,
        "num_in_degree": 16, "num_out_degree": 16, "num_edge_dis": 8, "multi_hop_max_dist": 3,
        "attention_dropout": 0.0, "activation_dropout": 0.0}
SMILES = ["CC(=O)Oc1ccccc1C(=O)O", "[Na+].[Cl-]", "C1=CCCCC1"]


def tiny_batch(config, smiles=SMILES, labels=None):
    featurizer = GraphormerFeaturizer(multi_hop_max_dist=config.multi_hop_max_dist, max_nodes=config.max_nodes)
    return dict(featurizer(smiles, labels=labels))


class TestGraphormerModel(ModelTesterMixin):
    family = "graphormer"
    # the pre-LN final LayerNorm is built but, as in the original, never applied
    parameters_without_grad = [r"graph_encoder\.final_layer_norm\."]

    def get_config(self):
        return GraphormerConfig(**TINY, pre_layernorm=True, num_classes=3)

    def get_inputs(self, model_class, config, with_labels):
        inputs = tiny_batch(config)
        if with_labels and model_class is GraphormerForGraphClassification:
            inputs["labels"] = torch.tensor([0, 2, 1])
        elif with_labels and model_class is GraphormerForGraphRegression:
            inputs["labels"] = torch.tensor([[0.1, 0.2, 0.3], [1.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
        return inputs


# -- parity with the original code -------------------------------------------------------------------------
HEAD_CLASSES = {"regression": GraphormerForGraphRegression, "classification": GraphormerForGraphClassification}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Each model case converted once, with the converter's default head (which must be the original's)."""
    folders = {}

    def get(case):
        if case.name not in folders:
            folders[case.name] = convert(source(case), tmp_path_factory.mktemp(case.name) / "out")
        return folders[case.name]

    return get


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("case", cases("fairseq", "transformers-4.x"))
def test_parity_with_original(case, attn, converted):
    meta = case.meta
    tolerance = meta["tolerance"]
    head = expected_head(case)
    out_dir = converted(case)
    assert json.loads((out_dir / "config.json").read_text())["architectures"] == [HEAD_CLASSES[head].__name__]
    model = HEAD_CLASSES[head].from_pretrained(out_dir, attn_implementation=attn).eval()
    assert next(model.parameters()).dtype == torch.float32
    inputs = case.tensors("inputs.safetensors")
    expected = case.tensors("expected.safetensors")
    unknown = sorted(set(expected) - set(EXPECTED_OUTPUTS))
    assert not unknown, f"{case.where}: expected.safetensors holds {unknown}, which no test knows how to compute"
    assert model.config.num_classes == expected["graph_prediction"].shape[-1]
    mask = inputs["node_mask"]
    batch = {"input_nodes": inputs["x"], "input_edges": inputs["edge_input"]}
    batch.update({k: inputs[k] for k in ("attn_bias", "in_degree", "out_degree", "spatial_pos", "attn_edge_type")})
    captured = {}
    encoder = model.graphormer.graph_encoder
    hooks = [encoder.graph_node_feature.register_forward_hook(lambda m, i, o: captured.__setitem__("node_feature", o)),
             encoder.graph_attn_bias.register_forward_hook(lambda m, i, o: captured.__setitem__("attn_bias_full", o))]
    try:
        with torch.no_grad():
            out = model(**batch, output_hidden_states=True)
            encoded = model.graphormer(**batch, output_hidden_states=True)
            head_hidden = model.head.transform(encoded.last_hidden_state)
            all_nodes = model.head(encoded.last_hidden_state)
    finally:
        for hook in hooks:
            hook.remove()

    def close(got, want, name):
        torch.testing.assert_close(got, want, atol=tolerance["atol"], rtol=tolerance["rtol"], msg=lambda m: f"{name}: {m}")

    per_node = {"last_hidden_state": encoded.last_hidden_state, "head_hidden": head_hidden,
                "logits_all_nodes": all_nodes, "node_feature": captured.get("node_feature")}
    for name in sorted(expected):
        if name == "graph_prediction":
            close(out.logits, expected[name], name)
        elif name == "graph_rep":
            close(encoded.pooler_output, expected[name], name)
        elif name == "inner_states":
            assert len(encoded.hidden_states) == len(expected[name])
            for index, state in enumerate(encoded.hidden_states):
                close(state[mask], expected[name][index][mask], f"inner_states[{index}]")
        elif name == "attn_bias_full":  # [B, heads, N+1, N+1]: compared between real positions
            pair = mask[:, None, :, None] & mask[:, None, None, :]
            got = captured[name].reshape(expected[name].shape)
            close(got[pair.expand_as(got)], expected[name][pair.expand_as(got)], name)
        else:
            got = per_node[name]
            if got.shape[1] != mask.shape[1]:  # node-only tensors (no graph token) keep the real atoms
                close(got[mask[:, 1:]], expected[name][mask[:, 1:]], name)
            else:
                close(got[mask], expected[name][mask], name)
    assert torch.equal(encoded.node_mask, mask)


@pytest.mark.parametrize("case", cases("transformers-4.x"))
def test_old_transformers_config_loads(case):
    written = json.loads(case.file("config.json").read_text())
    config = AutoConfig.from_pretrained(case.folder)
    assert isinstance(config, GraphormerConfig)
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (
        written["num_hidden_layers"], written["hidden_size"], written["ffn_embedding_dim"])
    assert config.activation_dropout == written["activation_dropout"]
    assert config.embedding_dim == written["embedding_dim"]


def test_fairseq_names_and_conflicts():
    config = GraphormerConfig(encoder_layers=3, encoder_embed_dim=64, encoder_ffn_embed_dim=48,
                              encoder_attention_heads=8, act_dropout=0.2, num_layers=3)
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (3, 64, 48)
    assert config.num_attention_heads == 8 and config.activation_dropout == 0.2
    with pytest.raises(ValueError, match="encoder_layers=4 contradicts num_hidden_layers=3"):
        GraphormerConfig(num_hidden_layers=3, encoder_layers=4)
    with pytest.raises(ValueError, match="q_noise=0.1 is not supported"):
        GraphormerConfig(q_noise=0.1)
    with pytest.raises(ValueError, match="not a multiple"):
        GraphormerConfig(hidden_size=30, num_attention_heads=4)


def test_sdpa_matches_eager_in_float32():
    config = GraphormerConfig(**{**TINY, "multi_hop_max_dist": 5})
    torch.manual_seed(0)
    model = GraphormerModel(config).eval()
    batch = tiny_batch(config)
    with torch.no_grad():
        model.config._attn_implementation = "eager"
        eager = model(**batch)
        with_attentions = model(**batch, output_attentions=True)
        model.config._attn_implementation = "sdpa"
        sdpa = model(**batch)
    mask = eager.node_mask
    torch.testing.assert_close(sdpa.last_hidden_state[mask], eager.last_hidden_state[mask], atol=1e-5, rtol=1e-5)
    attentions = with_attentions.attentions[0]
    assert attentions.shape == (3, 4, mask.shape[1], mask.shape[1])
    assert torch.all(attentions[~mask[:, None, None, :].expand_as(attentions)] == 0)  # padding gets no weight
    torch.testing.assert_close(attentions.sum(-1), torch.ones(attentions.shape[:-1]))


def test_padding_does_not_change_real_outputs():
    config = GraphormerConfig(**{**TINY, "multi_hop_max_dist": 5})
    torch.manual_seed(0)
    model = GraphormerForGraphRegression(config).eval()
    with torch.no_grad():
        alone = model(**tiny_batch(config, ["CCO"])).logits
        padded = model(**tiny_batch(config, ["CCO", "CC(=O)Oc1ccccc1C(=O)O"])).logits[:1]
    torch.testing.assert_close(padded, alone, atol=1e-6, rtol=1e-6)


def test_classification_losses():
    base = {**TINY, "multi_hop_max_dist": 5}
    torch.manual_seed(0)
    binary = GraphormerForGraphClassification(GraphormerConfig(**base, num_classes=1)).eval()
    batch = tiny_batch(binary.config, labels=[1.0, 0.0, 1.0])
    out = binary(**batch)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits[:, 0], batch["labels"].float())
    torch.testing.assert_close(out.loss, expected)
    multi_label = GraphormerForGraphClassification(
        GraphormerConfig(**base, num_classes=2, problem_type="multi_label_classification")).eval()
    labels = torch.tensor([[1.0, float("nan")], [0.0, 1.0], [1.0, 1.0]])
    batch = tiny_batch(multi_label.config)
    out = multi_label(**batch, labels=labels)
    keep = ~torch.isnan(labels)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits[keep], labels[keep])
    torch.testing.assert_close(out.loss, expected)
    regression = GraphormerForGraphRegression(GraphormerConfig(**base, num_classes=1)).eval()
    out = regression(**tiny_batch(regression.config, labels=[1.0, 2.0, 3.0]))
    torch.testing.assert_close(out.loss, (out.logits[:, 0] - torch.tensor([1.0, 2.0, 3.0])).abs().mean())


@pytest.mark.parametrize("case", cases("transformers-4.x"))
def test_transformers_4x_preprocessing_reproduced(case, converted):
    """Fed the port's own (shifted) preprocessing, the model gives the port's predictions too."""
    port = case.tensors("hf_port_preprocessing.safetensors")
    inputs = case.tensors("inputs.safetensors")
    summary = case.json("hf_collator_vs_original.json")
    model = HEAD_CLASSES[expected_head(case)].from_pretrained(converted(case)).eval()
    batch = {"input_nodes": port["input_nodes"], "input_edges": inputs["edge_input"], "attn_bias": port["attn_bias"],
             "spatial_pos": port["spatial_pos"]}
    batch.update({k: inputs[k] for k in ("in_degree", "out_degree", "attn_edge_type")})
    with torch.no_grad():
        logits = model(**batch).logits
    tolerance = case.meta["tolerance"]
    torch.testing.assert_close(logits, port["graph_prediction"], atol=tolerance["atol"], rtol=tolerance["rtol"])
    gap = float((logits - case.tensors("expected.safetensors")["graph_prediction"]).abs().max())
    assert gap == pytest.approx(summary["graph_prediction_with_HF_preprocessing_max_abs_diff"], abs=tolerance["atol"])


def test_pre_ln_final_norm_is_built_but_not_applied():
    config = GraphormerConfig(**{**TINY, "multi_hop_max_dist": 5}, pre_layernorm=True)
    torch.manual_seed(0)
    model = GraphormerForGraphRegression(config).eval()
    batch = tiny_batch(config)
    with torch.no_grad():
        before = model(**batch).logits
        model.graphormer.graph_encoder.final_layer_norm.weight.mul_(3.0).add_(1.0)
        after = model(**batch).logits
        model.graphormer.graph_encoder.layers[0].final_layer_norm.weight.mul_(3.0)
        changed = model(**batch).logits
    assert torch.equal(before, after)
    assert not torch.allclose(before, changed)


def test_attention_bias_closed_form_single_and_multi_hop():
    from zoo.models.graphormer.modeling_graphormer import GraphormerAttnBias

    for edge_type in ("single_hop", "multi_hop"):
        config = GraphormerConfig(**{**TINY, "multi_hop_max_dist": 5}, edge_type=edge_type)
        torch.manual_seed(0)
        module = GraphormerAttnBias(config)
        for param in module.parameters():
            torch.nn.init.normal_(param)
        batch = tiny_batch(config, ["CCO"])
        with torch.no_grad():
            bias = module(batch["attn_bias"], batch["spatial_pos"], batch["input_edges"], batch["attn_edge_type"])
        spatial = module.spatial_pos_encoder.weight[batch["spatial_pos"][0, 0, 2]]  # atoms 0 and 2: two bonds
        if edge_type == "single_hop":
            edge = module.edge_encoder.weight[batch["attn_edge_type"][0, 0, 2]].mean(0)  # no direct bond: row 0
        else:
            hops = batch["input_edges"][0, 0, 2, :2]  # the two bonds on the path C0-C1-O2
            matrices = module.edge_dis_encoder.weight.view(-1, 4, 4)
            edge = sum(module.edge_encoder.weight[hops[h]].mean(0) @ matrices[h] for h in range(2)) / 2
        torch.testing.assert_close(bias[0, :, 1, 3], spatial + edge)
        virtual = module.graph_token_virtual_distance.weight[0]
        torch.testing.assert_close(bias[0, :, 0, 2], virtual)
        torch.testing.assert_close(bias[0, :, 3, 0], virtual)
