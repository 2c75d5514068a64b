"""Hostile input against a real `zoo hub serve` process on 127.0.0.1 (issue 13 items 4-8, issue 16 item 4).

Every hostile request must get a clear 4xx (a JSON error with X-Error-Code, or a 400 from the HTTP
parser), never a 5xx or a dropped connection, and must leave the store exactly as it was. Well-formed
requests for missing repos / revisions / files get the Hub's error codes, so the real huggingface_hub
client raises RepositoryNotFoundError / RevisionNotFoundError / EntryNotFoundError.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path

import httpx2 as httpx
import pytest
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from huggingface_hub.errors import (
    BadRequestError,
    EntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from zoo.hub import hub_session
from zoo.hub_server import LocalHub

HEADER_TIMEOUT_S = 2
BODY_TIMEOUT_S = 2


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = LocalHub.start(tmp_path_factory.mktemp("hostile-hub"),
                            extra_args=["--header-timeout", str(HEADER_TIMEOUT_S),
                                        "--body-timeout", str(BODY_TIMEOUT_S), "--max-commit-mb", "4"])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(hub):
    with hub_session(hub.url, hub.token):
        yield HfApi(endpoint=hub.url, token=hub.token)


@pytest.fixture(scope="module")
def repo(api):
    """org/plain: one text file and one LFS file on main."""
    api.create_repo("org/plain")
    api.create_commit("org/plain", commit_message="files", operations=[
        CommitOperationAdd("notes.txt", b"hello\n"),
        CommitOperationAdd("weights.safetensors", b"\0" * 64),
    ])
    return "org/plain"


def _auth(hub) -> dict[str, str]:
    return {"Authorization": f"Bearer {hub.token}"}


def _snapshot(hub) -> dict[str, tuple[int, int]]:
    """Everything the store keeps (blobs, commits, refs, settings), with sizes and mtimes."""
    out = {}
    for folder in ("objects", "repos"):
        for path in sorted((hub.root / folder).rglob("*")):
            if path.is_file():
                stat = path.stat()
                out[str(path.relative_to(hub.root))] = (stat.st_size, stat.st_mtime_ns)
    return out


def _raw(hub, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send raw bytes on a fresh connection; return everything the server sends before closing or going quiet."""
    with socket.create_connection(("127.0.0.1", hub.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                    break
        except TimeoutError:
            pass
    return b"".join(chunks)


def _complete(response: bytes) -> bool:
    head, _, body = response.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def _status(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split(b" ", 2)[1])


def _raw_commit(hub, repo_id: str, files: dict[str, bytes], summary: str = "raw commit") -> httpx.Response:
    """A commit sent the way a hostile client would: straight NDJSON, no client-side checks (the
    huggingface_hub client asks /api/validate-yaml about a README first and would refuse bad cards)."""
    import base64

    lines = [{"key": "header", "value": {"summary": summary}}] + [
        {"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}}
        for path, data in files.items()]
    return httpx.post(f"{hub.url}/api/models/{repo_id}/commit/main", headers=_auth(hub),
                      content="\n".join(json.dumps(line) for line in lines).encode(), timeout=60)


def _healthy(hub) -> None:
    assert httpx.get(f"{hub.url}/api/health", timeout=10).status_code == 200
    assert hub.process.poll() is None


# ----------------------------------------------------------------------------------- issue 16 item 4
def test_missing_repo_revision_and_file_raise_the_hub_errors(hub, api, repo, tmp_path):
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("nobody/nothing", "config.json", cache_dir=tmp_path)
    with pytest.raises(RepositoryNotFoundError):  # a repo id without ORG/ (the card-snippet case of issue 16)
        hf_hub_download("fortunes", "config.json", cache_dir=tmp_path)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("fortunes")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("fortunes", revision="main")
    with pytest.raises(RepositoryNotFoundError):
        api.list_repo_refs("nobody/nothing")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo, "notes.txt", revision="no-such-branch", cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo, "notes.txt", revision="0" * 40, cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo, revision="no-such-branch")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo, "missing.txt", cache_dir=tmp_path)
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(repo, path_in_repo="no/such/folder"))
    assert api.repo_exists(repo) and not api.repo_exists("nobody/nothing") and not api.repo_exists("fortunes")
    assert api.file_exists(repo, "notes.txt") and not api.file_exists(repo, "missing.txt")
    assert not api.revision_exists(repo, "no-such-branch")
    anonymous = HfApi(endpoint=hub.url, token=False)
    api.create_repo("org/hidden", private=True)
    with pytest.raises(RepositoryNotFoundError):
        anonymous.model_info("org/hidden")
    pinned = api.create_commit("org/hidden", commit_message="x", operations=[CommitOperationAdd("x.txt", b"x")]).oid
    cached = httpx.get(f"{hub.url}/org/hidden/resolve/{pinned}/x.txt", headers=_auth(hub))
    assert cached.headers["cache-control"].startswith("private")  # no shared cache keeps a private file
    assert httpx.get(f"{hub.url}/{repo}/resolve/{api.model_info(repo).sha}/notes.txt").headers[
        "cache-control"].startswith("public")
    for url in (f"{hub.url}/fortunes/resolve/main/config.json", f"{hub.url}/nobody/nothing/resolve/main/x",
                f"{hub.url}/api/models/fortunes/revision/main", f"{hub.url}/api/models/a/b/c/d/e"):
        response = httpx.get(url)
        assert (response.status_code, response.headers.get("x-error-code")) == (404, "RepoNotFound"), url
    response = httpx.head(f"{hub.url}/{repo}/resolve/main/missing.txt")
    assert (response.status_code, response.headers.get("x-error-code")) == (404, "EntryNotFound")
    from transformers import AutoConfig

    for repo_id in ("fortunes", "nobody/nothing"):  # transformers no longer blames the network
        with pytest.raises(OSError, match="is not a valid model identifier") as err:
            AutoConfig.from_pretrained(repo_id)
        assert "connect" not in str(err.value)
    with pytest.raises(OSError, match="not a valid git identifier"):
        AutoConfig.from_pretrained(repo, revision="no-such-branch")


