"""Published model pages, opened in headless Chromium (Debian `chromium`, through playwright), tell the truth:
the snippets name the repo the card was published to, with the Auto class of the page's box; the licence is
the registry's in metadata and text; label names come from the recipe; the training curves are an image
that loads; random-weight folders carry a visible banner and tag; no local paths.

Folders: a DMP classifier fine-tuned for 2 steps on B3DB (recipe dmp_b3db_bbb), the MusicBERT and PriorGrad
original-format test fixtures converted (tiny random weights). Screenshots go to
$ZOO_TEST_ARTIFACTS/model_cards (default: test-artifacts/model_cards).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import zoo
from tests.fixture_samples import musicbert_classifier, released_vocoder_checkpoint
from tests.hub.browser import browser_fixtures, requires_chromium
from zoo.hub import upload_folder
from zoo.hub_server import LocalHub

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("ZOO_TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts") / "model_cards"

pytestmark = [requires_chromium]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from conversion.convert_musicbert import convert as convert_musicbert
    from conversion.convert_priorgrad import convert as convert_priorgrad
    from zoo.finetune import RecipeOptions, finetune

    base = tmp_path_factory.mktemp("cards")
    hub = LocalHub.start(base / "root")
    try:
        tuned = base / "run"
        finetune("dmp_small_molecule_cls", "dmp_b3db_bbb", tuned, max_steps=2, batch_size=16,
                 options=RecipeOptions(quick=True, max_train_samples=64, max_eval_samples=32))
        upload_folder(tuned, "lab/dmp-b3db", endpoint=hub.url, token=hub.token)

        checkpoint, label_dict = musicbert_classifier()
        music = base / "musicbert_fixture"
        convert_musicbert(checkpoint, music, label_dict=label_dict)
        upload_folder(music, "lab/musicbert-fixture", endpoint=hub.url, token=hub.token)

        vocoder = base / "priorgrad_fixture"
        convert_priorgrad(released_vocoder_checkpoint(), vocoder)
        upload_folder(vocoder, "lab/priorgrad-fixture", endpoint=hub.url, token=hub.token)
        yield hub
    finally:
        hub.stop()


browser, page = browser_fixtures(ARTIFACTS)


def _metadata(page) -> dict[str, str]:
    rows = page.eval_on_selector_all(
        "#metadata tr", "rows => rows.map(r => [r.cells[0].innerText.trim(), r.cells[1].innerText.trim()])")
    return dict(rows)


def _card_code(page) -> str:
    return "\n".join(page.eval_on_selector_all("#card pre", "blocks => blocks.map(b => b.innerText)"))


def _no_local_paths(text: str) -> None:
    for marker in ("/tmp/", "/work/", str(REPO_ROOT), "/home/", "/root/"):
        assert marker not in text, f"a local path ({marker}) in the card"


def test_fine_tuned_dmp_page(site, page):
    page.goto(site.url + "/lab/dmp-b3db")
    box = page.inner_text("#load-snippet")
    assert 'AutoModelForSequenceClassification.from_pretrained("lab/dmp-b3db"' in box
    code = _card_code(page)
    assert 'AutoModelForSequenceClassification.from_pretrained("lab/dmp-b3db"' in code  # same class as the box
    assert 'AutoProcessor.from_pretrained("lab/dmp-b3db"' in code and '"run"' not in code
    assert page.inner_text("#card h1") == "lab/dmp-b3db"

    metadata = _metadata(page)
    entry = zoo.model_info("dmp_small_molecule_cls")
    assert metadata["license"] == entry.license == "mit"
    assert metadata["pipeline_tag"] == "graph-ml"
    assert "random-weights" not in metadata["tags"]
    card = page.inner_text("#card")
    assert "Licence: MIT" in card and "MIT, as the original" in card
    assert "0 = BBB-" in card and "1 = BBB+" in card  # id2label from the recipe
    assert "Random weights" not in card
    assert "epoch" not in [row[3] for row in page.eval_on_selector_all(
        "#eval-results tbody tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText.trim()))")]
    assert "Parameters:" in card and "Embeddings" in card
    _no_local_paths(card)

    image = page.wait_for_selector("#card img")
    src = image.get_attribute("src")
    assert src.startswith("/lab/dmp-b3db/resolve/") and src.endswith("/training_curves.png")
    page.wait_for_function("() => document.querySelector('#card img').complete")
    width = page.evaluate("() => document.querySelector('#card img').naturalWidth")
    assert width > 100, "the training-curves image did not load"
    page.screenshot(path=str(ARTIFACTS / "dmp_b3db.png"), full_page=True)


def test_random_weight_fixture_pages_say_so(site, page):
    page.goto(site.url + "/lab/musicbert-fixture")
    banner = page.locator("#card blockquote").first
    assert banner.is_visible() and "Random weights — for tests" in banner.inner_text()
    metadata = _metadata(page)
    assert "random-weights" in metadata["tags"]
    assert metadata["pipeline_tag"] != "text-classification"
    card = page.inner_text("#card")
    first_label = musicbert_classifier()[1].read_text().split()[0]  # class j is line j of the label dict
    assert f"Labels (config.id2label): 0 = {first_label}" in card
    assert 'from_pretrained("lab/musicbert-fixture"' in _card_code(page)
    _no_local_paths(card)
    page.screenshot(path=str(ARTIFACTS / "musicbert_fixture.png"), full_page=True)

    page.goto(site.url + "/lab/priorgrad-fixture")
    assert page.locator("#card blockquote").first.is_visible()
    metadata = _metadata(page)
    licence = zoo.model_info(zoo.list_models(family="priorgrad")[0]).license
    assert metadata["license"] == licence == "apache-2.0"
    card = page.inner_text("#card")
    assert "Apache-2.0. The original PriorGrad-vocoder code" in card and "MIT" not in card
    _no_local_paths(card)
    page.screenshot(path=str(ARTIFACTS / "priorgrad_fixture.png"), full_page=True)
