"""`zoo pull` / `create_model(pretrained=True)` / `zoo verify` / `zoo publish` against a loopback origin.

How the test origin maps variants to fixtures. The released checkpoints are hundreds of MB and unreachable
here; tests/fixtures/<family>/ holds tiny checkpoints in each release's ORIGINAL on-disk format. For the
duration of this module, every registry entry with an original release is swapped for a copy whose `config`
describes the family's tiny fixture (read from the fixture's meta.json, or from the fixture converted without
a variant); everything else (name, architecture, converter, the release URL and so its kind of link) stays.
`ZOO_ORIGINAL_MIRROR` points the resolvers at the origin (tests/pull_origin.py), which serves the fixture at
that URL's path. The real entries are restored afterwards, so the size and architecture checks that refuse a
tiny folder for a full-size variant stay in force for real use (test_full_size_variant_refuses_tiny_folder).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import httpx2 as httpx
import pytest
import torch
from safetensors.torch import load_file

import zoo
from tests.pull_origin import Origin
from zoo import registry
from zoo.cli import main
from zoo.fileio import sha256_file
from zoo.hub import hub_session
from zoo.hub_server import LocalHub
from zoo.pull import OfflineError, PullError, VariantMismatchError, pull, pull_result
from zoo.resolvers import ManualDownloadRequired, drive_confirm_url, link_kind, resolve


def _release_like_checkpoints() -> dict[str, Path]:
    """family -> an original-format fixture checkpoint in the format of that family's releases, found by what
    each case's meta.json declares (never by a case's name): the first case, in discovery order, that holds a
    pre-trained (head-less) checkpoint of the released kind."""
    from tests.fixture_samples import released_vocoder_checkpoint
    from tests.models.deq.conftest import FAMILY as DEQ
    from tests.models.graphormer import _fixtures as graphormer
    from tests.models.graphormer3d import _fixtures as graphormer3d
    from tests.models.musicbert.fixture_cases import FAMILY as MUSICBERT
    from tests.models.musicbert.fixture_cases import head_names
    from tests.models.nasbert._fixtures import first_tsm

    def first(found: list[Path], what: str) -> Path:
        assert found, f"no fixture case holds {what}"
        return found[0]

    # the released PCQM4M checkpoints are fairseq regression (pre-training) checkpoints
    pcqm = [graphormer.source(c) for c in graphormer.FAMILY.all()
            if c.kind == "fairseq" and graphormer.expected_head(c) == "regression"]
    is2re = [c.file(c.meta["checkpoint"]["file"]) for c in graphormer3d.FAMILY.all()]
    musicbert = [c.file(name) for c in MUSICBERT.all() if c.kind == "model"
                 for name, info in sorted(c.meta["checkpoints"].items()) if not head_names(info)]
    # the released MDEQ files are in the v1 (deprecated-code) state-dict layout
    mdeq = [c.file(c.meta["v1_checkpoint"]["file"]) for c in DEQ.all() if c.kind == "MDEQ" and "v1_checkpoint" in c.meta]
    deq_lm = [c.file(name) for c in DEQ.all() if c.kind == "DEQ-Transformer" for name in sorted(c.meta["checkpoint"])]
    return {
        "graphormer": first(pcqm, "a fairseq Graphormer regression checkpoint"),
        "graphormer3d": first(is2re, "a Graphormer-3D checkpoint"),
        "musicbert": first(musicbert, "a pre-trained (head-less) MusicBERT checkpoint"),
        "nasbert": first_tsm(with_head=False),
        "priorgrad": released_vocoder_checkpoint(),  # the LJSpeech release's settings
        "mdeq": first(mdeq, "an MDEQ checkpoint in the v1 layout"),
        "deq_transformer": first(deq_lm, "a DEQ-Transformer checkpoint"),
    }


# family -> its original-format fixture checkpoint
FAMILY_FIXTURE = _release_like_checkpoints()
PRIORGRAD_STATS = FAMILY_FIXTURE["priorgrad"].parent / "stats_priorgrad"
SAVED_KEYS = {"model_type", "transformers_version", "auto_map", "architectures", "_name_or_path", "dtype",
              "torch_dtype", "id2label", "label2id"}
CUT = "checkpoint_best_pcqm4mv2.pt"  # the download the origin cuts in the middle (twice)
ORG = "zoo-test"


def _released() -> list[str]:
    return zoo.list_models(pretrained=True)


def _tiny_config(entry, scratch: Path) -> dict:
    """The config of the family's fixture, for the keys the real entry sets (all keys for DEQ: config-less)."""
    fixture = FAMILY_FIXTURE[entry.family]
    if entry.family == "mdeq":
        meta = json.loads((fixture.parent / "meta.json").read_text())
        config = zoo.get_family("mdeq").config_class.from_original_yaml(meta["original_config_yaml"])
        return {k: v for k, v in config.to_diff_dict().items() if k not in SAVED_KEYS}
    if entry.family == "deq_transformer":
        meta = json.loads((fixture.parent / "meta.json").read_text())
        args = dict(meta["original_args (train_transformer.py argparse names)"])
        args.update({k: meta["derived_constructor_args"][k] for k in ("cutoffs", "tie_projs")})
        config = zoo.get_family("deq_transformer").config_class.from_original_args(args)
        return {k: v for k, v in config.to_diff_dict().items() if k not in SAVED_KEYS}
    out = scratch / entry.family
    if not out.exists():
        import importlib

        module = importlib.import_module(f"conversion.{Path(entry.converter).stem}")
        kwargs = {"stats": PRIORGRAD_STATS.parent} if entry.family == "priorgrad" else {}
        module.convert(fixture, out, **kwargs)
    folder_config = json.loads((out / "config.json").read_text())
    defaults = zoo.get_family(entry.family).config_class().to_dict()
    differing = {k: v for k, v in folder_config.items()  # what the fixture's architecture sets beyond defaults
                 if k not in SAVED_KEYS and v != json.loads(json.dumps(defaults.get(k))) and not isinstance(v, float)}
    return {**{k: folder_config.get(k, v) for k, v in entry.config.items()}, **differing}


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tiny_registry(tmp_path_factory):
    """Swap every released entry for its tiny-fixture twin (see the module doc); restore afterwards."""
    scratch = tmp_path_factory.mktemp("fixture-configs")
    saved = dict(registry._REGISTRY)
    names = _released()
    missing = sorted({registry.model_info(n).family for n in names} - set(FAMILY_FIXTURE))
    assert not missing, f"families with a release but no fixture mapping: {missing}"
    try:
        for name in names:
            entry = registry.model_info(name)
            registry._REGISTRY[name] = replace(entry, config=_tiny_config(entry, scratch))
        yield names
    finally:
        registry._REGISTRY.clear()
        registry._REGISTRY.update(saved)


