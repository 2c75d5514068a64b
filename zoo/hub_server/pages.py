"""Browse pages of the local hub: `/` lists the models, `/ORG/NAME` renders a model's card.

The card's Markdown is rendered with markdown-it (raw HTML in cards is escaped, not passed through).
Private repos appear only for requests that carry a token from the token file.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .auth import Identity
from .lineage import render_lineage
from .storage import HubError

if TYPE_CHECKING:  # pragma: no cover
    from .app import HubApp

__all__ = ["human_size", "render_index", "render_model"]

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:12px 24px;display:flex;gap:24px;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}
main{max-width:1100px;margin:24px auto;padding:0 24px}
.box{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:16px 20px;margin-bottom:20px}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #d8dee4;padding:6px 10px;text-align:left;vertical-align:top;font-size:14px}
th{background:#f6f8fa}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px}
pre{background:#f6f8fa;padding:12px;border-radius:6px;overflow:auto}
.muted{color:#656d76;font-size:13px}
.tag{display:inline-block;background:#ddf4ff;color:#0969da;border-radius:12px;padding:1px 8px;margin:1px;font-size:12px}
input[type=search]{padding:6px 10px;width:320px;border:1px solid #d0d7de;border-radius:6px}
button{padding:6px 12px;border-radius:6px;border:1px solid #d0d7de;background:#f6f8fa}
.card img{max-width:100%;height:auto}
.card h1{font-size:24px}.card h2{font-size:19px;border-bottom:1px solid #d8dee4;padding-bottom:4px}
"""


