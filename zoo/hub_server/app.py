"""The ASGI application: the part of the Hugging Face Hub HTTP API that huggingface_hub 2.x uses.

Endpoints (model repos only; repo ids are ORG/NAME):

    POST   /api/repos/create, DELETE /api/repos/delete, PUT /api/models/R/settings
    GET    /api/models?search=&author=&limit=          list_models
    GET    /api/models/R[/revision/REV]                model_info (siblings, sha, cardData)
    GET    /api/models/R/refs, /commits/REV, /tree/REV[/PATH]; POST /paths-info/REV
    POST   /api/models/R/preupload/REV, /commit/REV (NDJSON), /branch/B, /tag/REV; DELETE /branch/B, /tag/T
    POST   /R.git/info/lfs/objects/batch               LFS batch API, basic transfer (signed PUT urls)
    PUT    /R.git/info/lfs/objects/OID/SIZE            LFS upload (streamed, sha256-checked)
    POST   /R.git/info/lfs/objects/verify
    HEAD/GET /R/resolve/REV/PATH                       X-Repo-Commit, ETag, X-Linked-Etag/Size, Range
    GET    /, /R                                       browse pages

Hostile input (see SECURITY.md): request bodies are bounded (`Limits`) and read with an idle timeout,
malformed JSON / parameters / paths are 400s, card metadata and config.json are parsed under limits
(`cardmeta`) and a broken repo never takes a listing down, user files are served with inert content
types (`nosniff`, sandboxing CSP) and the browse pages with a restrictive CSP, signed LFS upload urls die
with the token that asked for them, and missing repos / revisions / files answer with the Hub's
X-Error-Code (RepoNotFound / RevisionNotFound / EntryNotFound) so clients raise the matching errors.

Xet storage is not offered: the Xet token endpoints answer 501, and clients must run with
HF_HUB_DISABLE_XET=1 (zoo.hub does this for you) so that uploads use regular LFS.

    from zoo.hub_server import create_app
    app = create_app("hub-data")          # serve with uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import mimetypes
import os
import secrets
import sys
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .auth import Identity, TokenFile
from .cardmeta import config_summary, load_card_metadata
from .storage import (
    COMMIT_RE,
    SHA256_RE,
    ConflictError,
    EntryNotFound,
    FileChange,
    HubError,
    HubStore,
    InvalidRequest,
    RepoNotFound,
    is_lfs_candidate,
)

__all__ = ["Limits", "create_app"]

LFS_MEDIA_TYPE = "application/vnd.git-lfs+json"
UPLOAD_URL_LIFETIME_S = 24 * 3600
EXPAND_PAGE = 50  # tree entries per page with expand=True (the Hub's page size too)
EXPAND_PATHS = 1000  # paths-info paths per call with expand=True


class Unauthorized(HubError):
    status = 401
    code = "Unauthorized"


class Forbidden(HubError):
    status = 403
    code = "Forbidden"


class NotSupported(HubError):
    status = 501
    code = "NotImplemented"


class NotFound(HubError):
    status = 404
    code = "NotFound"


class PayloadTooLarge(HubError):
    status = 413
    code = "PayloadTooLarge"


class RequestTimeout(HubError):
    status = 408
    code = "RequestTimeout"


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may make the server read or do."""

    json_body: int = 1024 * 1024  # JSON API bodies (repo create, LFS batch, paths-info, validate-yaml, ...)
    commit_body: int = 64 * 1024 * 1024  # NDJSON commit payload (inline files are base64 in it)
    lfs_object: int = 64 * 1024**3  # one LFS upload (streamed to disk, never held in memory)
    body_idle_s: float = 30.0  # a body that sends nothing for this long is dropped (408)
    body_total_s: float = 120.0  # a buffered (non-LFS) body must arrive within this long
    operations: int = 10_000  # files in one commit / preupload / paths-info call
    list_limit: int = 10_000  # largest ?limit= of /api/models


# Served inline as they are; every other type goes out as an attachment of type application/octet-stream.
INLINE_TYPES = frozenset({
    "text/plain", "text/markdown", "text/csv", "application/json", "image/png", "image/jpeg", "image/gif",
    "image/webp", "audio/wav", "audio/x-wav", "audio/mpeg", "audio/midi", "audio/flac",
})
PAGE_CSP = ("default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; form-action 'self'; "
            "base-uri 'none'; frame-ancestors 'none'")
FILE_CSP = "default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'; sandbox"


