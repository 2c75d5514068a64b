"""Where an original release can be downloaded from, one resolver per kind of link, and a resumable download.

Kinds of link in the catalogue (zoo/catalog/*.py):

- ``https``: a direct file URL (Azure blob, aka.ms redirect). Fetched as is.
- ``gdrive``: a Google Drive *file* (``drive.google.com/file/d/ID``, ``open?id=ID``, ``uc?id=ID``). Drive answers
  large files with an HTML "can't scan this file for viruses" page whose form carries a confirm token; the
  resolver reads that page (bounded) and follows the form.
- ``hub``: a file in a Hugging Face Hub repo (``huggingface.co/ORG/NAME`` plus the entry's ``archive``), fetched
  from ``https://huggingface.co/ORG/NAME/resolve/REVISION/FILE`` with ``HF_TOKEN`` when set. The release's
  host, not ``HF_ENDPOINT``: that often names a local hub holding only zoo's own conversions.
- ``manual``: a web page (a GitHub README, a OneDrive share, a Drive *folder*) that a program cannot turn into
  one file without scraping or a login. `ManualDownloadRequired` says where to get it and how to pass it
  with ``--file``.

``ZOO_ORIGINAL_MIRROR=http://host:port`` sends every request to ``MIRROR/<original host>/<path>?<query>``
instead (a local copy of the releases; the tests' loopback origin). It changes where bytes come from, never
what is checked: the sha256 / size facts of the entry still apply.
"""

from __future__ import annotations

import html.parser
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

__all__ = [
    "DownloadError", "ManualDownloadRequired", "Resolution", "download", "link_kind", "mirror_url", "resolve",
]

MIRROR_ENV = "ZOO_ORIGINAL_MIRROR"
MAX_DOWNLOAD_ENV = "ZOO_MAX_DOWNLOAD_BYTES"
DEFAULT_MAX_DOWNLOAD = 8 << 30  # bound on a download whose size the entry does not know
MAX_PAGE_BYTES = 1 << 20  # an HTML confirm page is read up to this much
CHUNK = 1 << 16

_DRIVE_FILE = [
    re.compile(r"^/file/d/([A-Za-z0-9_-]{10,})(/.*)?$"),
]
_HUB_HOSTS = {"huggingface.co", "hf.co"}


class DownloadError(RuntimeError):
    """A download that failed (HTTP error, cut connection, wrong size or hash); the message says what to do."""


class ManualDownloadRequired(DownloadError):
    """The release link is a page, not a file: download by hand and pass the file with ``--file``."""


@dataclass(frozen=True)
class Resolution:
    """How to fetch one original file: the kind of link and the URL the first request goes to."""

    kind: str  # "https", "gdrive", "hub"
    url: str
    archive_member: str | None = None  # path inside a zip release that is the checkpoint