def human_size(size: int) -> str:
    """1234567 -> '1.2 MB' (decimal units, as the Hub shows them)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width,initial-scale=1'><title>{_e(title)}</title>"
        f"<style>{STYLE}</style></head><body><header><a href='/'>zoo hub</a>"
        "<span class=muted style='color:#d0d7de'>local Hugging Face Hub-compatible server</span></header>"
        f"<main>{body}</main></body></html>"
    )


def _family(payload: dict[str, Any]) -> str:
    model_type = (payload.get("config") or {}).get("model_type") or ""
    return model_type.removeprefix("zoo_") or "-"


def render_index(hub: HubApp, ident: Identity, search: str = "") -> str:
    """The model list: name, family, task, licence, last commit, and a search box."""
    rows = hub.list_models(ident, search)
    rows.sort(key=lambda row: row["lastModified"], reverse=True)
    lines = []
    for row in rows:
        card = row.get("cardData") or {}
        commit = hub.store.read_commit(row["sha"])
        lock = " <span class=tag>private</span>" if row["private"] else ""
        lines.append(
            f"<tr class=model-row><td><a href='/{quote(row['id'])}'>{_e(row['id'])}</a>{lock}</td>"
            f"<td>{_e(_family(row))}</td><td>{_e(row.get('pipeline_tag') or '-')}</td>"
            f"<td>{_e(card.get('license') or '-')}</td>"
            f"<td><span title='{_e(commit['id'])}'>{_e(commit['date'][:16].replace('T', ' '))}</span> "
            f"<span class=muted>{_e(commit['title'])}</span></td></tr>"
        )
    table = (
        "<table id=models><thead><tr><th>model</th><th>family</th><th>task</th><th>licence</th>"
        "<th>last commit</th></tr></thead><tbody>" + "".join(lines) + "</tbody></table>"
        if lines else f"<p id=empty>No models{' match ' + _e(repr(search)) if search else ' yet'}.</p>"
    )
    body = (
        "<div class=box><form method=get action='/'>"
        f"<input type=search name=search placeholder='Search models' value='{_e(search)}' aria-label=search> "
        f"<button type=submit>Search</button></form></div>"
        f"<div class=box><h2 style='margin-top:0'>Models <span class=muted>({len(rows)})</span></h2>{table}</div>"
    )
    return _page("zoo hub — models", body)


def _markdown(text: str, files_base: str | None = None) -> str:
    """Markdown to HTML; with `files_base`, relative image and link targets (a card's `![](curves.png)`)
    point into the repo's files at that base, as on the Hub."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
    tokens = md.parse(text)
    if files_base:
        for token in tokens:
            for child in token.children or []:
                attr = "src" if child.type == "image" else "href" if child.type == "link_open" else None
                target = str(child.attrs.get(attr, "")) if attr else ""
                if target and not target.startswith(("#", "/")) and ":" not in target.split("/", 1)[0]:
                    child.attrs[attr] = files_base + target.removeprefix("./")
    return md.renderer.render(tokens, md.options, {})


MAX_CARD_BYTES = 200_000  # a model page renders at most this much of README.md (markdown costs ~10 µs/byte)


def _read_card(path: Any) -> str:
    with open(path, "rb") as handle:
        raw = handle.read(MAX_CARD_BYTES + 1)
    text = raw[:MAX_CARD_BYTES].decode("utf-8", "replace")
    if len(raw) > MAX_CARD_BYTES:
        text += f"\n\n*(the card is longer than {MAX_CARD_BYTES // 1000} kB; the rest is not shown here)*\n"
    return text


def _card_body(text: str) -> str:
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end >= 0:
            return text[end + 4:].lstrip("-").lstrip("\n")
    return text


def _eval_rows(card: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for model in card.get("model-index") or []:
        for result in model.get("results") or []:
            task = (result.get("task") or {}).get("type", "")
            dataset = result.get("dataset") or {}
            for metric in result.get("metrics") or []:
                rows.append((task, dataset.get("name", dataset.get("type", "")), dataset.get("split", ""),
                             metric.get("name") or metric.get("type", ""), str(metric.get("value", ""))))
    return rows


def _privacy_box(privacy: Any) -> str:
    """The card's `privacy` block (written by DP fine-tuning: epsilon, delta, accountant, ...) as a table."""
    if not isinstance(privacy, dict) or not privacy:
        return ""
    rows = "".join(f"<tr><th>{_e(key)}</th><td>{_e(value)}</td></tr>" for key, value in list(privacy.items())[:32])
    return f"<div class=box><h2>Privacy (differential privacy spent)</h2><table id=privacy>{rows}</table></div>"


def render_model(hub: HubApp, ident: Identity, repo_id: str, revision: str, base_url: str) -> str:
    """One model: metadata table, eval results, how to load it, the rendered card, files, history."""
    store = hub.store
    commit_id = store.resolve(repo_id, revision)
    commit = store.read_commit(commit_id)
    payload = hub.repo_payload(repo_id, commit_id)
    card = payload.get("cardData") or {}
    files = commit["files"]

    branches, tags = store.refs(repo_id, "heads"), store.refs(repo_id, "tags")
    ref_links = " ".join(
        f"<a class=tag href='/{quote(repo_id)}?revision={quote(name)}'>{kind}: {_e(name)}</a>"
        for kind, refs in (("branch", branches), ("tag", tags)) for name in refs
    )
    meta_keys = ("library_name", "license", "pipeline_tag", "base_model", "datasets", "language", "tags")
    meta_rows = "".join(
        f"<tr><th>{_e(key)}</th><td>{_e(', '.join(map(str, card[key])) if isinstance(card[key], list) else card[key])}</td></tr>"
        for key in meta_keys if card.get(key) not in (None, "", [])
    )
    evals = _eval_rows(card)
    eval_html = (
        "<table id=eval-results><thead><tr><th>task</th><th>dataset</th><th>split</th><th>metric</th><th>value</th>"
        "</tr></thead><tbody>" + "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in evals)
        + "</tbody></table>" if evals else "<p class=muted>No evaluation results in the card metadata.</p>"
    )
    privacy_html = _privacy_box(card.get("privacy"))
    config = payload.get("config") or {}
    architecture = (config.get("architectures") or ["AutoModel"])[0]
    auto_map = config.get("auto_map") or {}
    auto_class = next((name for name, ref in auto_map.items() if str(ref).endswith("." + architecture)), "AutoModel")
    rev_arg = "" if revision == "main" else f', revision="{revision}"'
    remote = ", trust_remote_code=True" if auto_map else ""
    snippet = (
        f"# in the shell first: export HF_ENDPOINT={base_url} HF_HUB_DISABLE_XET=1\n"
        f"from transformers import {auto_class}\n"
        f'model = {auto_class}.from_pretrained("{repo_id}"{rev_arg}{remote})'
    )
    readme = files.get("README.md")
    card_html = (
        _markdown(_card_body(_read_card(store.blob_path(readme["sha256"]))),
                  files_base=f"/{quote(repo_id)}/resolve/{quote(commit_id)}/")
        if readme else "<p class=muted>This repo has no model card (README.md).</p>"
    )
    file_rows = "".join(
        f"<tr><td><a href='/{quote(repo_id)}/resolve/{quote(commit_id)}/{quote(name)}'>{_e(name)}</a></td>"
        f"<td data-bytes='{rec['size']}'>{human_size(rec['size'])}</td><td>{'LFS' if rec['lfs'] else ''}</td>"
        f"<td><code title='{rec['sha256']}'>{rec['sha256'][:16]}…</code></td></tr>"
        for name, rec in files.items()
    )
    history = "".join(
        f"<tr><td><code>{c['id'][:10]}</code></td><td>{_e(c['title'])}</td><td>{_e(c['author'])}</td>"
        f"<td>{_e(c['date'][:19].replace('T', ' '))}</td></tr>"
        for c in store.history(commit_id, limit=10)
    )
    lock = " <span class=tag>private</span>" if payload["private"] else ""
    body = (
        f"<div class=box><h1 id=repo-id style='margin:0'>{_e(repo_id)}{lock}</h1>"
        f"<p class=muted>revision <code>{_e(revision)}</code> = commit <code id=commit>{commit_id}</code> · "
        f"{_e(commit['title'])}</p><p>{ref_links}</p></div>"
        f"<div class=box><h2>Use this model</h2><pre id=load-snippet>{_e(snippet)}</pre></div>"
        f"<div class=box><h2>Metadata</h2><table id=metadata>{meta_rows}</table></div>"
        f"<div class=box><h2>Evaluation results</h2>{eval_html}</div>{privacy_html}"
        + render_lineage(hub, ident, repo_id, commit, card) +
        f"<div class='box card' id=card>{card_html}</div>"
        "<div class=box><h2>Files</h2><table id=files><thead><tr><th>file</th><th>size</th><th>storage</th>"
        f"<th>sha256</th></tr></thead><tbody>{file_rows}</tbody></table></div>"
        "<div class=box><h2>History</h2><table id=history><thead><tr><th>commit</th><th>title</th><th>author</th>"
        f"<th>date</th></tr></thead><tbody>{history}</tbody></table></div>"
    )
    return _page(f"{repo_id} — zoo hub", body)


def render_error(err: HubError) -> str:
    return _page("zoo hub — error", f"<div class=box><h2>{err.status}</h2><p>{_e(err)}</p></div>")

