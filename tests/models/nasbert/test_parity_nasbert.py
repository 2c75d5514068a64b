"""Reference fixtures (tests/fixtures/nasbert/*/meta.json), checked by what each case declares.

- `.tsm` cases (meta has "file" + "tensors"): the reader yields exactly the declared keys, order, shapes
  and bytes; the converter maps every key into a zoo model (none missing or unexpected).
- layout cases (meta has "checkpoints"): the model built from each released arches has exactly the
  released keys and shapes, parameter count and float32 file size; the op table matches.
- tokenizer cases (meta has "num_cases"): every encoding is reproduced exactly.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conversion.convert_nasbert import convert, infer_config, key_table, split_model_stream
from conversion.torchsharp import read_tsm
from tests.fixture_cases import BrokenCase
from tests.models.nasbert._fixtures import FAMILY
from zoo.models.nasbert import NasBertConfig, NasBertModel, NasBertTokenizer, build_op_table

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "nasbert"
# ML.NET's NasBertTrainer cuts every framed input to this many ids (a constant of its C# code, not of a case)
MLNET_MAX_IDS = 512


def _cases(kind):
    """pytest params (case folder, meta) of a kind; discovery failures stay in as failing params."""
    params = []
    for param in FAMILY.cases(kind):
        value = param.values[0]
        if isinstance(value, BrokenCase):
            params.append(pytest.param(value, None, id=param.id))
        else:
            params.append(pytest.param(value.folder, value.meta, id=param.id))
    return params


TSM_CASES = _cases("tsm")
LAYOUT_CASES = _cases("layout")
TOKENIZER_CASES = _cases("encodings")


@pytest.mark.parametrize("folder, meta", TSM_CASES)
def test_tsm_reads_bit_exact(folder, meta):
    path = folder / meta["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == meta["file_sha256"]
    state = read_tsm(path)
    assert len(state) == meta["num_entries"]
    assert list(state) == [t["key"] for t in meta["tensors"]]
    for spec in meta["tensors"]:
        tensor = state[spec["key"]]
        assert list(tensor.shape) == spec["shape"], spec["key"]
        assert str(tensor.dtype).removeprefix("torch.") == spec["dtype"]
        le = tensor.numpy().astype(tensor.numpy().dtype.newbyteorder("<")).tobytes()
        assert hashlib.sha256(le).hexdigest() == spec["sha256_le_bytes"], spec["key"]
    expected = load_file(folder / "expected_state_dict.safetensors")
    assert expected.keys() == state.keys()
    for key, tensor in expected.items():
        torch.testing.assert_close(state[key], tensor, atol=meta["atol"], rtol=meta["rtol"], msg=key)
    if meta["expected_outputs"] is not None:
        pytest.fail(f"{folder}: meta.json declares expected_outputs {meta['expected_outputs']!r}, which no test "
                    "checks yet (the cases so far have no reference forward: ML.NET could not be run)")
    assert sum(t.numel() for t in state.values()) == meta["num_parameters"]


@pytest.mark.parametrize("folder, meta", TSM_CASES)
def test_tsm_converts_with_every_key_mapped(folder, meta, tmp_path):
    original = meta["original_config"]["NasBertEncoder"]
    state = read_tsm(folder / meta["file"])
    head, encoder = split_model_stream(state, meta["file"])
    config = infer_config(encoder)
    assert config.vocab_size == original["vocabSize"]
    assert config.embedding_size == original["embedSize"]
    assert config.max_position_embeddings == original["maxSeqLen"]
    assert config.block_hidden_sizes == meta["original_config"]["derived"]["HiddenSizePerBlock"]
    expected_ops = [op.name for op in NasBertConfig(arches=original["arches"]).layer_ops()]
    assert [op.name for op in config.layer_ops()] == expected_ops
    if "head" in meta["original_config"]:
        assert head == meta["original_config"]["head"]["name"]
    assert set(key_table(config, head)) == set(state)

    folder_out = convert(folder / meta["file"], tmp_path / "out")
    from transformers import AutoModel, AutoModelForSequenceClassification

    auto = AutoModelForSequenceClassification if head else AutoModel
    model, info = auto.from_pretrained(folder_out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    table = key_table(config, head)
    loaded = model.state_dict()
    for original_key, zoo_key in table.items():
        assert torch.equal(loaded[zoo_key], state[original_key]), original_key
    assert sum(p.numel() for p in model.parameters()) == meta["num_parameters"]
    conversion = json.loads((folder_out / "conversion.json").read_text())
    assert conversion["source_sha256"] == meta["file_sha256"]
    assert conversion["forward_check"]["reload_forward_max_abs_diff"] == 0.0


def _tsm_float32_bytes(layout: list[dict]) -> int:
    def leb(n):
        return max(1, (n.bit_length() + 6) // 7)

    size = leb(len(layout))
    for entry in layout:
        key = entry["key"].encode()
        size += leb(len(key)) + len(key) + leb(6) + leb(len(entry["shape"]))
        size += sum(leb(d) for d in entry["shape"]) + 4 * int(np.prod(entry["shape"]))
    return size


@pytest.mark.parametrize("folder, meta", LAYOUT_CASES)
def test_released_layouts_are_reproduced(folder, meta):
    layouts = json.loads((folder / meta["file"]).read_text())
    for name, expected in meta["checkpoints"].items():
        released = layouts["checkpoints"][name]
        original = released["config"]
        config = NasBertConfig(vocab_size=original["vocabSize"], embedding_size=original["embedSize"],
                               max_position_embeddings=original["maxSeqLen"], arches=original["arches"])
        assert config.block_hidden_sizes == released["hidden_per_block"]
        assert config.hidden_size == original["EncoderOutputDim"]
        assert [op.name if op.kind != "identity" else "identity@-" for op in config.layer_ops()] == \
            released["ops_readable"]
        with torch.device("meta"):
            model = NasBertModel(config)
        shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
        table = key_table(config)
        assert sorted(table) == sorted(e["key"] for e in released["state_dict"])
        for entry in released["state_dict"]:
            assert shapes[table[entry["key"]]] == entry["shape"], entry["key"]
        assert set(table.values()) == set(shapes)
        assert len(table) == expected["entries"] == released["num_entries"]
        assert sum(p.numel() for p in model.parameters()) == expected["parameters"]
        assert _tsm_float32_bytes(released["state_dict"]) == expected["float32_file_bytes"]


@pytest.mark.parametrize("folder, meta", LAYOUT_CASES)
def test_fine_tuned_model_stream_layouts(folder, meta):
    layouts = json.loads((folder / meta["file"]).read_text())
    streams = [v for k, v in layouts["checkpoints"].items() if k.startswith("TSModel")]
    assert streams
    for stream in streams:
        head_key, head_shape = stream["state_dict"][0]["key"], stream["state_dict"][0]["shape"]
        head = head_key.rsplit(".", 1)[0]
        encoder_name = "NasBert2000000.tsm" if head.startswith("PredictionHead") else \
            "pretrained_NasBert_14M_encoder.tsm"
        original = layouts["checkpoints"][encoder_name]["config"]
        config = NasBertConfig(embedding_size=original["embedSize"], arches=original["arches"],
                               num_labels=head_shape[0])
        table = key_table(config, head)
        assert len(table) == stream["num_entries"]
        assert table[head_key] == "classifier.weight" and head_shape == [head_shape[0], config.hidden_size]
        encoder_params = layouts["checkpoints"][encoder_name]["num_parameters"]
        assert encoder_params + head_shape[0] * (config.hidden_size + 1) == stream["num_parameters"]


@pytest.mark.parametrize("folder, meta", LAYOUT_CASES)
def test_op_table_matches(folder, meta):
    layouts = json.loads((folder / meta["file"]).read_text())
    ops = build_op_table("mlnet")
    assert len(ops) == len(layouts["op_table"]) == 30
    config = NasBertConfig(embedding_size=32)
    from zoo.models.nasbert.modeling_nasbert import build_op

    for spec, op in zip(layouts["op_table"], ops):
        assert spec["kind"] == op.kind
        if op.kind != "identity":
            assert (spec["width"], spec.get("kernel", 0)) == (op.width, op.kernel)
            with torch.device("meta"):
                module = build_op(op, config)
            assert sum(p.numel() for p in module.parameters()) == spec["params"], op.name
            if op.kind == "mha":
                assert module.num_heads == spec["heads"]
            if op.kind == "ffn":
                assert module.fc1.out_features == spec["ffn_dim"]


@pytest.fixture(scope="module")
def tokenizers():
    vocab = FIXTURES / "vocab"
    files = (vocab / "encoder.json", vocab / "vocab.bpe", vocab / "dict.txt")
    return {
        "fairseq": NasBertTokenizer.from_files(*files),
        "mlnet": NasBertTokenizer.from_files(*files, framing="mlnet"),
        "mlnet_bug": NasBertTokenizer.from_files(*files, framing="mlnet", mlnet_bug_compat=True),
    }


def _tokenizer_cases():
    params = []
    for folder, meta in ((p.values[0], p.values[1]) for p in TOKENIZER_CASES):
        if isinstance(folder, BrokenCase):
            params.append(pytest.param(folder, None, id=f"{folder.where}"))
            continue
        for case in json.loads((folder / "cases.json").read_text()):
            params.append(pytest.param(case, meta, id=f"{folder.name}-{case['id']}"))
    return params


@pytest.mark.parametrize("case, meta", _tokenizer_cases())
def test_tokenizer_matches_fixture(case, meta, tokenizers):
    fairseq = tokenizers["fairseq"]
    text, pair = case["text"], case.get("text_b")
    model_to_gpt2 = {m: g for g, m in fairseq.gpt2_to_model.items()}
    for key, value in (("", text), ("_b", pair)):
        if value is None:
            continue
        ids = fairseq(value, add_special_tokens=False)["input_ids"]
        assert ids == case["dict_ids" + key]
        assert [model_to_gpt2[i] for i in ids] == case["gpt2_ids" + key]
    if "bpe_tokens" in case:
        assert fairseq.tokenize(text) == case["bpe_tokens"]
    assert fairseq(text, pair)["input_ids"] == case["fairseq_roberta_input_ids"]
    assert tokenizers["mlnet"](text, pair, truncation=True, max_length=MLNET_MAX_IDS)["input_ids"] == \
        case["mlnet_framing_input_ids"]
    if case.get("mlnet_exact_input_ids_DERIVED") is not None:
        got = tokenizers["mlnet_bug"](text, pair, truncation=True, max_length=MLNET_MAX_IDS)["input_ids"]
        assert got == case["mlnet_exact_input_ids_DERIVED"]


@pytest.mark.parametrize("folder, meta", TOKENIZER_CASES)
def test_tokenizer_inputs_file_matches_cases(folder, meta):
    inputs = [json.loads(line) for line in (folder / "inputs.txt").read_text().splitlines() if line.strip()]
    cases = json.loads((folder / "cases.json").read_text())
    assert len(cases) == len(inputs) == meta["num_cases"]
    for given, case in zip(inputs, cases, strict=True):
        assert (given["id"], given["text"], given["text_b"]) == (case["id"], case["text"], case.get("text_b"))


@pytest.mark.parametrize("folder, meta", TOKENIZER_CASES)
def test_tokenizer_vocabulary(folder, meta, tokenizers):
    tok = tokenizers["fairseq"]
    for token, index in meta["special_ids"].items():
        if token == "vocab_size":
            assert len(tok) == index
        else:
            assert tok.convert_tokens_to_ids(token) == index
    for name, digest in meta["vocab_file_sha256"].items():
        assert hashlib.sha256((FIXTURES / "vocab" / name).read_bytes()).hexdigest() == digest