def link_kind(url: str) -> str:
    """'https', 'gdrive', 'hub' or 'manual' for a release URL.

        link_kind("https://drive.google.com/file/d/1lZx_sHt0-1gJVgXx90LDRizq3k-ZI0SW")   # 'gdrive'
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https"):
        return "manual"
    if host == "drive.google.com":
        return "gdrive" if _drive_id(url) else "manual"  # folders need a listing: manual
    if host in _HUB_HOSTS:
        return "hub"
    if host in ("github.com", "onedrive.live.com", "1drv.ms") or "sharepoint.com" in host:
        return "manual"
    if parts.path.endswith("/") or not parts.path.rsplit("/", 1)[-1]:
        return "manual"
    return "https"


def _drive_id(url: str) -> str | None:
    parts = urlsplit(url)
    for pattern in _DRIVE_FILE:
        match = pattern.match(parts.path)
        if match:
            return match.group(1)
    if parts.path in ("/open", "/uc"):
        ids = parse_qs(parts.query).get("id")
        if ids and re.fullmatch(r"[A-Za-z0-9_-]{10,}", ids[0]):
            return ids[0]
    return None


def _hub_repo(url: str) -> tuple[str, str | None, str | None]:
    """(repo_id, revision, filename) of a huggingface.co URL (a repo page or a resolve/blob link)."""
    segments = [s for s in urlsplit(url).path.split("/") if s]
    if segments and segments[0] in ("datasets", "spaces"):
        raise ValueError(f"{url}: only model repos are supported")
    if len(segments) < 2:
        raise ValueError(f"{url}: not a Hub repo URL")
    repo_id = "/".join(segments[:2])
    if len(segments) >= 5 and segments[2] in ("resolve", "blob"):
        return repo_id, segments[3], "/".join(segments[4:])
    return repo_id, None, None


def resolve(original: Any, *, variant: str, revision: str | None = None) -> Resolution:
    """The first URL to fetch for an `OriginalCheckpoint`; raises `ManualDownloadRequired` for page links."""
    url = original.url
    kind = link_kind(url)
    if kind == "manual":
        raise ManualDownloadRequired(manual_instructions(original, variant))
    if kind == "gdrive":
        return Resolution("gdrive", f"https://drive.google.com/uc?export=download&id={_drive_id(url)}")
    if kind == "hub":
        repo_id, url_revision, url_file = _hub_repo(url)
        filename = getattr(original, "archive", None) or url_file or original.filename
        # the release's own host, not HF_ENDPOINT: that may be a local hub that holds only zoo's conversions
        parts = urlsplit(url)
        rev = revision or url_revision or "main"
        return Resolution("hub", f"{parts.scheme}://{parts.hostname}/{repo_id}/resolve/{rev}/{filename}",
                          archive_member=getattr(original, "archive_member", None))
    return Resolution("https", url)


def manual_instructions(original: Any, variant: str) -> str:
    notes = f"\n  notes: {original.notes}" if getattr(original, "notes", "") else ""
    return (
        f"{variant}: the original release {original.filename} is linked from a page, not a file a program can "
        f"fetch ({original.url}). Download it by hand from there, then run\n"
        f"  zoo pull {variant} --file PATH/TO/{original.filename}\n"
        f"once; afterwards `zoo pull {variant}` and create_model('{variant}', pretrained=True) find the converted "
        f"copy in the zoo cache.{notes}"
    )


def mirror_url(url: str) -> str:
    """`url` rewritten onto ZOO_ORIGINAL_MIRROR when it is set (MIRROR/host/path?query), else unchanged."""
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror:
        return url
    mirror = mirror.rstrip("/")
    if url.startswith(mirror + "/"):
        return url
    parts = urlsplit(url)
    return f"{mirror}/{parts.hostname}{parts.path}" + (f"?{parts.query}" if parts.query else "")


# --------------------------------------------------------------------------------------------- Drive page
class _FormParser(html.parser.HTMLParser):
    """Collects the download form (action + hidden inputs), confirm links and the title of a Drive page."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self.links: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "id": a.get("id", ""), "inputs": {}})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["inputs"][a["name"]] = a.get("value", "")
        elif tag == "a" and "confirm=" in a.get("href", ""):
            self.links.append(a["href"])
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def drive_confirm_url(page: str, page_url: str) -> str:
    """The URL behind Drive's "download anyway" form or link; DownloadError when the page has none."""
    parser = _FormParser()
    parser.feed(page)
    for form in parser.forms:
        if "confirm" in form["inputs"] or form["id"] == "download-form":
            action = urljoin(page_url, form["action"] or page_url)
            return f"{action.split('?', 1)[0]}?{urlencode(form['inputs'])}"
    if parser.links:
        return urljoin(page_url, html.unescape(parser.links[0]))
    title = parser.title.strip() or "no title"
    raise DownloadError(f"Google Drive answered {page_url} with a page that has no download form ({title!r}): "
                        f"the file may be private, removed, or over its download quota")


# --------------------------------------------------------------------------------------------- download
def _max_bytes(expected_size: int | None) -> int:
    if expected_size is not None:
        return expected_size
    return int(os.environ.get(MAX_DOWNLOAD_ENV, DEFAULT_MAX_DOWNLOAD))


