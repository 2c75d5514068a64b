"""Hostile folders for hub_upload.py / zoo.hub.validate_folder (issue 13 items 9, 10) and concurrent
uploads to one branch (item 8): every case is a FolderValidationError naming the file and the problem
(never a raw JSONDecodeError / AttributeError), raised before anything is sent; a second writer to the
same branch gets a clear conflict and the branch holds exactly one upload's files, never a mix.
"""

from __future__ import annotations

import bz2
import collections
import gzip
import io
import lzma
import os
import pickle
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi

import hub_upload
from tests.hub.helpers import make_toy_folder
from zoo.fileio import sha256_file
from zoo.hub import (
    FolderValidationError,
    UploadConflictError,
    folder_files,
    hub_session,
    upload_folder,
    validate_folder,
)
from zoo.hub_server import LocalHub


@pytest.fixture(scope="module")
def toy_source(tmp_path_factory):
    return make_toy_folder(tmp_path_factory.mktemp("toy-source") / "toy", seed=0)


@pytest.fixture
def toy(toy_source, tmp_path):
    """A fresh copy of a valid toy folder for each test."""
    folder = tmp_path / "toy"
    folder.mkdir()
    for path in toy_source.iterdir():
        if path.is_file():
            (folder / path.name).write_bytes(path.read_bytes())
    validate_folder(folder)  # valid before the test spoils it
    return folder


def _problems(folder: Path) -> list[str]:
    with pytest.raises(FolderValidationError) as err:
        validate_folder(folder)
    return err.value.problems


def _one(problems: list[str], name: str, *words: str) -> str:
    hits = [p for p in problems if p.startswith(name) and all(w in p for w in words)]
    assert hits, (name, words, problems)
    return hits[0]


# ----------------------------------------------------------------------------------- item 9: links
def test_links_out_of_the_folder_are_refused(toy, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("ssh key")
    (toy / "extra.txt").symlink_to(outside / "secret.txt")
    (toy / "sub").mkdir()
    (toy / "sub" / "leak.txt").symlink_to(Path("..") / ".." / "outside" / "secret.txt")
    (toy / "sub" / "dir").symlink_to(outside, target_is_directory=True)
    (toy / "sub" / "dangling.txt").symlink_to(tmp_path / "nowhere")
    problems = _problems(toy)
    _one(problems, "extra.txt", "outside the folder")
    _one(problems, "sub/leak.txt", "outside the folder")
    _one(problems, "sub/dir", "folder outside the folder")
    _one(problems, "sub/dangling.txt", "dangling")
    assert not any("ssh key" in p for p in problems)
    with pytest.raises(FolderValidationError):  # also without validation
        folder_files(toy)
    with pytest.raises(FolderValidationError):
        upload_folder(toy, "org/never", validate=False, endpoint="http://127.0.0.1:9", token="x")


def test_readme_link_and_fifo_are_refused(toy, tmp_path):
    (tmp_path / "card.md").write_text((toy / "README.md").read_text())
    (toy / "README.md").unlink()
    (toy / "README.md").symlink_to(tmp_path / "card.md")
    os.mkfifo(toy / "vocab.txt")  # reading it would block forever
    problems = _problems(toy)
    _one(problems, "README.md", "outside the folder")
    _one(problems, "vocab.txt", "not a regular file")


def test_links_inside_the_folder_are_published(toy):
    (toy / "copy.json").symlink_to("config.json")
    check = validate_folder(toy)
    assert {"name": "copy.json", "size": (toy / "config.json").stat().st_size,
            "sha256": sha256_file(toy / "config.json")} in check.files


# ----------------------------------------------------------------------------------- item 10: pickles
class _Point(collections.namedtuple("_Point", "x y")):
    pass


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _tar(members: dict[str, bytes], mode: str = "w") -> bytes:
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _torch_save() -> bytes:
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buffer)
    return buffer.getvalue()


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


PAYLOAD = {"weights": [1.0, 2.0], "od": collections.OrderedDict(a=1)}
DISGUISED = {
    **{f"proto{p}.dat": pickle.dumps(PAYLOAD, protocol=p) for p in range(6)},
    "notes.txt": pickle.dumps("just a string", protocol=0),
    "big-proto0.dat": pickle.dumps(list(range(200_000)), protocol=0),  # no STOP within the inspected prefix
    "vocab.gz": gzip.compress(pickle.dumps(PAYLOAD, protocol=0)),
    "vocab.bz": bz2.compress(pickle.dumps(PAYLOAD, protocol=2)),
    "vocab.xz": lzma.compress(pickle.dumps(PAYLOAD, protocol=4)),
    "twice.gz": gzip.compress(gzip.compress(pickle.dumps(PAYLOAD))),
    "state.dat": _torch_save(),  # a torch.save zip under another name
    "archive.dat": _zip({"payload": pickle.dumps(PAYLOAD, protocol=0)}),  # pickle member without .pkl name
    "nested.dat": _zip({"inner.bin.gz": gzip.compress(pickle.dumps(PAYLOAD))}),
    "hidden-zip.dat": _zip({"readme.txt": b"hello", "x/data": gzip.compress(pickle.dumps(PAYLOAD, protocol=1))}),
    "bundle.dat": _tar({"readme.txt": b"hi", "payload": pickle.dumps(PAYLOAD, protocol=0)}),
    "bundle-gz.dat": _tar({"x/weights": pickle.dumps(PAYLOAD, protocol=4)}, mode="w:gz"),
    "bundle-named.dat": _tar({"model.pt": b"anything"}, mode="w:xz"),
    "array.dat": _npy(np.arange(3)),
    "objects.dat": _npy(np.array([{"a": 1}], dtype=object)),
}


