"""The publishing round trip against a real `zoo hub serve` process on loopback (started by the tests).

Covers: hub_upload.py (subprocess and main()), tag, second commit, branches, from_pretrained at a tag,
a branch and a commit id, snapshot_download, remote code in a clean subprocess, private repos, refused
writes, interrupted uploads (client and server side), list_models / delete_repo, HEAD/Range headers,
and a 200 MB weight file through LFS (slow).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx2 as httpx
import pytest
import torch
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from transformers import AutoModelForSequenceClassification

import hub_upload
from tests.hub.helpers import CARDS, INPUT_IDS, make_toy_folder, toy_logits
from zoo.fileio import sha256_file
from zoo.hub import hub_session, upload_folder
from zoo.hub_server import LocalHub

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = LocalHub.start(tmp_path_factory.mktemp("hub-root"))
    yield server
    server.stop()


@pytest.fixture
def session(hub):
    with hub_session(hub.url, hub.token):
        yield HfApi(endpoint=hub.url, token=hub.token)


@pytest.fixture(scope="module")
def published(hub, tmp_path_factory):
    """org/toy: v1 (seed 0, tagged) then a second commit on main (seed 1)."""
    base = tmp_path_factory.mktemp("toy-folders")
    first = make_toy_folder(base / "first", seed=0)
    second = make_toy_folder(base / "second", seed=1)
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": hub.token, "HF_HUB_DISABLE_XET": "1",
           "HF_HUB_OFFLINE": "0", "PYTHONPATH": str(REPO_ROOT), "HF_HOME": str(base / "hf-home")}
    run = subprocess.run(
        [sys.executable, str(REPO_ROOT / "hub_upload.py"), str(first), "--repo-id", "org/toy", "--tag", "v1",
         "--import", "tests.toy"],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    lines = dict(line.split(": ", 1) for line in run.stdout.splitlines() if ": " in line)
    with hub_session(hub.url, hub.token):
        code = hub_upload.main([str(second), "--repo-id", "org/toy", "--message", "second commit"])
        assert code == 0
        refs = HfApi(endpoint=hub.url, token=hub.token).list_repo_refs("org/toy")
    return {"first": first, "second": second, "v1_commit": lines["commit"], "url": lines["url"], "refs": refs}


def _sha_map(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".") and ".cache" not in p.parts}


def test_publish_tag_and_second_commit(hub, session, published):
    assert len(published["v1_commit"]) == 40
    assert published["url"] == f"{hub.url}/org/toy"
    refs = published["refs"]
    assert {t.name: t.target_commit for t in refs.tags} == {"v1": published["v1_commit"]}
    main = {b.name: b.target_commit for b in refs.branches}["main"]
    assert main != published["v1_commit"]
    commits = session.list_repo_commits("org/toy")
    assert [c.title for c in commits[:2]] == ["second commit", "Upload first with zoo hub_upload"]
    assert commits[1].commit_id == published["v1_commit"]  # ONE commit per upload, on top of 'initial commit'
    assert commits[2].title == "initial commit" and len(commits) == 3

    info = session.model_info("org/toy", files_metadata=True)
    assert info.sha == main
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == {".gitattributes", "README.md", "config.json", "configuration_toy.py",
                             "modeling_toy.py", "model.safetensors"}
    weights = siblings["model.safetensors"]
    assert weights.lfs is not None and weights.lfs.sha256 == sha256_file(published["second"] / "model.safetensors")
    assert siblings["config.json"].lfs is None  # small text files are regular git files
    assert info.card_data.license == "mit" and info.pipeline_tag == "text-classification"
    tree = {f.path: f for f in session.list_repo_tree("org/toy", revision="v1")}
    assert tree["model.safetensors"].lfs.sha256 == sha256_file(published["first"] / "model.safetensors")


def test_from_pretrained_at_tag_branch_and_commit(hub, session, published, tmp_path):
    expected_v1, expected_main = toy_logits(published["first"]), toy_logits(published["second"])
    assert not torch.equal(expected_v1, expected_main)
    for revision, expected in (("v1", expected_v1), ("main", expected_main), (published["v1_commit"], expected_v1)):
        model = AutoModelForSequenceClassification.from_pretrained("org/toy", revision=revision, cache_dir=tmp_path)
        torch.testing.assert_close(toy_logits(model), expected, rtol=0, atol=0)


def test_snapshot_download_matches_published_files(hub, session, published, tmp_path):
    path = Path(snapshot_download("org/toy", revision="v1", cache_dir=tmp_path / "cache"))
    assert path.name == published["v1_commit"]
    downloaded = _sha_map(path)
    downloaded.pop(".gitattributes", None)
    assert downloaded == _sha_map(published["first"])
    local = Path(snapshot_download("org/toy", local_dir=tmp_path / "main"))
    assert sha256_file(local / "model.safetensors") == sha256_file(published["second"] / "model.safetensors")


def test_remote_code_loads_in_clean_subprocess(hub, published, tmp_path):
    """A user without zoo (or the tests package) installed: trust_remote_code runs the repo's own files."""
    script = textwrap.dedent(f"""
        import importlib.abc, json, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("zoo", "tests", "conversion"):
                    raise ImportError(f"{{name}} must not be importable here")
        sys.meta_path.insert(0, Block())
        import torch
        from transformers import AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_pretrained("org/toy", revision="v1", trust_remote_code=True)
        assert model.__class__.__module__.startswith("transformers_modules"), model.__class__.__module__
        assert not any(m.split(".")[0] in ("zoo", "tests") for m in sys.modules)
        with torch.no_grad():
            logits = model.eval()(input_ids=torch.tensor({INPUT_IDS.tolist()})).logits
        print(json.dumps(logits.tolist()))
    """)
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH",)}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "home"))
    env.pop("HF_TOKEN", None)
    run = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    logits = torch.tensor(json.loads(run.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(logits, toy_logits(published["first"]), rtol=0, atol=1e-6)


def test_branch_revision_leaves_main_alone(hub, session, published, tmp_path):
    before = session.model_info("org/toy").sha
    folder = make_toy_folder(tmp_path / "dev", seed=2)
    result = upload_folder(folder, "org/toy", revision="dev", endpoint=hub.url, token=hub.token)
    assert session.model_info("org/toy").sha == before
    assert session.model_info("org/toy", revision="dev").sha == result.commit
    model = AutoModelForSequenceClassification.from_pretrained("org/toy", revision="dev", cache_dir=tmp_path)
    torch.testing.assert_close(toy_logits(model), toy_logits(folder), rtol=0, atol=0)


def test_private_repo_is_invisible_without_token(hub, session, tmp_path):
    folder = make_toy_folder(tmp_path / "secret", seed=3, repo_id="org/secret")
    upload_folder(folder, "org/secret", private=True, endpoint=hub.url, token=hub.token)
    assert session.model_info("org/secret").private is True
    anonymous = HfApi(endpoint=hub.url, token=False)
    with pytest.raises(RepositoryNotFoundError):
        anonymous.model_info("org/secret")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/secret", "config.json", token=False, cache_dir=tmp_path / "c1")
    assert "org/secret" not in [m.id for m in anonymous.list_models()]
    assert "org/secret" in [m.id for m in session.list_models()]
    page = httpx.get(f"{hub.url}/")
    assert "org/secret" not in page.text and page.status_code == 200
    assert httpx.get(f"{hub.url}/org/secret").status_code == 404
    path = hf_hub_download("org/secret", "config.json", cache_dir=tmp_path / "c2")  # with the token
    assert sha256_file(path) == sha256_file(folder / "config.json")


def test_unauthorised_writes_are_refused(hub, session, published, tmp_path):
    read_token = "hf_local_readonly_for_tests"
    with open(hub.root / "tokens.txt", "a") as handle:
        handle.write(f"{read_token} reader read\n")
    before = session.list_repo_refs("org/toy")
    folder = make_toy_folder(tmp_path / "intruder", seed=4)
    ops = [CommitOperationAdd(path_in_repo="config.json", path_or_fileobj=str(folder / "config.json"))]
    for token, status in ((False, 401), ("hf_local_not_in_the_token_file", 401), (read_token, 403)):
        api = HfApi(endpoint=hub.url, token=token)
        with pytest.raises(HfHubHTTPError) as err:
            api.create_commit("org/toy", operations=ops, commit_message="intrusion")
        assert err.value.response.status_code == status
        with pytest.raises(HfHubHTTPError) as err:
            api.create_repo("org/intruder")
        assert err.value.response.status_code == status
        with pytest.raises(HfHubHTTPError):
            api.create_tag("org/toy", tag="hacked")
        with pytest.raises(HfHubHTTPError):
            api.delete_repo("org/toy")
    assert HfApi(endpoint=hub.url, token=read_token).model_info("org/toy").sha == {
        b.name: b.target_commit for b in before.branches}["main"]
    assert session.list_repo_refs("org/toy") == before
    assert not session.repo_exists("org/intruder")


def _signed_upload_url(hub, oid: str, size: int) -> str:
    response = httpx.post(
        f"{hub.url}/org/toy.git/info/lfs/objects/batch",
        headers={"Authorization": f"Bearer {hub.token}", "Accept": "application/vnd.git-lfs+json"},
        json={"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": size}]},
    )
    response.raise_for_status()
    return response.json()["objects"][0]["actions"]["upload"]["href"]


