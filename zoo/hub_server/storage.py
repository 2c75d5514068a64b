"""Filesystem storage of the local hub: content-addressed blobs, commit manifests and refs.

Layout under the root folder:

    tokens.txt                          one `TOKEN USER [read|write]` per line (see `zoo.hub_server.auth`)
    objects/blobs/ab/abcdef...          file contents, named by their sha256
    objects/commits/<id>.json           commit manifests: parents, message, date, {path: file record}
    repos/<org>/<name>/repo.json        repo settings (private, created_at, uid: this incarnation of the name)
    repos/<org>/<name>/refs/heads/<b>   branch -> commit id (one line)
    repos/<org>/<name>/refs/tags/<t>    tag -> commit id
    tmp/                                uploads in progress (removed at start-up)

Every write goes to a temporary file in the same file system, is fsynced, then renamed into place, so a
crash leaves either the old state or the new one. A commit becomes visible only when its branch ref is
replaced, after every blob and the manifest are on disk. A commit records the repo and its uid, and is
reachable only from that repo while the uid matches (a deleted repo's commits stay unreachable when the
name is reused); a full 40-hex revision always means a commit, and refs may not look like one.

    store = HubStore("hub-data")
    store.create_repo("org/name", private=False)
    commit = store.commit("org/name", "main", {"config.json": FileChange(content=b"{}")}, title="add config")
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, unquote

__all__ = [
    "BlobMissingError", "ConflictError", "EntryNotFound", "FileChange", "HubStore", "InvalidRequest",
    "RepoNotFound", "RevisionNotFound", "git_blob_oid", "lfs_pointer", "is_lfs_candidate",
]

REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
# Organisations whose repos the URL layout cannot reach (`/api/...` is the API, not a repo page).
RESERVED_ORGS = frozenset({"api"})
REF_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

COMMIT_CACHE_RECORDS = 200_000  # parsed commit manifests kept in memory, counted in file records

# Files stored with LFS (not inlined in the commit payload): big files, binary files, weight formats.
LFS_THRESHOLD = 10 * 1024 * 1024
LFS_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".npy", ".npz", ".pkl",
    ".gz", ".zip", ".tar", ".wav", ".mid", ".midi", ".png", ".jpg", ".pdf", ".model", ".arrow", ".parquet",
)
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES)


class HubError(Exception):
    """Base class: `status` and `code` become the HTTP status and the X-Error-Code header."""

    status = 400
    code = "BadRequest"


class InvalidRequest(HubError):
    status = 400
    code = "BadRequest"


class RepoNotFound(HubError):
    status = 404
    code = "RepoNotFound"


class RevisionNotFound(HubError):
    status = 404
    code = "RevisionNotFound"


class EntryNotFound(HubError):
    status = 404
    code = "EntryNotFound"


class ConflictError(HubError):
    status = 409
    code = "Conflict"


class ParentMismatch(HubError):
    status = 412
    code = "PreconditionFailed"


class BlobMissingError(HubError):
    status = 422
    code = "LfsObjectMissing"


def git_blob_oid(data: bytes) -> str:
    """The git object id (sha1 of `blob <size>\\0<data>`) of a file's content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file that stands for an LFS file in the git tree."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def is_lfs_candidate(path: str, size: int, sample: bytes) -> bool:
    """Whether the preupload step should ask the client to send this file by LFS rather than inline."""
    return size >= LFS_THRESHOLD or path.lower().endswith(LFS_SUFFIXES) or b"\0" in sample


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def validate_path_in_repo(path: str) -> str:
    """A relative POSIX path with no empty, '.' or '..' parts (raises InvalidRequest otherwise)."""
    if not path or path.startswith("/") or "\\" in path or "\0" in path:
        raise InvalidRequest(f"invalid path in repo: {path!r}")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts) or parts[0] == ".git":
        raise InvalidRequest(f"invalid path in repo: {path!r}")
    return path


@dataclass
class FileChange:
    """One change in a commit: inline `content`, an already stored LFS blob (`sha256`, `size`), or deletion."""

    content: bytes | None = None
    sha256: str | None = None
    size: int | None = None
    delete: bool = False
    delete_folder: bool = False


