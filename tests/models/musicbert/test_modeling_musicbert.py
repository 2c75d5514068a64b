"""MusicBERT models: shared mixin checks, parity with the original (via the converter), masking collator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import zoo  # noqa: F401
from conversion.convert_musicbert import convert
from tests.model_tester import ModelTesterMixin
from zoo.models.musicbert import (
    DataCollatorForOctupleMasking,
    MusicBertConfig,
    MusicBertForMaskedLM,
    MusicBertForPairClassification,
    MusicBertForSequenceClassification,
    MusicBertModel,
    OctupleMidiTokenizer,
)
from zoo.models.musicbert.masking_musicbert import bar_mask, original_seed

from .fixture_cases import cases

MODEL_CASES = cases("MusicBERT forward parity")
MASKING_CASES = cases("bar-level masking")


class TestMusicBertModel(ModelTesterMixin):
    family = "musicbert"

    def get_config(self):
        return MusicBertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                               max_positions=64, num_labels=3)

    def get_inputs(self, model_class, config, with_labels):
        from zoo.catalog.musicbert import musicbert_dummy_inputs

        inputs = musicbert_dummy_inputs(config, model_class)
        if not with_labels:
            inputs.pop("labels", None)
        return inputs

    def test_multi_label_head(self):
        config = self.get_config()
        config.problem_type = "multi_label_classification"
        model = MusicBertForSequenceClassification(config)
        inputs = self.get_inputs(MusicBertForSequenceClassification, config, with_labels=True)
        assert inputs["labels"].dtype == torch.float32
        output = model(**inputs)
        expected = torch.nn.functional.binary_cross_entropy_with_logits(output.logits, inputs["labels"])
        torch.testing.assert_close(output.loss, expected)

    def test_hidden_states_per_layer_and_attention_implementations(self):
        torch.manual_seed(0)
        config = self.get_config()
        inputs = self.get_inputs(MusicBertModel, config, with_labels=False)
        sdpa = MusicBertModel(config).eval()
        eager_config = self.get_config()
        eager_config._attn_implementation = "eager"
        eager = MusicBertModel(eager_config).eval()
        eager.load_state_dict(sdpa.state_dict())
        with torch.no_grad():
            a = sdpa(**inputs, output_hidden_states=True)
            b = eager(**inputs, output_attentions=True)
        assert len(a.hidden_states) == config.num_hidden_layers + 1
        assert a.hidden_states[-1].shape == (2, inputs["input_ids"].shape[1] // 8, config.hidden_size)
        assert a.last_hidden_state.shape == (*inputs["input_ids"].shape, config.hidden_size)
        torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, atol=1e-5, rtol=1e-5)
        assert b.attentions[0][1, :, :, 3:].abs().max() == 0 and b.attentions[0][1, :, :, :3].sum(-1).allclose(torch.ones(1))

    def test_padding_does_not_change_real_notes(self):
        torch.manual_seed(0)
        model = MusicBertModel(self.get_config()).eval()
        tok = OctupleMidiTokenizer()
        ids = torch.tensor([tok.octuples_to_ids([(0, 0, 0, 60, 8, 20, 9, 31)])])
        padded = torch.cat([ids, torch.ones(1, 16, dtype=torch.long)], dim=1)
        with torch.no_grad():
            torch.testing.assert_close(model(padded).last_hidden_state[:, :24], model(ids).last_hidden_state,
                                       atol=1e-6, rtol=1e-5)

    def test_bad_input_shapes(self):
        model = MusicBertModel(self.get_config())
        with pytest.raises(ValueError, match="multiple|8 \\* notes"):
            model(torch.zeros(1, 12, dtype=torch.long))
        with pytest.raises(ValueError, match="max_positions"):
            model(torch.zeros(1, 8 * 65, dtype=torch.long))

    def test_masking_collator_in_trainer_batch(self):
        tok = OctupleMidiTokenizer()
        rows = [tok.octuples_to_ids([(b, 0, 0, 60 + b, 8, 20, 9, 31) for b in range(n)]) for n in (30, 5)]
        torch.manual_seed(0)
        batch = DataCollatorForOctupleMasking(tok)([{"input_ids": r} for r in rows])
        assert batch["input_ids"].shape == batch["labels"].shape == (2, 8 * 32)
        assert (batch["labels"][1, 8 * 7:] == -100).all() and (batch["input_ids"][1, 8 * 7:] == 1).all()
        targets = batch["labels"] != -100
        assert targets.any()
        original = torch.full_like(batch["labels"], 1)
        original[0, :len(rows[0])] = torch.tensor(rows[0])
        original[1, :len(rows[1])] = torch.tensor(rows[1])
        assert (batch["labels"][targets] == original[targets]).all()
        assert (batch["input_ids"][~targets] == original[~targets]).all()
        loss = MusicBertForMaskedLM(self.get_config())(**batch).loss
        assert torch.isfinite(loss)


@pytest.mark.parametrize("folder,meta", [c.values for c in MASKING_CASES], ids=[c.id for c in MASKING_CASES])
def test_bar_masking_matches_original(folder, meta):
    expected = load_file(str(folder / "masking_expected.safetensors"))
    tokenizer = OctupleMidiTokenizer()
    lines = (folder / "input_token_lines.txt").read_text().splitlines()
    for index, line in enumerate(lines):
        ids = tokenizer.convert_tokens_to_ids(line.split()) + [tokenizer.eos_token_id]
        assert ids == expected[f"item{index}_input"].tolist()
        for epoch in meta["epochs"]:
            seed = original_seed(meta["seed"], epoch, index)
            assert seed == meta["derived_numpy_seeds"][f"epoch{epoch}_item{index}"]
            masked, decisions = bar_mask(
                np.asarray(ids), np.random.RandomState(seed), meta["vocab_size"], meta["mask_idx"],
                meta["mask_prob"], meta["leave_unmasked_prob"], meta["random_token_prob"],
            )
            assert masked.tolist() == expected[f"epoch{epoch}_item{index}_source"].tolist()
            target = np.where(decisions > 0, ids, meta["pad_idx"])
            assert target.tolist() == expected[f"epoch{epoch}_item{index}_target"].tolist()


def _checkpoints(folder):
    return sorted(folder.glob("*.pt"))


@pytest.mark.parametrize("folder,meta", [c.values for c in MODEL_CASES], ids=[c.id for c in MODEL_CASES])
def test_converted_checkpoints_match_original(folder, meta, tmp_path):
    expected = load_file(str(folder / "expected_outputs.safetensors"))
    tol = meta["tolerance"]
    checkpoints = _checkpoints(folder)
    assert len(checkpoints) == len(meta["checkpoints"])
    tokenizer = OctupleMidiTokenizer()
    for row, line in zip(expected["input_ids"], (folder / "input_token_lines.txt").read_text().splitlines()):
        ids = tokenizer.convert_tokens_to_ids(line.split()) + [tokenizer.eos_token_id]
        assert row[:len(ids)].tolist() != [] and len(ids) <= len(row)
    for checkpoint in checkpoints:
        out = tmp_path / checkpoint.stem
        label_dict = folder / meta["finetune"]["label_dict_file"] if "classification_heads" in str(
            meta["checkpoints"][checkpoint.name]["model_state_dict"]) else None
        record = convert(checkpoint, out, label_dict=label_dict, expected=folder / "expected_outputs.safetensors")
        assert record["parity"]["ok"], record["parity"]
        model_class = MusicBertForSequenceClassification if label_dict else MusicBertForMaskedLM
        model = model_class.from_pretrained(out).eval()
        with torch.no_grad():
            base = model.musicbert(expected["input_ids"], output_hidden_states=True)
            torch.testing.assert_close(base.last_hidden_state, expected["features"], atol=tol["atol"], rtol=tol["rtol"])
            torch.testing.assert_close(base.octuple_hidden_state, expected["compound_hidden"],
                                       atol=tol["atol"], rtol=tol["rtol"])
            logits = model(expected["input_ids"]).logits
        name = "classification_logits" if label_dict else "mlm_logits"
        torch.testing.assert_close(logits, expected[name], atol=tol["atol"], rtol=tol["rtol"])
        if label_dict:
            labels = [line.split()[0] for line in label_dict.read_text().splitlines()]
            assert [model.config.id2label[i] for i in range(len(labels))] == labels
            assert model.config.problem_type == "multi_label_classification"
        assert (out / "dict.txt").is_file() and (out / "README.md").is_file() and (out / "conversion.json").is_file()
        assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))


def test_pair_head_uses_both_pieces():
    torch.manual_seed(0)
    config = MusicBertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             max_positions=64)
    model = MusicBertForPairClassification(config).eval()
    tok = OctupleMidiTokenizer()
    first = tok.octuples_to_ids([(0, 0, 0, 60, 8, 20, 9, 31)], add_special_tokens=False)
    second = [tok.octuples_to_ids([(1, 0, 0, p, 8, 20, 9, 31)], add_special_tokens=False) for p in (62, 70)]
    ids = torch.tensor([tok.build_inputs_with_special_tokens(first, s) for s in second])
    assert ids.shape == (2, 8 * 6)
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (2, 2) and not torch.allclose(logits[0], logits[1])


@pytest.mark.parametrize("folder,meta", [c.values for c in MODEL_CASES], ids=[c.id for c in MODEL_CASES])
def test_converter_cli_and_pair_head(folder, meta, tmp_path, capsys):
    from conversion.convert_musicbert import main

    finetuned = next(p for p in _checkpoints(folder) if "classification_heads" in str(
        meta["checkpoints"][p.name]["model_state_dict"]))
    assert main([str(finetuned), str(tmp_path / "pair"), "--pair", "--head-name", meta["finetune"][
        "classification_head_name"]]) == 0
    model = MusicBertForPairClassification.from_pretrained(tmp_path / "pair").eval()
    expected = load_file(str(folder / "expected_outputs.safetensors"))
    with torch.no_grad():
        logits = model(expected["input_ids"]).logits
    # the pair head is the same fairseq classification head, so it reproduces the head's logits
    torch.testing.assert_close(logits, expected["classification_logits"], atol=meta["tolerance"]["atol"],
                               rtol=meta["tolerance"]["rtol"])
    capsys.readouterr()
    assert main([str(finetuned), str(tmp_path / "x"), "--head-name", "other"]) == 2
    assert "no classification head 'other'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