@pytest.mark.parametrize("name", sorted(DISGUISED))
def test_disguised_pickles_are_refused(toy, name):
    (toy / name).write_bytes(DISGUISED[name])
    problem = _one(_problems(toy), name)
    assert "pickle" in problem or "numpy" in problem, problem


def test_ordinary_files_are_not_mistaken_for_pickles(toy):
    ordinary = {
        "notes.txt": b"hello world.\n", "data.csv": b"a,b\n1,2\n", "N.txt": b"N", "vocab.txt": b"(a\nb\nc\n",
        "script.py": b"import os\nimport sys\nprint(1)\n", "plain.zip": _zip({"a.txt": b"text"}),
        "list.txt": b"a. first\nb. second\n", "text.gz": gzip.compress(b"just text\n"), "empty.dat": b"", "docs.tar": _tar({"a.md": b"# docs\n"}), "image.png": b"\x89PNG\r\n\x1a\n" + bytes(64),
    }
    for name, data in ordinary.items():
        (toy / name).write_bytes(data)
    validate_folder(toy)


# ----------------------------------------------------------------------------------- item 10: metadata and JSON
def _set_metadata(folder: Path, yaml_block: str) -> None:
    text = (folder / "README.md").read_text()
    end = text.index("\n---", 3)
    (folder / "README.md").write_text("---\n" + yaml_block + text[end:])


@pytest.mark.parametrize("block, expected", [
    ("license: [1, 2]\nlibrary_name: transformers\ntags: [zoo]\npipeline_tag: text-classification\n",
     '"license" must be a string'),
    ("license: mit\ntags: 5\n", '"tags" must be a string or a list of strings'),
    ("a: &a [x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c]\n"
     "e: &e [*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e]\n", "expands to more than"),  # 25 aliases, 15,625 values
    ("a: &a [x]\n" + "".join(f"k{i}: *a\n" for i in range(40)), "more than 32 YAML aliases"),
    ("a: " + "[" * 500 + "]" * 500 + "\n", "nested more than"),
    ("model-index:\n- name: x\n  results: 3\n", '"model-index" is malformed'),
    ("license: mit\nx: !!python/object/apply:os.system ['echo pwned']\n", "not valid YAML"),
])
def test_bad_card_metadata_is_refused(toy, block, expected):
    _set_metadata(toy, block)
    _one(_problems(toy), "README.md metadata", expected)


