"""TorchSharp reader and converter: round trips, bad input, registry entries."""

import json
from pathlib import Path

import pytest
import torch

import zoo
from conversion.convert_nasbert import ConversionError, convert, main
from conversion.torchsharp import TsmReadError, read_tsm, tsm_bytes, write_tsm
from tests.models.nasbert._fixtures import first_layout, first_tsm
from zoo.models.nasbert import NasBertConfig, NasBertTokenizer

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "nasbert"
ENCODER = first_tsm(with_head=False)
STREAM = first_tsm(with_head=True)


def test_writer_round_trips_every_dtype(tmp_path):
    state = {
        "f32": torch.randn(2, 3), "f16": torch.randn(4).half(), "bf16": torch.randn(3).bfloat16(),
        "f64": torch.randn(2, dtype=torch.float64), "i64": torch.arange(5), "u8": torch.arange(3, dtype=torch.uint8),
        "b": torch.tensor([True, False]), "scalar": torch.tensor(1.5), "empty": torch.zeros(0, 4),
        "ключ": torch.ones(200),  # non-ASCII key, multi-byte LEB128 length and dim
    }
    path = write_tsm(tmp_path / "x.tsm", state)
    back = read_tsm(path)
    assert list(back) == list(state)
    for key, tensor in state.items():
        assert back[key].dtype == tensor.dtype and torch.equal(back[key], tensor), key


def test_reader_reproduces_fixture_bytes():
    assert tsm_bytes(read_tsm(ENCODER)) == ENCODER.read_bytes()


@pytest.mark.parametrize("cut", [1, 7, 100, 5000, -1])
def test_truncated_tsm_is_a_clear_error(tmp_path, cut):
    data = ENCODER.read_bytes()
    path = tmp_path / "cut.tsm"
    path.write_bytes(data[:cut] if cut > 0 else data[:cut])
    with pytest.raises(TsmReadError, match=r"cut\.tsm: .*(ends inside|needs \d+ bytes)"):
        read_tsm(path)


def test_empty_missing_and_trailing_bytes(tmp_path):
    (tmp_path / "empty.tsm").write_bytes(b"")
    with pytest.raises(TsmReadError, match="empty"):
        read_tsm(tmp_path / "empty.tsm")
    with pytest.raises(TsmReadError, match="no such file"):
        read_tsm(tmp_path / "absent.tsm")
    (tmp_path / "extra.tsm").write_bytes(ENCODER.read_bytes() + b"\x00\x01")
    with pytest.raises(TsmReadError, match="2 unexpected bytes after the 48 declared entries"):
        read_tsm(tmp_path / "extra.tsm")


def test_unknown_dtype_code_is_named(tmp_path):
    data = bytearray(tsm_bytes({"w": torch.ones(2)}))
    assert data[3] == 6  # count, key length, 'w', element type
    data[3] = 9  # complex64: not a type TorchSharp checkpoints of NAS-BERT use
    (tmp_path / "odd.tsm").write_bytes(bytes(data))
    with pytest.raises(TsmReadError, match="'w' has unknown element type code 9"):
        read_tsm(tmp_path / "odd.tsm")


def test_duplicate_key_and_bad_leb128(tmp_path):
    single = tsm_bytes({"w": torch.ones(1)})[1:]
    (tmp_path / "dup.tsm").write_bytes(b"\x02" + single + single)
    with pytest.raises(TsmReadError, match="'w' appears twice"):
        read_tsm(tmp_path / "dup.tsm")
    (tmp_path / "leb.tsm").write_bytes(b"\xff" * 12)
    with pytest.raises(TsmReadError, match="not a valid LEB128"):
        read_tsm(tmp_path / "leb.tsm")


