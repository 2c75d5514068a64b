"""Converted original checkpoints reproduce the original code's outputs (data-driven over fixture cases)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForPreTraining, AutoModelForSequenceClassification

from conversion.convert_dmp import convert
from tests.models.dmp._fixtures import cases, model_inputs, problem_type
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

    def get(case):
        if case.name not in folders:
            out = tmp_path_factory.mktemp("dmp") / case.name
            convert(case.file(case.meta["checkpoint"]["file"]), out)
            folders[case.name] = out
        return folders[case.name]

    return get


# every output a pre-training case's expected.safetensors can hold; each one present is compared
PRETRAIN_OUTPUTS = {
    "tr_features", "x0_cls", "gnn_node_features", "x1_graph", "proj0", "proj1", "pred0", "pred1", "cos_pred0_proj1",
    "cos_pred1_proj0", "consistency_loss", "lm_logits_mol0", "atom_logits_all_nodes", "masked_lm_logits",
    "masked_atom_logits", "masked_x0_cls", "masked_x1_graph", "masked_byol_loss", "masked_mlm_loss_seq",
    "masked_mlm_loss_atom", "masked_total_loss",
}


def known_outputs(case, expected, known):
    unknown = sorted(set(expected) - set(known))
    assert not unknown, f"{case.where}: expected.safetensors holds {unknown}, which no test knows how to compute"
    assert set(expected) == set(case.meta["shapes"]["expected"]), f"{case.where}: meta.json shapes.expected differs"


@pytest.mark.parametrize("case", cases("pretrain"))
def test_pretraining_parity(case, converted):
    meta = case.meta
    model = AutoModelForPreTraining.from_pretrained(converted(case)).eval()
    assert isinstance(model, DmpForPreTraining)
    tol, loss_tol = meta["tolerance"]["float_outputs"], meta["tolerance"]["losses"]
    expected = case.tensors("expected.safetensors")
    known_outputs(case, expected, PRETRAIN_OUTPUTS)
    clean = case.tensors("inputs_clean.safetensors")
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

    masked = case.tensors("inputs_masked.safetensors")
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
    for name, value in meta["scalars"].items():
        assert float(expected[name]) == pytest.approx(value, rel=loss_tol["rtol"], abs=loss_tol["atol"]), name


FINETUNE_OUTPUTS = {"x0_cls", "x1_graph", "criterion_loss"}  # plus logits_<variant> / probs_<variant>


@pytest.mark.parametrize("case", cases("finetune"))
def test_finetune_head_parity(case, converted):
    meta = case.meta
    tol, loss_tol = meta["tolerance"]["float_outputs"], meta["tolerance"]["losses"]
    expected = case.tensors("expected.safetensors")
    inputs = case.tensors("inputs.safetensors")
    task = meta["checkpoint"]["cfg_task"]
    problem = problem_type(meta)
    variants = meta["case_settings"]["coeff_variants"]
    per_variant = {f"{prefix}_{v}" for v in variants for prefix in ("logits", "probs")}
    known_outputs(case, expected, FINETUNE_OUTPUTS | per_variant)
    assert {f"logits_{v}" for v in variants} <= set(expected), f"{case.where}: a coefficient variant has no logits"
    if problem == "regression":
        labels = inputs["target"].reshape(-1).float()
        assert not any(k.startswith("probs_") for k in expected), f"{case.where}: probabilities of a regression head"
    else:
        labels = inputs["target"].reshape(-1).long()
    compared = set()
    for variant, (coeff0, coeff1) in variants.items():
        model = AutoModelForSequenceClassification.from_pretrained(
            converted(case), coeff_transformer=float(coeff0), coeff_gnn=float(coeff1)
        ).eval()
        assert isinstance(model, DmpForSequenceClassification)
        assert model.config.problem_type == problem and model.config.num_labels == task["num_classes"]
        with torch.no_grad():
            out = model(**model_inputs(inputs), labels=labels)
        close(out.logits, expected[f"logits_{variant}"], tol, f"logits_{variant}")
        compared.add(f"logits_{variant}")
        if f"probs_{variant}" in expected:
            close(out.logits.softmax(-1), expected[f"probs_{variant}"], tol, f"probs_{variant}")
            compared.add(f"probs_{variant}")
        if coeff0 and coeff1:  # both branches run: the branch features and the criterion's loss
            for name, got in (("x0_cls", out.sequence_embedding), ("x1_graph", out.graph_embedding)):
                if name in expected:
                    close(got, expected[name], tol, name)
                    compared.add(name)
            for other, (c0, c1) in variants.items():  # each branch's term equals the one-branch variant's logits
                if (c0, c1) == (coeff0, 0):
                    close(out.transformer_logits, expected[f"logits_{other}"], tol, f"transformer term vs {other}")
                if (c0, c1) == (0, coeff1):
                    close(out.gnn_logits, expected[f"logits_{other}"], tol, f"gnn term vs {other}")
            saved = (meta["checkpoint"]["cfg_model"]["coeff0"], meta["checkpoint"]["cfg_model"]["coeff1"])
            if "criterion_loss" in expected and (coeff0, coeff1) == saved:  # the criterion ran the saved model
                close(out.loss, expected["criterion_loss"], loss_tol, "criterion_loss")
                compared.add("criterion_loss")
        for switched_off, branch in ((coeff0, "transformer_logits"), (coeff1, "gnn_logits")):
            if not switched_off:
                assert getattr(out, branch) is None, f"{variant}: the switched-off branch must not run"
    for name, value in meta["scalars"].items():
        if not name.endswith("_note"):
            assert float(expected[name]) == pytest.approx(value, rel=loss_tol["rtol"], abs=loss_tol["atol"]), name
    assert compared == set(expected), f"{case.where}: outputs no test compared: {sorted(set(expected) - compared)}"
