"""Differentially private fine-tuning: per-example gradients, clipping, accounting, refusals, DDP."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("opacus")

import tests.toy  # noqa: E402,F401  (registers the toy family and recipe)
from zoo.private import (  # noqa: E402
    PrivacyError,
    PrivacyOptions,
    complete_grad_samples,
    finetune_private,
    privacy_unit,
    register_privacy_unit,
)
from zoo.private_rules import dp_adapter  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TOY_CARD = Path(__file__).resolve().parent / "toy" / "card.md"
register_privacy_unit("toy_halves", "one synthetic token")


# ------------------------------------------------------------------------------------------ tiny families
def _graphormer(edge_type="multi_hop", classes=1):
    from zoo.models.graphormer import GraphormerConfig, GraphormerFeaturizer, GraphormerForGraphClassification

    config = GraphormerConfig(num_hidden_layers=2, hidden_size=16, intermediate_size=24, num_attention_heads=4,
                              num_in_degree=16, num_out_degree=16, num_edge_dis=8, multi_hop_max_dist=3,
                              attention_dropout=0.0, activation_dropout=0.0, dropout=0.0, num_classes=classes,
                              edge_type=edge_type)
    featurizer = GraphormerFeaturizer(multi_hop_max_dist=3, max_nodes=config.max_nodes)
    items, _ = featurizer.featurize(["CC(=O)Oc1ccccc1C(=O)O", "CCO", "c1ccncc1N", "CC(C)CN"],
                                    labels=torch.tensor([1.0, 0.0, 1.0, 0.0]).numpy())
    model = GraphormerForGraphClassification(config)
    bias = model.graphormer.graph_encoder.graph_attn_bias
    with torch.no_grad():  # the initial edge tables are ~0.02: their gradients (~1e-8) would sit below atol
        for table in (bias.edge_encoder, getattr(bias, "edge_dis_encoder", None)):
            if table is not None:
                table.weight.normal_(0.0, 1.0)
                if table.padding_idx is not None:
                    table.weight[table.padding_idx] = 0.0
    return "graphormer", model, list(items), featurizer.collate


def _dmp(**overrides):
    from zoo.models.dmp import (
        DmpConfig,
        DmpDataCollator,
        DmpFeaturizer,
        DmpForSequenceClassification,
        DmpTokenizer,
    )

    config = DmpConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=32, max_position_embeddings=64, gnn_num_layers=3, gnn_hidden_size=12,
                       gnn_norm="group", gnn_norm_groups=3, num_labels=2, hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0, activation_dropout=0.0, gnn_dropout=0.0,
                       classifier_dropout=0.0, use_dropnet=0.0, **overrides)
    tokenizer = DmpTokenizer()
    config.vocab_size = len(tokenizer)
    features = DmpFeaturizer().encode_molecules(["CC(=O)Oc1ccccc1C(=O)O", "CCO", "c1ccncc1N", "CC(C)CN"], tokenizer,
                                                labels=[1, 0, 1, 0])
    items = [features[i] for i in range(len(features))]
    return "dmp", DmpForSequenceClassification(config), items, DmpDataCollator(label_dtype=torch.long)


def _musicbert():
    from zoo.models.musicbert import MusicBertConfig, MusicBertForSequenceClassification
    from zoo.recipes.musicbert import PadCollator

    config = MusicBertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                             max_positions=64, num_labels=4, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0)
    generator = torch.Generator().manual_seed(0)
    items = [{"input_ids": torch.randint(4, 100, (8 * notes,), generator=generator).tolist(), "labels": label}
             for notes, label in ((5, 0), (3, 1), (6, 3), (4, 2))]
    return "musicbert", MusicBertForSequenceClassification(config), items, PadCollator(1)


def _nasbert():
    from zoo.models.nasbert import NasBertConfig, NasBertForSequenceClassification
    from zoo.recipes.nasbert import FortuneCollator

    config = NasBertConfig(arches=[1, 3, 2, 0, 7, 11, 8, 0], num_labels=3, vocab_size=40, embedding_size=8,
                           max_position_embeddings=16, num_blocks=4, op_widths=[16, 32], attention_head_dim=8,
                           default_hidden_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    items = [{"input_ids": [0, 5, 9, 13, 22, 7, 30, 2], "labels": 0}, {"input_ids": [0, 11, 4, 39, 2], "labels": 2},
             {"input_ids": [0, 3, 2], "labels": 1}, {"input_ids": [0, 8, 8, 8, 9, 2], "labels": 1}]
    return "nasbert", NasBertForSequenceClassification(config), items, FortuneCollator(1)


FAMILIES = {
    "graphormer": _graphormer,
    "graphormer_single_hop": lambda: _graphormer(edge_type="single_hop"),
    "dmp": _dmp,
    "dmp_gnn_only": lambda: _dmp(coeff_transformer=0.0),
    "musicbert": _musicbert,
    "nasbert": _nasbert,
}


def _per_sample_gradients(family, model, items, collator):
    """Opacus hooks + zoo's rules on one batch, in float64."""
    from opacus import GradSampleModule

    adapter = dp_adapter(family)
    wrapped = GradSampleModule(model)
    adapter.attach(model)
    batch = collator(items)
    batch = {k: v.double() if torch.is_floating_point(v) else v for k, v in batch.items()}
    wrapped(**batch).loss.backward()
    adapter.after_backward(model, batch)
    complete_grad_samples(model, len(items))
    adapter.detach(model)
    samples = {name: p.grad_sample.clone() for name, p in model.named_parameters() if p.requires_grad}
    wrapped.remove_hooks()
    return samples


