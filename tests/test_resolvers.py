"""Resolvers and the resumable download against the loopback origin: resume across calls, size bounds, link
kinds, hostile archives, and where HF_TOKEN may go."""

from __future__ import annotations

import io
import os
import zipfile

import pytest

from tests.pull_origin import Origin
from zoo.pull import PullError, _extract_all
from zoo.resolvers import DownloadError, Resolution, _headers, download, link_kind, mirror_url

PAYLOAD = os.urandom(200_000)


@pytest.fixture
def origin(monkeypatch):
    server = Origin()
    server.files["/example.org/release/model.bin"] = PAYLOAD
    server.start()
    monkeypatch.setenv("ZOO_ORIGINAL_MIRROR", server.url)
    yield server
    server.stop()


RELEASE = Resolution("https", "https://example.org/release/model.bin")


def test_interrupted_download_resumes_on_the_next_call(origin, tmp_path):
    origin.cut["/example.org/release/model.bin"] = 5
    dest = tmp_path / "model.bin"
    with pytest.raises(DownloadError, match="resumes") as err:
        download(RELEASE, dest, attempts=2, progress=False)
    part = tmp_path / "model.bin.part"
    assert str(part) in str(err.value) and not dest.exists()
    kept = part.stat().st_size
    assert 0 < kept < len(PAYLOAD) and part.read_bytes() == PAYLOAD[:kept]
    first_of_second_call = len(origin.log)
    assert download(RELEASE, dest, attempts=4, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD and not part.exists()
    assert origin.log[first_of_second_call][2] == f"bytes={kept}-"  # resumed where the first call stopped


def test_a_body_larger_than_the_known_size_is_refused(origin, tmp_path):
    with pytest.raises(DownloadError, match=f"offers {len(PAYLOAD)} bytes"):
        download(RELEASE, tmp_path / "model.bin", expected_size=1000, progress=False)
    assert not (tmp_path / "model.bin").exists()


def test_unknown_size_is_bounded(origin, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_MAX_DOWNLOAD_BYTES", "5000")
    with pytest.raises(DownloadError, match="more than the allowed 5000"):
        download(RELEASE, tmp_path / "model.bin", progress=False)


def test_missing_file_is_an_http_error_naming_it(origin, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(Resolution("https", "https://example.org/release/gone.pt"), tmp_path / "gone.pt", progress=False)


@pytest.mark.parametrize("url,kind", [
    ("https://drive.google.com/file/d/1lZx_sHt0-1gJVgXx90LDRizq3k-ZI0SW", "gdrive"),
    ("https://drive.google.com/open?id=1lZx_sHt0-1gJVgXx90LDRizq3k-ZI0SW", "gdrive"),
    ("https://drive.google.com/drive/folders/1lZx_sHt0-1gJVgXx90LDRizq3k-ZI0SW", "manual"),
    ("https://huggingface.co/neuralspeech/priorgrad", "hub"),
    ("https://huggingface.co/org/repo/resolve/v1/file.pt", "hub"),
    ("https://aka.ms/mlnet-resources/models/NasBert2000000.tsm", "https"),
    ("https://github.com/microsoft/muzic/tree/main/musicbert", "manual"),
    ("https://1drv.ms/u/s!AbCdEf", "manual"),
    ("ftp://example.org/file.pt", "manual"),
])
def test_link_kinds(url, kind):
    assert link_kind(url) == kind


def test_mirror_keeps_host_path_and_query(monkeypatch):
    monkeypatch.setenv("ZOO_ORIGINAL_MIRROR", "http://127.0.0.1:1/")
    assert mirror_url("https://drive.google.com/uc?export=download&id=X") == \
        "http://127.0.0.1:1/drive.google.com/uc?export=download&id=X"


def test_hf_token_goes_only_to_the_hub_and_never_through_a_mirror(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.delenv("ZOO_ORIGINAL_MIRROR", raising=False)
    assert _headers("https://huggingface.co/org/repo/resolve/main/f.zip")["Authorization"] == "Bearer hf_secret"
    assert "Authorization" not in _headers("https://ml2md.blob.core.windows.net/x.pt")
    monkeypatch.setenv("ZOO_ORIGINAL_MIRROR", "http://127.0.0.1:1")
    assert "Authorization" not in _headers("https://huggingface.co/org/repo/resolve/main/f.zip")


def test_archive_member_outside_the_folder_is_refused(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("stats_priorgrad/energy_max_train.npy", b"ok")
        archive.writestr("../escaped.txt", b"evil")
    path = tmp_path / "stats.zip"
    path.write_bytes(buffer.getvalue())
    target = tmp_path / "work"
    target.mkdir()
    with pytest.raises(PullError, match="outside the archive"):
        _extract_all(path, target)
    assert not (tmp_path / "escaped.txt").exists() and list(target.iterdir()) == []