@pytest.fixture(scope="module")
def origin(tiny_registry):
    """Serves each released variant's fixture at the path of its release URL (per kind of link)."""
    server = Origin()
    for name in tiny_registry:
        entry = registry.model_info(name)
        original, data = entry.original, FAMILY_FIXTURE[entry.family].read_bytes()
        kind = link_kind(original.url)
        parts = urlsplit(original.url)
        if kind == "https":
            server.files[f"/{parts.hostname}{parts.path}"] = data
        elif kind == "gdrive":
            file_id = parts.path.split("/")[3]
            server.drive[file_id] = (original.filename, data)
        elif kind == "hub":
            repo = "/".join(parts.path.strip("/").split("/")[:2])
            server.files[f"/huggingface.co/{repo}/resolve/main/{original.archive}"] = _zip({original.archive_member: data})
            for companion in original.companions:
                stats = {f"stats_priorgrad/{p.name}": p.read_bytes() for p in sorted(PRIORGRAD_STATS.iterdir())}
                server.files[f"/huggingface.co/{repo}/resolve/main/{companion}"] = _zip(stats)
    cut = [path for path in server.files if path.endswith("/" + CUT)]
    assert cut, f"no served file named {CUT}"
    server.cut[cut[0]] = 2
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def zoo_env(origin, tmp_path_factory):
    """ZOO_CACHE in a temporary folder, ZOO_ORIGINAL_MIRROR at the origin, the real Hub endpoint names."""
    cache = tmp_path_factory.mktemp("zoo-cache")
    saved = {k: os.environ.get(k) for k in ("ZOO_CACHE", "ZOO_ORIGINAL_MIRROR", "HF_ENDPOINT", "ZOO_HUB_ORG",
                                            "HF_HUB_OFFLINE")}
    os.environ.update(ZOO_CACHE=str(cache), ZOO_ORIGINAL_MIRROR=origin.url, HF_HUB_OFFLINE="0")
    for key in ("HF_ENDPOINT", "ZOO_HUB_ORG"):
        os.environ.pop(key, None)
    yield cache
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def pulled(tiny_registry, origin, zoo_env):
    """Every released variant pulled once: {variant: folder}; manual links take the fixture with --file."""
    folders, kinds = {}, {}
    for name in tiny_registry:
        entry = registry.model_info(name)
        kinds[name] = link_kind(entry.original.url)
        if kinds[name] == "manual":
            with pytest.raises(PullError, match=rf"zoo pull {name} --file"):
                pull(name, progress=False)
            folders[name] = pull(name, file=FAMILY_FIXTURE[entry.family], progress=False)
        else:
            folders[name] = pull(name, progress=False)
    return folders, kinds