def _one_at_a_time(model, items, collator):
    """The truth: each example alone through plain autograd."""
    rows = []
    for item in items:
        model.zero_grad(set_to_none=True)
        batch = collator([item])
        batch = {k: v.double() if torch.is_floating_point(v) else v for k, v in batch.items()}
        model(**batch).loss.backward()
        rows.append({name: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
                     for name, p in model.named_parameters() if p.requires_grad})
    return {name: torch.stack([row[name] for row in rows]) for name in rows[0]}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_per_example_gradients_equal_one_at_a_time_autograd(name):
    torch.manual_seed(0)
    family, model, items, collator = FAMILIES[name]()
    model = model.double().train()
    truth = _one_at_a_time(copy.deepcopy(model), items, collator)
    samples = _per_sample_gradients(family, model, items, collator)
    assert samples.keys() == truth.keys()
    for key in truth:
        assert samples[key].shape == truth[key].shape, key
        _assert_same(samples[key], truth[key], key)
    assert any(truth[key].abs().sum() > 0 for key in truth)


def _assert_same(sample, truth, key):
    """atol 1e-6, and the same again relative to the largest true entry: some gradients (Graphormer's edge
    tables, through a small attention bias) are ~1e-8 in all and would pass any absolute test."""
    torch.testing.assert_close(sample, truth, atol=1e-6, rtol=1e-5, msg=lambda m: f"{key}: {m}")
    scale = float(truth.abs().max())
    if scale < 1e-14:  # zero up to float64 rounding (a key bias under softmax, an unused row)
        assert float(sample.abs().max()) <= 1e-12, key
    else:
        torch.testing.assert_close(sample / scale, truth / scale, atol=1e-6, rtol=1e-5,
                                   msg=lambda m: f"{key} (relative to {scale:.3g}): {m}")