def validate_card_metadata(content: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) for a README.md's YAML metadata, as the Hub's /api/validate-yaml reports them.

    Parsed under the limits of `cardmeta.load_card_metadata` (size, depth, aliases) with its type checks.
    """
    data, errors = load_card_metadata(content)
    if errors:
        return errors, []
    if not data:
        return [], ["Empty or missing yaml metadata in repo card"]
    return [], []


def _header_safe(text: str) -> str:
    return " ".join(text.split()).encode("latin-1", "replace").decode("latin-1")[:500]


def _bool_param(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _int_param(params: Any, name: str, *, minimum: int = 0, maximum: int | None = None) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"query parameter {name}={raw[:40]!r} is not an integer") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise InvalidRequest(f"query parameter {name}={value} is out of range [{minimum}, {maximum}]")
    return value


def _typed(body: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any = None,
           what: str = "request body") -> Any:
    """body[key] if it has type `kind` (missing -> default); InvalidRequest naming the key otherwise."""
    value = body.get(key, default)
    if value is default:
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = "/".join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))
        raise InvalidRequest(f"{what}: '{key}' must be of type {names}, got {type(value).__name__}")
    return value


def _error(err: HubError, extra_headers: dict[str, str] | None = None) -> JSONResponse:
    message = str(err)
    headers = {"X-Error-Code": err.code, "X-Error-Message": _header_safe(message), **(extra_headers or {})}
    return JSONResponse({"error": message}, status_code=err.status, headers=headers)


class _BlobFileResponse(FileResponse):
    chunk_size = 1024 * 1024


class HubApp:
    """State shared by the handlers: the store, the token file and the LFS upload-url signing key."""

    def __init__(self, root: str | os.PathLike, token_file: str | os.PathLike | None = None,
                 limits: Limits | None = None):
        self.store = HubStore(root)
        self.limits = limits or Limits()
        self.tokens = TokenFile(token_file or Path(root) / "tokens.txt")
        self._parsed: OrderedDict[tuple[str, str], Any] = OrderedDict()  # (kind, blob sha256) -> parsed
        secret_path = self.store.root / "upload-signing.key"
        if not secret_path.is_file():
            self.store._atomic_write(secret_path, secrets.token_bytes(32))
        self.secret = secret_path.read_bytes()

    # ------------------------------------------------------------------ helpers
    def identity(self, request: Request) -> Identity:
        ident = self.tokens.identify(request.headers.get("authorization"))
        if ident.invalid_token:
            raise Unauthorized("Invalid credentials in Authorization header")
        return ident

    def check_read(self, ident: Identity, repo_id: str) -> dict[str, Any]:
        try:
            settings = self.store.repo_settings(repo_id)
        except InvalidRequest:  # an id that cannot be stored cannot exist either
            raise RepoNotFound(f"Repository {repo_id} not found") from None
        if settings.get("private") and not ident.authenticated:
            raise RepoNotFound(f"Repository {repo_id} not found")
        return settings

    def check_write(self, ident: Identity, repo_id: str | None = None) -> None:
        if not ident.authenticated:
            raise Unauthorized("You must be authenticated with a write token to do this (set HF_TOKEN)")
        if not ident.can_write:
            raise Forbidden(f"The token of '{ident.user}' is read-only; it cannot write" +
                            (f" to {repo_id}" if repo_id else ""))
        if repo_id is not None:
            self.store.repo_settings(repo_id)

    def sign(self, repo_id: str, oid: str, size: int, expires: int, fingerprint: str) -> str:
        """Signature of an LFS upload url; bound to the token (fingerprint) that asked for it."""
        message = f"{repo_id}\n{oid}\n{size}\n{expires}\n{fingerprint}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    # ------------------------------------------------------------------ request bodies
    async def read_body(self, request: Request, limit: int, *, total_s: float | None = None) -> bytearray:
        """The whole body, refused (413) past `limit` bytes and (408) when it stalls or takes too long."""
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise InvalidRequest(f"Content-Length {declared[:40]!r} is not a number")
            if int(declared) > limit:
                raise PayloadTooLarge(f"request body of {declared} bytes is over the limit of {limit} bytes")
        body = bytearray()
        deadline = time.monotonic() + (total_s if total_s is not None else self.limits.body_total_s)
        async for chunk in self.stream_body(request, deadline=deadline):
            if len(body) + len(chunk) > limit:
                raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
            body += chunk
        return body  # a bytearray: one buffer, no joined copy

    async def stream_body(self, request: Request, *, deadline: float | None = None):
        """Body chunks as they arrive; 408 when none comes for body_idle_s (or past `deadline`)."""
        receive = request.receive
        while True:
            wait = self.limits.body_idle_s
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise RequestTimeout("the request body took too long to arrive")
            try:
                message = await asyncio.wait_for(receive(), timeout=wait)
            except asyncio.TimeoutError:
                raise RequestTimeout(f"no request body data for {wait:.0f} s; giving up") from None
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            body = message.get("body", b"")
            if body:
                yield body
            if not message.get("more_body", False):
                return

    async def read_json(self, request: Request, *, limit: int | None = None, empty: Any = None) -> Any:
        """The body as a JSON object (400 when it is not one; `empty` when there is no body and that is allowed)."""
        raw = await self.read_body(request, limit or self.limits.json_body)
        if not raw.strip():
            if empty is not None:
                return empty
            raise InvalidRequest("the request body is empty; a JSON object is expected")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as err:
            raise InvalidRequest(f"the request body is not valid JSON: {str(err)[:200]}") from None
        if not isinstance(data, dict):
            raise InvalidRequest(f"the request body must be a JSON object, not {type(data).__name__}")
        return data

    def _cached(self, kind: str, sha256: str, compute: Any) -> Any:
        key = (kind, sha256)
        if key in self._parsed:
            self._parsed.move_to_end(key)
            return self._parsed[key]
        value = compute()
        self._parsed[key] = value
        while len(self._parsed) > 2048:
            self._parsed.popitem(last=False)
        return value

    @staticmethod
    def base_url(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    @staticmethod
    def raw_segments(request: Request) -> list[str]:
        """Path segments, percent-decoded one by one (so a revision sent as 'a%2Fb' stays one segment)."""
        raw = request.scope.get("raw_path") or request.url.path.encode()
        raw = raw.split(b"?", 1)[0].decode("latin-1")
        return [unquote(part) for part in raw.split("/")[1:]]

    def card_data(self, commit: dict[str, Any]) -> dict[str, Any]:
        """The README's metadata, bounded and type-checked (keys of the wrong type dropped); {} if unusable."""
        record = commit["files"].get("README.md")
        if record is None:
            return {}

        def parse() -> dict[str, Any]:
            with open(self.store.blob_path(record["sha256"]), "rb") as handle:
                head = handle.read(256 * 1024)  # the metadata block must fit well inside this
            return load_card_metadata(head.decode("utf-8", "replace"))[0]
        return json.loads(json.dumps(self._cached("card", record["sha256"], parse)))  # a private copy

    def config_summary(self, commit: dict[str, Any]) -> dict[str, Any]:
        record = commit["files"].get("config.json")
        if record is None:
            return {}

        def parse() -> dict[str, Any]:
            if record["size"] > 1_000_000:
                return {}
            return config_summary(self.store.blob_path(record["sha256"]).read_bytes())
        return json.loads(json.dumps(self._cached("config", record["sha256"], parse)))

    def repo_payload(self, repo_id: str, commit_id: str, *, blobs: bool = False) -> dict[str, Any]:
        settings = self.store.repo_settings(repo_id)
        commit = self.store.read_commit(commit_id)
        card = self.card_data(commit)
        siblings = []
        for path, record in commit["files"].items():
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=record["size"], blobId=record["oid"])
                if record["lfs"]:
                    sibling["lfs"] = {"size": record["size"], "sha256": record["sha256"],
                                      "pointerSize": record["pointer_size"]}
            siblings.append(sibling)
        tags = card.get("tags") or []
        tags = [tags] if isinstance(tags, str) else list(tags)
        if any(path.endswith(".safetensors") for path in commit["files"]):
            tags.append("safetensors")
        payload = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0], "sha": commit_id,
            "lastModified": commit["date"], "createdAt": settings["created_at"],
            "private": bool(settings.get("private")), "gated": False, "disabled": False,
            "downloads": 0, "likes": 0, "library_name": card.get("library_name"),
            "tags": sorted(set(map(str, tags))), "pipeline_tag": card.get("pipeline_tag"),
            "cardData": card or None, "config": self.config_summary(commit) or None, "siblings": siblings,
            "spaces": [], "usedStorage": sum(r["size"] for r in commit["files"].values()),
        }
        if "model-index" in card:
            payload["model-index"] = card["model-index"]
        return payload

    def tree_entry(self, path: str, record: dict[str, Any] | None, children: list[tuple[str, dict]] | None = None,
                   last_commit: dict[str, Any] | None = None) -> dict[str, Any]:
        if record is not None:
            entry: dict[str, Any] = {"type": "file", "oid": record["oid"], "size": record["size"], "path": path}
            if record["lfs"]:
                entry["lfs"] = {"oid": record["sha256"], "size": record["size"], "pointerSize": record["pointer_size"]}
        else:
            listing = "".join(f"{name}\0{rec['oid']}\n" for name, rec in sorted(children or []))
            entry = {"type": "directory", "oid": hashlib.sha1(listing.encode()).hexdigest(), "size": 0, "path": path}
        if last_commit is not None:
            entry["lastCommit"] = {"id": last_commit["id"], "title": last_commit["title"], "date": last_commit["date"]}
        return entry

    def list_tree(self, repo_id: str, commit_id: str, path: str, recursive: bool, expand: bool,
                  offset: int = 0, limit: int | None = None) -> tuple[list[dict], int]:
        """(entries[offset:offset + limit], number of entries in all); lastCommit only for the returned ones."""
        files = self.store.read_commit(commit_id)["files"]
        path = path.strip("/")
        prefix = f"{path}/" if path else ""
        if path and path in files:
            raise EntryNotFound(f"{path} is a file, not a folder")
        below = {name: rec for name, rec in files.items() if name.startswith(prefix)}
        if path and not below:
            raise EntryNotFound(f"{path} does not exist at {commit_id}")
        entries: dict[str, tuple[dict | None, list]] = {}
        for name, record in sorted(below.items()):
            rest = name[len(prefix):].split("/")
            for depth in range(1, len(rest)):
                folder = prefix + "/".join(rest[:depth])
                if recursive or depth == 1:
                    entries.setdefault(folder, (None, []))[1].append((name, record))
            if recursive or len(rest) == 1:
                entries[name] = (record, [])
        names = sorted(entries)
        page = names[offset:offset + limit if limit is not None else None]
        last = self.store.last_commits(commit_id, page) if expand else {}
        return [self.tree_entry(name, *entries[name], last.get(name)) for name in page], len(names)

    def list_models(self, ident: Identity, search: str = "", author: str | None = None) -> list[dict[str, Any]]:
        """Rows of every repo `ident` may see; a repo whose data cannot be read is left out (and logged),
        it never takes the listing down."""
        rows = []
        for repo_id in self.store.list_repos():
            try:
                settings = self.check_read(ident, repo_id)
            except HubError:
                continue
            if search and search.lower() not in repo_id.lower():
                continue
            if author and repo_id.split("/")[0] != author:
                continue
            try:
                commit_id = self.store.resolve(repo_id, "main")
                row = self.repo_payload(repo_id, commit_id)
                json.dumps(row, allow_nan=False)
            except Exception:  # noqa: BLE001 - isolate one broken repo from the rest of the listing
                print(f"zoo hub: listing skips {repo_id}:\n{traceback.format_exc(limit=3)}", file=sys.stderr)
                continue
            row.pop("siblings")
            row["private"] = bool(settings.get("private"))
            rows.append(row)
        return rows


