"""`zoo pull`: a variant name is enough to get converted weights.

    folder = pull("graphormer_base_pcqm4mv2")          # the converted folder, cached
    model = zoo.create_model("graphormer_base_pcqm4mv2", pretrained=True)

Order of sources:

1. the converted Hub repo of the variant, when one is configured: the entry's `hub_id` ("ORG/NAME", or
   "NAME" on the org `ZOO_HUB_ORG`), or `ZOO_HUB_ORG/<variant>` when ZOO_HUB_ORG is set (what `zoo publish`
   writes). Loaded with the ordinary Hub cache, so `revision`, `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE`
   apply;
2. otherwise (or with `from_original=True`, or when the repo does not exist) the original release: resolved
   per kind of link (zoo/resolvers.py), downloaded with a progress bar and resume, its size and sha256 checked
   against the entry (or, when the entry does not know them, recorded on first download in
   `ZOO_CACHE/originals.json` and checked against that afterwards), converted by the family's converter through
   the safe reader into `ZOO_CACHE/converted/<variant>/<sha256[:16]>/` (default `~/.cache/zoo`), with the
   verification record. The next pull finds that folder without any network access.

Every step writes atomically: a failed download keeps only its `.part` file (for resuming), a file with the
wrong hash is deleted, and a converted folder appears only complete and checked.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fileio import atomic_write_json, read_json_object, sha256_file
from .registry import ModelEntry, build_config, model_info
from .resolvers import DownloadError, ManualDownloadRequired, Resolution, download, link_kind, resolve

__all__ = [
    "CACHE_ENV", "HUB_ORG_ENV", "OfflineError", "PullError", "PullResult", "VariantMismatchError", "cache_root",
    "check_folder_matches", "config_problems", "converted_dir", "hub_repo_id", "pull", "pull_result",
]

CACHE_ENV = "ZOO_CACHE"
HUB_ORG_ENV = "ZOO_HUB_ORG"
FACTS_FILE = "originals.json"
MAX_MEMBER_BYTES = 8 << 30
MAX_CONFIG_BYTES = 1 << 20
# config keys that describe a task head, not the architecture: a base-model folder gets them from the variant
HEAD_KEYS = ("num_labels", "problem_type", "id2label", "label2id", "num_classes")


class PullError(RuntimeError):
    """A variant whose weights could not be fetched or converted; the message says what to do."""


class OfflineError(PullError):
    """HF_HUB_OFFLINE is set and no converted copy of the variant is cached."""


class VariantMismatchError(ValueError):
    """A folder or repo whose config does not match the variant it is loaded as."""


def cache_root() -> Path:
    """ZOO_CACHE, else ~/.cache/zoo."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "zoo").expanduser()


def converted_dir(variant: str, sha256: str) -> Path:
    return cache_root() / "converted" / variant / sha256[:16]