# ------------------------------------------------------------------------------------------ clipping
@pytest.mark.parametrize("clipping", ["flat", "per_layer", "adaptive"])
def test_clipped_per_example_gradients_never_exceed_the_bound(clipping):
    from opacus.optimizers import AdaClipDPOptimizer, DPOptimizer, DPPerLayerOptimizer

    torch.manual_seed(0)
    family, model, items, collator = _graphormer()
    samples = _per_sample_gradients(family, model, items, collator)
    params = [p for p in model.parameters() if p.requires_grad]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    bound = 0.05
    per_tensor = bound / len(params) ** 0.5
    norms = torch.stack([samples[n].flatten(1).norm(dim=1) for n in names], dim=1)  # [examples, tensors]
    assert (norms.norm(dim=1) > bound).any() and (norms.norm(dim=1) < 1e3).all()
    sgd = torch.optim.SGD(params, lr=0.1)
    if clipping == "per_layer":
        optimizer = DPPerLayerOptimizer(sgd, noise_multiplier=0.0, max_grad_norm=[per_tensor] * len(params),
                                        expected_batch_size=1)
    elif clipping == "adaptive":  # the bound moves between steps; each step clips to the current one
        optimizer = AdaClipDPOptimizer(sgd, noise_multiplier=0.0, max_grad_norm=bound, expected_batch_size=1,
                                       target_unclipped_quantile=0.5, clipbound_learning_rate=0.2,
                                       max_clipbound=1.0, min_clipbound=1e-4, unclipped_num_std=1.0)
    else:
        optimizer = DPOptimizer(sgd, noise_multiplier=0.0, max_grad_norm=bound, expected_batch_size=1)
    for index in range(len(items)):
        for name, p in zip(names, params):
            p.grad_sample = samples[name][index:index + 1].float()
            p.summed_grad = None
        optimizer.clip_and_accumulate()
        clipped = [p.summed_grad for p in params]
        total = torch.cat([c.flatten() for c in clipped]).norm()
        assert total <= bound * (1 + 1e-5)
        if clipping == "per_layer":
            assert all(c.norm() <= per_tensor * (1 + 1e-5) for c in clipped)
        else:  # flat and adaptive: the direction is kept and the norm is min(||g||, C)
            full = torch.cat([samples[n][index].flatten() for n in names]).float()
            expected = full * min(1.0, bound / float(full.norm()))
            torch.testing.assert_close(torch.cat([c.flatten() for c in clipped]), expected, atol=1e-6, rtol=1e-4)


# ------------------------------------------------------------------------------------------ accounting
def _recomputed_epsilon(privacy):
    from opacus.accountants import create_accountant

    accountant = create_accountant(privacy["accountant"])
    accountant.history = [tuple(row) for row in privacy["history"]]
    assert sum(row[2] for row in privacy["history"]) == privacy["steps"]
    assert all(row[0] == privacy["noise_multiplier"] and row[1] == privacy["sample_rate"] for row in privacy["history"])
    return accountant.get_epsilon(delta=privacy["delta"])


def _check_recorded_privacy(out, metrics, target):
    privacy = metrics["privacy"]
    assert 0 < privacy["epsilon"] <= target
    assert privacy["epsilon"] == pytest.approx(_recomputed_epsilon(privacy), rel=1e-9)
    saved = json.loads((out / "metrics.json").read_text())["privacy"]
    assert saved["epsilon"] == privacy["epsilon"] and saved["noise_multiplier"] > 0
    card = (out / "README.md").read_text()
    assert "## Privacy" in card and "privacy:" in card.split("\n---", 1)[0]
    from huggingface_hub import ModelCard

    assert ModelCard(card).data.privacy["epsilon"] == pytest.approx(privacy["epsilon"], abs=1e-4)
    assert (out / "model.safetensors").is_file()


FAMILY_RUNS = {
    "graphormer": ("graphormer_slim_classifier", "b3db_bbb", {"num_hidden_layers": 1, "hidden_size": 16,
                                                               "intermediate_size": 16, "num_attention_heads": 2}, {}),
    "dmp": ("dmp_small_molecule_cls", "dmp_b3db_bbb", {"hidden_size": 16, "num_hidden_layers": 1,
                                                         "num_attention_heads": 2, "intermediate_size": 16,
                                                         "gnn_num_layers": 2, "gnn_hidden_size": 12,
                                                         "gnn_norm_groups": 3}, {"swap_batchnorm": True}),
    "musicbert": ("musicbert_tiny", "music21_dance", {"hidden_size": 16, "num_hidden_layers": 1,
                                                      "num_attention_heads": 2, "intermediate_size": 16}, {}),
    "nasbert": ("nasbert5_mlnet_text_classification", "nasbert_fortunes", {}, {"clipping": "per-layer"}),
}


