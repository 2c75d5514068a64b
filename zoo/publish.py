"""`zoo publish`: pull, convert, verify and upload released variants to a Hub organisation.

    results = publish(["graphormer_base_pcqm4mv2"], org="my-org")      # or publish(all_released(), org=...)

Each variant becomes `ORG/<hub name>` (the entry's `hub_id` name, else the variant name) in ONE commit that
holds the converted folder, its verification record and a card rendered for that repo id (lineage: original
release -> converted -> fine-tuned). The commit is tagged `v<zoo version>-<content digest>`. A re-run compares
every file with the repo's current tree (LFS sha256, or the git blob id of small files) and uploads only what
changed; when nothing did, it makes no commit. Fine-tuned folders (`zoo finetune ... --push-to ORG/NAME`) go
up through `publish_folder` the same way, with their base model in the card.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .registry import list_models, model_info

__all__ = ["PublishResult", "all_released", "publish", "publish_folder"]


@dataclass
class PublishResult:
    """What was published for one variant or folder."""

    repo_id: str
    commit: str | None  # None: nothing changed, no commit
    tag: str | None
    uploaded: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    max_abs_diff: float | None = None


def all_released() -> list[str]:
    """Every variant with an original release (what `zoo publish --all` publishes)."""
    return list_models(pretrained=True)


def _git_blob_id(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _content_digest(rows: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda r: r["name"]):
        digest.update(f"{row['name']}\0{row['sha256']}\n".encode())
    return digest.hexdigest()


def _remote_files(api, repo_id: str, revision: str) -> dict[str, dict[str, Any]]:
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        entries = api.list_repo_tree(repo_id, revision=revision, recursive=True)
        return {e.path: {"lfs": getattr(e, "lfs", None), "blob_id": getattr(e, "blob_id", None)}
                for e in entries if getattr(e, "blob_id", None) is not None}
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return {}


def _unchanged(local: Path, remote: dict[str, Any] | None, sha256: str) -> bool:
    if remote is None:
        return False
    lfs = remote.get("lfs")
    if lfs is not None:
        oid = lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)
        return oid == sha256
    return remote.get("blob_id") == _git_blob_id(local)


def publish_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    revision: str = "main",
    private: bool = False,
    endpoint: str | None = None,
    token: str | None = None,
    message: str | None = None,
) -> PublishResult:
    """Upload what changed in a validated folder to `repo_id` in one tagged commit (no commit if nothing did)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    from . import __version__
    from .hub import hub_session, validate_folder

    folder = Path(folder)
    rows = validate_folder(folder).files
    tag = f"v{__version__}-{_content_digest(rows)[:12]}"
    with hub_session(endpoint, token) as url:
        api = HfApi(endpoint=url, token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        remote = _remote_files(api, repo_id, revision)
        local = {row["name"]: row for row in rows}
        uploads = [name for name, row in local.items() if not _unchanged(folder / name, remote.get(name), row["sha256"])]
        deletes = sorted(set(remote) - set(local) - {".gitattributes"})
        if not uploads and not deletes:
            return PublishResult(repo_id, None, None)
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in uploads]
        operations += [CommitOperationDelete(path_in_repo=name) for name in deletes]
        info = api.create_commit(repo_id, operations=operations, revision=revision,
                                 commit_message=message or f"zoo {__version__}: publish {folder.name}")
        existing = {t.name for t in api.list_repo_refs(repo_id).tags}
        if tag not in existing:
            api.create_tag(repo_id, tag=tag, revision=info.oid)
        else:
            tag = None
    return PublishResult(repo_id, info.oid, tag, sorted(uploads), deletes)


def publish(
    variants: list[str],
    org: str,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    files: dict[str, str | os.PathLike] | None = None,
    private: bool = False,
    log=None,
) -> list[PublishResult]:
    """Pull (from the original release), verify, render the card and publish each variant to `org`."""
    from .hub import write_card
    from .pull import pull
    from .verification import VerificationError, verify

    log = log or (lambda text: print(text, file=sys.stderr))
    if not org or "/" in org:
        raise ValueError(f"--org must be one organisation name, got {org!r}")
    results = []
    for variant in variants:
        entry = model_info(variant)
        if entry.original is None and not (files or {}).get(variant):
            raise ValueError(f"{variant}: no original release to publish (zoo list --pretrained)")
        folder = pull(variant, file=(files or {}).get(variant), from_original=True)
        check = verify(folder)
        if not check.ok:
            raise VerificationError(f"{variant}: the converted folder fails its own verification "
                                    f"(max |diff| {check.max_abs_diff} > {check.atol}); not publishing")
        name = (entry.hub_id or variant).split("/")[-1]
        repo_id = f"{org}/{name}"
        with tempfile.TemporaryDirectory(prefix=".zoo-publish-") as tmp:
            stage = Path(tmp) / name
            shutil.copytree(folder, stage)
            write_card(stage, variant=variant, repo_id=repo_id)
            result = publish_folder(stage, repo_id, endpoint=endpoint, token=token, private=private,
                                    message=f"{variant}: converted from {entry.original.filename} "
                                            f"(max |diff| on re-run {check.max_abs_diff:.3g})")
        result.max_abs_diff = check.max_abs_diff
        log(f"{repo_id}: " + (f"commit {result.commit[:10]}, tag {result.tag}, {len(result.uploaded)} file(s) "
                              f"uploaded" if result.commit else "up to date, nothing uploaded"))
        results.append(result)
    return results
