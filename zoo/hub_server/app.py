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

Xet storage is not offered: the Xet token endpoints answer 501, and clients must run with
HF_HUB_DISABLE_XET=1 (zoo.hub does this for you) so that uploads use regular LFS.

    from zoo.hub_server import create_app
    app = create_app("hub-data")          # serve with uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import mimetypes
import os
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .auth import Identity, TokenFile
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

__all__ = ["create_app"]

LFS_MEDIA_TYPE = "application/vnd.git-lfs+json"
UPLOAD_URL_LIFETIME_S = 24 * 3600


class Unauthorized(HubError):
    status = 401
    code = "Unauthorized"


class Forbidden(HubError):
    status = 403
    code = "Forbidden"


class NotSupported(HubError):
    status = 501
    code = "NotImplemented"


def validate_card_metadata(content: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) for a README.md's YAML metadata, as the Hub's /api/validate-yaml reports them."""
    import yaml

    if not content.startswith("---"):
        return [], ["Empty or missing yaml metadata in repo card"]
    end = content.find("\n---", 3)
    if end < 0:
        return ["the YAML metadata block is not closed by a '---' line"], []
    try:
        data = yaml.safe_load(content[3:end])
    except yaml.YAMLError as err:
        return [f"metadata is not valid YAML: {err}"], []
    if data is None:
        return [], ["Empty or missing yaml metadata in repo card"]
    if not isinstance(data, dict):
        return ["metadata must be a YAML mapping"], []
    errors = []
    for key in ("license", "library_name", "pipeline_tag", "model_name"):
        if key in data and not isinstance(data[key], str):
            errors.append(f'"{key}" must be a string')
    for key in ("tags", "datasets", "language"):
        value = data.get(key)
        if value is not None and not (isinstance(value, str) or
                                      (isinstance(value, list) and all(isinstance(v, str) for v in value))):
            errors.append(f'"{key}" must be a string or a list of strings')
    base_model = data.get("base_model")
    if base_model is not None and not (isinstance(base_model, str) or isinstance(base_model, list)):
        errors.append('"base_model" must be a repo id or a list of repo ids')
    if "model-index" in data:
        from huggingface_hub.repocard_data import model_index_to_eval_results

        try:
            model_index_to_eval_results(data["model-index"])
        except Exception as err:  # noqa: BLE001 - any malformed structure is a metadata error
            errors.append(f'"model-index" is malformed: {type(err).__name__}: {err}')
    return errors, []


def _header_safe(text: str) -> str:
    return " ".join(text.split()).encode("latin-1", "replace").decode("latin-1")[:500]


def _error(err: HubError, extra_headers: dict[str, str] | None = None) -> JSONResponse:
    message = str(err)
    headers = {"X-Error-Code": err.code, "X-Error-Message": _header_safe(message), **(extra_headers or {})}
    return JSONResponse({"error": message}, status_code=err.status, headers=headers)


class _BlobFileResponse(FileResponse):
    chunk_size = 1024 * 1024


class HubApp:
    """State shared by the handlers: the store, the token file and the LFS upload-url signing key."""

    def __init__(self, root: str | os.PathLike, token_file: str | os.PathLike | None = None):
        self.store = HubStore(root)
        self.tokens = TokenFile(token_file or Path(root) / "tokens.txt")
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
        settings = self.store.repo_settings(repo_id)
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

    def sign(self, repo_id: str, oid: str, size: int, expires: int) -> str:
        message = f"{repo_id}\n{oid}\n{size}\n{expires}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

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
        record = commit["files"].get("README.md")
        if record is None:
            return {}
        text = self.store.blob_path(record["sha256"]).read_text(encoding="utf-8", errors="replace")
        if not text.startswith("---"):
            return {}
        end = text.find("\n---", 3)
        if end < 0:
            return {}
        import yaml

        try:
            data = yaml.safe_load(text[3:end])
        except yaml.YAMLError:
            return {}
        return data if isinstance(data, dict) else {}

    def config_summary(self, commit: dict[str, Any]) -> dict[str, Any]:
        record = commit["files"].get("config.json")
        if record is None or record["size"] > 1_000_000:
            return {}
        try:
            config = json.loads(self.store.blob_path(record["sha256"]).read_text())
        except (ValueError, UnicodeDecodeError):
            return {}
        keys = ("architectures", "model_type", "auto_map")
        return {key: config[key] for key in keys if key in config}

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
        tags = list(card.get("tags") or [])
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

    def list_tree(self, repo_id: str, commit_id: str, path: str, recursive: bool, expand: bool) -> list[dict]:
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
        last = self.store.last_commits(commit_id, list(entries)) if expand else {}
        return [self.tree_entry(name, rec, kids, last.get(name)) for name, (rec, kids) in sorted(entries.items())]

    def list_models(self, ident: Identity, search: str = "", author: str | None = None) -> list[dict[str, Any]]:
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
            commit_id = self.store.resolve(repo_id, "main")
            row = self.repo_payload(repo_id, commit_id)
            row.pop("siblings")
            row["private"] = bool(settings.get("private"))
            rows.append(row)
        return rows


def create_app(root: str | os.PathLike, token_file: str | os.PathLike | None = None) -> Starlette:
    """The Starlette app serving the hub stored under `root` (tokens from `token_file`, default root/tokens.txt)."""
    hub = HubApp(root, token_file)
    store = hub.store

    def api(handler):
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request, hub.identity(request))
            except HubError as err:
                return _error(err)
            except ClientDisconnect:
                return Response(status_code=499)
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

    async def whoami(request: Request, ident: Identity) -> Response:
        if not ident.authenticated:
            raise Unauthorized("You must be authenticated")
        role = "write" if ident.can_write else "read"
        return JSONResponse({"type": "user", "name": ident.user, "fullname": ident.user, "orgs": [],
                             "auth": {"type": "access_token", "accessToken": {"displayName": "zoo-hub", "role": role}}})

    async def create_repo(request: Request, ident: Identity) -> Response:
        hub.check_write(ident)
        body = await request.json()
        if body.get("type", "model") not in (None, "model"):
            raise InvalidRequest("this hub stores model repos only")
        name, organization = body.get("name"), body.get("organization") or ident.user
        repo_id = f"{organization}/{name}"
        private = body.get("private")
        if private is None:
            private = body.get("visibility") == "private"
        url = f"{hub.base_url(request)}/{repo_id}"
        try:
            store.create_repo(repo_id, private=bool(private), author=ident.user or "zoo")
        except ConflictError as err:  # the Hub answers 409 with the repo url (create_repo(exist_ok=True) reads it)
            response = _error(err)
            return JSONResponse({"error": str(err), "url": url}, status_code=409, headers=dict(
                (k, v) for k, v in response.headers.items() if k.lower().startswith("x-error")))
        return JSONResponse({"url": url, "name": repo_id, "id": repo_id})

    async def delete_repo(request: Request, ident: Identity) -> Response:
        body = await request.json()
        repo_id = f"{body.get('organization') or ident.user}/{body.get('name')}"
        hub.check_write(ident)
        hub.check_read(ident, repo_id)
        store.delete_repo(repo_id)
        return Response(status_code=200)

    async def repo_settings(request: Request, ident: Identity) -> Response:
        repo_id = writable_repo_of(request, ident)
        body = await request.json()
        changes = {}
        if "private" in body:
            changes["private"] = bool(body["private"])
        if "visibility" in body:
            changes["private"] = body["visibility"] == "private"
        return JSONResponse(store.update_settings(repo_id, **changes))

    async def xet_token(request: Request, ident: Identity) -> Response:
        raise NotSupported("this hub stores files with git LFS, not Xet; set HF_HUB_DISABLE_XET=1 on the client")

    # ------------------------------------------------------------------ read API
    async def list_models(request: Request, ident: Identity) -> Response:
        params = request.query_params
        rows = hub.list_models(ident, params.get("search", ""), params.get("author"))
        if params.get("sort") in ("lastModified", "last_modified"):
            rows.sort(key=lambda row: row["lastModified"], reverse=True)
        if params.get("limit"):
            rows = rows[: int(params["limit"])]
        return JSONResponse(rows)

    async def model_info(request: Request, ident: Identity) -> Response:
        repo_id = repo_of(request)
        hub.check_read(ident, repo_id)
        revision = request.path_params.get("revision")
        commit_id = store.resolve(repo_id, revision)
        blobs = request.query_params.get("blobs", "").lower() in ("1", "true")
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
        recursive = params.get("recursive", "").lower() in ("1", "true")
        expand = params.get("expand", "").lower() in ("1", "true")
        return JSONResponse(hub.list_tree(repo_id, commit_id, path, recursive, expand))

    async def paths_info(request: Request, ident: Identity) -> Response:
        repo_id = repo_of(request)
        hub.check_read(ident, repo_id)
        commit_id = store.resolve(repo_id, request.path_params["revision"])
        body = await request.body()
        if request.headers.get("content-type", "").startswith("application/json"):
            data = json.loads(body or b"{}")
            paths, expand = data.get("paths", []), bool(data.get("expand"))
        else:
            form = parse_qs(body.decode())
            paths, expand = form.get("paths", []), form.get("expand", ["False"])[0].lower() in ("1", "true")
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
        body = await request.json()
        files = []
        for item in body.get("files", []):
            path, size = item["path"], int(item["size"])
            try:
                sample = base64.b64decode(item.get("sample", ""))
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
        body = await request.body()
        header: dict[str, Any] | None = None
        changes: dict[str, FileChange] = {}
        for number, line in enumerate(body.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                key, value = item["key"], item["value"]
            except (ValueError, KeyError, TypeError):
                raise InvalidRequest(f"commit payload line {number} is not a {{key, value}} JSON object") from None
            if key == "header":
                header = value
                continue
            path = value.get("path", "")
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise InvalidRequest(f"{path}: unsupported encoding {value.get('encoding')!r}")
                try:
                    changes[path] = FileChange(content=base64.b64decode(value["content"], validate=True))
                except (binascii.Error, ValueError, KeyError):
                    raise InvalidRequest(f"{path}: content is not valid base64") from None
            elif key == "lfsFile":
                oid = str(value.get("oid", ""))
                if value.get("algo", "sha256") != "sha256" or not SHA256_RE.match(oid):
                    raise InvalidRequest(f"{path}: LFS file needs a sha256 oid")
                changes[path] = FileChange(sha256=oid, size=value.get("size"))
            elif key == "deletedFile":
                changes[path] = FileChange(delete=True)
            elif key == "deletedFolder":
                changes[path] = FileChange(delete_folder=True)
            else:
                raise InvalidRequest(f"commit payload line {number}: unknown operation {key!r}")
        if header is None:
            raise InvalidRequest("commit payload has no header line")
        commit_id = store.commit(
            repo_id, branch, changes, title=header.get("summary", ""), description=header.get("description", ""),
            author=ident.user or "zoo", parent_commit=header.get("parentCommit"),
        )
        return JSONResponse({"success": True, "commitOid": commit_id, "hookOutput": "",
                             "commitUrl": f"{hub.base_url(request)}/{repo_id}/commit/{commit_id}"})

    async def branch(request: Request, ident: Identity) -> Response:
        repo_id = writable_repo_of(request, ident)
        name = hub.raw_segments(request)[5]
        if request.method == "DELETE":
            store.delete_ref(repo_id, "heads", name)
            return Response(status_code=200)
        body = await request.json() if await request.body() else {}
        store.create_branch(repo_id, name, body.get("startingPoint"))
        return Response(status_code=200)

    async def tag(request: Request, ident: Identity) -> Response:
        repo_id = writable_repo_of(request, ident)
        segment = hub.raw_segments(request)[5]
        if request.method == "DELETE":
            store.delete_ref(repo_id, "tags", segment)
            return Response(status_code=200)
        body = await request.json()
        store.create_tag(repo_id, body["tag"], segment, body.get("message", ""))
        return Response(status_code=200)

    # ------------------------------------------------------------------ LFS
    async def lfs_batch(request: Request, ident: Identity) -> Response:
        repo_id = repo_of(request)
        hub.check_read(ident, repo_id)
        body = await request.json()
        if body.get("operation") != "upload":
            raise InvalidRequest("only the LFS 'upload' operation is offered; download through /resolve")
        hub.check_write(ident, repo_id)
        transfers = body.get("transfers") or ["basic"]
        if "basic" not in transfers:
            raise InvalidRequest(f"no common LFS transfer adapter: client offers {transfers}, server has ['basic']")
        base = hub.base_url(request)
        expires = int(time.time()) + UPLOAD_URL_LIFETIME_S
        objects = []
        for obj in body.get("objects", []):
            oid, size = obj.get("oid"), obj.get("size")
            if not isinstance(oid, str) or not SHA256_RE.match(oid) or not isinstance(size, int) or size < 0:
                objects.append({"oid": str(oid), "size": size if isinstance(size, int) else 0,
                                "error": {"code": 422, "message": "oid must be a sha256 and size an integer"}})
                continue
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if not store.has_blob(oid, size):
                href = f"{base}/{repo_id}.git/info/lfs/objects/{oid}/{size}"
                sig = hub.sign(repo_id, oid, size, expires)
                entry["actions"] = {
                    "upload": {"href": f"{href}?expires={expires}&signature={sig}", "expires_in": UPLOAD_URL_LIFETIME_S},
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
        if not expires.isdigit() or int(expires) < time.time() or not hmac.compare_digest(
            signature, hub.sign(repo_id, oid, size, int(expires))
        ):
            raise Forbidden("upload url signature is invalid or expired; ask the LFS batch endpoint again")
        if store.has_blob(oid, size):
            async for _ in request.stream():
                pass
            return Response(status_code=200)
        with store.blob_writer(oid, size) as writer:
            async for chunk in request.stream():
                writer.write(chunk)
        return Response(status_code=200)

    async def lfs_verify(request: Request, ident: Identity) -> Response:
        repo_id = repo_of(request)
        hub.check_read(ident, repo_id)
        body = await request.json()
        oid, size = body.get("oid", ""), body.get("size")
        if not isinstance(oid, str) or not SHA256_RE.match(oid) or not store.has_blob(oid, size):
            raise EntryNotFound(f"LFS object {oid} ({size} bytes) is not stored")
        return JSONResponse({"ok": True}, media_type=LFS_MEDIA_TYPE)

    # ------------------------------------------------------------------ downloads
    async def resolve(request: Request, ident: Identity) -> Response:
        repo_id = repo_of(request)
        hub.check_read(ident, repo_id)
        segments = hub.raw_segments(request)  # ORG NAME resolve REV PATH...
        revision, path = segments[3], "/".join(segments[4:])
        commit_id = store.resolve(repo_id, revision)
        record = store.read_commit(commit_id)["files"].get(path)
        if record is None:
            return _error(EntryNotFound(f"{path} does not exist at {revision} ({commit_id})"),
                          {"X-Repo-Commit": commit_id})
        etag = record["sha256"] if record["lfs"] else record["oid"]
        headers = {"X-Repo-Commit": commit_id, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                   "Cache-Control": "private, max-age=0" if not COMMIT_RE.match(revision) else "public, max-age=31536000"}
        if record["lfs"]:
            headers.update({"X-Linked-Etag": f'"{record["sha256"]}"', "X-Linked-Size": str(record["size"])})
        media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return _BlobFileResponse(store.blob_path(record["sha256"]), headers=headers, media_type=media_type,
                                 filename=path.rsplit("/", 1)[-1] if request.query_params.get("download") else None)

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
        body = await request.json()
        errors, warnings = validate_card_metadata(body.get("content", ""))
        return JSONResponse({"errors": [{"message": m} for m in errors], "warnings": [{"message": m} for m in warnings]},
                            status_code=400 if errors else 200)

    async def not_supported(request: Request, ident: Identity) -> Response:
        raise NotSupported(f"{request.method} {request.url.path} is not part of the zoo hub API")

    repo = "/api/models/{org}/{name}"
    routes = [
        Route("/api/health", api(health)),
        Route("/api/whoami-v2", api(whoami)),
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
    ]

    store.cleanup_tmp()  # uploads a crash left half-written
    app = Starlette(routes=routes)
    app.state.hub = hub
    return app

