"""MusicBERT models: shared mixin checks, parity with the original (via the converter), masking collator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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

from .fixture_cases import HEAD_PREFIX, MODEL_OUTPUTS, PROBLEM_TYPES, cases, head_names

MODEL_CASES = cases("model")
MASKING_CASES = cases("masking")


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


@pytest.mark.parametrize("case", MASKING_CASES)
def test_bar_masking_matches_original(case):
    meta = case.meta
    expected = case.tensors("masking_expected.safetensors")
    tokenizer = OctupleMidiTokenizer(vocab_file=str(case.file("dict.txt")))  # the case's fairseq dictionary
    assert (len(tokenizer), tokenizer.mask_token_id, tokenizer.pad_token_id) == (
        meta["vocab_size"], meta["mask_idx"], meta["pad_idx"])
    lines = case.file("input_token_lines.txt").read_text().splitlines()
    items = {key.split("_")[0] for key in expected if key.startswith("item")}
    assert len(lines) == len(items), f"{case.where}: {len(lines)} token lines, expected file has items {sorted(items)}"
    compared = set()
    for index, line in enumerate(lines):
        ids = tokenizer.convert_tokens_to_ids(line.split()) + [tokenizer.eos_token_id]
        assert ids == expected[f"item{index}_input"].tolist(), f"{case.where}: line {index}"
        compared.add(f"item{index}_input")
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
            compared |= {f"epoch{epoch}_item{index}_source", f"epoch{epoch}_item{index}_target"}
    assert compared == set(expected), f"{case.where}: entries no test compares: {sorted(set(expected) - compared)}"


def _model_outputs(model, input_ids):
    """Every output a model case can hold (MODEL_OUTPUTS), computed by the converted model."""
    captured = {}
    base = model.musicbert
    hooks = [base.downsampling.register_forward_hook(lambda m, i, o: captured.__setitem__("downsampled", o)),
             base.emb_layer_norm.register_forward_hook(lambda m, i, o: captured.__setitem__("emb_layer_norm_out", o))]
    try:
        with torch.no_grad():
            out = base(input_ids)
            got = {"features": out.last_hidden_state, "compound_hidden": out.octuple_hidden_state, **captured,
                   "attention_mask_compound": base._octuple_mask(input_ids, None).long()}
            if hasattr(model, "lm_head"):
                got["mlm_logits"] = model(input_ids).logits
            else:
                got["classification_logits"] = model(input_ids).logits
    finally:
        for hook in hooks:
            hook.remove()
    return got


def _expected_rows(case, tokenizer):
    """The batch the case's inputs describe: each token line (+ </s>), its recorded <mask> substitutions, <pad>."""
    lines = case.file("input_token_lines.txt").read_text().splitlines()
    rows = case.meta["inputs"]["rows"]
    assert len(lines) == len(rows), f"{case.where}: {len(lines)} token lines, meta.json describes {len(rows)} rows"
    built = []
    for line, row in zip(lines, rows):
        ids = tokenizer.convert_tokens_to_ids(line.split()) + [tokenizer.eos_token_id]
        assert tokenizer.unk_token_id not in ids, f"{case.where}: a token of {line[:40]!r}... is not in dict.txt"
        assert len(ids) == row["length"], f"{case.where}: {row}"
        for position, _what in row["mask"]:
            ids[position] = tokenizer.mask_token_id
        built.append(ids)
    return built


