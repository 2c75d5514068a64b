"""The fortunes recipe's data handling (the training run itself is `zoo finetune`, not a test)."""

from pathlib import Path

import pytest
import torch

from zoo.recipes.nasbert import FORTUNE_TOPICS, FORTUNES_DIR, FortuneCollator, load_fortunes


def test_load_fortunes_splits_items_and_dedupes(tmp_path):
    (tmp_path / "a").write_text("First  item\nsecond line\n%\nOther\n%\nFirst item second line\n%\n")
    (tmp_path / "b").write_text("Other\n%\n100% sure\n")
    items = load_fortunes(tmp_path, ("a", "b"))
    assert items == [("100 sure", 1), ("First item second line", 0), ("Other", 0)]


def test_missing_topic_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"fortune topic file .*/nope not found; install it"):
        load_fortunes(tmp_path, ("nope",))


def test_collator_pads_with_pad_id():
    batch = FortuneCollator(1)([{"input_ids": [0, 5, 6], "labels": 2}, {"input_ids": [0, 7], "labels": 0}])
    assert batch["input_ids"].tolist() == [[0, 5, 6], [0, 7, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert torch.equal(batch["labels"], torch.tensor([2, 0]))


@pytest.mark.skipif(not Path(FORTUNES_DIR, "computers").is_file(), reason="Debian fortunes not installed")
def test_installed_fortunes_have_every_topic():
    items = load_fortunes()
    counts = [sum(1 for _, y in items if y == label) for label in range(len(FORTUNE_TOPICS))]
    assert len(items) > 2500 and min(counts) > 100
