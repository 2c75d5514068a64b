"""DeqTransformerTokenizer: the original's word-level WikiText-103 vocabulary (specials first, then words by
decreasing count, ties by first appearance; whitespace split, no lowercasing, `<eos>` after every line),
checked against counts taken independently from a real English text, and the converter's --vocab options."""

from __future__ import annotations

import json

import pytest

from conversion.convert_deq import ConversionError, convert, main
from tests.english_text import fortune_lines, needs_fortunes
from tests.models.deq.test_convert_deq import LM_FILE, V2_STATE, lm_args
from zoo.models.deq import DeqTransformerTokenizer, build_vocabulary
from zoo.models.deq.tokenization_deq_transformer import read_vocabulary

pytestmark = needs_fortunes


def test_vocabulary_order_follows_independent_counts():
    lines = fortune_lines(300)
    vocab = build_vocabulary(lines)
    counts, first = {}, {}
    for line in lines:
        for word in line.split():
            counts[word] = counts.get(word, 0) + 1
            first.setdefault(word, len(first))
    assert vocab[0] == "<eos>" and vocab[-1] == "<unk>" and set(vocab[1:-1]) == set(counts)
    words = vocab[1:-1]
    for a, b in zip(words, words[1:]):
        assert (counts[a], -first[a]) > (counts[b], -first[b]), (a, b)
    assert "the" in words[:5] and "The" in counts and "The" != "the"  # case is kept (wt103: lower_case=False)


def test_encoding_is_the_original_stream():
    lines = fortune_lines(120)
    vocab = build_vocabulary(lines)
    tokenizer = DeqTransformerTokenizer(symbols=vocab)
    text = "\n".join(lines[:3]) + "\n"  # a file's text: every line ends with <eos>
    expected = [vocab.index(w) for line in lines[:3] for w in line.split() + ["<eos>"]]
    assert tokenizer(text)["input_ids"] == expected
    assert tokenizer(text.rstrip("\n"))["input_ids"] == expected
    unknown = tokenizer("the zyzzyva  Compiler\r\n\nthe")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(unknown) == ["the", "<unk>", "<unk>", "<eos>", "<eos>", "the", "<eos>"]
    lower = DeqTransformerTokenizer(symbols=vocab, lower_case=True)
    assert lower("THE")["input_ids"] == [vocab.index("the"), 0]


def test_save_and_reload(tmp_path):
    vocab = build_vocabulary(fortune_lines(50))
    DeqTransformerTokenizer(symbols=vocab).save_pretrained(tmp_path)
    assert (tmp_path / "vocab.txt").read_text().split("\n")[:-1] == vocab
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert "symbols" not in config and config["auto_map"]["AutoTokenizer"][0].startswith("tokenization_deq_transformer.")
    assert (tmp_path / "tokenization_deq_transformer.py").is_file()  # remote code travels with the folder
    reloaded = DeqTransformerTokenizer.from_pretrained(tmp_path)
    assert reloaded.get_vocab() == {s: i for i, s in enumerate(vocab)}


def test_bad_vocabularies_are_named(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("<eos>\nthe\nthe\n<unk>\n")
    with pytest.raises(ValueError, match="line 3 repeats the symbol 'the'"):
        read_vocabulary(path)
    path.write_text("<eos>\n\nthe\n")
    with pytest.raises(ValueError, match="line 2 is empty"):
        read_vocabulary(path)
    with pytest.raises(ValueError, match="no '<unk>' symbol"):
        DeqTransformerTokenizer(symbols=["<eos>", "the"])


def test_converter_builds_the_vocabulary_from_the_corpus(tmp_path):
    n_token = lm_args()["n_token"]
    corpus = tmp_path / "train.txt"
    corpus.write_text("\n".join(fortune_lines(n_token - 2)) + "\n")  # + <eos> + <unk>
    out = convert(LM_FILE, tmp_path / "lm", config=lm_args(), vocab_corpus=corpus)
    tokenizer = DeqTransformerTokenizer.from_pretrained(out)
    assert tokenizer.vocab_size == n_token
    assert read_vocabulary(out / "vocab.txt") == build_vocabulary(corpus.read_text().splitlines())
    (tmp_path / "list.txt").write_text((out / "vocab.txt").read_text())
    args = [str(LM_FILE), str(tmp_path / "lm2"), "--config", str(tmp_path / "args.json"), "--vocab",
            str(tmp_path / "list.txt")]
    (tmp_path / "args.json").write_text(json.dumps(lm_args()))
    assert main(args) == 0
    assert (tmp_path / "lm2" / "vocab.txt").read_text() == (out / "vocab.txt").read_text()


def test_converter_refuses_vocabularies_that_do_not_fit(tmp_path):
    corpus = tmp_path / "train.txt"
    corpus.write_text("\n".join(fortune_lines(10)))
    with pytest.raises(ConversionError, match="has 12 symbols but the checkpoint's vocab_size is 40"):
        convert(LM_FILE, tmp_path / "a", config=lm_args(), vocab_corpus=corpus)
    with pytest.raises(ConversionError, match="DEQ-Transformer checkpoints only"):
        convert(V2_STATE, tmp_path / "b", variant="mdeq_tiny_cifar10", vocab_corpus=corpus)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