# ----------------------------------------------------------------------------------- item 4
def test_ref_named_like_a_commit_cannot_redirect_a_pin(hub, api, repo):
    main = api.model_info(repo).sha
    other = api.create_commit(repo, commit_message="later", operations=[CommitOperationAdd("notes.txt", b"later\n")])
    for name in (main, main.upper(), "a" * 40):
        with pytest.raises(BadRequestError, match="shadow a commit id"):
            api.create_branch(repo, branch=name, revision=other.oid)
        with pytest.raises(BadRequestError, match="shadow a commit id"):
            api.create_tag(repo, tag=name, revision=other.oid)
    # a ref of that name left by an older server (written straight into the store) is ignored for pins
    legacy = hub.root / "repos" / repo / "refs" / "heads" / main
    legacy.write_text(other.oid)
    try:
        response = httpx.get(f"{hub.url}/{repo}/resolve/{main}/notes.txt")
        assert response.status_code == 200 and response.content == b"hello\n"
        assert response.headers["x-repo-commit"] == main
    finally:
        legacy.unlink()


# ----------------------------------------------------------------------------------- item 5
BAD_CARDS = {
    "tags-int": "---\ntags: 5\nlicense: mit\n---\ntext\n",
    "license-list": "---\nlicense: [1, 2]\n---\ntext\n",
    "model-index": "---\nmodel-index:\n- name: x\n  results:\n  - task: 3\n    metrics: 7\n---\n",
    "model-index-str": "---\nmodel-index: hello\n---\n",
    "deep": "---\na: " + "[" * 5000 + "]" * 5000 + "\n---\n",
    "deep-map": "---\n" + "".join(" " * i + f"k{i}:\n" for i in range(200)) + " " * 200 + "v: 1\n---\n",
    "alias-bomb": "---\na: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                  "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                  "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
                  "tags: *f\n---\n",
    "date-nan": "---\ndate: 2024-01-01\nscore: .nan\nbin: !!binary aGVsbG8=\nset: !!set {a, b}\n---\n",
    "not-yaml": "---\nlicense: [1\n---\n",
    "python-tag": "---\nx: !!python/object/apply:os.system ['echo pwned']\n---\n",
    "scalar": "---\n42\n---\n",
    "unclosed": "---\nlicense: mit\n",
}
BAD_CONFIGS = {
    "deep-config": b"[" * 100_000 + b"]" * 100_000,
    "list-config": b"[1, 2]",
    "junk-config": b"\xff\xfe not json",
    "typed-config": json.dumps({"architectures": 5, "model_type": ["x"], "auto_map": [1]}).encode(),
}