@pytest.mark.parametrize("name, content, expected", [
    ("config.json", b"[1, 2]", "must be a JSON object, found a JSON list"),
    ("config.json", b"{not json", "not valid JSON"),
    ("config.json", b"\xff\xfe", "not UTF-8"),
    ("config.json", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ("tokenizer_config.json", b'"a string"', "must be a JSON object, found a JSON str"),
    ("tokenizer_config.json", b'{"auto_map": [1]}', "auto_map must be an object"),
    ("model.safetensors.index.json", b'{"weight_map": {"w": "../../../etc/passwd"}}', "outside the folder"),
    ("model.safetensors.index.json", b'{"weight_map": [1]}', "weight_map must map"),
    ("metrics.json", b"3", "must be a JSON object"),
])
def test_bad_json_files_are_named(toy, name, content, expected):
    (toy / name).write_bytes(content)
    problem = _one(_problems(toy), name if name != "model.safetensors.index.json" else "model.safetensors.index",
                   expected)
    assert "Traceback" not in problem


def test_auto_map_cannot_point_outside(toy):
    import json

    config = json.loads((toy / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "..evil.Model", "AutoConfig": "/etc/passwd.X"}
    (toy / "config.json").write_text(json.dumps(config))
    problems = _problems(toy)
    _one(problems, "config.json", "is not 'module.Class'")


# ----------------------------------------------------------------------------------- item 8: concurrent writers
@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = LocalHub.start(tmp_path_factory.mktemp("upload-hub"))
    yield server
    server.stop()


def _variant(toy_source: Path, path: Path, marker: str) -> Path:
    path.mkdir(parents=True)
    for source in toy_source.iterdir():
        if source.is_file():
            (path / source.name).write_bytes(source.read_bytes())
    (path / f"{marker}_only.txt").write_text(marker)
    (path / "shared.txt").write_text(f"written by {marker}\n" * 10)
    return path


def _tree(hub, repo_id: str) -> dict[str, str]:
    with hub_session(hub.url, hub.token):
        api = HfApi(endpoint=hub.url, token=hub.token)
        info = api.model_info(repo_id, files_metadata=True)
    # README.md is left out: upload_folder renders a zoo card again for the repo it is published to, so the
    # same folder gives a different README in another repo; every other file must match exactly
    return {s.rfilename: (s.lfs.sha256 if s.lfs else s.blob_id) for s in info.siblings if s.rfilename != "README.md"}


def _expected(hub, folder: Path, repo_id: str) -> dict[str, str]:
    """The tree a repo gets from uploading only `folder` (uploaded to a fresh repo)."""
    upload_folder(folder, repo_id, endpoint=hub.url, token=hub.token)
    return _tree(hub, repo_id)


def test_second_writer_to_a_branch_gets_a_conflict(hub, toy_source, tmp_path, monkeypatch, capsys):
    first = _variant(toy_source, tmp_path / "first", "first")
    second = _variant(toy_source, tmp_path / "second", "second")
    upload_folder(toy_source, "org/race", endpoint=hub.url, token=hub.token)
    expected_second = _expected(hub, second, "org/race-second-alone")
    original = HfApi.create_commit
    interleaved = []

    def create_commit(self, repo_id, *args, **kwargs):
        if repo_id == "org/race" and not interleaved:  # the other writer commits while we upload
            interleaved.append(second)
            upload_folder(second, "org/race", endpoint=hub.url, token=hub.token)
        return original(self, repo_id, *args, **kwargs)

    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    with pytest.raises(UploadConflictError, match="moved on from"):
        upload_folder(first, "org/race", endpoint=hub.url, token=hub.token)
    assert _tree(hub, "org/race") == expected_second  # the winner's files, none of ours
    interleaved.clear()
    (second / "shared.txt").write_text("second, again\n")  # so that the other writer really commits again
    with hub_session(hub.url, hub.token):
        code = hub_upload.main([str(first), "--repo-id", "org/race"])
    assert code == 3 and "conflict" in capsys.readouterr().err


def test_concurrent_uploads_never_mix(hub, toy_source, tmp_path):
    """Two writers race to one branch: either one wins and the other gets a conflict (the branch holds
    the winner's upload alone), or they ran one after the other (the branch holds both, in that order);
    never files of one commit mixed with a commit made from a stale parent."""
    folders = [_variant(toy_source, tmp_path / f"w{i}", f"writer{i}") for i in range(2)]

    def applied(order: list[int], repo_id: str) -> dict[str, str]:
        upload_folder(toy_source, repo_id, endpoint=hub.url, token=hub.token)
        for i in order:
            upload_folder(folders[i], repo_id, endpoint=hub.url, token=hub.token)
        return _tree(hub, repo_id)

    alone = [applied([i], f"org/alone-{i}") for i in range(2)]
    in_order = {(0, 1): applied([0, 1], "org/order-01"), (1, 0): applied([1, 0], "org/order-10")}
    upload_folder(toy_source, "org/together", endpoint=hub.url, token=hub.token)
    barrier = threading.Barrier(2)
    outcomes: list[str] = [""] * 2

    def run(i: int) -> None:
        barrier.wait()
        try:
            upload_folder(folders[i], "org/together", endpoint=hub.url, token=hub.token)
            outcomes[i] = "ok"
        except UploadConflictError:
            outcomes[i] = "conflict"
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            outcomes[i] = f"{type(err).__name__}: {err}"

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    tree = _tree(hub, "org/together")
    if outcomes == ["ok", "ok"]:
        assert tree in in_order.values(), "two successful uploads, but not one after the other"
    else:
        assert sorted(outcomes) == ["conflict", "ok"], outcomes
        assert tree == alone[outcomes.index("ok")], "the loser's files reached the branch"


def test_overlapping_hub_sessions_do_not_undo_each_other(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as in this test suite's conftest
    first_in, first_out = threading.Event(), threading.Event()
    seen = []

    def first() -> None:
        with hub_session("http://127.0.0.1:9", "tok"):
            first_in.set()
            first_out.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(10)
    with hub_session("http://127.0.0.1:9", "tok"):
        first_out.set()
        thread.join(10)  # the other session has ended while this one is active
        seen.append((constants.HF_HUB_OFFLINE, constants.ENDPOINT, os.environ.get("HF_HUB_OFFLINE")))
    assert seen == [(False, "http://127.0.0.1:9", "0")]
    assert constants.HF_HUB_OFFLINE is True  # everything restored once no session is active


def test_file_changed_after_validation_is_not_sent(hub, toy, monkeypatch):
    import zoo.hub

    real = zoo.hub.validate_folder

    def validate_then_swap(folder, **kwargs):
        check = real(folder, **kwargs)
        (Path(folder) / "config.json").write_text('{"swapped": true}')  # e.g. a link retargeted meanwhile
        return check

    monkeypatch.setattr(zoo.hub, "validate_folder", validate_then_swap)
    with pytest.raises(FolderValidationError, match="config.json: changed after validation"):
        upload_folder(toy, "org/swapped", endpoint=hub.url, token=hub.token)
    with hub_session(hub.url, hub.token):
        assert len(_tree(hub, "org/swapped")) == 1  # the repo holds only its initial .gitattributes