def test_every_release_pulls_converts_and_verifies(pulled, origin, zoo_env):
    folders, kinds = pulled
    assert set(kinds.values()) == {"https", "gdrive", "hub", "manual"}
    for name, folder in folders.items():
        entry = registry.model_info(name)
        assert folder.parent.parent == zoo_env / "converted" and folder.parent.name == name
        record = json.loads((folder / "verification" / "record.json").read_text())
        fixture = FAMILY_FIXTURE[entry.family]
        if entry.original.archive:  # the record names the downloaded archive; its member is the fixture
            assert record["original"]["file"] == entry.original.archive
            with zipfile.ZipFile(zoo_env / "downloads" / name / entry.original.archive) as archive:
                assert archive.read(entry.original.archive_member) == fixture.read_bytes()
        else:
            assert record["original"]["sha256"] == sha256_file(fixture)
            assert record["original"]["size"] == fixture.stat().st_size
        assert record["variant"] == name and record["converter"]["file"] == entry.converter
        assert record["original"]["url"] == entry.original.url
        card = (folder / "README.md").read_text()
        assert "## Verification" in card and "## Lineage" in card and record["original"]["sha256"] in card
        # the size and hash the entry did not know are recorded
        facts = json.loads((zoo_env / "originals.json").read_text())
        assert any(name in row["variants"] and row["sha256"] == record["original"]["sha256"]
                   for row in facts.values()), (name, facts)


def test_drive_confirm_page_and_cut_download_resumed(pulled, origin):
    drive_pages = [p for m, p, r in origin.log if p.startswith("/drive.google.com/uc")]
    confirmed = [p for m, p, r in origin.log if p.startswith("/drive.usercontent.google.com/download")]
    assert drive_pages and len(confirmed) == len(drive_pages)
    cut = [(p, r) for m, p, r in origin.log if p.endswith("/" + CUT)]
    assert len(cut) == 3 and cut[0][1] is None
    assert cut[1][1] is not None and cut[1][1].startswith("bytes=") and int(cut[1][1][6:-1]) > 0