def test_broken_cards_and_configs_never_take_listings_down(hub, api, repo):
    for name, card in BAD_CARDS.items():
        api.create_repo(f"bad/{name}")
        assert _raw_commit(hub, f"bad/{name}", {"README.md": card.encode()}).status_code == 200
    for name, config in BAD_CONFIGS.items():
        api.create_repo(f"bad/{name}")
        assert _raw_commit(hub, f"bad/{name}", {"config.json": config}).status_code == 200
    with pytest.raises(ValueError, match='"license" must be a string'):  # the client asks /api/validate-yaml
        api.create_commit("bad/tags-int", commit_message="card", operations=[
            CommitOperationAdd("README.md", BAD_CARDS["license-list"].encode())])
    started = time.monotonic()
    listing = httpx.get(f"{hub.url}/api/models", timeout=30)
    assert listing.status_code == 200
    assert len(listing.content) < 1_000_000  # the alias bomb is not expanded
    ids = {row["id"] for row in listing.json()}
    assert {f"bad/{n}" for n in [*BAD_CARDS, *BAD_CONFIGS]} | {repo} <= ids
    rows = {row["id"]: row for row in listing.json()}
    assert "5" not in rows["bad/tags-int"]["tags"] and rows["bad/tags-int"]["cardData"] == {"license": "mit"}
    assert "license" not in (rows["bad/license-list"]["cardData"] or {})
    assert rows["bad/alias-bomb"]["cardData"] is None
    assert rows["bad/date-nan"]["cardData"]["date"] == "2024-01-01"
    assert rows["bad/deep-config"]["config"] is None and rows["bad/typed-config"]["config"] is None
    for name in [*BAD_CARDS, *BAD_CONFIGS]:
        for url in (f"{hub.url}/api/models/bad/{name}", f"{hub.url}/bad/{name}"):
            assert httpx.get(url, timeout=30).status_code == 200, url
    api.create_repo("bad/huge-card")
    huge = b"---\nlicense: mit\n---\n" + b"> quote *emph* [link](x)\n" * 100_000  # 2.5 MB of Markdown
    assert _raw_commit(hub, "bad/huge-card", {"README.md": huge}).status_code == 200
    page = httpx.get(f"{hub.url}/bad/huge-card", timeout=60)
    assert page.status_code == 200 and "the rest is not shown here" in page.text
    index = httpx.get(f"{hub.url}/", timeout=30)
    assert index.status_code == 200 and "bad/alias-bomb" in index.text
    assert time.monotonic() - started < 60
    response = httpx.post(f"{hub.url}/api/validate-yaml", json={"content": BAD_CARDS["alias-bomb"]})
    assert response.status_code == 400 and "aliases" in response.text
    _healthy(hub)


# ----------------------------------------------------------------------------------- item 6
def test_deleted_private_repo_stays_unreachable_after_name_reuse(hub, api):
    api.create_repo("org/secretive", private=True)
    secret = api.create_commit("org/secretive", commit_message="secret",
                               operations=[CommitOperationAdd("secret.txt", b"the private file\n")]).oid
    api.delete_repo("org/secretive")
    api.create_repo("org/secretive")
    api.create_commit("org/secretive", commit_message="public",
                      operations=[CommitOperationAdd("secret.txt", b"public now\n")])
    for headers in ({}, _auth(hub)):
        response = httpx.get(f"{hub.url}/org/secretive/resolve/{secret}/secret.txt", headers=headers)
        assert (response.status_code, response.headers["x-error-code"]) == (404, "RevisionNotFound")
        assert b"the private file" not in response.content
        tree = httpx.get(f"{hub.url}/api/models/org/secretive/tree/{secret}", headers=headers)
        assert tree.status_code == 404
    assert httpx.get(f"{hub.url}/org/secretive/resolve/main/secret.txt").content == b"public now\n"