def _start_partial_put(url: str, size: int, sent: bytes) -> socket.socket:
    parsed = httpx.URL(url)
    sock = socket.create_connection((parsed.host, parsed.port))
    target = parsed.raw_path.decode()
    sock.sendall(f"PUT {target} HTTP/1.1\r\nHost: {parsed.host}\r\nContent-Length: {size}\r\n\r\n".encode() + sent)
    return sock


def _repo_state(api: HfApi, repo_id: str) -> tuple:
    info = api.model_info(repo_id, files_metadata=True)
    return info.sha, sorted((s.rfilename, s.blob_id) for s in info.siblings)


def test_interrupted_uploads_leave_old_revision_intact(hub, session, published, tmp_path, monkeypatch):
    before = _repo_state(session, "org/toy")
    payload = os.urandom(3_000_000)
    oid = hashlib.sha256(payload).hexdigest()

    # 1. the client drops the connection half-way through an LFS PUT: no blob, no commit can use it
    sock = _start_partial_put(_signed_upload_url(hub, oid, len(payload)), len(payload), payload[:1_000_000])
    time.sleep(0.3)
    sock.close()
    deadline = time.monotonic() + 10
    while any((hub.root / "tmp").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any((hub.root / "tmp").iterdir()), "partial upload left behind"
    assert not (hub.root / "objects" / "blobs" / oid[:2] / oid[2:]).exists()
    body = "\n".join(json.dumps(line) for line in (
        {"key": "header", "value": {"summary": "uses a blob that never arrived"}},
        {"key": "lfsFile", "value": {"path": "model.safetensors", "algo": "sha256", "oid": oid, "size": len(payload)}},
    ))
    response = httpx.post(f"{hub.url}/api/models/org/toy/commit/main", content=body,
                          headers={"Authorization": f"Bearer {hub.token}", "Content-Type": "application/x-ndjson"})
    assert response.status_code == 422 and "not uploaded" in response.json()["error"]
    assert _repo_state(session, "org/toy") == before

    # 2. hub_upload's client fails in the middle of sending the weights: nothing is committed
    import huggingface_hub.lfs as lfs

    def broken_upload(operation, upload_url):
        with operation.as_file() as handle:
            handle.read(100)
        raise ConnectionResetError("network went away mid-upload")

    monkeypatch.setattr(lfs, "_upload_single_part", broken_upload)
    folder = make_toy_folder(tmp_path / "doomed", seed=5)
    assert hub_upload.main([str(folder), "--repo-id", "org/toy", "--tag", "doomed"]) == 1
    assert _repo_state(session, "org/toy") == before
    assert "doomed" not in [t.name for t in session.list_repo_refs("org/toy").tags]


def test_server_crash_mid_upload_keeps_old_revision(hub, session, published):
    before = _repo_state(session, "org/toy")
    payload = os.urandom(2_000_000)
    oid = hashlib.sha256(payload).hexdigest()
    sock = _start_partial_put(_signed_upload_url(hub, oid, len(payload)), len(payload), payload[:500_000])
    deadline = time.monotonic() + 10
    while not any((hub.root / "tmp").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any((hub.root / "tmp").iterdir()), "upload did not start"
    hub.kill()  # SIGKILL while the blob is half written
    sock.close()
    restarted = LocalHub.start(hub.root, port=hub.port, token=hub.token)
    hub.process = restarted.process
    assert not any((hub.root / "tmp").iterdir())
    assert not (hub.root / "objects" / "blobs" / oid[:2] / oid[2:]).exists()
    assert _repo_state(session, "org/toy") == before


def test_headers_range_and_missing_entries(hub, session, published):
    commit = session.model_info("org/toy").sha
    weights = published["second"] / "model.safetensors"
    url = f"{hub.url}/org/toy/resolve/main/model.safetensors"
    head = httpx.head(url)
    assert head.status_code == 200
    assert head.headers["X-Repo-Commit"] == commit
    assert head.headers["X-Linked-Etag"] == f'"{sha256_file(weights)}"'
    assert int(head.headers["X-Linked-Size"]) == weights.stat().st_size
    part = httpx.get(url, headers={"Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == weights.read_bytes()[10:100]
    config_head = httpx.head(f"{hub.url}/org/toy/resolve/v1/config.json")
    assert config_head.headers["X-Repo-Commit"] == published["v1_commit"]
    assert "X-Linked-Etag" not in config_head.headers and config_head.headers["ETag"].strip('"')
    missing = httpx.head(f"{hub.url}/org/toy/resolve/main/nope.bin")
    assert missing.status_code == 404 and missing.headers["X-Error-Code"] == "EntryNotFound"
    assert missing.headers["X-Repo-Commit"] == commit
    assert httpx.head(f"{hub.url}/org/toy/resolve/nobranch/config.json").headers["X-Error-Code"] == "RevisionNotFound"
    assert httpx.head(f"{hub.url}/org/none/resolve/main/config.json").headers["X-Error-Code"] == "RepoNotFound"


def test_list_models_search_and_delete_repo(hub, session, tmp_path):
    folder = make_toy_folder(tmp_path / "gone", seed=6, repo_id="org/short-lived")
    upload_folder(folder, "org/short-lived", endpoint=hub.url, token=hub.token)
    assert [m.id for m in session.list_models(search="short-lived")] == ["org/short-lived"]
    assert session.list_models(search="no-such-model-anywhere") == [] or not list(
        session.list_models(search="no-such-model-anywhere"))
    session.delete_repo("org/short-lived")
    assert not session.repo_exists("org/short-lived")
    assert list(session.list_models(search="short-lived")) == []


def test_xet_is_not_offered(hub):
    response = httpx.get(f"{hub.url}/api/models/org/toy/xet-write-token/main",
                         headers={"Authorization": f"Bearer {hub.token}"})
    assert response.status_code == 501 and "HF_HUB_DISABLE_XET" in response.json()["error"]


@pytest.mark.slow
def test_200mb_weight_file_via_lfs(hub, session, tmp_path, capsys):
    """A ~200 MB safetensors file goes up by LFS (not inlined) and comes back with the same sha256."""
    from tests.toy.configuration_toy import ToyConfig
    from tests.toy.modeling_toy import ToyModel
    from zoo.hub import write_card

    folder = tmp_path / "big"
    torch.manual_seed(0)
    ToyModel(ToyConfig(vocab_size=48_000, hidden_size=1024, num_layers=2)).save_pretrained(folder)
    write_card(folder, repo_id="org/big", template_dir=CARDS)
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    assert size >= 195_000_000
    local_sha = sha256_file(weights)

    start = time.perf_counter()
    result = upload_folder(folder, "org/big", endpoint=hub.url, token=hub.token)
    upload_s = time.perf_counter() - start
    info = session.model_info("org/big", files_metadata=True)
    sibling = {s.rfilename: s for s in info.siblings}["model.safetensors"]
    assert sibling.lfs is not None and sibling.lfs.sha256 == local_sha and sibling.size == size
    assert info.sha == result.commit

    start = time.perf_counter()
    path = hf_hub_download("org/big", "model.safetensors", cache_dir=tmp_path / "cache")
    download_s = time.perf_counter() - start
    assert sha256_file(path) == local_sha
    with capsys.disabled():
        print(f"\n200 MB LFS round trip: {size / 1e6:.0f} MB, upload_folder {upload_s:.1f} s "
              f"({size / 1e6 / upload_s:.0f} MB/s incl. validation+hashing), "
              f"hf_hub_download {download_s:.1f} s ({size / 1e6 / download_s:.0f} MB/s)")


def test_plain_upload_folder_and_tokenizer_round_trip(hub, session, tmp_path):
    """Unmodified huggingface_hub/transformers calls: HfApi.upload_folder, then AutoTokenizer from the hub."""
    from transformers import AutoTokenizer, BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "zoo", "hub", "works", "##s"]
    folder = tmp_path / "tok"
    BertTokenizer(vocab={word: index for index, word in enumerate(words)}).save_pretrained(folder)
    session.create_repo("org/tok")
    info = session.upload_folder(folder_path=folder, repo_id="org/tok", commit_message="tokenizer")
    assert session.model_info("org/tok").sha == info.oid
    tokenizer = AutoTokenizer.from_pretrained("org/tok", cache_dir=tmp_path / "cache")
    assert tokenizer("the zoo hubs works")["input_ids"] == [2, 5, 6, 7, 9, 8, 3]


def test_one_server_per_root(hub):
    with pytest.raises(RuntimeError, match="already serving"):
        LocalHub.start(hub.root)