def test_second_pull_uses_cache_without_network(pulled, origin, monkeypatch):
    folders, _ = pulled
    before = len(origin.log)

    def no_network(*args, **kwargs):
        raise AssertionError("a cached pull opened a connection")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    for name, folder in folders.items():
        result = pull_result(name, progress=False)
        assert result.folder == folder and result.source == "cache"
    assert len(origin.log) == before


def test_create_model_pretrained_true_and_zoo_verify(pulled, capsys):
    folders, _ = pulled
    for name, folder in folders.items():
        model = zoo.create_model(name, pretrained=True)
        assert type(model).__name__ == registry.model_info(name).architecture
        assert main(["verify", str(folder)]) == 0, name
        out = capsys.readouterr().out
        assert "max |difference|" in out and out.strip().endswith("OK")


def test_verify_fails_when_weights_change(pulled, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file as load
    from safetensors.torch import save_file

    folders, _ = pulled
    folder = shutil.copytree(folders["graphormer_base_pcqm4mv2"], tmp_path / "copy")
    weights = load(str(folder / "model.safetensors"))
    name = next(k for k in weights if k.endswith("embed_out.weight"))
    weights[name] = weights[name] + 0.01
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    assert main(["verify", str(folder)]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_wrong_sha256_leaves_nothing_in_cache(tiny_registry, origin, zoo_env, tmp_path, monkeypatch):
    name = "graphormer_base_pcqm4mv1"
    entry = registry.model_info(name)
    cache = tmp_path / "cache"
    monkeypatch.setenv("ZOO_CACHE", str(cache))
    monkeypatch.setitem(registry._REGISTRY, name, replace(entry, original=replace(entry.original, sha256="0" * 64)))
    with pytest.raises(PullError, match="sha256"):
        pull(name, progress=False)
    assert [p for p in cache.rglob("*") if p.is_file()] == []
    # a right size and hash from the entry pass
    fixture = FAMILY_FIXTURE[entry.family]
    good = replace(entry.original, sha256=sha256_file(fixture), size_bytes=fixture.stat().st_size)
    monkeypatch.setitem(registry._REGISTRY, name, replace(entry, original=good))
    assert (pull(name, progress=False) / "config.json").is_file()


def test_offline_without_cache_names_variant_and_download(tiny_registry, zoo_env, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "deq_transformer_wt103"
    with pytest.raises(OfflineError) as err:
        pull(name, progress=False)
    message = str(err.value)
    entry = registry.model_info(name)
    assert name in message and entry.original.filename in message and entry.original.url in message
    assert main(["pull", name]) == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err
    assert not (tmp_path / "empty-cache").exists() or not any((tmp_path / "empty-cache").rglob("*.*"))


def test_manual_link_message_says_where_and_how():
    entry = zoo.model_info("musicbert_base")
    assert link_kind(entry.original.url) == "manual"
    with pytest.raises(ManualDownloadRequired) as err:
        resolve(entry.original, variant="musicbert_base")
    assert entry.original.url in str(err.value) and "zoo pull musicbert_base --file" in str(err.value)


def test_release_link_kinds_of_the_catalogue():
    """Which real release links zoo fetches itself (see README): Drive files, Azure blobs, aka.ms, a Hub file."""
    kinds = {name: link_kind(zoo.model_info(name).original.url) for name in _released()}
    manual = sorted(n for n, k in kinds.items() if k == "manual")
    assert manual == ["musicbert_base", "musicbert_small"]
    assert kinds["priorgrad_vocoder_ljspeech"] == "hub" and kinds["mdeq_xl_imagenet"] == "gdrive"


def test_drive_page_without_form_is_a_clear_error():
    from zoo.resolvers import DownloadError

    with pytest.raises(DownloadError, match="quota"):
        drive_confirm_url("<html><title>Quota exceeded</title><body>Too many users</body></html>",
                          "https://drive.google.com/uc?id=x")


def test_full_size_variant_refuses_tiny_folder(pulled):
    """Outside the swapped registry, a tiny folder is refused for the full-size variant, naming the sizes."""
    folders, _ = pulled
    folder = folders["graphormer_base_pcqm4mv2"]
    saved = registry._REGISTRY["graphormer_base_pcqm4mv2"]
    from zoo.catalog import graphormer  # the real entry's data

    real = replace(saved, config={**graphormer.BASE, "pre_layernorm": False, "num_classes": 1})
    registry._REGISTRY["graphormer_base_pcqm4mv2"] = real
    try:
        with pytest.raises(VariantMismatchError, match="hidden_size") as err:
            zoo.create_model("graphormer_base_pcqm4mv2", pretrained=folder)
        assert str(folder) in str(err.value)
    finally:
        registry._REGISTRY["graphormer_base_pcqm4mv2"] = saved
    with pytest.raises(VariantMismatchError, match="model_type"):
        zoo.create_model("musicbert_base", pretrained=folder)
    with pytest.raises(VariantMismatchError, match="architecture"):  # regression folder as a classifier
        zoo.create_model("graphormer_base_pcqm4mv1_for_molhiv", pretrained=folder)


# --------------------------------------------------------------------------------------------- publish
@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = LocalHub.start(tmp_path_factory.mktemp("hub-root"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def published(pulled, hub):
    saved = {k: os.environ.get(k) for k in ("HF_TOKEN",)}
    os.environ["HF_TOKEN"] = hub.token
    try:
        with hub_session(hub.url, hub.token):
            assert main(["publish", "--all", "--org", ORG]) == 0
            first = {n: repo for n, repo in [(n, f"{ORG}/{n}") for n in pulled[0]]}
            assert main(["publish", "--all", "--org", ORG]) == 0  # re-run: nothing changed, no commit
    finally:
        if saved["HF_TOKEN"] is None:
            os.environ.pop("HF_TOKEN", None)
        else:
            os.environ["HF_TOKEN"] = saved["HF_TOKEN"]
    return first


def test_publish_all_one_tagged_commit_each_and_rerun_uploads_nothing(published, hub):
    from huggingface_hub import HfApi

    with hub_session(hub.url, hub.token):
        api = HfApi(endpoint=hub.url, token=hub.token)
        for _name, repo in published.items():
            commits = api.list_repo_commits(repo)
            assert len(commits) == 2, (repo, [c.title for c in commits])  # the repo's creation + one publish
            tags = api.list_repo_refs(repo).tags
            assert len(tags) == 1 and tags[0].target_commit == commits[0].commit_id
            files = {f.path for f in api.list_repo_tree(repo, recursive=True) if hasattr(f, "blob_id")}
            assert {"config.json", "model.safetensors", "README.md", "verification/record.json",
                    "verification/inputs.safetensors", "verification/outputs.safetensors"} <= files


def test_publish_folder_uploads_only_what_changed(published, pulled, hub, tmp_path):
    import shutil

    from zoo.publish import publish_folder

    name = "nasbert5_mlnet"
    folder = shutil.copytree(pulled[0][name], tmp_path / name)
    with open(folder / "README.md", "a") as handle:
        handle.write("\nOne more line.\n")
    with hub_session(hub.url, hub.token):
        result = publish_folder(folder, published[name], token=hub.token)
    assert result.uploaded == ["README.md"] and result.deleted == [] and result.commit


def test_hub_repo_loads_without_zoo_and_matches_local_folder(published, pulled, hub, tmp_path):
    """from_pretrained("ORG/variant", trust_remote_code=True) in a clean subprocess gives the local outputs."""
    script = textwrap.dedent("""
        import importlib.abc, json, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("zoo", "tests", "conversion"):
                    raise ImportError(f"{name} must not be importable here")
        sys.meta_path.insert(0, Block())
        import torch, transformers
        from huggingface_hub import hf_hub_download
        from safetensors.torch import load_file, save_file
        torch.set_num_threads(int(sys.argv[2]))
        for repo in json.loads(sys.argv[1]):
            config = json.load(open(hf_hub_download(repo, "config.json")))
            arch = config["architectures"][0]
            auto = next(k for k, v in config["auto_map"].items() if v.endswith("." + arch))
            model = getattr(transformers, auto).from_pretrained(repo, trust_remote_code=True).eval()
            assert type(model).__name__ == arch and type(model).__module__.startswith("transformers_modules")
            inputs = load_file(hf_hub_download(repo, "verification/inputs.safetensors"))
            torch.manual_seed(0)
            with torch.no_grad():
                out = model(**inputs)
            tensors = {k: v.float().contiguous() for k, v in out.items()
                       if isinstance(v, torch.Tensor) and v.is_floating_point()}
            save_file(tensors, repo.replace("/", "__") + ".safetensors")
        assert not any(m.split(".")[0] in ("zoo", "tests", "conversion") for m in sys.modules)
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "HF_", "ZOO_"))}
    env.update(HF_ENDPOINT=hub.url, HF_TOKEN=hub.token, HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0",
               HF_HOME=str(tmp_path / "hf-home"), TRANSFORMERS_VERBOSITY="error")
    run = subprocess.run([sys.executable, "-c", script, json.dumps(list(published.values())),
                          str(torch.get_num_threads())], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    for name, repo in published.items():
        remote = load_file(str(tmp_path / (repo.replace("/", "__") + ".safetensors")))
        local = load_file(str(pulled[0][name] / "verification" / "outputs.safetensors"))
        assert remote.keys() == local.keys(), name
        for key in local:
            torch.testing.assert_close(remote[key], local[key], atol=1e-6, rtol=1e-6, msg=f"{name}.{key}")


def test_hub_route_create_model_and_verify_repo(published, hub, tmp_path, monkeypatch, capsys):
    """With ZOO_HUB_ORG set, pretrained=True loads the converted repo; `zoo verify ORG/variant` passes."""
    monkeypatch.setenv("ZOO_HUB_ORG", ORG)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "no-original-cache"))
    monkeypatch.setenv("ZOO_ORIGINAL_MIRROR", "http://127.0.0.1:9")  # the origin is not needed any more
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    with hub_session(hub.url, hub.token):
        for name, repo in published.items():
            result = pull_result(name, progress=False)
            assert result.source == f"hub:{repo}@main"
            model = zoo.create_model(name, pretrained=True)
            assert type(model).__name__ == registry.model_info(name).architecture
            assert main(["verify", repo]) == 0, name
            assert capsys.readouterr().out.strip().endswith("OK")
        from huggingface_hub import HfApi

        name, repo = next(iter(published.items()))
        tag = HfApi(endpoint=hub.url, token=hub.token).list_repo_refs(repo).tags[0].name
        pinned = pull_result(name, revision=tag, progress=False)
        assert pinned.source == f"hub:{repo}@{tag}" and (pinned.folder / "verification" / "record.json").is_file()
    assert not (tmp_path / "no-original-cache").exists()


def test_browse_page_shows_lineage_and_verification(published, pulled, hub, tmp_path):
    import shutil

    from zoo.hub import write_card
    from zoo.publish import publish_folder

    base = published["graphormer_base_pcqm4mv2"]
    child = shutil.copytree(pulled[0]["graphormer_base_pcqm4mv2"], tmp_path / "child")
    shutil.rmtree(child / "verification")
    (child / "metrics.json").write_text(json.dumps({"base_model": base, "recipe": "b3db_logbb"}))
    write_card(child, variant="graphormer_base_pcqm4mv2", repo_id=f"{ORG}/child", base_model=base)
    with hub_session(hub.url, hub.token):
        publish_folder(child, f"{ORG}/child", token=hub.token)
    page = httpx.get(f"{hub.url}/{base}", headers={"authorization": f"Bearer {hub.token}"}).text
    entry = registry.model_info("graphormer_base_pcqm4mv2")
    assert "id=lineage" in page and entry.original.url in page and f"/{ORG}/child" in page
    assert "id=verification" in page and f"zoo verify {base}" in page
    child_page = httpx.get(f"{hub.url}/{ORG}/child", headers={"authorization": f"Bearer {hub.token}"}).text
    assert f"href='/{base}'" in child_page


def test_catalog_imports_no_recipes_conversion_or_pull():
    """The catalogue is data at the bottom: no zoo/catalog module imports recipes, demos, conversion, pull."""
    import ast

    forbidden = ("zoo.recipes", "zoo.finetune", "zoo.demo", "zoo.pull", "zoo.publish", "zoo.hub", "conversion",
                 "..recipes", "..finetune", "..demo", "..pull", "..hub")
    catalog = Path(zoo.__file__).parent / "catalog"
    offenders = []
    for path in sorted(catalog.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                names = [module + "." + a.name for a in node.names] if node.level and not node.module else [module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names if n.startswith(forbidden)]
    assert offenders == []


def test_finetune_push_to_records_base_model(hub, tmp_path, monkeypatch, capsys):
    """`zoo finetune ... --pretrained ORG/base --push-to ORG/NAME`: the card names the base; pages link both ways."""
    import tests.toy  # noqa: F401  (registers the toy family and its recipe)
    from tests.hub.helpers import make_toy_folder
    from zoo.publish import publish_folder

    cards = tmp_path / "cards"  # the toy family's fine-tuning card template, where the CLI looks for <family>.md
    cards.mkdir()
    (cards / "toy.md").write_text((Path(tests.toy.__file__).parent / "card.md").read_text())
    monkeypatch.setattr("zoo.hub.CARDS_DIR", cards)
    monkeypatch.setenv("HF_TOKEN", hub.token)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    base = make_toy_folder(tmp_path / "base", repo_id=f"{ORG}/toy-base")
    with hub_session(hub.url, hub.token):
        publish_folder(base, f"{ORG}/toy-base", token=hub.token)
        assert main(["finetune", "toy_tiny", "--dataset", "toy_halves", "--out", str(tmp_path / "ft"),
                     "--pretrained", f"{ORG}/toy-base", "--max-steps", "2", "--push-to", f"{ORG}/toy-ft"]) == 0
        from huggingface_hub import ModelCard

        card = ModelCard.load(f"{ORG}/toy-ft")
    assert card.data.base_model == f"{ORG}/toy-base"
    assert f"fine-tuned from [`{ORG}/toy-base`]" in card.text
    assert f"(base model {ORG}/toy-base)" in capsys.readouterr().out
    headers = {"authorization": f"Bearer {hub.token}"}
    assert f"href='/{ORG}/toy-ft'" in httpx.get(f"{hub.url}/{ORG}/toy-base", headers=headers).text
    assert f"href='/{ORG}/toy-base'" in httpx.get(f"{hub.url}/{ORG}/toy-ft", headers=headers).text


def test_hub_repo_id_org_is_configurable(monkeypatch):
    from zoo.pull import hub_repo_id

    entry = zoo.model_info("nasbert5_mlnet")
    monkeypatch.delenv("ZOO_HUB_ORG", raising=False)
    assert hub_repo_id(entry) is None  # nothing published by default: the original release is used
    assert hub_repo_id(replace(entry, hub_id="someorg/nasbert5")) == "someorg/nasbert5"
    monkeypatch.setenv("ZOO_HUB_ORG", "myorg")
    assert hub_repo_id(entry) == "myorg/nasbert5_mlnet"
    assert hub_repo_id(replace(entry, hub_id="nasbert5")) == "myorg/nasbert5"
    assert hub_repo_id(replace(entry, hub_id="someorg/nasbert5")) == "myorg/nasbert5"