@pytest.mark.parametrize("case", MODEL_CASES)
def test_converted_checkpoints_match_original(case, tmp_path):
    meta = case.meta
    expected = case.tensors("expected_outputs.safetensors")
    unknown = sorted(set(expected) - set(MODEL_OUTPUTS))
    assert not unknown, f"{case.where}: expected_outputs.safetensors holds {unknown}, which no test knows how to compute"
    assert set(expected) == set(meta["outputs"]), f"{case.where}: meta.json outputs differ from the expected file"
    tol = meta["tolerance"]
    tokenizer = OctupleMidiTokenizer(vocab_file=str(case.file("dict.txt")))
    assert len(tokenizer) == meta["derived"]["vocab_size"] and tokenizer.mask_token_id == meta["derived"]["mask"]
    input_ids = expected["input_ids"]
    rows = _expected_rows(case, tokenizer)
    width = max(len(r) for r in rows)
    assert list(input_ids.shape) == [len(rows), width], f"{case.where}: input_ids {list(input_ids.shape)}"
    for index, ids in enumerate(rows):  # element-wise: the line, then <pad> only
        assert input_ids[index].tolist() == ids + [tokenizer.pad_token_id] * (width - len(ids)), \
            f"{case.where}: input_ids row {index} is not line {index} of input_token_lines.txt (+ masks, padding)"

    finetune = meta.get("finetune")
    compared = {"input_ids"}
    for name, info in meta["checkpoints"].items():
        checkpoint = case.file(name)
        heads = head_names(info)
        out = tmp_path / checkpoint.stem
        label_dict = case.file(finetune["label_dict_file"]) if heads and finetune.get("label_dict_file") else None
        record = convert(checkpoint, out, label_dict=label_dict, expected=case.file("expected_outputs.safetensors"))
        assert record["parity"]["ok"], record["parity"]
        model_class = MusicBertForSequenceClassification if heads else MusicBertForMaskedLM
        model = model_class.from_pretrained(out).eval()
        shapes = info["model_state_dict"]
        assert model.config.vocab_size == shapes["encoder.sentence_encoder.embed_tokens.weight"][0]
        assert model.config.hidden_size == shapes["encoder.sentence_encoder.embed_tokens.weight"][1]
        if heads:
            assert model.config.problem_type == PROBLEM_TYPES[finetune["task"]]
            assert model.config.num_labels == finetune["num_classes"] == \
                shapes[f"{HEAD_PREFIX}{heads[0]}.out_proj.weight"][0]
            if label_dict is not None:
                labels = [line.split()[0] for line in label_dict.read_text().splitlines() if line.strip()]
                assert [model.config.id2label[i] for i in range(model.config.num_labels)] == labels
        got = _model_outputs(model, input_ids)
        for key in sorted(set(got) & set(expected)):
            torch.testing.assert_close(got[key].to(expected[key].dtype), expected[key], atol=tol["atol"],
                                       rtol=tol["rtol"], msg=lambda m, key=key, name=name: f"{name} {key}: {m}")
            compared.add(key)
        assert (out / "dict.txt").is_file() and (out / "README.md").is_file() and (out / "conversion.json").is_file()
        assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    assert compared == set(expected), f"{case.where}: no checkpoint of the case produces {sorted(set(expected) - compared)}"


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


@pytest.mark.parametrize("case", MODEL_CASES)
def test_converter_cli_and_pair_head(case, tmp_path, capsys):
    from conversion.convert_musicbert import main

    finetuned = [name for name, info in case.meta["checkpoints"].items() if head_names(info)]
    assert finetuned or "classification_logits" not in case.meta["outputs"]
    expected = case.tensors("expected_outputs.safetensors")
    for name in finetuned:
        head = head_names(case.meta["checkpoints"][name])[0]
        assert main([str(case.file(name)), str(tmp_path / "pair"), "--pair", "--head-name", head, "--overwrite"]) == 0
        model = MusicBertForPairClassification.from_pretrained(tmp_path / "pair").eval()
        with torch.no_grad():
            logits = model(expected["input_ids"]).logits
        # the pair head is the same fairseq classification head, so it reproduces the head's logits
        torch.testing.assert_close(logits, expected["classification_logits"], atol=case.meta["tolerance"]["atol"],
                                   rtol=case.meta["tolerance"]["rtol"])
        capsys.readouterr()
        assert main([str(case.file(name)), str(tmp_path / "x"), "--head-name", head + "_other"]) == 2
        assert f"no classification head '{head}_other'" in capsys.readouterr().err
        assert not (tmp_path / "x").exists()