def _offline() -> bool:
    """HF_HUB_OFFLINE as the environment says now (huggingface_hub's constant only mirrors it at import)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().upper() in ("1", "ON", "YES", "TRUE")
    return bool(constants.HF_HUB_OFFLINE)


def hub_repo_id(entry: ModelEntry) -> str | None:
    """The converted repo of a variant, or None when none is configured."""
    org = os.environ.get(HUB_ORG_ENV)
    name = entry.hub_id or entry.name
    if "/" in name:
        return f"{org}/{name.split('/', 1)[1]}" if org else name
    return f"{org}/{name}" if org else None


def _say(message: str) -> None:
    print(message, file=sys.stderr)


# --------------------------------------------------------------------------------------------- facts
def _facts_key(entry: ModelEntry) -> str:
    original = entry.original
    return f"{original.url}#{original.archive or original.filename}"


def _read_facts() -> dict[str, Any]:
    path = cache_root() / FACTS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise PullError(f"{path}: not valid JSON ({err}); delete it to start over") from None
    return data if isinstance(data, dict) else {}


def _record_facts(entry: ModelEntry, sha256: str, size: int) -> None:
    facts = _read_facts()
    row = facts.setdefault(_facts_key(entry), {})
    row.update({"sha256": sha256, "size": size, "filename": entry.original.archive or entry.original.filename})
    row["variants"] = sorted(set(row.get("variants", [])) | {entry.name})
    atomic_write_json(cache_root() / FACTS_FILE, facts)


def _expected(entry: ModelEntry) -> tuple[str | None, int | None, str]:
    """(sha256, size, where the expectation comes from) for the downloaded file of an entry."""
    original = entry.original
    if original.sha256 or original.size_bytes:
        return original.sha256, original.size_bytes, "the registry entry"
    row = _read_facts().get(_facts_key(entry), {})
    return row.get("sha256"), row.get("size"), f"{cache_root() / FACTS_FILE} (recorded at the first download)"


# --------------------------------------------------------------------------------------------- checks
def _load_config(folder_or_repo: str | os.PathLike, revision: str | None) -> tuple[dict[str, Any], Path | None]:
    path = Path(folder_or_repo)
    if path.is_dir():
        config_path = path / "config.json"
        if not config_path.is_file():
            raise VariantMismatchError(f"{path}: no config.json; not a zoo folder")
        local = path
    else:
        text = os.fspath(folder_or_repo)
        if text.count("/") != 1 or text.startswith((".", "/", "~")):
            raise FileNotFoundError(f"{text}: no such folder, and not a Hub repo id (ORG/NAME)")
        from huggingface_hub import hf_hub_download

        config_path = Path(hf_hub_download(text, "config.json", revision=revision))
        local = None
    config = read_json_object(config_path, max_bytes=MAX_CONFIG_BYTES, error=VariantMismatchError,
                              name=f"{folder_or_repo}: config.json")
    return config, local


def config_problems(variant: str, config: dict[str, Any], overrides: dict[str, Any] | None = None) -> list[str]:
    """Why a saved config is not the variant: family, architecture, and every size the entry sets."""
    from .auto import get_family

    entry = model_info(variant)
    family = get_family(entry.family)
    overrides = overrides or {}
    problems = []
    model_type = family.config_class.model_type
    if config.get("model_type") != model_type:
        return [f"model_type is {config.get('model_type')!r}, the {entry.family} family's is {model_type!r}"]
    architecture = (config.get("architectures") or [None])[0]
    base = family.base_model_class.__name__
    is_base = architecture == base and entry.architecture != base
    if architecture not in family.model_classes:
        problems.append(f"architecture {architecture!r} is not a {entry.family} model class")
    elif architecture != entry.architecture and not is_base and entry.architecture != base:
        problems.append(f"architecture is {architecture}, the variant is a {entry.architecture}")
    expected = build_config(variant).to_dict()
    for key, value in entry.config.items():
        if key in overrides or isinstance(value, float) or (is_base and key in HEAD_KEYS):
            continue
        want = json.loads(json.dumps(expected.get(key, value)))  # as config.json holds it (lists, string keys)
        got = config.get(key)
        if got != want:
            problems.append(f"{key} is {got!r}, the variant has {want!r}")
    return problems


def check_folder_matches(
    variant: str, folder_or_repo: str | os.PathLike, *, revision: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> str:
    """Refuse (VariantMismatchError) a folder or repo whose config is not the variant; return what to load.

    A base-model folder (e.g. a released encoder) loaded as a head variant gets the head's settings
    (num_labels, problem_type) from the entry, in `overrides` (updated in place).
    """
    config, local = _load_config(folder_or_repo, revision)
    problems = config_problems(variant, config, overrides)
    if problems:
        raise VariantMismatchError(
            f"{folder_or_repo} is not the variant {variant}: " + "; ".join(problems)
            + ". Pick the variant that matches the folder (zoo list), or pass the folder that belongs to "
              f"{variant} (zoo pull {variant})."
        )
    if overrides is not None:
        entry = model_info(variant)
        from .auto import get_family

        base = get_family(entry.family).base_model_class.__name__
        if (config.get("architectures") or [None])[0] == base and entry.architecture != base:
            for key in HEAD_KEYS:
                if key in entry.config and key not in overrides:
                    overrides[key] = entry.config[key]
    if local is not None:
        return os.fspath(local)
    if revision is not None and overrides is not None:
        overrides.setdefault("revision", revision)
    return os.fspath(folder_or_repo)


# --------------------------------------------------------------------------------------------- pull
@dataclass
class PullResult:
    folder: Path
    source: str  # "hub:<repo>@<revision>", "cache", "download", "file"


def pull(
    variant: str,
    *,
    file: str | os.PathLike | None = None,
    revision: str | None = None,
    from_original: bool = False,
    progress: bool = True,
) -> Path:
    """The converted folder of `variant` (downloading and converting at most once); see the module doc.

        folder = pull("nasbert5_mlnet")                                    # ~/.cache/zoo/converted/nasbert5_mlnet/...
        folder = pull("musicbert_base", file="checkpoint_last_musicbert_base.pt")   # a link zoo cannot fetch
    """
    return pull_result(variant, file=file, revision=revision, from_original=from_original, progress=progress).folder


def pull_result(
    variant: str,
    *,
    file: str | os.PathLike | None = None,
    revision: str | None = None,
    from_original: bool = False,
    progress: bool = True,
) -> PullResult:
    """`pull`, also saying where the folder came from ("hub:ORG/NAME@REV", "cache", "download", "file")."""
    entry = model_info(variant)
    repo = hub_repo_id(entry)
    hub_note = ""
    if file is None and not from_original and repo is not None:
        folder, hub_note = _from_hub(variant, repo, revision)
        if folder is not None:
            return PullResult(folder, f"hub:{repo}@{revision or 'main'}")
    if entry.original is None:
        if file is None:
            raise PullError(f"{variant}: no original weights were released for this variant (zoo list --pretrained "
                            f"lists those that were){hub_note}; create it untrained with create_model('{variant}') "
                            f"or pass a checkpoint you trained with --file")
    if file is not None:
        return _from_file(entry, Path(file))
    return _from_release(entry, revision, progress, hub_note)


def _from_hub(variant: str, repo: str, revision: str | None) -> tuple[Path | None, str]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    offline = _offline()
    try:
        folder = Path(snapshot_download(repo, revision=revision, local_files_only=offline))
    except (RepositoryNotFoundError, RevisionNotFoundError) as err:
        note = f" (the converted repo {repo}@{revision or 'main'} was not found: {type(err).__name__})"
        _say(f"zoo pull {variant}: {repo} not found; falling back to the original release")
        return None, note
    except LocalEntryNotFoundError:
        return None, f" (HF_HUB_OFFLINE is set and {repo} is not in the Hub cache)"
    except Exception as err:  # noqa: BLE001 - an unreachable Hub: a converted copy of the original may be cached
        _say(f"zoo pull {variant}: {repo} could not be fetched ({type(err).__name__}: {err}); "
                  f"trying the original release")
        return None, f" ({repo} could not be fetched: {type(err).__name__})"
    check_folder_matches(variant, folder)
    return folder, ""


def _cached(entry: ModelEntry, sha256: str) -> Path | None:
    folder = converted_dir(entry.name, sha256)
    return folder if (folder / "config.json").is_file() and (folder / "verification" / "record.json").is_file() else None


def _what_to_download(entry: ModelEntry) -> str:
    original = entry.original
    what = original.archive or original.filename
    extra = f" and {', '.join(original.companions)}" if original.companions else ""
    return f"{what}{extra} from {original.url}"


def _from_file(entry: ModelEntry, file: Path) -> PullResult:
    if not file.is_file():
        raise FileNotFoundError(f"--file {file}: no such file")
    sha, size = sha256_file(file), file.stat().st_size
    if entry.original is not None:
        want_sha, want_size = entry.original.sha256, entry.original.size_bytes
        if want_size is not None and size != want_size:
            raise PullError(f"{file}: {size} bytes, but {entry.name}'s release {entry.original.filename} is {want_size}")
        if want_sha is not None and sha != want_sha:
            raise PullError(f"{file}: sha256 {sha}, but {entry.name}'s release {entry.original.filename} has {want_sha}")
    cached = _cached(entry, sha)
    if cached is not None:
        return PullResult(cached, "cache")
    original = entry.original
    with tempfile.TemporaryDirectory(prefix=".unpack-", dir=_mkdir(cache_root() / "tmp")) as tmp:
        workdir, checkpoint = Path(tmp), file
        if original is not None and original.archive and zipfile.is_zipfile(file):  # the release zip itself
            checkpoint = _unpack(file, entry, workdir)
        for companion in original.companions if original is not None else ():
            if (file.parent / companion).is_file():  # e.g. stats_priorgrad.zip downloaded next to it
                _extract_all(file.parent / companion, workdir)
        if not any(workdir.iterdir()):
            workdir = file.parent  # unpacked companions (stats_priorgrad/) next to the file are used as they are
        folder = _convert_into_cache(entry, checkpoint, sha, workdir=workdir, original_file=file)
    if original is not None and (original.archive is None or checkpoint != file):  # the file is the release
        _record_facts(entry, sha, size)
    return PullResult(folder, "file")


def _from_release(entry: ModelEntry, revision: str | None, progress: bool, hub_note: str) -> PullResult:
    want_sha, want_size, source = _expected(entry)
    if want_sha:
        cached = _cached(entry, want_sha)
        if cached is not None:
            return PullResult(cached, "cache")
    if _offline():
        raise OfflineError(
            f"{entry.name}: HF_HUB_OFFLINE is set and no converted copy is cached under "
            f"{cache_root() / 'converted' / entry.name}{hub_note}. It needs {_what_to_download(entry)}: run "
            f"`zoo pull {entry.name}` once with network access, or download it elsewhere and run "
            f"`zoo pull {entry.name} --file PATH`."
        )
    try:
        resolution = resolve(entry.original, variant=entry.name, revision=revision)
    except ManualDownloadRequired as err:
        raise PullError(str(err)) from None
    downloads = cache_root() / "downloads" / entry.name
    name = entry.original.archive or entry.original.filename
    target = downloads / name
    try:
        if not target.is_file():
            _say(f"zoo pull {entry.name}: downloading {name} ({resolution.kind} link)")
            try:
                download(resolution, target, expected_size=want_size, label=name, progress=progress)
            except DownloadError as err:
                notes = f" Notes on this release: {entry.original.notes}" if entry.original.notes else ""
                raise PullError(f"{entry.name}: {err}. If you have {name} from elsewhere, run "
                                f"`zoo pull {entry.name} --file PATH`.{notes}") from None
        sha, size = sha256_file(target), target.stat().st_size
        if want_size is not None and size != want_size:
            raise PullError(f"{entry.name}: {name} is {size} bytes, {source} says {want_size}; the file was deleted")
        if want_sha is not None and sha != want_sha:
            remedy = ("A release that changed on the server needs a new registry entry" if source == "the registry entry"
                      else f"If the release really changed, delete its row in {cache_root() / FACTS_FILE}")
            raise PullError(f"{entry.name}: {name} has sha256 {sha}, {source} says {want_sha}; the file was "
                            f"deleted. {remedy}")
        companions = [_download_companion(entry, resolution, c, downloads, progress) for c in entry.original.companions]
    except BaseException:
        _remove_download(downloads, keep_partial=True)
        raise
    cached = _cached(entry, sha)
    if cached is None:
        with tempfile.TemporaryDirectory(prefix=".unpack-", dir=_mkdir(cache_root() / "tmp")) as tmp:
            workdir = Path(tmp)
            try:
                checkpoint = _unpack(target, entry, workdir) if entry.original.archive else target
                for companion in companions:
                    _extract_all(companion, workdir)
                cached = _convert_into_cache(entry, checkpoint, sha, workdir=workdir, original_file=target)
            except BaseException:
                _remove_download(downloads, keep_partial=False)
                raise
    if entry.original.sha256 is None or entry.original.size_bytes is None:
        _record_facts(entry, sha, size)
    if not want_sha:
        _say(f"zoo pull {entry.name}: recorded {name}: {size} bytes, sha256 {sha} (the registry does not "
                  f"know them; later downloads are checked against this)")
    return PullResult(cached, "download")


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _remove_download(downloads: Path, keep_partial: bool) -> None:
    """Delete complete downloads of a failed pull (a .part file stays for resuming when asked)."""
    if not downloads.is_dir():
        return
    for path in downloads.iterdir():
        if keep_partial and path.name.endswith(".part"):
            continue
        if path.is_file():
            path.unlink()
    with contextlib.suppress(OSError):
        downloads.rmdir()
        downloads.parent.rmdir()


def _download_companion(entry: ModelEntry, resolution: Resolution, name: str, downloads: Path, progress: bool) -> Path:
    kind = link_kind(entry.original.url)
    if kind not in ("hub", "https"):
        raise PullError(f"{entry.name}: companion file {name} cannot be located from a {kind} link")
    base = resolution.url.rsplit("/", 1)[0]
    target = downloads / name
    if not target.is_file():
        download(Resolution(resolution.kind, f"{base}/{name}"), target, label=name, progress=progress)
    return target


def _safe_members(archive: zipfile.ZipFile, source: Path) -> list[zipfile.ZipInfo]:
    members = []
    total = 0
    for info in archive.infolist():
        name = info.filename
        if name.startswith(("/", "\\")) or ".." in Path(name).parts or ":" in name:
            raise PullError(f"{source}: archive member {name!r} points outside the archive")
        total += info.file_size
        if total > MAX_MEMBER_BYTES:
            raise PullError(f"{source}: the archive unpacks to more than {MAX_MEMBER_BYTES} bytes")
        members.append(info)
    return members


def _unpack(archive_path: Path, entry: ModelEntry, workdir: Path) -> Path:
    member = entry.original.archive_member
    try:
        with zipfile.ZipFile(archive_path) as archive:
            infos = {info.filename: info for info in _safe_members(archive, archive_path)}
            if member not in infos:
                raise PullError(f"{archive_path}: no member {member!r} (has {sorted(infos)[:10]})")
            target = workdir / member
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(infos[member]) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile as err:
        raise PullError(f"{archive_path}: not a zip archive ({err})") from None
    return target


def _extract_all(archive_path: Path, workdir: Path) -> None:
    try:
        with zipfile.ZipFile(archive_path) as archive:
            for info in _safe_members(archive, archive_path):
                if not info.is_dir():
                    archive.extract(info, workdir)
    except zipfile.BadZipFile as err:
        raise PullError(f"{archive_path}: not a zip archive ({err})") from None


def _converter_module(entry: ModelEntry):
    if not entry.converter:
        raise PullError(f"{entry.name}: the registry names no converter for the {entry.family} family")
    stem = Path(entry.converter).stem
    if not re.fullmatch(r"convert_[a-z0-9_]+", stem):
        raise PullError(f"{entry.name}: unexpected converter {entry.converter!r}")
    return importlib.import_module(f"conversion.{stem}")


def _convert_into_cache(entry: ModelEntry, checkpoint: Path, sha: str, *, workdir: Path,
                        original_file: Path | None = None) -> Path:
    module = _converter_module(entry)
    final = converted_dir(entry.name, sha)
    final.parent.mkdir(parents=True, exist_ok=True)
    stage_root = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        out = stage_root / "folder"
        kwargs: dict[str, Any] = {"variant": entry.name, "overwrite": True}
        parameters = inspect.signature(module.convert).parameters
        if "command" in parameters:
            kwargs["command"] = f"zoo pull {entry.name}"
        if "stats" in parameters and (workdir / "stats_priorgrad").is_dir():
            kwargs["stats"] = workdir
        _say(f"zoo pull {entry.name}: converting {checkpoint.name} with {entry.converter}")
        module.convert(checkpoint, out, **kwargs)
        problems = config_problems(entry.name, json.loads((out / "config.json").read_text()))
        if problems:
            raise VariantMismatchError(f"{checkpoint.name} converted, but it is not the variant {entry.name}: "
                                       + "; ".join(problems))
        record_path = out / "verification" / "record.json"
        if not record_path.is_file():
            raise PullError(f"{entry.converter} wrote no verification record into {out}")
        if original_file is not None and original_file.resolve() != checkpoint.resolve():
            # the record names the file that was downloaded (the archive) and the member converted from it
            record = json.loads(record_path.read_text())
            record["original"] = {**(record.get("original") or {}), "file": original_file.name,
                                  "size": original_file.stat().st_size, "sha256": sha,
                                  "archive_member": entry.original.archive_member}
            atomic_write_json(record_path, record)
            from .hub import write_card

            write_card(out, variant=entry.name, repo_id=entry.name)
        if final.exists():
            shutil.rmtree(final)
        os.replace(out, final)
    finally:
        shutil.rmtree(stage_root, ignore_errors=True)
        with contextlib.suppress(OSError):
            final.parent.rmdir()  # only when empty: a failed first conversion leaves no folder behind
    return final