# ----------------------------------------------------------------------------------- item 7
def test_uploaded_html_and_svg_are_inert(hub, api, repo):
    api.create_commit(repo, commit_message="active content", operations=[
        CommitOperationAdd("page.html", b"<script>alert(1)</script>"),
        CommitOperationAdd("logo.svg", b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"),
        CommitOperationAdd("data.xml", b"<x/>"), CommitOperationAdd("app.js", b"alert(1)"),
    ])
    for name in ("page.html", "logo.svg", "data.xml", "app.js"):
        response = httpx.get(f"{hub.url}/{repo}/resolve/main/{name}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["content-disposition"].startswith("attachment")
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in response.headers["content-security-policy"]
    text = httpx.get(f"{hub.url}/{repo}/resolve/main/notes.txt")
    assert text.headers["content-type"].startswith("text/plain") and text.headers["x-content-type-options"] == "nosniff"
    for url in (f"{hub.url}/", f"{hub.url}/{repo}", f"{hub.url}/org/none"):
        page = httpx.get(url)
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp and page.headers["x-frame-options"] == "DENY"


# ----------------------------------------------------------------------------------- item 8: limits and parsing
def test_oversized_bodies_are_refused_without_growing_the_server(hub, repo):
    before = _snapshot(hub)
    rss = _rss_kb(hub)
    big = b'{"content": "' + b"a" * (8 * 1024 * 1024) + b'"}'
    response = httpx.post(f"{hub.url}/api/validate-yaml", content=big, headers={"Content-Type": "application/json"})
    assert (response.status_code, response.headers["x-error-code"]) == (413, "PayloadTooLarge")

    def chunked():  # no Content-Length: the limit is enforced while reading
        for _ in range(64):
            yield b"a" * (128 * 1024)
    response = httpx.post(f"{hub.url}/api/validate-yaml", content=chunked(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    commit = httpx.post(f"{hub.url}/api/models/{repo}/commit/main", content=b"x" * (5 * 1024 * 1024),
                        headers={**_auth(hub), "Content-Type": "application/x-ndjson"})
    assert commit.status_code == 413
    huge = _raw(hub, b"POST /api/validate-yaml HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999\r\n\r\n")
    assert _status(huge) == 413
    assert _rss_kb(hub) - rss < 40_000  # nowhere near the 8 MB bodies times the copies a parser would make
    assert _snapshot(hub) == before
    _healthy(hub)


def _rss_kb(hub) -> int:
    for line in Path(f"/proc/{hub.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


MALFORMED = [
    ("POST", "/api/repos/create", b"{not json"),
    ("POST", "/api/repos/create", b"[1, 2]"),
    ("POST", "/api/repos/create", b'{"name": 5}'),
    ("POST", "/api/repos/create", b'{"name": "x", "organization": ["o"]}'),
    ("POST", "/api/repos/create", b""),
    ("DELETE", "/api/repos/delete", b"\xff\xfe"),
    ("POST", "/api/validate-yaml", b'{"content": 3}'),
    ("POST", "/api/validate-yaml", b"[" * 100_000),
    ("POST", "/api/models/org/plain/preupload/main", b'{"files": "x"}'),
    ("POST", "/api/models/org/plain/preupload/main", b'{"files": [{"path": "a", "size": "big"}]}'),
    ("POST", "/api/models/org/plain/preupload/main", b'{"files": [7]}'),
    ("POST", "/api/models/org/plain/paths-info/main", b'{"paths": "notes.txt"}'),
    ("POST", "/api/models/org/plain/paths-info/main", b'{"paths": [1, 2]}'),
    ("POST", "/api/models/org/plain/commit/main", b'{"key": "header", "value": 5}\n'),
    ("POST", "/api/models/org/plain/commit/main", b'{"key": "header", "value": {"summary": 5}}\n'),
    ("POST", "/api/models/org/plain/commit/main",
     b'{"key": "header", "value": {"summary": "s", "parentCommit": "HEAD"}}\n'),
    ("POST", "/api/models/org/plain/commit/main",
     b'{"key": "header", "value": {"summary": "s"}}\n{"key": "file", "value": {"path": 7, "content": ""}}\n'),
    ("POST", "/api/models/org/plain/commit/main",
     b'{"key": "header", "value": {"summary": "s"}}\n{"key": "file", "value": {"path": "a", "content": "!!"}}\n'),
    ("POST", "/api/models/org/plain/commit/main",
     b'{"key": "header", "value": {"summary": "s"}}\n{"key": "file", "value": {"path": "../a", "content": ""}}\n'),
    ("POST", "/api/models/org/plain/commit/main", b'{"key": "lfsFile", "value": []}\n'),
    ("POST", "/api/models/org/plain/branch/" + "b" * 40, b""),
    ("POST", "/api/models/org/plain/branch/x", b'{"startingPoint": 5}'),
    ("POST", "/api/models/org/plain/tag/main", b'{"tag": {"a": 1}}'),
    ("POST", "/api/models/org/plain/tag/main", b'{"tag": "bad..name"}'),
    ("PUT", "/api/models/org/plain/settings", b'{"private": "yes"}'),
    ("POST", "/org/plain.git/info/lfs/objects/batch", b'{"operation": "upload", "objects": 5}'),
    ("POST", "/org/plain.git/info/lfs/objects/batch", b'{"operation": "upload", "transfers": "basic"}'),
    ("POST", "/org/plain.git/info/lfs/objects/verify", b'{"oid": 5, "size": "x"}'),
    ("GET", "/api/models?limit=abc", b""),
    ("GET", "/api/models?limit=-1", b""),
    ("GET", "/api/models/org/plain/resolve/main/%ff%fe", b""),
]


def test_malformed_requests_get_400s_and_change_nothing(hub, api, repo):
    before = _snapshot(hub)
    for method, path, body in MALFORMED:
        response = httpx.request(method, hub.url + path, content=body, headers={
            **_auth(hub), "Content-Type": "application/json"})
        assert 400 <= response.status_code < 500, (method, path, body[:60], response.status_code, response.text)
        assert response.headers.get("x-error-code") or response.status_code == 404, (path, response.headers)
    assert _snapshot(hub) == before
    _healthy(hub)


@pytest.mark.parametrize("target", [
    b"/org/plain/resolve/main/a%00b", b"/api/models/org/plain%00/tree/main", b"/%00", b"/org/pl%0aain",
    b"/api/models/org/plain/revision/ma%00in",
])
def test_nul_and_control_characters_in_paths_are_400(hub, repo, target):
    response = _raw(hub, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _status(response) == 400 and b"NUL or control character" in response
    raw_nul = _raw(hub, b"GET /org/plain/resolve/main/a\x00b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _status(raw_nul) == 400  # refused by the HTTP parser itself
    _healthy(hub)


def test_idle_and_slow_connections_are_closed(hub, repo):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", hub.port), timeout=HEADER_TIMEOUT_S * 5) as sock:
        assert sock.recv(1) == b""  # connected, sent nothing: closed by the server
    assert time.monotonic() - started < HEADER_TIMEOUT_S * 4
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", hub.port), timeout=HEADER_TIMEOUT_S * 5) as sock:
        closed = False
        for byte in b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:  # slowloris headers
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.1)
            if time.monotonic() - started > HEADER_TIMEOUT_S * 3:
                break
        if not closed:
            try:
                closed = sock.recv(1) == b""
            except OSError:
                closed = True
        assert closed and time.monotonic() - started < HEADER_TIMEOUT_S * 4
    # a body that stops arriving: 408 after the body timeout
    response = _raw(hub, b"POST /api/validate-yaml HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"content\":", timeout=BODY_TIMEOUT_S * 5)
    assert _status(response) == 408
    _healthy(hub)


def test_token_file_is_parsed_tolerantly(hub, api):
    tokens = hub.root / "tokens.txt"
    saved = tokens.read_text()
    try:
        tokens.write_text(saved + "this line has far too many fields\nshort\nhf_local_role_typo_token bob admin\n")
        time.sleep(0.05)
        assert httpx.get(f"{hub.url}/api/whoami-v2", headers=_auth(hub)).status_code == 200
        for bad in ("this", "short", "hf_local_role_typo_token"):
            response = httpx.get(f"{hub.url}/api/whoami-v2", headers={"Authorization": f"Bearer {bad}"})
            assert response.status_code == 401
        assert "zoo hub:" in hub.log_tail(200) and "skipped" in hub.log_tail(200)
    finally:
        tokens.write_text(saved)


def test_signed_upload_urls_die_with_their_token(hub, repo):
    tokens = hub.root / "tokens.txt"
    saved = tokens.read_text()
    second = "hf_local_second_writer_for_revocation"
    tokens.write_text(saved + f"{second} second write\n")
    data = b"revocable content " * 10
    oid, size = hashlib.sha256(data).hexdigest(), len(data)
    try:
        response = httpx.post(f"{hub.url}/{repo}.git/info/lfs/objects/batch",
                              headers={"Authorization": f"Bearer {second}"},
                              json={"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": size}]})
        href = response.json()["objects"][0]["actions"]["upload"]["href"]
        tokens.write_text(saved)  # revoke it
        time.sleep(0.05)
        upload = httpx.put(href, content=data)
        assert upload.status_code == 403 and "revoked" in upload.text
        assert not (hub.root / "objects" / "blobs" / oid[:2] / oid[2:]).exists()
        tampered = httpx.put(href.replace("token=", "token=0"), content=data)
        assert tampered.status_code == 403
    finally:
        tokens.write_text(saved)


def test_lfs_verify_is_no_existence_oracle(hub, api):
    api.create_repo("org/private-blobs", private=True)
    secret = b"private weights \x00\x01" * 100
    api.create_commit("org/private-blobs", commit_message="w", operations=[CommitOperationAdd("w.safetensors", secret)])
    api.create_repo("org/public-door")
    stored = {"oid": hashlib.sha256(secret).hexdigest(), "size": len(secret)}
    absent = {"oid": hashlib.sha256(b"never").hexdigest(), "size": 5}
    answers = [httpx.post(f"{hub.url}/org/public-door.git/info/lfs/objects/verify", json=body) for body in (stored, absent)]
    assert [a.status_code for a in answers] == [401, 401] and answers[0].text == answers[1].text
    batch = httpx.post(f"{hub.url}/org/public-door.git/info/lfs/objects/batch",
                       json={"operation": "upload", "objects": [stored]})
    assert batch.status_code == 401


def test_unreachable_repo_names_are_refused(hub, api):
    before = _snapshot(hub)
    for name in ("org/x.git", "org/X.GIT", "api/anything", "org/a--b", "org/trailing.", "org/.hidden", "org/a/b"):
        org, _, repo_name = name.partition("/")
        response = httpx.post(f"{hub.url}/api/repos/create", headers=_auth(hub),
                              json={"name": repo_name, "organization": org, "type": "model"})
        assert (response.status_code, response.headers["x-error-code"]) == (400, "BadRequest"), name
        assert "invalid repo id" in response.json()["error"]
    assert _snapshot(hub) == before


def test_expanded_listings_are_paged_and_bounded(hub, api):
    api.create_repo("org/wide")
    first = api.create_commit("org/wide", commit_message="many files", operations=[
        CommitOperationAdd(f"d{i % 3}/f{i:03d}.txt", f"{i}\n".encode()) for i in range(120)]).oid
    second = api.create_commit("org/wide", commit_message="touch one",
                               operations=[CommitOperationAdd("d1/f001.txt", b"changed\n")]).oid
    page = httpx.get(f"{hub.url}/api/models/org/wide/tree/main?recursive=true&expand=true")
    assert page.status_code == 200 and len(page.json()) == 50 and 'rel="next"' in page.headers["link"]
    entries = list(api.list_repo_tree("org/wide", recursive=True, expand=True))  # follows the Link pages
    assert len(entries) == 1 + 3 + 120
    last = {e.path: e.last_commit.oid for e in entries}
    assert last["d1/f001.txt"] == second and last["d1"] == second
    assert last["d0/f000.txt"] == first and last["d0"] == first and last["d2"] == first
    plain = httpx.get(f"{hub.url}/api/models/org/wide/tree/main?recursive=true")
    assert len(plain.json()) == 124 and "link" not in plain.headers
    too_many = httpx.post(f"{hub.url}/api/models/org/wide/paths-info/main",
                          json={"paths": [f"p{i}" for i in range(1001)], "expand": True})
    assert too_many.status_code == 400 and "at most 1000 paths" in too_many.text
    bad_cursor = httpx.get(f"{hub.url}/api/models/org/wide/tree/main?expand=true&cursor=x")
    assert bad_cursor.status_code == 400