@pytest.mark.parametrize("family", sorted(FAMILY_RUNS))
def test_short_dp_run_records_what_the_accountant_says(family, tmp_path):
    from zoo.finetune import RecipeOptions

    variant, recipe, overrides, settings = FAMILY_RUNS[family]
    if family == "nasbert":
        from zoo.recipes.nasbert import FORTUNES_DIR

        if not (FORTUNES_DIR / "computers").is_file():
            pytest.skip("Debian fortunes not installed")
    out = tmp_path / family
    options = RecipeOptions(quick=True, max_train_samples=48, max_eval_samples=16)
    metrics = finetune_private(variant, recipe, out, PrivacyOptions(epsilon=3.0, delta=1e-3, **settings),
                               options=options, max_steps=3, batch_size=8, model_overrides=overrides)
    _check_recorded_privacy(out, metrics, 3.0)
    assert metrics["privacy"]["steps"] == 3 and metrics["privacy"]["sample_rate"] == pytest.approx(8 / 48)
    assert metrics["privacy"]["clipping"] == settings.get("clipping", "flat")


def test_toy_dp_run_learns_and_stops_at_the_budget_when_resumed(tmp_path):
    first = finetune_private("toy_tiny", "toy_halves", tmp_path / "a", PrivacyOptions(epsilon=8, delta=1e-3),
                             card_template=TOY_CARD, epochs=4)
    assert first["eval"]["eval_accuracy"] >= 0.9  # learnable under DP; chance is ~0.5
    _check_recorded_privacy(tmp_path / "a", first, 8)
    assert first["privacy"]["stopped"] is None
    with pytest.raises(PrivacyError, match="already spent"):
        finetune_private("toy_tiny", "toy_halves", tmp_path / "b",
                         PrivacyOptions(epsilon=8, delta=1e-3, resume_from=str(tmp_path / "a")),
                         card_template=TOY_CARD, epochs=4)
    with pytest.warns(UserWarning, match="one more step would spend more than the target epsilon 9"):
        second = finetune_private("toy_tiny", "toy_halves", tmp_path / "c",
                                  PrivacyOptions(epsilon=9, delta=1e-3, resume_from=str(tmp_path / "a")),
                                  card_template=TOY_CARD, epochs=4)
    privacy = second["privacy"]
    assert 0 < privacy["steps_this_run"] < 64 and privacy["steps"] == 64 + privacy["steps_this_run"]
    assert first["privacy"]["epsilon"] < privacy["epsilon"] <= 9
    assert privacy["epsilon"] == pytest.approx(_recomputed_epsilon(privacy), rel=1e-9)
    assert "Stopped early" in (tmp_path / "c" / "README.md").read_text()


def test_browse_page_shows_the_privacy_spent(tmp_path):
    import urllib.request

    from zoo.hub import upload_folder, validate_folder
    from zoo.hub_server import LocalHub

    pytest.importorskip("starlette")
    metrics = finetune_private("toy_tiny", "toy_halves", tmp_path / "run", PrivacyOptions(epsilon=2, delta=1e-3),
                               card_template=TOY_CARD, max_steps=2)
    validate_folder(tmp_path / "run")
    hub = LocalHub.start(tmp_path / "hub")
    try:
        upload_folder(tmp_path / "run", "org/toy-dp", endpoint=hub.url, token=hub.token)
        with urllib.request.urlopen(f"{hub.url}/org/toy-dp", timeout=30) as response:
            page = response.read().decode()
    finally:
        hub.stop()
    table = page.split("<table id=privacy>", 1)[1].split("</table>", 1)[0]
    assert f"<th>epsilon</th><td>{round(metrics['privacy']['epsilon'], 4)}</td>" in table
    assert "<th>accountant</th><td>rdp</td>" in table and "<th>noise_multiplier</th>" in table
    assert "<h2>Privacy</h2>" in page  # the card's own section, rendered