def _headers(url: str) -> dict[str, str]:
    """HF_TOKEN goes to Hub hosts only, and never through a mirror."""
    headers = {"User-Agent": "zoo-pull/1"}
    token = os.environ.get("HF_TOKEN")
    parts = urlsplit(url)
    if token and parts.scheme == "https" and parts.hostname in _HUB_HOSTS and not os.environ.get(MIRROR_ENV):
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _open(url: str, start: int, timeout: float):
    request = urllib.request.Request(mirror_url(url), headers=_headers(url))
    if start:
        request.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) only, checked by link_kind


def download(
    resolution: Resolution,
    dest: str | os.PathLike,
    *,
    expected_size: int | None = None,
    label: str | None = None,
    attempts: int = 4,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Fetch `resolution` into `dest` (a `.part` file beside it until complete) and return `dest`.

    An interrupted transfer is resumed with an HTTP Range request (here, with up to `attempts` tries, and on
    the next call, since the `.part` file stays). A body larger than the known size (or than
    ZOO_MAX_DOWNLOAD_BYTES when the size is unknown) is refused. Hash checks are the caller's.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    limit = _max_bytes(expected_size)
    url = resolution.url
    last_error = ""
    for attempt in range(attempts):
        start = part.stat().st_size if part.is_file() else 0
        if expected_size is not None and start > expected_size:
            part.unlink()
            start = 0
        try:
            response = _open(url, start, timeout)
        except urllib.error.HTTPError as err:
            if err.code == 416 and start:  # the .part file is already complete or bogus: start over
                part.unlink()
                continue
            raise DownloadError(f"{label or dest.name}: HTTP {err.code} {err.reason} from {url}") from None
        except (OSError, http.client.HTTPException) as err:
            last_error = f"{type(err).__name__}: {err}"
            time.sleep(min(2 ** attempt, 5) * 0.1)
            continue
        with response:
            content_type = response.headers.get("Content-Type", "")
            if resolution.kind == "gdrive" and content_type.startswith("text/html"):
                page = response.read(MAX_PAGE_BYTES + 1)
                if len(page) > MAX_PAGE_BYTES:
                    raise DownloadError(f"{url}: a Google Drive page larger than {MAX_PAGE_BYTES} bytes")
                url = drive_confirm_url(page.decode("utf-8", errors="replace"), url)
                resolution = Resolution("gdrive-file", url, resolution.archive_member)
                continue
            status = response.status
            if status == 206:
                match = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
                if not match or int(match.group(1)) != start:
                    part.unlink(missing_ok=True)
                    raise DownloadError(f"{url}: the server resumed at the wrong offset "
                                        f"({response.headers.get('Content-Range')!r}, wanted {start}); run again")
                total = int(match.group(3)) if match.group(3) != "*" else None
                mode = "ab"
            else:
                start = 0
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                mode = "wb"
            if total is not None and total > limit:
                raise DownloadError(f"{url}: the server offers {total} bytes, more than the "
                                    f"{'expected ' if expected_size is not None else 'allowed '}{limit}")
            if expected_size is not None and total is not None and total != expected_size:
                raise DownloadError(f"{url}: the server offers {total} bytes, the release is {expected_size}")
            written = start
            try:
                with open(part, mode) as handle, tqdm(
                    total=total, initial=start, unit="B", unit_scale=True, desc=label or dest.name,
                    disable=not progress, leave=False,
                ) as bar:
                    while block := response.read(CHUNK):
                        written += len(block)
                        if written > limit:
                            raise DownloadError(f"{url}: more than {limit} bytes; refusing the rest")
                        handle.write(block)
                        bar.update(len(block))
            except (OSError, http.client.HTTPException) as err:  # cut connection: keep .part, resume
                last_error = f"{type(err).__name__}: {err}"
                continue
            if total is not None and written < total:
                last_error = f"connection closed after {written} of {total} bytes"
                continue
        os.replace(part, dest)
        return dest
    have = part.stat().st_size if part.is_file() else 0
    kept = (f"{have} bytes are kept in {part} and the next run resumes from there" if have
            else "nothing was received")
    raise DownloadError(f"{label or dest.name}: download from {url} failed after {attempts} tries ({last_error}); "
                        f"{kept}")
