"""The browse pages of `zoo hub serve`, driven in headless Chromium (Debian `chromium`) through playwright.

Screenshots go to $ZOO_TEST_ARTIFACTS/hub_pages (default: test-artifacts/hub_pages in the repo).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.hub.browser import browser_fixtures, requires_chromium
from tests.hub.helpers import METRICS, make_toy_folder
from zoo.hub import upload_folder
from zoo.hub_server import LocalHub

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("ZOO_TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts") / "hub_pages"

pytestmark = [requires_chromium]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("pages")
    hub = LocalHub.start(base / "root")
    try:
        tuned = make_toy_folder(base / "tuned", metrics=METRICS, repo_id="org/toy-sst2")
        upload_folder(tuned, "org/toy-sst2", tag="v1", endpoint=hub.url, token=hub.token)
        readme = tuned / "README.md"
        readme.write_text(readme.read_text() + "\n<script>window.__pwned = 1</script>\n")
        upload_folder(tuned, "org/toy-sst2", commit_message="card: add a note", endpoint=hub.url, token=hub.token)
        plain = make_toy_folder(base / "plain", seed=1, repo_id="lab/plain-toy")
        upload_folder(plain, "lab/plain-toy", endpoint=hub.url, token=hub.token)
        hidden = make_toy_folder(base / "hidden", seed=2, repo_id="lab/hidden-toy")
        upload_folder(hidden, "lab/hidden-toy", private=True, endpoint=hub.url, token=hub.token)
        yield hub
    finally:
        hub.stop()


browser, page = browser_fixtures(ARTIFACTS)


def _rows(page, selector: str) -> list[list[str]]:
    return page.eval_on_selector_all(
        f"{selector} tbody tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText.trim()))"
    )


def test_index_lists_models_and_searches(site, page):
    page.goto(site.url + "/")
    rows = {row[0]: row for row in _rows(page, "#models")}
    assert set(rows) == {"org/toy-sst2", "lab/plain-toy"}  # the private repo is not listed
    name, family, task, licence, last_commit = rows["org/toy-sst2"]
    assert (family, task, licence) == ("toy", "text-classification", "mit")
    assert "card: add a note" in last_commit
    page.screenshot(path=str(ARTIFACTS / "index.png"), full_page=True)

    page.fill("input[name=search]", "sst2")
    page.click("button[type=submit]")
    page.wait_for_url("**/?search=sst2")
    assert [row[0] for row in _rows(page, "#models")] == ["org/toy-sst2"]
    page.screenshot(path=str(ARTIFACTS / "index_search.png"), full_page=True)

    page.fill("input[name=search]", "no-such-model")
    page.click("button[type=submit]")
    assert "No models match" in page.inner_text("#empty")

    page.goto(site.url + "/")
    page.click("text=org/toy-sst2")
    page.wait_for_url("**/org/toy-sst2")
    assert page.inner_text("#repo-id") == "org/toy-sst2"


def test_model_page_renders_card_metadata_eval_and_files(site, page):
    page.goto(site.url + "/org/toy-sst2")
    metadata = dict(_rows(page, "#metadata"))
    assert metadata["license"] == "mit" and metadata["pipeline_tag"] == "text-classification"
    assert metadata["base_model"] == "org/toy-base" and metadata["library_name"] == "transformers"
    assert _rows(page, "#eval-results") == [["text-classification", "GLUE SST-2", "validation", "accuracy", "0.5"]]
    snippet = page.inner_text("#load-snippet")
    assert 'AutoModelForSequenceClassification.from_pretrained("org/toy-sst2", trust_remote_code=True)' in snippet
    assert f"HF_ENDPOINT={site.url}" in snippet
    headings = page.eval_on_selector_all("#card h2", "hs => hs.map(h => h.innerText)")
    assert {"Intended use", "Evaluation results", "Limitations", "Citation", "Files"} <= set(headings)
    assert page.eval_on_selector_all("#card table", "ts => ts.length") >= 2  # Markdown tables became <table>
    assert page.evaluate("() => window.__pwned") is None  # raw HTML in a card is escaped, never run
    assert "<script>window.__pwned = 1</script>" in page.inner_text("#card")
    files = {row[0]: row for row in _rows(page, "#files")}
    assert {"README.md", "config.json", "model.safetensors", "modeling_toy.py"} <= set(files)
    assert files["model.safetensors"][2] == "LFS" and files["model.safetensors"][1].endswith("kB")
    href = page.get_attribute("#files a:text('config.json')", "href")
    assert "/org/toy-sst2/resolve/" in href
    page.screenshot(path=str(ARTIFACTS / "model_main.png"), full_page=True)

    history = _rows(page, "#history")
    assert [row[1] for row in history] == ["card: add a note", "Upload tuned with zoo hub_upload", "initial commit"]
    page.click("a.tag:text('tag: v1')")
    page.wait_for_url("**/org/toy-sst2?revision=v1")
    assert page.inner_text("#commit") == history[1][0] + page.inner_text("#commit")[10:]
    assert "?revision=" not in page.inner_text("#load-snippet") and 'revision="v1"' in page.inner_text("#load-snippet")
    assert "<script>" not in page.inner_text("#card")
    page.screenshot(path=str(ARTIFACTS / "model_v1.png"), full_page=True)


def test_private_and_missing_pages(site, page):
    response = page.goto(site.url + "/lab/hidden-toy")
    assert response.status == 404
    assert "not found" in page.inner_text("main").lower()
    response = page.goto(site.url + "/org/does-not-exist")
    assert response.status == 404
    page.screenshot(path=str(ARTIFACTS / "not_found.png"))