class HubStore:
    """All state of the local hub, on disk under `root` (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.blobs = self.root / "objects" / "blobs"
        self.commits = self.root / "objects" / "commits"
        self.repos = self.root / "repos"
        self.tmp = self.root / "tmp"
        for folder in (self.blobs, self.commits, self.repos, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._commit_cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._cached_records = 0
        self._cache_lock = threading.Lock()

    # ----------------------------------------------------------------- low level
    def cleanup_tmp(self) -> int:
        """Remove uploads left behind by a crash (called at start-up); returns how many were removed."""
        count = 0
        for path in self.tmp.iterdir():
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            count += 1
        return count

    def _atomic_write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-", dir=self.tmp)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def repo_lock(self, repo_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(repo_id, threading.Lock())

    # ----------------------------------------------------------------- blobs
    def blob_path(self, sha256: str) -> Path:
        if not SHA256_RE.match(sha256):
            raise InvalidRequest(f"not a sha256: {sha256!r}")
        return self.blobs / sha256[:2] / sha256[2:]

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        path = self.blob_path(sha256)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def put_blob_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if not self.has_blob(sha, len(data)):
            self._atomic_write(self.blob_path(sha), data)
        return sha

    @contextlib.contextmanager
    def blob_writer(self, expected_sha256: str, expected_size: int) -> Iterator[BinaryIO]:
        """Stream a blob to a temporary file; on exit it is checked (size, sha256) and renamed into place.

        If the stream ends early or the content does not match, the temporary file is removed and the
        blob store is unchanged.
        """
        target = self.blob_path(expected_sha256)
        fd, tmp = tempfile.mkstemp(prefix=f"lfs-{expected_sha256[:12]}-", suffix=".incomplete", dir=self.tmp)
        handle = os.fdopen(fd, "wb")
        digest = hashlib.sha256()
        written = 0

        class _Writer:
            def write(self, chunk: bytes) -> int:
                nonlocal written
                digest.update(chunk)
                written += len(chunk)
                if written > expected_size:
                    raise InvalidRequest(f"upload of {expected_sha256} is larger than the announced {expected_size} bytes")
                return handle.write(chunk)

        try:
            yield _Writer()  # type: ignore[misc]
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            if written != expected_size:
                raise InvalidRequest(f"upload of {expected_sha256} ended after {written} of {expected_size} bytes")
            if digest.hexdigest() != expected_sha256:
                raise InvalidRequest(
                    f"uploaded content has sha256 {digest.hexdigest()}, not the announced {expected_sha256}"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
            _fsync_dir(target.parent)
        except BaseException:
            handle.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    # ----------------------------------------------------------------- repos and refs
    def _repo_dir(self, repo_id: str) -> Path:
        if not REPO_ID_RE.match(repo_id) or ".." in repo_id:
            raise InvalidRequest(f"invalid repo id {repo_id!r}: expected ORG/NAME (letters, digits, '.', '_', '-')")
        return self.repos / repo_id

    @staticmethod
    def check_new_repo_id(repo_id: str) -> None:
        """Refuse ids that could be stored but never reached through the URLs (raises InvalidRequest)."""
        org, _, name = repo_id.partition("/")
        if name.lower().endswith(".git"):
            raise InvalidRequest(f"invalid repo id {repo_id!r}: a name ending in '.git' cannot be reached "
                                 "(ORG/NAME.git/... is the git/LFS address of ORG/NAME)")
        if "--" in repo_id or name.endswith(".") or org.endswith("."):
            raise InvalidRequest(f"invalid repo id {repo_id!r}: '--' and a trailing '.' are not allowed")
        if org.lower() in RESERVED_ORGS:
            raise InvalidRequest(f"invalid repo id {repo_id!r}: '{org}' is reserved (its pages are the API)")

    def repo_exists(self, repo_id: str) -> bool:
        try:
            return (self._repo_dir(repo_id) / "repo.json").is_file()
        except InvalidRequest:
            return False

    def repo_settings(self, repo_id: str) -> dict[str, Any]:
        path = self._repo_dir(repo_id) / "repo.json"
        if not path.is_file():
            raise RepoNotFound(f"Repository {repo_id} not found")
        return json.loads(path.read_text())

    def list_repos(self) -> list[str]:
        return sorted(
            f"{org.name}/{repo.name}"
            for org in self.repos.iterdir() if org.is_dir()
            for repo in org.iterdir() if (repo / "repo.json").is_file()
        )

    def create_repo(self, repo_id: str, *, private: bool = False, author: str = "zoo") -> dict[str, Any]:
        """Create a repo with an initial commit holding `.gitattributes` (as the Hub does)."""
        repo_dir = self._repo_dir(repo_id)
        with self.repo_lock(repo_id):
            if (repo_dir / "repo.json").is_file():
                raise ConflictError(f"You already created this model repo: {repo_id}")
            self.check_new_repo_id(repo_id)
            # `uid` names this incarnation of the repo: commits of a deleted repo of the same name carry
            # another uid (or none), so they stay unreachable after the name is reused.
            settings = {"id": repo_id, "private": bool(private), "created_at": _now(), "author": author,
                        "uid": secrets.token_hex(16)}
            content = GITATTRIBUTES.encode()
            files = {".gitattributes": self._file_record(content, lfs=False)}
            self.put_blob_bytes(content)
            commit_id = self._write_commit(repo_id, [], files, "initial commit", "", author, settings["uid"])
            self._atomic_write(self._ref_path(repo_id, "heads", "main"), commit_id.encode())
            self._atomic_write(repo_dir / "repo.json", json.dumps(settings, indent=2).encode())
        return settings

    def update_settings(self, repo_id: str, **changes: Any) -> dict[str, Any]:
        with self.repo_lock(repo_id):
            settings = self.repo_settings(repo_id)
            settings.update(changes)
            self._atomic_write(self._repo_dir(repo_id) / "repo.json", json.dumps(settings, indent=2).encode())
        return settings

    def delete_repo(self, repo_id: str) -> None:
        repo_dir = self._repo_dir(repo_id)
        with self.repo_lock(repo_id):
            if not (repo_dir / "repo.json").is_file():
                raise RepoNotFound(f"Repository {repo_id} not found")
            trash = Path(tempfile.mkdtemp(prefix="deleted-", dir=self.tmp))
            os.replace(repo_dir, trash / "repo")  # one rename: the repo disappears at once
            shutil.rmtree(trash, ignore_errors=True)

    def _ref_path(self, repo_id: str, kind: str, name: str) -> Path:
        if not REF_NAME_RE.match(name) or ".." in name:
            raise InvalidRequest(f"invalid {'branch' if kind == 'heads' else 'tag'} name {name!r}")
        return self._repo_dir(repo_id) / "refs" / kind / quote(name, safe="")

    @staticmethod
    def check_new_ref_name(kind: str, name: str) -> None:
        """Refuse branch/tag names that would shadow a commit id or cannot be addressed (InvalidRequest)."""
        what = "branch" if kind == "heads" else "tag"
        if not isinstance(name, str):
            raise InvalidRequest(f"invalid {what} name {name!r}: must be a string")
        if re.fullmatch(r"[0-9a-fA-F]{40}", name or ""):
            raise InvalidRequest(f"invalid {what} name {name!r}: a 40-hex-digit name would shadow a commit id")
        if not REF_NAME_RE.match(name or "") or ".." in name or name.endswith((".lock", "/", ".")) or "//" in name:
            raise InvalidRequest(f"invalid {what} name {name!r}: use letters, digits, '.', '_', '-', '/'")

    def refs(self, repo_id: str, kind: str) -> dict[str, str]:
        """Branches (`kind="heads"`) or tags (`kind="tags"`) as name -> commit id."""
        self.repo_settings(repo_id)
        folder = self._repo_dir(repo_id) / "refs" / kind
        if not folder.is_dir():
            return {}
        return {unquote(p.name): p.read_text().strip() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}

    def resolve(self, repo_id: str, revision: str | None) -> str:
        """Branch, tag or full commit id -> commit id (RevisionNotFound if none matches)."""
        settings = self.repo_settings(repo_id)
        revision = revision or "main"
        if COMMIT_RE.match(revision):  # a full commit id always means that commit, never a ref
            manifest = self._commit_path(revision)
            if manifest.is_file() and self._belongs(json.loads(manifest.read_text()), repo_id, settings):
                return revision
            raise RevisionNotFound(f"Invalid rev id: {revision}")
        for kind in ("heads", "tags"):
            with contextlib.suppress(InvalidRequest):
                path = self._ref_path(repo_id, kind, revision)
                if path.is_file():
                    return path.read_text().strip()
        raise RevisionNotFound(f"Invalid rev id: {revision}")

    @staticmethod
    def _belongs(commit: dict[str, Any], repo_id: str, settings: dict[str, Any]) -> bool:
        """Whether a commit manifest was made in this incarnation of the repo (see create_repo's uid)."""
        return commit.get("repo") == repo_id and commit.get("repo_uid") == settings.get("uid")

    def create_branch(self, repo_id: str, branch: str, starting_point: str | None = None) -> str:
        self.check_new_ref_name("heads", branch)
        with self.repo_lock(repo_id):
            path = self._ref_path(repo_id, "heads", branch)
            if path.is_file():
                raise ConflictError(f"Reference already exists: refs/heads/{branch}")
            commit_id = self.resolve(repo_id, starting_point or "main")
            self._atomic_write(path, commit_id.encode())
        return commit_id

    def create_tag(self, repo_id: str, tag: str, revision: str | None = None, message: str = "") -> str:
        self.check_new_ref_name("tags", tag)
        with self.repo_lock(repo_id):
            path = self._ref_path(repo_id, "tags", tag)
            if path.is_file():
                raise ConflictError(f"Tag already exists: {tag}")
            commit_id = self.resolve(repo_id, revision or "main")
            self._atomic_write(path, commit_id.encode())
        return commit_id

    def delete_ref(self, repo_id: str, kind: str, name: str) -> None:
        if kind == "heads" and name == "main":
            raise InvalidRequest("the main branch cannot be deleted")
        with self.repo_lock(repo_id):
            path = self._ref_path(repo_id, kind, name)
            if not path.is_file():
                raise RevisionNotFound(f"Invalid rev id: {name}")
            path.unlink()

    # ----------------------------------------------------------------- commits
    def _commit_path(self, commit_id: str) -> Path:
        return self.commits / f"{commit_id}.json"

    def read_commit(self, commit_id: str) -> dict[str, Any]:
        """A commit manifest (treat it as read-only: manifests are immutable and cached)."""
        if not COMMIT_RE.match(commit_id):
            raise RevisionNotFound(f"Invalid rev id: {commit_id}")
        with self._cache_lock:
            cached = self._commit_cache.get(commit_id)
            if cached is not None:
                self._commit_cache.move_to_end(commit_id)
                return cached
        path = self._commit_path(commit_id)
        if not path.is_file():
            raise RevisionNotFound(f"Invalid rev id: {commit_id}")
        commit = json.loads(path.read_text())
        with self._cache_lock:  # bounded by the number of file records held, not of commits
            self._commit_cache[commit_id] = commit
            self._cached_records += len(commit["files"])
            while self._cached_records > COMMIT_CACHE_RECORDS and len(self._commit_cache) > 1:
                _, dropped = self._commit_cache.popitem(last=False)
                self._cached_records -= len(dropped["files"])
        return commit

    def _file_record(self, content: bytes | None, *, lfs: bool, sha256: str | None = None,
                     size: int | None = None) -> dict[str, Any]:
        if content is not None:
            sha256, size = hashlib.sha256(content).hexdigest(), len(content)
        assert sha256 is not None and size is not None
        if lfs:
            pointer = lfs_pointer(sha256, size)
            return {"sha256": sha256, "size": size, "oid": git_blob_oid(pointer), "lfs": True,
                    "pointer_size": len(pointer)}
        return {"sha256": sha256, "size": size, "oid": git_blob_oid(content or b""), "lfs": False}

    def _write_commit(self, repo_id: str, parents: list[str], files: dict[str, Any], title: str,
                      description: str, author: str, repo_uid: str | None = None) -> str:
        body = {
            "repo": repo_id, "repo_uid": repo_uid, "parents": parents, "title": title, "description": description,
            "author": author, "date": _now(), "files": dict(sorted(files.items())),
        }
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        commit_id = hashlib.sha1(b"commit %d\0" % len(canonical) + canonical).hexdigest()
        self._atomic_write(self._commit_path(commit_id), json.dumps({"id": commit_id, **body}, indent=1).encode())
        return commit_id

    def commit(
        self,
        repo_id: str,
        branch: str,
        changes: dict[str, FileChange],
        *,
        title: str,
        description: str = "",
        author: str = "zoo",
        parent_commit: str | None = None,
    ) -> str:
        """Apply `changes` on top of `branch` as one new commit and move the branch to it (all or nothing).

        LFS changes must name blobs already uploaded; inline contents are stored first. The branch ref is
        replaced last, in one rename, so readers never see a half-applied commit.
        """
        if not title:
            raise InvalidRequest("a commit needs a summary (commit message)")
        with self.repo_lock(repo_id):
            head_path = self._ref_path(repo_id, "heads", branch)
            settings = self.repo_settings(repo_id)
            if not head_path.is_file():
                raise RevisionNotFound(f"Invalid rev id: {branch} (commits go to an existing branch)")
            head = head_path.read_text().strip()
            if parent_commit is not None and parent_commit != head:
                raise ParentMismatch(
                    f"A commit has happened since {parent_commit}; {branch} is now at {head}. Refresh and try again."
                )
            files = dict(self.read_commit(head)["files"])
            for path, change in changes.items():
                path = validate_path_in_repo(path)
                if change.delete_folder:
                    prefix = path.rstrip("/") + "/"
                    doomed = [name for name in files if name.startswith(prefix)]
                    if not doomed:
                        raise EntryNotFound(f"A folder with this name doesn't exist: {path}")
                    for name in doomed:
                        del files[name]
                elif change.delete:
                    if path not in files:
                        raise EntryNotFound(f"A file with this name doesn't exist: {path}")
                    del files[path]
                elif change.content is not None:
                    self.put_blob_bytes(change.content)
                    files[path] = self._file_record(change.content, lfs=False)
                else:
                    if change.sha256 is None:
                        raise InvalidRequest(f"{path}: LFS file without oid")
                    if not self.has_blob(change.sha256):
                        raise BlobMissingError(
                            f"{path}: LFS object {change.sha256} was not uploaded (run the LFS batch upload first)"
                        )
                    actual = self.blob_path(change.sha256).stat().st_size
                    if change.size is not None and change.size != actual:
                        raise InvalidRequest(f"{path}: LFS object {change.sha256} has {actual} bytes, not {change.size}")
                    files[path] = self._file_record(None, lfs=True, sha256=change.sha256, size=actual)
            self._check_no_file_folder_clash(files)
            commit_id = self._write_commit(repo_id, [head], files, title, description, author, settings.get("uid"))
            self._atomic_write(head_path, commit_id.encode())
        return commit_id

    @staticmethod
    def _check_no_file_folder_clash(files: dict[str, Any]) -> None:
        for name in files:
            parts = name.split("/")
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) in files:
                    raise InvalidRequest(f"{name}: '{'/'.join(parts[:i])}' is a file, it cannot be a folder too")

    def history(self, commit_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        """The commit and its first-parent ancestors, newest first."""
        out: list[dict[str, Any]] = []
        current: str | None = commit_id
        while current and len(out) < limit:
            commit = self.read_commit(current)
            out.append(commit)
            current = commit["parents"][0] if commit["parents"] else None
        return out

    def last_commits(self, commit_id: str, paths: list[str]) -> dict[str, dict[str, Any]]:
        """For each path, the newest commit (first-parent history) that last changed it.

        One pass over the history: a file's state is its record's oid, a folder's the sorted (name, oid)
        pairs below it, computed for the asked folders only; paths stop being followed once settled.
        """
        history = self.history(commit_id)
        head_files = history[0]["files"]
        folders = {p.strip("/") for p in paths if p.strip("/") not in head_files}

        def states(files: dict[str, Any], wanted: Any) -> dict[str, Any]:
            below: dict[str, list[tuple[str, str]]] = {}
            open_folders = {p.strip("/") for p in wanted} & folders
            if open_folders:
                for name, record in files.items():
                    parts = name.split("/")
                    for depth in range(1, len(parts)):
                        folder = "/".join(parts[:depth])
                        if folder in open_folders:
                            below.setdefault(folder, []).append((name, record["oid"]))
            out = {}
            for path in wanted:
                key = path.strip("/")
                if key in folders:
                    out[path] = sorted(below.get(key, [])) or None
                else:
                    record = files.get(key)
                    out[path] = record["oid"] if record else None
            return out

        result = {path: history[0] for path in paths}
        current = states(head_files, paths)
        open_paths = set(paths)
        for older in history[1:]:
            if not open_paths:
                break
            previous = states(older["files"], open_paths)
            for path in list(open_paths):
                if previous[path] != current[path]:
                    open_paths.discard(path)
                else:
                    result[path] = older
        return result