# ------------------------------------------------------------------------------------------ refusals
def test_refuses_a_recipe_without_a_per_example_unit(tmp_path):
    with pytest.raises(PrivacyError, match="random crops of recorded sentences"):
        privacy_unit("priorgrad_espeak")
    with pytest.raises(PrivacyError, match="priorgrad_espeak"):
        finetune_private("priorgrad_vocoder_ljspeech", "priorgrad_espeak", tmp_path / "x", PrivacyOptions(epsilon=8))
    assert not (tmp_path / "x").exists()


def test_refuses_batchnorm_and_offers_the_groupnorm_swap():
    from zoo.models.dmp import DmpConfig, DmpForSequenceClassification

    model = DmpForSequenceClassification(DmpConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                   intermediate_size=16, gnn_num_layers=2, gnn_hidden_size=12))
    with pytest.raises(PrivacyError, match=r"BatchNorm \(dmp\.gnn\.norms\.0.*--dp-swap-batchnorm"):
        dp_adapter("dmp").check_model(model, "dmp")
    assert dp_adapter("dmp").refuse_or_overrides("dmp", swap_batchnorm=True) == {"gnn_norm": "group"}
    with pytest.raises(PrivacyError, match="no GroupNorm variant"):
        dp_adapter("musicbert").refuse_or_overrides("musicbert", swap_batchnorm=True)


def test_refuses_mdeq_and_says_why(tmp_path):
    with pytest.raises(PrivacyError, match="stops when every example of the batch has converged"):
        finetune_private("mdeq_tiny_cifar10", "mdeq_digits", tmp_path / "x", PrivacyOptions(epsilon=8))


def test_refuses_resuming_a_dp_run_on_another_data_set(tmp_path):
    finetune_private("toy_tiny", "toy_halves", tmp_path / "a", PrivacyOptions(epsilon=2, delta=1e-3),
                     card_template=TOY_CARD, max_steps=2)
    from zoo.finetune import RecipeOptions

    with pytest.raises(PrivacyError, match="spent its budget on 'toy_halves'.*--pretrained"):
        finetune_private("toy_tiny", "toy_halves", tmp_path / "b",
                         PrivacyOptions(epsilon=4, delta=1e-3, resume_from=str(tmp_path / "a")),
                         card_template=TOY_CARD, max_steps=2, options=RecipeOptions(max_train_samples=200))
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("bad, message", [
    ({"epsilon": 0}, "--dp-epsilon"), ({"epsilon": float("inf")}, "--dp-epsilon"),
    ({"epsilon": 8, "delta": 0.5}, "not below 1/n"), ({"epsilon": 8, "max_grad_norm": -1}, "--max-grad-norm"),
    ({"epsilon": 8, "clipping": "group"}, "--clipping"),
])
def test_bad_privacy_options_name_the_flag(bad, message):
    with pytest.raises(PrivacyError, match=message):
        PrivacyOptions(**bad).validate(train_size=100)


def test_cli_dp_flags_need_an_epsilon_and_report_refusals(capsys, tmp_path):
    from zoo.cli import main

    assert main(["finetune", "toy_tiny", "--dataset", "toy_halves", "--out", str(tmp_path / "x"),
                 "--clipping", "flat"]) == 2
    assert "add --dp-epsilon" in capsys.readouterr().err
    assert main(["finetune", "priorgrad_vocoder_ljspeech", "--dataset", "priorgrad_espeak", "--out",
                 str(tmp_path / "y"), "--dp-epsilon", "8"]) == 2
    assert "random crops of recorded sentences" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ DP-DDP