def test_missing_key_is_named(tmp_path):
    state = read_tsm(ENCODER)
    del state["Layers.2.Operation.LayerNorm2.bias"]
    write_tsm(tmp_path / "missing.tsm", state)
    with pytest.raises(ConversionError, match=r"missing \['Layers\.2\.Operation\.LayerNorm2\.bias'\]"):
        convert(tmp_path / "missing.tsm", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unexpected_key_is_named(tmp_path):
    state = read_tsm(ENCODER)
    state["Layers.0.Operation.Extra.weight"] = torch.ones(2)
    write_tsm(tmp_path / "extra.tsm", state)
    with pytest.raises(ConversionError, match=r"unexpected \['Layers\.0\.Operation\.Extra\.weight'\]"):
        convert(tmp_path / "extra.tsm", tmp_path / "out")


def test_wrong_shape_is_named(tmp_path):
    state = read_tsm(ENCODER)
    state["EmbeddingLayerNorm.bias"] = torch.zeros(31)
    write_tsm(tmp_path / "shape.tsm", state)
    with pytest.raises(ConversionError, match=r"'embeddings\.layer_norm\.bias' has shape \(31,\)"):
        convert(tmp_path / "shape.tsm", tmp_path / "out")


def test_not_a_nasbert_checkpoint(tmp_path):
    write_tsm(tmp_path / "other.tsm", {"fc.weight": torch.ones(2, 2)})
    with pytest.raises(ConversionError, match="missing 'TokenEmbedding.weight'"):
        convert(tmp_path / "other.tsm", tmp_path / "out")


def test_variant_mismatch_is_reported(tmp_path):
    with pytest.raises(ConversionError, match="does not match variant 'nasbert5_mlnet'"):
        convert(ENCODER, tmp_path / "out", variant="nasbert5_mlnet")


def test_cli_writes_complete_folder_and_refuses_overwrite(tmp_path, capsys):
    assert main([str(STREAM), str(tmp_path / "cls")]) == 0
    files = {p.name for p in (tmp_path / "cls").iterdir()}
    assert {"config.json", "model.safetensors", "conversion.json", "README.md"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    conversion = json.loads((tmp_path / "cls" / "conversion.json").read_text())
    assert conversion["head"] == "PredictionHead.Classifier.dense" and conversion["tensors"] == 30
    readme = (tmp_path / "cls" / "README.md").read_text()
    assert "tsmodel.bin" in readme and "sepconv5@128, mha@128" in readme
    with pytest.raises(FileExistsError):
        main([str(STREAM), str(tmp_path / "cls")])
    assert main([str(STREAM), str(tmp_path / "cls"), "--overwrite"]) == 0


def test_tokenizer_written_only_for_matching_vocabulary(tmp_path):
    with pytest.raises(ConversionError, match="the tokenizer has 50265 ids but .* embeds 64"):
        convert(ENCODER, tmp_path / "out", vocab_dir=FIXTURES / "vocab")


def test_registry_entries_match_released_counts():
    layouts = json.loads(first_layout().read_text())["checkpoints"]
    names = zoo.list_models("nasbert*", pretrained=True)
    assert {"nasbert5_mlnet", "nasbert_14m_mlnet_ner"} <= set(names)
    for name in names:
        entry = zoo.model_info(name)
        released = layouts[entry.original.filename]
        config = NasBertConfig(**entry.config)
        assert config.arches == released["config"]["arches"]
        assert config.embedding_size == released["config"]["embedSize"]
        with torch.device("meta"):
            model = zoo.create_model(name)
        assert sum(p.numel() for p in model.parameters()) == entry.params
        small = zoo.create_model(name, **entry.test_config).eval()
        with torch.no_grad():
            out = small(**zoo.registry.dummy_inputs(name, small.config))
        assert all(torch.isfinite(v).all() for v in out.values())


def test_tokenizer_save_load_and_auto(tmp_path):
    from transformers import AutoTokenizer

    vocab = FIXTURES / "vocab"
    tok = NasBertTokenizer.from_files(vocab / "encoder.json", vocab / "vocab.bpe", vocab / "dict.txt",
                                      framing="mlnet")
    tok.save_pretrained(tmp_path)
    assert {"encoder.json", "vocab.bpe", "dict.txt"} <= {p.name for p in tmp_path.iterdir()}
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert type(again) is NasBertTokenizer and again.framing == "mlnet"
    batch = again(["Hello world!", "a"], padding=True, return_tensors="pt")
    assert batch["input_ids"].tolist() == [[0, 31414, 232, 328], [0, 102, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    long = again("word " * 600, truncation=True)["input_ids"]
    assert len(long) == 512


def test_tokenizer_bad_options(tmp_path):
    vocab = FIXTURES / "vocab"
    files = (vocab / "encoder.json", vocab / "vocab.bpe", vocab / "dict.txt")
    with pytest.raises(ValueError, match="framing must be one of"):
        NasBertTokenizer.from_files(*files, framing="bert")
    with pytest.raises(ValueError, match="needs framing='mlnet'"):
        NasBertTokenizer.from_files(*files, mlnet_bug_compat=True)
    with pytest.raises(ValueError, match="missing \\['dict_file'\\]"):
        NasBertTokenizer.from_files(files[0], files[1], tmp_path / "absent.txt")
    bug = NasBertTokenizer.from_files(*files, framing="mlnet", mlnet_bug_compat=True)
    with pytest.raises(ValueError, match="only reproduces ML.NET on ASCII text"):
        bug("café")
    (tmp_path / "dict.txt").write_text("13 850314647\nbroken-line\n")
    with pytest.raises(ValueError, match="dict.txt:2: expected '<symbol> <count>'"):
        NasBertTokenizer.from_files(files[0], files[1], tmp_path / "dict.txt")


def test_tokenizer_remote_code_without_zoo(tmp_path):
    import os
    import subprocess
    import sys

    from zoo.models.nasbert.resources import mlnet_tokenizer

    local = mlnet_tokenizer(framing="mlnet")
    local.save_pretrained(tmp_path / "tok")
    expected = local('She said "it\'s fine" and left.', "x")["input_ids"]
    assert expected[:11] == [0, 2515, 26, 22, 405, 18, 2051, 113, 8, 314, 4]  # fixture case "quotes"
    script = (
        "import sys; sys.modules['zoo'] = None; sys.modules['conversion'] = None\n"
        "from transformers import AutoTokenizer\n"
        f"tok = AutoTokenizer.from_pretrained({str(tmp_path / 'tok')!r}, trust_remote_code=True)\n"
        "assert type(tok).__module__.startswith('transformers_modules'), type(tok).__module__\n"
        "print(tok('She said \"it\\'s fine\" and left.', 'x')['input_ids'])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "HF_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(expected)


def test_full_vocabulary_encoder_converts_with_tokenizer_and_fine_tunes(tmp_path):
    """A 50265-id encoder gets the bundled tokenizer, and its folder starts a classification head."""
    from conversion.convert_nasbert import key_table
    from zoo.models.nasbert import NasBertModel

    config = NasBertConfig(embedding_size=8, max_position_embeddings=32, arches=[3] + [0] * 23)
    torch.manual_seed(0)
    encoder = NasBertModel(config)
    zoo_state = encoder.state_dict()
    write_tsm(tmp_path / "enc.tsm", {k: zoo_state[v] for k, v in key_table(config).items()})
    folder = convert(tmp_path / "enc.tsm", tmp_path / "out")
    assert {"encoder.json", "vocab.bpe", "dict.txt", "tokenizer_config.json"} <= {p.name for p in folder.iterdir()}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer("Hello world!")["input_ids"] == [0, 31414, 232, 328]  # ML.NET framing by default
    from zoo.models.nasbert import NasBertForSequenceClassification
    from zoo.pull import VariantMismatchError

    with pytest.raises(VariantMismatchError, match="arches"):  # not the released NAS-BERT5 arches: refused
        zoo.create_model("nasbert5_mlnet_text_classification", pretrained=folder, num_labels=4)
    head = NasBertForSequenceClassification.from_pretrained(folder, num_labels=4)
    assert torch.equal(head.nasbert.embeddings.embed_tokens.weight, zoo_state["embeddings.embed_tokens.weight"])
    logits = head(**tokenizer(["Hello world!"], return_tensors="pt")).logits
    assert logits.shape == (1, 4)


def test_mlnet_truncation_keeps_the_first_ids_of_the_framed_pair():
    """ML.NET (NasBertTrainer.PrepareRowTensor) frames [0] + A + [2] + B in full and keeps the first 512 ids;
    nothing is appended after the cut. Longest-first truncation would keep part of both texts instead."""
    vocab = FIXTURES / "vocab"
    files = (vocab / "encoder.json", vocab / "vocab.bpe", vocab / "dict.txt")
    tok = NasBertTokenizer.from_files(*files, framing="mlnet")
    first, second = "alpha " * 300, "omega " * 300
    full = tok(first, second)["input_ids"]
    assert len(full) > 512
    assert tok(first, second, truncation=True)["input_ids"] == full[:512]
    assert tok(first, second, truncation=True, max_length=40)["input_ids"] == full[:40]
    short = tok("a b", second, truncation=True, max_length=30)["input_ids"]
    assert short == tok("a b", second)["input_ids"][:30] and short[3] == 2
    batch = tok([first, "a"], [second, "b"], truncation=True, max_length=20, padding=True, return_tensors="pt")
    assert batch["input_ids"].tolist() == [full[:20], tok("a", "b")["input_ids"] + [1] * 16]
    assert batch["attention_mask"][1].tolist() == [1] * 4 + [0] * 16
    with pytest.raises(ValueError, match="only_second"):
        tok(first, second, truncation="only_second", max_length=20)
    with pytest.raises(ValueError, match="no overflowing"):
        tok(first, second, truncation=True, max_length=20, return_overflowing_tokens=True)