def create_app(root: str | os.PathLike, token_file: str | os.PathLike | None = None,
               limits: Limits | None = None) -> Starlette:
    """The Starlette app serving the hub stored under `root` (tokens from `token_file`, default root/tokens.txt)."""
    hub = HubApp(root, token_file, limits)
    store = hub.store

    def api(handler):
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request, hub.identity(request))
            except HubError as err:
                return _error(err)
            except ClientDisconnect:
                return Response(status_code=499)
            except Exception:  # noqa: BLE001 - a server fault: logged, answered, never a dropped connection
                print(f"zoo hub: internal error on {request.method} {request.url.path}:\n{traceback.format_exc()}",
                      file=sys.stderr)
                return JSONResponse({"error": "internal server error (see the server log)"}, status_code=500,
                                    headers={"X-Error-Code": "InternalError"})
        return endpoint

    def repo_of(request: Request) -> str:
        name = request.path_params["name"]
        return f"{request.path_params['org']}/{name.removesuffix('.git')}"

    def writable_repo_of(request: Request, ident: Identity) -> str:
        """The request's repo id, once `ident` may see it (else 404) and write to it (else 401/403)."""
        repo_id = repo_of(request)
        hub.check_read(ident, repo_id)
        hub.check_write(ident, repo_id)
        return repo_id

    # ------------------------------------------------------------------ general
    async def health(request: Request, ident: Identity) -> Response:
        return JSONResponse({"ok": True, "service": "zoo-hub", "repos": len(store.list_repos())})

    async def agent_harnesses(request: Request, ident: Identity) -> Response:
        # huggingface_hub 2.x fetches this registry (best-effort telemetry); this hub knows no harnesses
        return JSONResponse({"standardEnvVars": [], "harnesses": {}})

    async def whoami(request: Request, ident: Identity) -> Response:
        if not ident.authenticated:
            raise Unauthorized("You must be authenticated")
        role = "write" if ident.can_write else "read"
        return JSONResponse({"type": "user", "name": ident.user, "fullname": ident.user, "orgs": [],
                             "auth": {"type": "access_token", "accessToken": {"displayName": "zoo-hub", "role": role}}})

    async def create_repo(request: Request, ident: Identity) -> Response:
        hub.check_write(ident)
        body = await hub.read_json(request)
        if body.get("type", "model") not in (None, "model"):
            raise InvalidRequest("this hub stores model repos only")
        name = _typed(body, "name", str)
        if not name:
            raise InvalidRequest("request body: 'name' (the repo name) is required")
        organization = _typed(body, "organization", str) or ident.user
        repo_id = f"{organization}/{name}"
        private = _typed(body, "private", bool)
        if private is None:
            private = _typed(body, "visibility", str) == "private"
        url = f"{hub.base_url(request)}/{repo_id}"
        try:
            store.create_repo(repo_id, private=bool(private), author=ident.user or "zoo")
        except ConflictError as err:  # the Hub answers 409 with the repo url (create_repo(exist_ok=True) reads it)
            response = _error(err)
            return JSONResponse({"error": str(err), "url": url}, status_code=409, headers=dict(
                (k, v) for k, v in response.headers.items() if k.lower().startswith("x-error")))
        return JSONResponse({"url": url, "name": repo_id, "id": repo_id})

    async def delete_repo(request: Request, ident: Identity) -> Response:
        hub.check_write(ident)
        body = await hub.read_json(request)
        repo_id = f"{_typed(body, 'organization', str) or ident.user}/{_typed(body, 'name', str)}"
        hub.check_read(ident, repo_id)
        store.delete_repo(repo_id)
        return Response(status_code=200)

    async def repo_settings(request: Request, ident: Identity) -> Response:
        repo_id = writable_repo_of(request, ident)
        body = await hub.read_json(request)
        changes = {}
        if "private" in body:
            changes["private"] = _typed(body, "private", bool)
        if "visibility" in body:
            changes["private"] = _typed(body, "visibility", str) == "private"
        return JSONResponse(store.update_settings(repo_id, **changes))

    async def xet_token(request: Request, ident: Identity) -> Response:
        raise NotSupported("this hub stores files with git LFS, not Xet; set HF_HUB_DISABLE_XET=1 on the client")

    # ------------------------------------------------------------------ read API
    async def list_models(request: Request, ident: Identity) -> Response:
        params = request.query_params
        limit = _int_param(params, "limit", minimum=0)
        limit = None if limit is None else min(limit, hub.limits.list_limit)
        rows = hub.list_models(ident, params.get("search", ""), params.get("author"))
        if params.get("sort") in ("lastModified", "last_modified"):
            rows.sort(key=lambda row: row["lastModified"], reverse=True)
        if limit is not None:
            rows = rows[:limit]
        return JSONResponse(rows)

    async def model_info(request: Request, ident: Identity) -> Response:
        repo_id = repo_of(request)
        hub.check_read(ident, repo_id)
        revision = request.path_params.get("revision")
        commit_id = store.resolve(repo_id, revision)
        blobs = _bool_param(request.query_params.get("blobs"))
        return JSONResponse(hub.repo_payload(repo_id, commit_id, blobs=blobs))

    async def list_refs(request: Request, ident: Identity) -> Response:
        repo_id = repo_of(request)
        hub.check_read(ident, repo_id)

        def refs(kind: str) -> list[dict[str, str]]:
            return [{"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": target}
                    for name, target in store.refs(repo_id, kind).items()]
        payload = {"branches": refs("heads"), "tags": refs("tags"), "converts": []}
        if request.query_params.get("include_prs"):
            payload["pullRequests"] = []
        return JSONResponse(payload)

    async def list_commits(request: Request, ident: Identity) -> Response:
        repo_id = repo_of(request)
        hub.check_read(ident, repo_id)
        commit_id = store.resolve(repo_id, request.path_params["revision"])
        return JSONResponse([
            {"id": c["id"], "title": c["title"], "message": c["description"], "date": c["date"],
             "authors": [{"user": c["author"]}]}
            for c in store.history(commit_id)
        ])

    async def list_tree(request: Request, ident: Identity) -> Response:
        repo_id = repo_of(request)
        hub.check_read(ident, repo_id)
        segments = hub.raw_segments(request)  # api models ORG NAME tree REV [PATH...]
        revision, path = segments[5], "/".join(segments[6:])
        commit_id = store.resolve(repo_id, revision)
        params = request.query_params
        recursive, expand = _bool_param(params.get("recursive")), _bool_param(params.get("expand"))
        # expand (last commit of each entry) walks the history: pages of 50 entries, as the Hub does
        offset = _int_param(params, "cursor", minimum=0) or 0
        limit = EXPAND_PAGE if expand else None
        entries, total = hub.list_tree(repo_id, commit_id, path, recursive, expand, offset, limit)
        headers = {}
        if limit is not None and offset + limit < total:
            headers["Link"] = f'<{request.url.include_query_params(cursor=offset + limit)}>; rel="next"'
        return JSONResponse(entries, headers=headers)

    async def paths_info(request: Request, ident: Identity) -> Response:
        repo_id = repo_of(request)
        hub.check_read(ident, repo_id)
        commit_id = store.resolve(repo_id, request.path_params["revision"])
        if request.headers.get("content-type", "").startswith("application/json"):
            data = await hub.read_json(request, empty={})
            paths, expand = _typed(data, "paths", list, []), bool(data.get("expand"))
        else:
            raw = await hub.read_body(request, hub.limits.json_body)
            form = parse_qs(raw.decode("utf-8", "replace"), max_num_fields=hub.limits.operations + 10)
            paths, expand = form.get("paths", []), _bool_param(form.get("expand", ["False"])[0])
        if len(paths) > hub.limits.operations or not all(isinstance(p, str) for p in paths):
            raise InvalidRequest(f"'paths' must be a list of at most {hub.limits.operations} strings")
        if expand and len(paths) > EXPAND_PATHS:
            raise InvalidRequest(f"expand=True walks the history for each path: at most {EXPAND_PATHS} paths per call")
        files = store.read_commit(commit_id)["files"]
        last = store.last_commits(commit_id, paths) if expand else {}
        out = []
        for path in paths:
            path = path.strip("/")
            if path in files:
                out.append(hub.tree_entry(path, files[path], last_commit=last.get(path)))
            else:
                kids = [(n, r) for n, r in files.items() if n.startswith(path + "/")]
                if kids:
                    out.append(hub.tree_entry(path, None, kids, last.get(path)))
        return JSONResponse(out)

    # ------------------------------------------------------------------ write API
    async def preupload(request: Request, ident: Identity) -> Response:
        repo_id = writable_repo_of(request, ident)
        if request.query_params.get("create_pr"):
            raise InvalidRequest("pull requests are not supported by the zoo hub")
        head = store.resolve(repo_id, request.path_params["revision"])
        current = store.read_commit(head)["files"]
        body = await hub.read_json(request, limit=hub.limits.json_body * 8)
        items = _typed(body, "files", list, [])
        if len(items) > hub.limits.operations:
            raise InvalidRequest(f"preupload of {len(items)} files; at most {hub.limits.operations} per call")
        files = []
        for item in items:
            if not isinstance(item, dict):
                raise InvalidRequest("preupload: each entry of 'files' must be an object")
            path, size = _typed(item, "path", str, ""), _typed(item, "size", int, 0)
            if size < 0:
                raise InvalidRequest(f"{path}: size must not be negative")
            try:
                sample = base64.b64decode(_typed(item, "sample", str, "")[:4096])
            except (binascii.Error, ValueError):
                raise InvalidRequest(f"{path}: sample is not base64") from None
            lfs = is_lfs_candidate(path, size, sample)
            record = current.get(path)
            oid = None
            if record is not None:
                oid = record["sha256"] if lfs else record["oid"]
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return JSONResponse({"files": files, "commitOid": head})

    async def commit(request: Request, ident: Identity) -> Response:
        repo_id = writable_repo_of(request, ident)
        if request.query_params.get("create_pr"):
            raise InvalidRequest("pull requests are not supported by the zoo hub")
        branch = request.path_params["revision"]
        body = await hub.read_body(request, hub.limits.commit_body)
        header: dict[str, Any] | None = None
        changes: dict[str, FileChange] = {}
        for number, line in enumerate(body.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                key, value = item["key"], item["value"]
                if not isinstance(key, str) or not isinstance(value, dict):
                    raise TypeError
            except (ValueError, KeyError, TypeError, RecursionError):
                raise InvalidRequest(f"commit payload line {number} is not a {{key, value}} JSON object") from None
            if len(changes) >= hub.limits.operations:
                raise InvalidRequest(f"a commit may change at most {hub.limits.operations} files")
            what = f"commit payload line {number}"
            if key == "header":
                header = value
                continue
            path = _typed(value, "path", str, "", what)
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise InvalidRequest(f"{path}: unsupported encoding {str(value.get('encoding'))[:40]!r}")
                try:
                    changes[path] = FileChange(content=base64.b64decode(_typed(value, "content", str, "", what),
                                                                        validate=True))
                except (binascii.Error, ValueError):
                    raise InvalidRequest(f"{path}: content is not valid base64") from None
            elif key == "lfsFile":
                oid = str(value.get("oid", ""))
                if value.get("algo", "sha256") != "sha256" or not SHA256_RE.match(oid):
                    raise InvalidRequest(f"{path}: LFS file needs a sha256 oid")
                changes[path] = FileChange(sha256=oid, size=_typed(value, "size", int, None, what))
            elif key == "deletedFile":
                changes[path] = FileChange(delete=True)
            elif key == "deletedFolder":
                changes[path] = FileChange(delete_folder=True)
            else:
                raise InvalidRequest(f"commit payload line {number}: unknown operation {key!r}")
        if header is None:
            raise InvalidRequest("commit payload has no header line")
        parent = _typed(header, "parentCommit", str, None, "commit header")
        if parent is not None and not COMMIT_RE.match(parent):
            raise InvalidRequest(f"commit header: parentCommit {parent[:60]!r} is not a 40-hex commit id")
        commit_id = store.commit(
            repo_id, branch, changes, title=_typed(header, "summary", str, "", "commit header"),
            description=_typed(header, "description", str, "", "commit header") or "",
            author=ident.user or "zoo", parent_commit=parent,
        )
        return JSONResponse({"success": True, "commitOid": commit_id, "hookOutput": "",
                             "commitUrl": f"{hub.base_url(request)}/{repo_id}/commit/{commit_id}"})

    async def branch(request: Request, ident: Identity) -> Response:
        repo_id = writable_repo_of(request, ident)
        name = hub.raw_segments(request)[5]
        if request.method == "DELETE":
            store.delete_ref(repo_id, "heads", name)
            return Response(status_code=200)
        body = await hub.read_json(request, empty={})
        store.create_branch(repo_id, name, _typed(body, "startingPoint", str))
        return Response(status_code=200)

    async def tag(request: Request, ident: Identity) -> Response:
        repo_id = writable_repo_of(request, ident)
        segment = hub.raw_segments(request)[5]
        if request.method == "DELETE":
            store.delete_ref(repo_id, "tags", segment)
            return Response(status_code=200)
        body = await hub.read_json(request)
        store.create_tag(repo_id, _typed(body, "tag", str, ""), segment, _typed(body, "message", str, "") or "")
        return Response(status_code=200)

    # ------------------------------------------------------------------ LFS
    async def lfs_batch(request: Request, ident: Identity) -> Response:
        repo_id = repo_of(request)
        hub.check_read(ident, repo_id)
        body = await hub.read_json(request, limit=hub.limits.json_body * 8)
        if body.get("operation") != "upload":
            raise InvalidRequest("only the LFS 'upload' operation is offered; download through /resolve")
        hub.check_write(ident, repo_id)
        transfers = _typed(body, "transfers", list, None) or ["basic"]
        requested = _typed(body, "objects", list, [])
        if len(requested) > hub.limits.operations:
            raise InvalidRequest(f"LFS batch of {len(requested)} objects; at most {hub.limits.operations} per call")
        if "basic" not in transfers:
            raise InvalidRequest(f"no common LFS transfer adapter: client offers {transfers}, server has ['basic']")
        base = hub.base_url(request)
        expires = int(time.time()) + UPLOAD_URL_LIFETIME_S
        objects = []
        for obj in requested:
            oid, size = (obj.get("oid"), obj.get("size")) if isinstance(obj, dict) else (None, None)
            if not isinstance(oid, str) or not SHA256_RE.match(oid) or not isinstance(size, int) or \
                    isinstance(size, bool) or size < 0:
                objects.append({"oid": str(oid)[:80], "size": size if isinstance(size, int) else 0,
                                "error": {"code": 422, "message": "oid must be a sha256 and size an integer"}})
                continue
            if size > hub.limits.lfs_object:
                objects.append({"oid": oid, "size": size, "error": {
                    "code": 422, "message": f"object of {size} bytes is over this hub's limit of "
                                            f"{hub.limits.lfs_object} bytes"}})
                continue
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if not store.has_blob(oid, size):
                href = f"{base}/{repo_id}.git/info/lfs/objects/{oid}/{size}"
                fingerprint = ident.fingerprint or ""
                sig = hub.sign(repo_id, oid, size, expires, fingerprint)
                entry["actions"] = {
                    "upload": {"href": f"{href}?expires={expires}&token={fingerprint}&signature={sig}",
                               "expires_in": UPLOAD_URL_LIFETIME_S},
                    "verify": {"href": f"{base}/{repo_id}.git/info/lfs/objects/verify"},
                }
            objects.append(entry)
        return JSONResponse({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                            media_type=LFS_MEDIA_TYPE)

    async def lfs_upload(request: Request, ident: Identity) -> Response:
        repo_id = repo_of(request)
        oid, size = request.path_params["oid"], int(request.path_params["size"])
        expires = request.query_params.get("expires", "0")
        signature = request.query_params.get("signature", "")
        fingerprint = request.query_params.get("token", "")
        if not SHA256_RE.match(oid) or not expires.isdigit() or len(expires) > 12 or int(expires) < time.time() or \
                not hmac.compare_digest(signature.encode(), hub.sign(repo_id, oid, size, int(expires),
                                                                     fingerprint).encode()):
            raise Forbidden("upload url signature is invalid or expired; ask the LFS batch endpoint again")
        owner = hub.tokens.by_fingerprint(fingerprint) if fingerprint else None
        if owner is None or not owner.can_write:
            raise Forbidden("the token this upload url was issued to is revoked or read-only")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) != size):
            raise InvalidRequest(f"Content-Length {declared[:40]!r} differs from the object size {size}")
        if store.has_blob(oid, size):
            async for _ in hub.stream_body(request):
                pass
            return Response(status_code=200)
        with store.blob_writer(oid, size) as writer:
            async for chunk in hub.stream_body(request):
                writer.write(chunk)
        return Response(status_code=200)

    async def lfs_verify(request: Request, ident: Identity) -> Response:
        writable_repo_of(request, ident)  # only writers learn whether a blob is stored
        body = await hub.read_json(request)
        oid, size = body.get("oid", ""), body.get("size")
        if not isinstance(size, int) or isinstance(size, bool):
            raise InvalidRequest("LFS verify: 'size' must be an integer")
        if not isinstance(oid, str) or not SHA256_RE.match(oid) or not store.has_blob(oid, size):
            raise EntryNotFound(f"LFS object {oid} ({size} bytes) is not stored")
        return JSONResponse({"ok": True}, media_type=LFS_MEDIA_TYPE)

    # ------------------------------------------------------------------ downloads
    async def resolve(request: Request, ident: Identity) -> Response:
        repo_id = repo_of(request)
        settings = hub.check_read(ident, repo_id)
        segments = hub.raw_segments(request)  # ORG NAME resolve REV PATH...
        revision, path = segments[3], "/".join(segments[4:])
        commit_id = store.resolve(repo_id, revision)
        record = store.read_commit(commit_id)["files"].get(path)
        if record is None:
            return _error(EntryNotFound(f"{path} does not exist at {revision} ({commit_id})"),
                          {"X-Repo-Commit": commit_id})
        etag = record["sha256"] if record["lfs"] else record["oid"]
        headers = {"X-Repo-Commit": commit_id, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                   "Cache-Control": "private, max-age=0" if not COMMIT_RE.match(revision) else
                   f"{'private' if settings.get('private') else 'public'}, max-age=31536000, immutable"}
        if record["lfs"]:
            headers.update({"X-Linked-Etag": f'"{record["sha256"]}"', "X-Linked-Size": str(record["size"])})
        media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        attachment = bool(request.query_params.get("download"))
        if media_type not in INLINE_TYPES:  # html, svg, xml, js, pdf, ...: never rendered on this origin
            media_type, attachment = "application/octet-stream", True
        if media_type.startswith("text/") or media_type == "application/json":
            media_type += "; charset=utf-8"
        headers.update({"X-Content-Type-Options": "nosniff", "Content-Security-Policy": FILE_CSP})
        return _BlobFileResponse(store.blob_path(record["sha256"]), headers=headers, media_type=media_type,
                                 filename=path.rsplit("/", 1)[-1] if attachment else None)

    # ------------------------------------------------------------------ pages
    from .pages import render_error, render_index, render_model

    async def index_page(request: Request, ident: Identity) -> Response:
        return HTMLResponse(render_index(hub, ident, request.query_params.get("search", "")))

    async def model_page(request: Request, ident: Identity) -> Response:
        repo_id = repo_of(request)
        revision = request.query_params.get("revision") or "main"
        try:
            hub.check_read(ident, repo_id)
            return HTMLResponse(render_model(hub, ident, repo_id, revision, hub.base_url(request)))
        except HubError as err:
            return HTMLResponse(render_error(err), status_code=err.status)

    async def validate_yaml(request: Request, ident: Identity) -> Response:
        body = await hub.read_json(request)
        errors, warnings = validate_card_metadata(_typed(body, "content", str, ""))
        return JSONResponse({"errors": [{"message": m} for m in errors], "warnings": [{"message": m} for m in warnings]},
                            status_code=400 if errors else 200)

    async def not_supported(request: Request, ident: Identity) -> Response:
        segments = hub.raw_segments(request)
        if segments[1:2] == ["models"]:  # /api/models/<something no route matched>
            repo_id = "/".join(segments[2:4])
            hub.check_read(ident, repo_id)  # RepoNotFound unless it is a readable ORG/NAME
            raise NotFound(f"{request.method} {request.url.path}: no such endpoint for {repo_id}")
        raise NotSupported(f"{request.method} {request.url.path} is not part of the zoo hub API")

    async def not_found(request: Request, ident: Identity) -> Response:
        """Anything else: a repo address with a repo id no route matches (e.g. no ORG/) is RepoNotFound."""
        segments = hub.raw_segments(request)
        if "resolve" in segments[1:] or request.method != "GET":
            repo_id = "/".join(segments[: segments.index("resolve")] if "resolve" in segments else segments[:2])
            raise RepoNotFound(f"Repository {repo_id} not found")
        return HTMLResponse(render_error(NotFound(f"{request.url.path} not found")), status_code=404,
                            headers={"X-Error-Code": "NotFound"})

    repo = "/api/models/{org}/{name}"
    routes = [
        Route("/api/health", api(health)),
        Route("/api/whoami-v2", api(whoami)),
        Route("/api/agent-harnesses", api(agent_harnesses)),
        Route("/api/repos/create", api(create_repo), methods=["POST"]),
        Route("/api/repos/delete", api(delete_repo), methods=["DELETE"]),
        Route("/api/models", api(list_models)),
        Route(repo, api(model_info)),
        Route(repo + "/revision/{revision:path}", api(model_info)),
        Route(repo + "/settings", api(repo_settings), methods=["PUT"]),
        Route(repo + "/refs", api(list_refs)),
        Route(repo + "/commits/{revision:path}", api(list_commits)),
        Route(repo + "/tree/{rest:path}", api(list_tree)),
        Route(repo + "/paths-info/{revision:path}", api(paths_info), methods=["POST"]),
        Route(repo + "/preupload/{revision:path}", api(preupload), methods=["POST"]),
        Route(repo + "/commit/{revision:path}", api(commit), methods=["POST"]),
        Route(repo + "/branch/{branch:path}", api(branch), methods=["POST", "DELETE"]),
        Route(repo + "/tag/{revision:path}", api(tag), methods=["POST", "DELETE"]),
        Route(repo + "/xet-read-token/{revision:path}", api(xet_token)),
        Route(repo + "/xet-write-token/{revision:path}", api(xet_token)),
        Route("/api/validate-yaml", api(validate_yaml), methods=["POST"]),
        Route("/api/{rest:path}", api(not_supported), methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/{org}/{name}/info/lfs/objects/batch", api(lfs_batch), methods=["POST"]),
        Route("/{org}/{name}/info/lfs/objects/verify", api(lfs_verify), methods=["POST"]),
        Route("/{org}/{name}/info/lfs/objects/{oid}/{size:int}", api(lfs_upload), methods=["PUT"]),
        Route("/{org}/{name}/resolve/{rest:path}", api(resolve), methods=["GET", "HEAD"]),
        Route("/", api(index_page)),
        Route("/{org}/{name}", api(model_page)),
        Route("/{rest:path}", api(not_found), methods=["GET", "HEAD", "POST", "PUT", "DELETE"]),
    ]

    store.cleanup_tmp()  # uploads a crash left half-written
    app = Starlette(routes=routes)
    app.state.hub = hub
    return _Guard(app)


class _Guard:
    """Outermost ASGI layer: refuse paths no file system or router should see (NUL, control characters,
    undecodable bytes) with a 400, refuse declared bodies over the largest limit, and add nosniff to every
    response and a restrictive CSP to HTML ones."""

    def __init__(self, app: Starlette):
        self.app = app
        self.state = app.state
        self.largest_body = max(app.state.hub.limits.commit_body, app.state.hub.limits.lfs_object)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        try:
            decoded = unquote(raw.split(b"?", 1)[0].decode("ascii"), errors="strict")
        except (UnicodeDecodeError, ValueError):
            decoded = None
        problem = None
        if decoded is None:
            problem = "the request path is not valid percent-encoded UTF-8"
        elif any(ord(c) < 32 or ord(c) == 127 for c in decoded) or any(ord(c) < 32 for c in scope["path"]):
            problem = "the request path contains a NUL or control character"
        else:
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.largest_body):
                error = PayloadTooLarge(f"Content-Length {length[:40].decode('latin-1')} is over this hub's limits")
                await _error(error)(scope, receive, send)
                return
        if problem:
            await _error(InvalidRequest(problem))(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                names = {k.lower() for k, _ in headers}
                if b"x-content-type-options" not in names:
                    headers.append((b"x-content-type-options", b"nosniff"))
                content_type = dict(headers).get(b"content-type", b"")
                if content_type.startswith(b"text/html") and b"content-security-policy" not in names:
                    headers += [(b"content-security-policy", PAGE_CSP.encode()), (b"x-frame-options", b"DENY"),
                                (b"referrer-policy", b"same-origin")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