_DDP_SCRIPT = """
import sys, json
sys.path.insert(0, {repo!r})
import tests.toy
from zoo.private import PrivacyOptions, finetune_private, register_privacy_unit
register_privacy_unit("toy_halves", "one synthetic token")
metrics = finetune_private("toy_tiny", "toy_halves", {out!r}, PrivacyOptions(epsilon=4, delta=1e-3),
                           card_template={card!r}, max_steps=4, batch_size=16)
print("EPS", metrics["world_size"], repr(metrics["privacy"]["epsilon"]), metrics["privacy"]["steps"])
"""


def test_two_process_dp_run_spends_the_same_epsilon_as_one(tmp_path):
    single = finetune_private("toy_tiny", "toy_halves", tmp_path / "one", PrivacyOptions(epsilon=4, delta=1e-3),
                              card_template=TOY_CARD, max_steps=4, batch_size=16)
    script = tmp_path / "ddp_run.py"
    script.write_text(_DDP_SCRIPT.format(repo=str(REPO), out=str(tmp_path / "two"), card=str(TOY_CARD)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line.split() for line in result.stdout.splitlines() if line.startswith("EPS")]
    assert len(lines) == 2 and all(line[1] == "2" for line in lines)
    assert {float(line[2]) for line in lines} == {single["privacy"]["epsilon"]}
    saved = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert saved["world_size"] == 2 and saved["privacy"]["steps"] == single["privacy"]["steps"] == 4


def test_dmp_groupnorm_swap_keeps_the_checkpoint_affine_weights(tmp_path):
    from zoo.models.dmp import DmpConfig, DmpForSequenceClassification

    tiny = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, gnn_num_layers=2,
                gnn_hidden_size=12, num_labels=2)
    original = DmpForSequenceClassification(DmpConfig(**tiny))
    with torch.no_grad():
        original.dmp.gnn.norms[1].weight.uniform_(0.5, 1.5)
    original.save_pretrained(tmp_path / "bn")
    swapped = DmpForSequenceClassification.from_pretrained(tmp_path / "bn", gnn_norm="group", gnn_norm_groups=3)
    norm = swapped.dmp.gnn.norms[1]
    assert isinstance(norm, torch.nn.GroupNorm) and norm.num_groups == 3
    torch.testing.assert_close(norm.weight, original.dmp.gnn.norms[1].weight)
    swapped.save_pretrained(tmp_path / "gn")
    again = DmpForSequenceClassification.from_pretrained(tmp_path / "gn")
    assert again.config.gnn_norm == "group" and isinstance(again.dmp.gnn.norms[0], torch.nn.GroupNorm)
    with pytest.raises(ValueError, match="gnn_norm"):
        DmpConfig(gnn_norm="layer")


# ------------------------------------------------------------------------------------------ sparse embeddings
def _sparse_step(family, model, items, collator, clipping="flat", bound=1e9):
    """Opacus hooks + zoo's rules with the sparse embedding rule, one clip_and_accumulate (no noise), float64."""
    from opacus import GradSampleModule
    from opacus.optimizers import AdaClipDPOptimizer, DPOptimizer, DPPerLayerOptimizer

    adapter = dp_adapter(family)
    wrapped = GradSampleModule(model)
    adapter.attach(model)
    params = [p for p in model.parameters() if p.requires_grad]
    sgd = torch.optim.SGD(params, lr=0.1)
    if clipping == "per_layer":
        optimizer = DPPerLayerOptimizer(sgd, noise_multiplier=0.0, max_grad_norm=[bound / len(params) ** 0.5]
                                        * len(params), expected_batch_size=1)
    elif clipping == "adaptive":
        optimizer = AdaClipDPOptimizer(sgd, noise_multiplier=0.0, max_grad_norm=bound, expected_batch_size=1,
                                       target_unclipped_quantile=0.5, clipbound_learning_rate=0.2,
                                       max_clipbound=1.0, min_clipbound=1e-4, unclipped_num_std=1.0)
    else:
        optimizer = DPOptimizer(sgd, noise_multiplier=0.0, max_grad_norm=bound, expected_batch_size=1)
    switched = adapter.use_sparse_embeddings(model, optimizer)
    batch = collator(items)
    batch = {k: v.double() if torch.is_floating_point(v) else v for k, v in batch.items()}
    wrapped(**batch).loss.backward()
    adapter.after_backward(model, batch)
    complete_grad_samples(model, len(items))
    return adapter, wrapped, optimizer, switched


