"""A small real English text for word-level vocabularies in tests: Debian's fortunes (`computers`), one
fortune per line, cut down to a given number of distinct words (other words dropped) so that a
vocabulary built from it fits a tiny model exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

FORTUNES = Path("/usr/share/games/fortunes/computers")
needs_fortunes = pytest.mark.skipif(not FORTUNES.is_file(),
                                    reason="Debian fortunes is not installed (the Makefile installs it)")


def fortune_lines(distinct_words: int, max_lines: int = 400) -> list[str]:
    """The first fortunes (one per line, '%' separators dropped), keeping only their first `distinct_words`
    distinct whitespace-separated words; lines left empty are dropped."""
    fortunes, block = [], []
    for line in FORTUNES.read_text(encoding="utf-8").splitlines() + ["%"]:
        if line.strip() == "%":
            if block:
                fortunes.append(" ".join(block))
            block = []
        elif line.strip():
            block.append(line.strip())
    kept: dict[str, None] = {}
    lines = []
    for fortune in fortunes[:max_lines]:
        words = []
        for word in fortune.split():
            if word not in kept and len(kept) < distinct_words:
                kept[word] = None
            if word in kept:
                words.append(word)
        if words:
            lines.append(" ".join(words))
    assert len(kept) == distinct_words, f"the fortunes have fewer than {distinct_words} distinct words"
    return lines
