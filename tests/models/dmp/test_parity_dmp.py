"""Converted original checkpoints reproduce the original code's outputs (data-driven over fixture cases)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForPreTraining, AutoModelForSequenceClassification

from conversion.convert_dmp import convert
from tests.models.dmp._fixtures import cases, load, model_inputs
from zoo.models.dmp import DmpForPreTraining, DmpForSequenceClassification


def close(actual, expected, tolerance, what):
    torch.testing.assert_close(
        actual.float(), expected.float().reshape(actual.shape), atol=tolerance["atol"], rtol=tolerance["rtol"],
        msg=lambda m: f"{what}: {m}",
    )


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Each fixture checkpoint converted once, through the converter's public entry point."""
    folders = {}

    def get(folder):
        if folder.name not in folders:
            out = tmp_path_factory.mktemp("dmp") / folder.name
            convert(folder / "checkpoint.pt", out)
            folders[folder.name] = out
        return folders[folder.name]

    return get


@pytest.mark.parametrize("folder,meta", cases("pretrain"))
def test_pretraining_parity(folder, meta, converted):
    model = AutoModelForPreTraining.from_pretrained(converted(folder)).eval()
    assert isinstance(model, DmpForPreTraining)
    tol, loss_tol = meta["tolerance"]["float_outputs"], meta["tolerance"]["losses"]
    expected = load(folder, "expected.safetensors")
    clean = load(folder, "inputs_clean.safetensors")
    with torch.no_grad():
        base = model.dmp(**model_inputs(clean))
        out = model(**model_inputs(clean))
    real = clean["src_tokens"] != 1
    close(base.last_hidden_state[real], expected["tr_features"][real], tol, "tr_features")
    close(base.sequence_embedding, expected["x0_cls"], tol, "x0_cls")
    close(base.node_embeddings, expected["gnn_node_features"], tol, "gnn_node_features")
    close(base.graph_embedding, expected["x1_graph"], tol, "x1_graph")
    for ours, theirs in [("sequence_projection", "proj0"), ("graph_projection", "proj1"),
                         ("sequence_prediction", "pred0"), ("graph_prediction", "pred1")]:
        close(out[ours], expected[theirs], tol, theirs)
    cosine = torch.nn.functional.cosine_similarity
    close(cosine(out.sequence_prediction, out.graph_projection, dim=-1), expected["cos_pred0_proj1"], tol, "cos01")
    close(cosine(out.graph_prediction, out.sequence_projection, dim=-1), expected["cos_pred1_proj0"], tol, "cos10")
    close(out.consistency_loss, expected["consistency_loss"], loss_tol, "consistency_loss")
    close(out.mlm_logits[0], expected["lm_logits_mol0"], tol, "lm_logits_mol0")
    close(out.atom_logits, expected["atom_logits_all_nodes"], tol, "atom_logits_all_nodes")

    masked = load(folder, "inputs_masked.safetensors")
    mlm_labels = torch.where(masked["masked_tokens"].bool(), masked["target_tokens"], -100)
    atom_labels = torch.where(masked["masked_atoms"].bool(), masked["target_atoms"], -100)
    with torch.no_grad():
        out = model(**model_inputs(masked), mlm_labels=mlm_labels, atom_labels=atom_labels)
    close(out.mlm_logits[masked["masked_tokens"].bool()], expected["masked_lm_logits"], tol, "masked_lm_logits")
    close(out.atom_logits[masked["masked_atoms"].bool()], expected["masked_atom_logits"], tol, "masked_atom_logits")
    close(out.sequence_embedding, expected["masked_x0_cls"], tol, "masked_x0_cls")
    close(out.graph_embedding, expected["masked_x1_graph"], tol, "masked_x1_graph")
    close(out.consistency_loss, expected["masked_byol_loss"], loss_tol, "masked_byol_loss")
    close(out.mlm_loss, expected["masked_mlm_loss_seq"], loss_tol, "masked_mlm_loss_seq")
    close(out.atom_loss, expected["masked_mlm_loss_atom"], loss_tol, "masked_mlm_loss_atom")
    close(out.loss, expected["masked_total_loss"], loss_tol, "masked_total_loss")
    assert out.loss.item() == pytest.approx(meta["scalars"]["masked_total_loss"], rel=loss_tol["rtol"])


@pytest.mark.parametrize("folder,meta", cases("finetune"))
def test_finetune_head_parity(folder, meta, converted):
    tol, loss_tol = meta["tolerance"]["float_outputs"], meta["tolerance"]["losses"]
    expected = load(folder, "expected.safetensors")
    inputs = load(folder, "inputs.safetensors")
    names = {"both": "logits_both", "tf_only": "logits_tf_only", "gnn_only": "logits_gnn_only"}
    for variant, (coeff0, coeff1) in meta["case_settings"]["coeff_variants"].items():
        model = AutoModelForSequenceClassification.from_pretrained(
            converted(folder), coeff_transformer=float(coeff0), coeff_gnn=float(coeff1)
        ).eval()
        assert isinstance(model, DmpForSequenceClassification)
        with torch.no_grad():
            out = model(**model_inputs(inputs), labels=inputs["target"].reshape(-1).long())
        close(out.logits, expected[names[variant]], tol, names[variant])
        close(out.logits.softmax(-1), expected[names[variant].replace("logits", "probs")], tol, variant + " probs")
        if variant == "both":
            close(out.sequence_embedding, expected["x0_cls"], tol, "x0_cls")
            close(out.graph_embedding, expected["x1_graph"], tol, "x1_graph")
            close(out.transformer_logits, expected["logits_tf_only"], tol, "transformer term")
            close(out.gnn_logits, expected["logits_gnn_only"], tol, "gnn term")
            close(out.loss, expected["criterion_loss"], loss_tol, "criterion_loss")
        else:
            skipped = out.gnn_logits if variant == "tf_only" else out.transformer_logits
            assert skipped is None, f"{variant}: the switched-off branch must not run"
