"""Every family card template in cards/ renders, for a tiny build of the family's first variant, a card
that passes `validate_folder` (complete metadata) and has the sections the project asks for.

Families land in parallel: a template whose family is not registered yet is skipped with a reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import zoo
from zoo.hub import CARDS_DIR, validate_folder, write_card

TEMPLATES = sorted(Path(CARDS_DIR).glob("*.md"))
SECTIONS = ("intended use", "limitation", "licen", "citation", "from_pretrained")


@pytest.mark.parametrize(
    "template",
    [pytest.param(t, id=t.stem) for t in TEMPLATES]
    or [pytest.param(None, id="none", marks=pytest.mark.skip(reason="no family card template in cards/ yet"))],
)
def test_family_card_renders_with_complete_metadata(template, tmp_path):
    family = template.stem
    if family not in zoo.families():
        pytest.skip(f"cards/{family}.md: the {family} family is not registered on this branch")
    names = zoo.list_models(family=family)
    assert names, f"cards/{family}.md: the {family} family has no registered variant to render it for"
    entry = zoo.model_info(names[0])
    model = zoo.create_model(entry.name, **entry.test_config)
    model.save_pretrained(tmp_path / entry.name)
    folder = tmp_path / entry.name
    write_card(folder, variant=entry.name, repo_id=f"zoo/{entry.name}")
    check = validate_folder(folder)
    assert check.card_metadata["license"] == entry.license
    assert family in check.card_metadata["tags"]
    text = (folder / "README.md").read_text().lower()
    missing = [section for section in SECTIONS if section not in text]
    assert not missing, f"cards/{family}.md lacks sections: {missing}"
    assert "@" in text and "```bibtex" in text, f"cards/{family}.md: no BibTeX citation"
    for row in check.files:  # the file table: name, size and (at least the first 12 hex digits of) sha256
        if row["name"].endswith(".safetensors"):
            line = next((li for li in text.splitlines() if row["name"] in li and "|" in li), "")
            assert str(row["size"]) in line and row["sha256"][:12] in line, (
                f"cards/{family}.md: file table lacks {row['name']} with its size and sha256")
