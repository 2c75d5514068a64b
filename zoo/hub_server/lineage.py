"""The lineage and verification box of a model page: original release -> converted -> fine-tuned children.

Reads only what the repo itself holds (the card's `base_model`, `verification/record.json`, bounded in size)
and the cards of the other repos this identity may read (children name this repo as their base model).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from .auth import Identity

if TYPE_CHECKING:  # pragma: no cover
    from .app import HubApp

__all__ = ["render_lineage"]

# the record zoo.verification writes; the server runs without the zoo package, so the names are repeated here
RECORD_PATH = "verification/record.json"
MAX_RECORD_BYTES = 1 << 20


def _e(value: Any) -> str:
    from .pages import _e as escape  # pages imports this module: one escaping helper, looked up at call time

    return escape(value)


def _record(hub: HubApp, commit: dict[str, Any]) -> dict[str, Any]:
    entry = commit["files"].get(RECORD_PATH)
    if entry is None or entry["size"] > MAX_RECORD_BYTES:
        return {}
    try:
        data = json.loads(hub.store.blob_path(entry["sha256"]).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, OSError):
        return {}
    return data if isinstance(data, dict) else {}


def _link(url: Any) -> str:
    text = str(url or "")
    if urlsplit(text).scheme in ("http", "https"):
        return f"<a href='{_e(text)}' rel=nofollow>{_e(text)}</a>"
    return _e(text)


def render_lineage(hub: HubApp, ident: Identity, repo_id: str, commit: dict[str, Any], card: dict[str, Any]) -> str:
    """HTML for the lineage / verification box (empty string when the repo has neither)."""
    record = _record(hub, commit)
    original = record.get("original") if isinstance(record.get("original"), dict) else {}
    base = card.get("base_model")
    base = base[0] if isinstance(base, list) and base else base
    children = [row["id"] for row in hub.list_models(ident)
                if row["id"] != repo_id and (row.get("cardData") or {}).get("base_model") in (repo_id, [repo_id])]
    if not (record or base or children):
        return ""
    steps = []
    if original:
        steps.append(f"<li id=lineage-original>original release <code>{_e(original.get('file'))}</code> "
                     f"({_e(original.get('size'))} bytes, sha256 <code>{_e(original.get('sha256'))}</code>) "
                     f"from {_link(original.get('url'))}</li>")
    if base:
        steps.append(f"<li id=lineage-base>base model <a href='/{quote(str(base))}'>{_e(base)}</a></li>")
    converter = record.get("converter") if isinstance(record.get("converter"), dict) else {}
    this = (f"converted by zoo {_e(record.get('zoo_version'))} with <code>{_e(converter.get('file'))}</code>"
            if original else "fine-tuned" if base else "this model")
    steps.append(f"<li id=lineage-self><b>{_e(repo_id)}</b>: {this}</li>")
    if children:
        links = ", ".join(f"<a href='/{quote(c)}'>{_e(c)}</a>" for c in sorted(children))
        steps.append(f"<li id=lineage-children>fine-tuned on this hub: {links}</li>")
    body = f"<h2>Lineage</h2><ol id=lineage>{''.join(steps)}</ol>"
    if record:
        outputs = record.get("outputs") if isinstance(record.get("outputs"), dict) else {}
        rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e((v or {}).get('shape') if isinstance(v, dict) else '')}</td></tr>"
                       for k, v in list(outputs.items())[:50])
        body += (
            "<h2>Verification</h2><p id=verification>Reference inputs and the outputs recorded at conversion "
            f"(torch {_e(record.get('torch_version'))}, transformers {_e(record.get('transformers_version'))}, "
            f"tolerance {_e(record.get('atol'))}). Rerun: <code>zoo verify {_e(repo_id)}</code></p>"
            f"<table id=verification-outputs><thead><tr><th>output</th><th>shape</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    return f"<div class=box id=lineage-box>{body}</div>"
