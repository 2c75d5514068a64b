"""Graphormer model: shared mixin checks, parity with the original code through the converter, SDPA."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig

from conversion.convert_graphormer import convert
from tests.model_tester import ModelTesterMixin
from zoo.models.graphormer import (
    GraphormerConfig,
    GraphormerFeaturizer,
    GraphormerForGraphClassification,
    GraphormerForGraphRegression,
    GraphormerModel,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "graphormer"
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
def parity_cases():
    cases = []
    for folder in sorted(FIXTURES.iterdir()):
        if not ((folder / "meta.json").is_file() and (folder / "expected.safetensors").is_file()):
            continue
        source = folder / "checkpoint.pt" if (folder / "checkpoint.pt").is_file() else folder
        cases.append(pytest.param(folder, source, id=folder.name))
    return cases


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folders = {}

    def get(folder, source):
        if folder.name not in folders:
            folders[folder.name] = convert(source, tmp_path_factory.mktemp(folder.name) / "out", head="regression")
        return folders[folder.name]

    return get


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize(("folder", "source"), parity_cases())
def test_parity_with_original(folder, source, attn, converted):
    meta = json.loads((folder / "meta.json").read_text())
    tolerance = meta.get("tolerance", {"atol": 1e-5, "rtol": 1e-5})
    out_dir = converted(folder, source)
    model = GraphormerForGraphRegression.from_pretrained(out_dir, attn_implementation=attn).eval()
    assert next(model.parameters()).dtype == torch.float32
    inputs = load_file(folder / "inputs.safetensors")
    expected = load_file(folder / "expected.safetensors")
    mask = inputs["node_mask"]
    batch = {"input_nodes": inputs["x"], "input_edges": inputs["edge_input"]}
    batch.update({k: inputs[k] for k in ("attn_bias", "in_degree", "out_degree", "spatial_pos", "attn_edge_type")})
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
        encoded = model.graphormer(**batch, output_hidden_states=True)
        head_hidden = model.head.transform(encoded.last_hidden_state)
        all_nodes = model.head(encoded.last_hidden_state)

    def close(got, want, name):
        torch.testing.assert_close(got, want, atol=tolerance["atol"], rtol=tolerance["rtol"], msg=lambda m: f"{name}: {m}")

    close(out.logits, expected["graph_prediction"], "graph_prediction")
    if "last_hidden_state" in expected:
        close(encoded.last_hidden_state[mask], expected["last_hidden_state"][mask], "last_hidden_state")
    if "graph_rep" in expected:
        close(encoded.pooler_output, expected["graph_rep"], "graph_rep")
    if "inner_states" in expected:
        assert len(encoded.hidden_states) == len(expected["inner_states"])
        for index, state in enumerate(encoded.hidden_states):
            close(state[mask], expected["inner_states"][index][mask], f"inner_states[{index}]")
    if "head_hidden" in expected:
        close(head_hidden[mask], expected["head_hidden"][mask], "head_hidden")
    if "logits_all_nodes" in expected:
        close(all_nodes[mask], expected["logits_all_nodes"][mask], "logits_all_nodes")
    assert torch.equal(encoded.node_mask, mask)


def test_old_transformers_config_loads():
    config = AutoConfig.from_pretrained(FIXTURES / "public_postln_hf4x")
    assert isinstance(config, GraphormerConfig)
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (2, 32, 32)
    assert config.activation_dropout == 0.1 and config.embedding_dim == 32


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


@pytest.mark.parametrize("folder", [pytest.param(f, id=f.name) for f in sorted(FIXTURES.iterdir())
                                    if (f / "hf_port_preprocessing.safetensors").is_file()])
def test_transformers_4x_preprocessing_reproduced(folder, converted):
    """Fed the port's own (shifted) preprocessing, the model gives the port's predictions too."""
    port = load_file(folder / "hf_port_preprocessing.safetensors")
    inputs = load_file(folder / "inputs.safetensors")
    model = GraphormerForGraphRegression.from_pretrained(converted(folder, folder)).eval()
    batch = {"input_nodes": port["input_nodes"], "input_edges": inputs["edge_input"], "attn_bias": port["attn_bias"],
             "spatial_pos": port["spatial_pos"]}
    batch.update({k: inputs[k] for k in ("in_degree", "out_degree", "attn_edge_type")})
    with torch.no_grad():
        logits = model(**batch).logits
    torch.testing.assert_close(logits, port["graph_prediction"], atol=1e-5, rtol=1e-5)
    assert (logits - load_file(folder / "expected.safetensors")["graph_prediction"]).abs().max() > 0.1


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