@pytest.mark.parametrize("name", ["graphormer", "dmp", "musicbert", "nasbert"])
def test_sparse_embedding_rule_equals_one_at_a_time_autograd(name):
    from zoo.private_rules import dense_from_sparse, sparse_per_sample_norms

    torch.manual_seed(0)
    family, model, items, collator = FAMILIES[name]()
    model = model.double().train()
    truth = _one_at_a_time(copy.deepcopy(model), items, collator)
    adapter, wrapped, _, switched = _sparse_step(family, model, items, collator)
    assert switched  # every family has embedding tables that take the sparse rule
    checked = 0
    for key, p in model.named_parameters():
        if not p.requires_grad:
            continue
        rows = p.__dict__.get("dp_sparse_rows")
        if rows is None:
            _assert_same(p.grad_sample, truth[key], key)
            continue
        assert p.grad_sample.shape == (len(items), 0)  # no dense per-example table was made
        _assert_same(dense_from_sparse(p), truth[key], key)
        torch.testing.assert_close(sparse_per_sample_norms(*rows, p.shape[0]), truth[key].flatten(1).norm(dim=1),
                                   atol=1e-6, rtol=1e-5)
        checked += truth[key].abs().sum() > 0
    assert checked
    adapter.detach(model)
    wrapped.remove_hooks()
    assert not any(type(m).__name__ == "_SparseEmbedding" for m in model.modules())


@pytest.mark.parametrize("clipping", ["flat", "per_layer", "adaptive"])
@pytest.mark.parametrize("name", ["nasbert", "graphormer"])
def test_sparse_clipping_equals_clipping_the_true_per_example_gradients(name, clipping):
    torch.manual_seed(0)
    family, model, items, collator = FAMILIES[name]()
    model = model.double().train()
    truth = _one_at_a_time(copy.deepcopy(model), items, collator)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    bound = 0.05
    norms = torch.stack([truth[n].flatten(1).norm(dim=1) for n in names], dim=1)  # [examples, tensors]
    assert (norms.norm(dim=1) > bound).all()  # every example is clipped
    if clipping == "per_layer":
        factors = (bound / len(names) ** 0.5 / (norms + 1e-6)).clamp(max=1.0)
    else:
        factors = (bound / (norms.norm(dim=1, keepdim=True) + 1e-6)).clamp(max=1.0).expand_as(norms)
    expected = {n: torch.einsum("i,i...", factors[:, j], truth[n]) for j, n in enumerate(names)}
    adapter, wrapped, optimizer, _ = _sparse_step(family, model, items, collator, clipping, bound)
    optimizer.clip_and_accumulate()
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.summed_grad, expected[n], atol=1e-6, rtol=1e-5, msg=lambda m, k=n: f"{k}: {m}")
    if clipping == "adaptive":
        assert optimizer.sample_size == len(items) and int(optimizer.unclipped_num) == 0
    adapter.detach(model)
    wrapped.remove_hooks()
    for index in range(len(items)):  # one example alone: its clipped gradient is within the bound
        model.zero_grad(set_to_none=True)
        adapter, wrapped, optimizer, _ = _sparse_step(family, model, items[index:index + 1], collator, clipping, bound)
        optimizer.clip_and_accumulate()
        clipped = [p.summed_grad for p in model.parameters() if p.requires_grad]
        assert torch.cat([c.flatten() for c in clipped]).norm() <= bound * (1 + 1e-5)
        if clipping == "per_layer":
            assert all(c.norm() <= bound / len(names) ** 0.5 * (1 + 1e-5) for c in clipped)
        optimizer.zero_grad(set_to_none=True)
        adapter.detach(model)
        wrapped.remove_hooks()
