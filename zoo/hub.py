"""Model cards, folder validation, and upload/download helpers for zoo folders.

    from zoo.hub import write_card, validate_folder, upload_folder, download_folder
    write_card("converted/musicbert_base", variant="musicbert_base")
    validate_folder("converted/musicbert_base")            # raises FolderValidationError listing problems
    result = upload_folder("converted/musicbert_base", "org/musicbert-base", tag="v1.0")
    print(result.commit, result.url)

Endpoint and token come from HF_ENDPOINT / HF_TOKEN (or the `endpoint=` / `token=` arguments), so the same
calls publish to the real Hub or to a local `zoo hub serve`.
"""

from __future__ import annotations

import ast
import bz2
import contextlib
import hashlib
import io
import json
import lzma
import os
import pickletools
import re
import stat
import threading
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .auto import families
from .fileio import atomic_write_text, sha256_file
from .registry import model_info

__all__ = [
    "CARDS_DIR", "FolderCheck", "FolderValidationError", "UploadConflictError", "UploadResult", "auto_class_of",
    "card_facts", "card_template", "download_folder", "family_license", "folder_files", "hub_session",
    "parameter_count", "pipeline_tag_for", "render_card", "rerender_card_for", "upload_folder", "validate_folder",
    "write_card",
]

CARDS_DIR = Path(__file__).resolve().parent.parent / "cards"
CONVERSION_FILE = "conversion.json"  # written by converters: source checkpoint, command, parity check
METRICS_FILE = "metrics.json"  # written by `zoo finetune`: dataset, split, metric values


def card_template(family: str, template_dir: str | os.PathLike | None = None) -> Path:
    """The card template of a family: `template_dir/<family>.md` (default: the repo's cards/ folder)."""
    path = Path(template_dir or CARDS_DIR) / f"{family}.md"
    if not path.is_file():
        raise FileNotFoundError(f"no card template for family '{family}' (expected {path})")
    return path


def _walk_folder(folder: Path, problems: list[str]) -> list[str]:
    """Relative names of the regular files to publish (dot-names at the top and README.md left out).

    Symbolic links are never followed out of the folder: a link (to a file or a folder, at any depth) whose
    target is outside `folder` is a problem, as is a link to a folder inside it (copy the files instead)
    and anything that is not a regular file (FIFOs, devices, sockets, dangling links).
    """
    root = folder.resolve()
    names = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in sorted(dirnames):
            path = Path(dirpath) / name
            if path.is_symlink():
                rel = path.relative_to(folder).as_posix()
                target = path.resolve()
                where = "outside the folder" if not target.is_relative_to(root) else "inside the folder"
                problems.append(f"{rel}: symbolic link to a folder {where} ({target}); links to folders are "
                                "not published, copy the files instead")
        dirnames[:] = sorted(d for d in dirnames if not (Path(dirpath) / d).is_symlink())
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            if rel == "README.md" or rel.startswith("."):
                continue
            if path.is_symlink():
                try:
                    target = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    problems.append(f"{rel}: dangling or looping symbolic link")
                    continue
                if not target.is_relative_to(root):
                    problems.append(f"{rel}: symbolic link to {target}, outside the folder; refusing to publish it")
                    continue
            try:
                mode = path.stat().st_mode
            except OSError as err:
                problems.append(f"{rel}: cannot be read ({err})")
                continue
            if not stat.S_ISREG(mode):
                problems.append(f"{rel}: not a regular file (FIFO, device or socket)")
                continue
            names.append(rel)
    return sorted(names)


def folder_files(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Name, size and sha256 of every file in a folder (README.md excluded: it is being written).

    Raises FolderValidationError for links that leave the folder and for non-regular files.
    """
    folder = Path(folder)
    problems: list[str] = []
    names = _walk_folder(folder, problems)
    if problems:
        raise FolderValidationError(folder, problems)
    return [{"name": rel, "size": (folder / rel).stat().st_size, "sha256": sha256_file(folder / rel)}
            for rel in names]


MAX_JSON_BYTES = 50 * 1024 * 1024  # a config/index/metrics file larger than this is not a config


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file ({} when missing); FolderValidationError naming the file when it is not one."""
    if not path.is_file():
        return {}
    problem = None
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            problem = f"{path.name}: larger than {MAX_JSON_BYTES // 2**20} MB, not a config file"
        else:
            data = json.loads(path.read_bytes().decode("utf-8"))
            if not isinstance(data, dict):
                problem = f"{path.name}: must be a JSON object, found a JSON {type(data).__name__}"
    except UnicodeDecodeError:
        problem = f"{path.name}: not UTF-8 text"
    except RecursionError:
        problem = f"{path.name}: JSON nested too deeply"
    except ValueError as err:
        problem = f"{path.name}: not valid JSON ({err})"
    if problem:
        raise FolderValidationError(path.parent, [problem])
    return data


def _family_of(config: dict[str, Any]) -> str:
    model_type = config.get("model_type")
    for name, family in families().items():
        if family.config_class.model_type == model_type:
            return name
    raise ValueError(f"config.json model_type '{model_type}' belongs to no registered zoo family")


def _eval_results(metrics: dict[str, Any]) -> list[EvalResult] | None:
    results = []
    for row in metrics.get("results", []):
        results.append(
            EvalResult(
                task_type=row["task_type"], dataset_type=row["dataset_type"], dataset_name=row["dataset_name"],
                metric_type=row["metric_type"], metric_value=row["metric_value"],
                dataset_split=row.get("dataset_split"), metric_name=row.get("metric_name"),
                source_name=row.get("source_name"), source_url=row.get("source_url"),
            )
        )
    return results or None


def render_card(
    folder: str | os.PathLike,
    *,
    variant: str | None = None,
    repo_id: str | None = None,
    base_model: str | None = None,
    extra: dict[str, Any] | None = None,
    template: str | os.PathLike | None = None,
    template_dir: str | os.PathLike | None = None,
) -> ModelCard:
    """Render the family's card template for a zoo folder (config.json present, weights written).

    The template (cards/<family>.md, Jinja2) receives: repo_id, variant, entry (the registry entry as a
    dict, or None), family, config (config.json), architecture, conversion (conversion.json),
    metrics (metrics.json, "epoch" and timing keys left out of its eval), files (name/size/sha256 rows),
    the facts of `card_facts` (auto_class, license, license_name, labels, params, weights, curves) and
    everything in `extra`. `template` replaces the family's template file; `template_dir` looks for
    `<family>.md` there instead of cards/. The metadata's pipeline_tag comes from `extra["pipeline_tag"]`,
    metrics.json, or the registry entry's task / the family / the architecture's Auto class.

    Every card also gets, after its title, a line with the parameter count, the licence and the label
    names, a "random weights — for tests" banner (and tag) where the weights were neither trained nor
    converted from a released checkpoint, and the training curves embedded as an image. Local absolute
    paths are removed from the text.
    """
    folder = Path(folder)
    config = _read_json(folder / "config.json")
    if not config:
        raise FileNotFoundError(f"{folder}: no config.json; render the card after saving the model")
    family = _family_of(config)
    entry = model_info(variant) if variant else None
    conversion = _scrub_paths(_read_json(folder / CONVERSION_FILE))
    metrics = _scrub_paths(_read_json(folder / METRICS_FILE))
    if isinstance(metrics.get("eval"), dict):
        metrics["eval"] = {k: v for k, v in metrics["eval"].items() if k not in _NOT_METRICS
                           and not k.endswith(("_runtime", "_per_second"))}
    repo_id = repo_id or folder.name
    facts = card_facts(folder, config, family, entry, conversion, metrics, extra)
    from .embed import POOLING

    facts.update(pooling=POOLING.get(family), repo_id=repo_id)
    architecture = (config.get("architectures") or [None])[0]
    tags = ["zoo", family, *(metrics.get("tags", []))]
    if facts["weights"] == "random":
        tags.append("random-weights")
    pipeline = ((extra or {}).get("pipeline_tag") or metrics.get("pipeline_tag")
                or _family_pipeline(family, facts["auto_class"])
                or pipeline_tag_for(config, entry.task if entry else None))
    card_data = ModelCardData(
        library_name="transformers",
        license=facts["license"],
        tags=list(dict.fromkeys(tags)),
        pipeline_tag=pipeline,
        base_model=base_model or metrics.get("base_model"),
        datasets=metrics.get("datasets"),
        model_name=repo_id,
        eval_results=_eval_results(metrics),
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(template or card_template(family, template_dir)),
        repo_id=repo_id,
        variant=variant,
        entry=entry.to_dict() if entry else None,
        family=family,
        config=config,
        architecture=architecture,
        conversion=conversion,
        metrics=metrics,
        files=folder_files(folder),
        **{**{k: v for k, v in facts.items() if k != "repo_id"}, **(extra or {})},
    )
    text = _scrub_text(_with_common_blocks(card.text, facts))
    return ModelCard(f"---\n{card.data.to_yaml()}\n---\n{text}")


_NOT_METRICS = ("epoch", "eval_epoch", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second")
CARD_STATE_FILE = ".zoo-card.json"  # how write_card rendered the card, so a publish can re-render it for its repo
LICENSE_NAMES = {"mit": "MIT", "apache-2.0": "Apache-2.0", "bsd-3-clause": "BSD-3-Clause", "cc-by-4.0": "CC-BY-4.0",
                 "cc-by-nc-4.0": "CC-BY-NC-4.0", "gpl-3.0": "GPL-3.0", "other": "other"}
# Families whose inputs are not text: their heads are not "text-classification" whatever the Auto class says.
_FAMILY_PIPELINES = {
    "graphormer": "graph-ml", "graphormer3d": "graph-ml", "dmp": "graph-ml",
    "musicbert": "other",  # symbolic music (MIDI): no Hub pipeline fits; the base model is feature-extraction
}


def _family_pipeline(family: str, auto_class: str) -> str | None:
    if family not in _FAMILY_PIPELINES:
        return None
    if auto_class == "AutoModel" and family == "musicbert":
        return "feature-extraction"
    return _FAMILY_PIPELINES[family]


def auto_class_of(config: dict[str, Any]) -> str:
    """The Auto class that loads the folder's architecture (the one the hub's page box names)."""
    architecture = (config.get("architectures") or [None])[0]
    for auto_name, ref in (config.get("auto_map") or {}).items():
        if architecture and isinstance(ref, str) and ref.rsplit(".", 1)[-1] == architecture and auto_name != "AutoConfig":
            return auto_name
    return "AutoModel"


def family_license(family: str) -> str:
    """The licence the registry gives the family's variants (one value when they agree), else "mit"."""
    from .registry import list_models

    licences = {model_info(name).license for name in list_models(family=family)}
    return licences.pop() if len(licences) == 1 else "mit"


def parameter_count(folder: Path) -> int | None:
    """Parameters in the folder's safetensors weights (from the headers; nothing is loaded)."""
    from safetensors import safe_open

    paths = sorted(folder.glob("model*.safetensors"))
    if not paths:
        return None
    total = 0
    for path in paths:
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():
                size = 1
                for dim in handle.get_slice(key).get_shape():
                    size *= dim
                total += size
    return total


def _human_count(count: int | None) -> str:
    if count is None:
        return "unknown"
    for limit, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if count >= limit:
            return f"{count / limit:.2f}{unit} ({count:,})"
    return f"{count:,}"


def card_facts(
    folder: Path, config: dict[str, Any], family: str, entry: Any, conversion: dict[str, Any],
    metrics: dict[str, Any], extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What every card states the same way: the Auto class (as the hub's page box), the licence (from the
    registry), label names, parameter count, where the weights come from and the curves image.

    weights: "trained" (metrics.json: fine-tuned or trained by zoo), "release" (converted from a file whose
    sha256 is the registry's released checkpoint), else "random" (a test fixture, a fresh initialisation,
    or a file zoo cannot tie to a release); `extra["weights"]` overrides it.
    """
    extra = extra or {}
    licence = entry.license if entry else family_license(family)
    id2label = config.get("id2label") or {}
    names = [str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k))] if id2label else []
    default_names = all(name == f"LABEL_{i}" for i, name in enumerate(names))
    architecture = (config.get("architectures") or [""])[0]
    labelled = bool(names) and not default_names and not architecture.endswith(("Model", "PreTraining", "MaskedLM"))
    if extra.get("weights"):
        weights = extra["weights"]
    elif metrics.get("eval") or metrics.get("train"):
        weights = "trained"
    elif (conversion and entry is not None and entry.original is not None and entry.original.sha256
          and conversion.get("source_sha256") == entry.original.sha256):
        weights = "release"
    else:
        weights = "random"
    curves = "training_curves.png" if (folder / "training_curves.png").is_file() else None
    return {
        "auto_class": auto_class_of(config), "license": licence, "license_name": LICENSE_NAMES.get(licence, licence),
        "labels": names if labelled else [], "params": parameter_count(folder), "weights": weights, "curves": curves,
    }


def _with_common_blocks(text: str, facts: dict[str, Any]) -> str:
    """Insert the facts line and the random-weights banner after the title; embed the training curves."""
    lines = [f"**Parameters:** {_human_count(facts['params'])} · **Licence:** {facts['license_name']} "
             f"(`{facts['license']}`) · **Load with:** `{facts['auto_class']}`"]
    if len(facts["labels"]) == 1:
        lines.append(f"**Output** (`config.id2label`): one logit; its sigmoid is P(`{facts['labels'][0]}`)")
    elif facts["labels"]:
        lines.append("**Labels** (`config.id2label`): " + ", ".join(
            f"{i} = `{name}`" for i, name in enumerate(facts["labels"])))
    if facts.get("pooling"):
        lines.append(f"**Embeddings** (`zoo embed INPUT... --model {facts['repo_id']}`, add `--per-item` for one "
                     f"vector per element): {facts['pooling']}")
    if facts["weights"] == "random":
        lines.insert(0, "> **⚠️ Random weights — for tests.** These weights were neither trained nor converted from a "
                        "released checkpoint; predictions from this model mean nothing. Use it to test code paths.")
    block = "\n\n".join(lines) + "\n"
    body = text.lstrip("\n")
    if body.startswith("# "):
        title, _, rest = body.partition("\n")
        body = f"{title}\n\n{block}\n{rest.lstrip(chr(10))}"
    else:
        body = block + "\n" + body
    if facts["curves"] and f"]({facts['curves']})" not in body:
        section = (f"## Training curves\n\n![training curves: loss and evaluation metrics against the step]"
                   f"({facts['curves']})\n\n")
        marker = next((m for m in ("\n## Limitations", "\n## Licence", "\n## License", "\n## Citation")
                       if m in body), None)
        body = body.replace(marker, "\n" + section.rstrip("\n") + "\n" + marker, 1) if marker else \
            body.rstrip("\n") + "\n\n" + section
    return body


_REPO_ROOT = str(Path(__file__).resolve().parent.parent)


def _scrub_text(text: str) -> str:
    """Local absolute paths out of card text: the checkout's prefix goes, any other absolute path keeps
    only its file name."""
    import re

    text = text.replace(_REPO_ROOT + os.sep, "")
    return re.sub(r"(?<![\w:/.~-])/(?:[\w.+-]+/)+([\w.+-]+)", r"\1", text)


def _scrub_paths(value: Any) -> Any:
    if isinstance(value, str):
        return _scrub_text(value)
    if isinstance(value, dict):
        return {k: _scrub_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_paths(v) for v in value]
    return value


def write_card(folder: str | os.PathLike, **kwargs: Any) -> Path:
    """Render the card (see `render_card`) and write it atomically to `folder/README.md`.

    How it was rendered (variant, template, ...) is kept in `folder/.zoo-card.json` (not published), so
    that `upload_folder` can render it again for the repo it is published to. The lineage (original release
    -> converted -> fine-tuned) and the verification record, when the folder has them, are appended as their
    own sections (zoo.verification.card_section)."""
    from .verification import card_section

    card = render_card(folder, **kwargs)
    text = str(card).rstrip("\n") + "\n" + card_section(folder, base_model=kwargs.get("base_model"))
    state = {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in kwargs.items() if k != "repo_id"}
    try:
        atomic_write_text(Path(folder) / CARD_STATE_FILE, json.dumps(
            {"render": state, "readme_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}, sort_keys=True))
    except TypeError:  # `extra` holds something JSON cannot hold: the card cannot be re-rendered on publish
        (Path(folder) / CARD_STATE_FILE).unlink(missing_ok=True)
    return atomic_write_text(Path(folder) / "README.md", text)


def rerender_card_for(folder: str | os.PathLike, repo_id: str) -> bool:
    """Render the folder's card again with `repo_id` (title, snippets, model_name) when write_card made it
    and nobody edited it since; returns False (card untouched) otherwise: no `.zoo-card.json`, or a
    README.md that differs from what write_card wrote (an edited card is published as it is)."""
    folder = Path(folder)
    state_file, readme = folder / CARD_STATE_FILE, folder / "README.md"
    if not state_file.is_file() or not readme.is_file() or not (folder / "config.json").is_file():
        return False
    try:
        state = json.loads(state_file.read_text())
    except ValueError:
        return False
    if not isinstance(state, dict) or not isinstance(state.get("render"), dict):
        return False
    if sha256_file(readme) != state.get("readme_sha256"):
        return False
    write_card(folder, repo_id=repo_id, **state["render"])
    return True


# --------------------------------------------------------------------------------------------- metadata
# Hub pipeline tags that zoo models use, and how registry tasks / Auto classes map onto them.
PIPELINE_TAGS = {
    "audio-classification", "audio-to-audio", "feature-extraction", "fill-mask", "graph-ml",
    "image-classification", "sentence-similarity", "tabular-classification", "tabular-regression",
    "text-classification", "text-generation", "text-to-audio", "text-to-speech", "token-classification",
    "question-answering", "zero-shot-classification", "other",
}
_TASK_PIPELINE = {
    "pre-training": "feature-extraction", "mel-to-waveform": "audio-to-audio", "vocoder": "audio-to-audio",
    "language-modeling": "text-generation", "masked-language-modeling": "fill-mask",
}
_AUTO_CLASS_PIPELINE = {
    "AutoModelForPreTraining": "feature-extraction",
    "AutoModel": "feature-extraction",
    "AutoModelForSequenceClassification": "text-classification",
    "AutoModelForTokenClassification": "token-classification",
    "AutoModelForMaskedLM": "fill-mask",
    "AutoModelForCausalLM": "text-generation",
    "AutoModelForQuestionAnswering": "question-answering",
    "AutoModelForImageClassification": "image-classification",
    "AutoModelForAudioClassification": "audio-classification",
    "AutoModelForTextToWaveform": "text-to-audio",
    "AutoModelForTextToSpectrogram": "text-to-speech",
}


def pipeline_tag_for(config: dict[str, Any], task: str | None = None) -> str | None:
    """The Hub pipeline_tag for a folder: the registry task when it is one, graph tasks -> graph-ml,
    else the pipeline of the Auto class that `auto_map` gives the architecture.

        pipeline_tag_for({"architectures": ["ToyModel"], "auto_map": {"AutoModel": "modeling_toy.ToyModel"}})
        # 'feature-extraction'
    """
    if task in PIPELINE_TAGS:
        return task
    if task in _TASK_PIPELINE:
        return _TASK_PIPELINE[task]
    if task and any(word in task for word in ("graph", "molecul", "is2re", "s2ef")):
        return "graph-ml"
    architecture = (config.get("architectures") or [None])[0]
    for auto_name, ref in (config.get("auto_map") or {}).items():
        if architecture and isinstance(ref, str) and ref.rsplit(".", 1)[-1] == architecture:
            return _AUTO_CLASS_PIPELINE.get(auto_name)
    return None


# --------------------------------------------------------------------------------------------- validation
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".dill", ".npy", ".npz")
JSON_FILES = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json",
              "feature_extractor_config.json", "model.safetensors.index.json", METRICS_FILE, CONVERSION_FILE)
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
SNIFF_BYTES = 1024 * 1024  # how much of a file (or of a decompressed stream / zip member) is inspected
MAX_ZIP_MEMBERS = 10_000
REQUIRED_CARD_METADATA = ("library_name", "license", "tags", "pipeline_tag")


class FolderValidationError(ValueError):
    """A folder is not fit to publish; `problems` lists every reason found (not just the first)."""

    def __init__(self, folder: Path, problems: list[str]):
        self.folder = folder
        self.problems = problems
        super().__init__(f"{folder} is not ready to publish:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass
class FolderCheck:
    """What `validate_folder` found: the files, the loaded config/model class, the card metadata."""

    folder: Path
    files: list[dict[str, Any]]
    config: dict[str, Any]
    model_class: str | None = None
    remote_code_files: list[str] = field(default_factory=list)
    card_metadata: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _is_pickle(head: bytes, complete: bool) -> bool:
    """Whether bytes are a pickle (any protocol, 0 included): a stack-consistent opcode stream up to a STOP
    (pickletools.dis checks the stack effects, so text like "a. b" is not taken for one), or, when only a
    prefix was read, 64+ consistent opcodes until the prefix ends. Parsing runs nothing."""
    if not head:
        return False
    out = io.StringIO()
    try:
        pickletools.dis(head, out=out)
        return True
    except Exception as err:  # noqa: BLE001 - unknown opcode, stack misuse, bad argument or truncation
        message = str(err)
        truncated = any(words in message for words in ("exhausted before seeing STOP", "remain", "no newline found"))
        return not complete and truncated and out.getvalue().count("\n") >= 64


def _decompress_prefix(head: bytes, fileobj: Any) -> tuple[str, bytes] | None:
    """(format, first SNIFF_BYTES of the decompressed stream) for gzip / bz2 / xz data, else None."""
    if head.startswith(b"\x1f\x8b"):
        kind, decompressor = "gzip", zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif head.startswith(b"BZh"):
        kind, decompressor = "bz2", bz2.BZ2Decompressor()
    elif head.startswith(b"\xfd7zXZ\x00"):
        kind, decompressor = "xz", lzma.LZMADecompressor()
    else:
        return None
    out = bytearray()
    data = head
    try:
        while data and len(out) < SNIFF_BYTES:
            if kind == "gzip":
                out += decompressor.decompress(data, SNIFF_BYTES - len(out))
            else:
                out += decompressor.decompress(data, max_length=SNIFF_BYTES - len(out))
            data = fileobj.read(64 * 1024)
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError):
        pass
    return kind, bytes(out)


def _content_problem(head: bytes, fileobj: Any, complete: bool, depth: int = 0) -> str | None:
    """Why bytes (a file's start, a decompressed stream, a zip member) are not fit to publish, or None."""
    if head.startswith(b"\x93NUMPY"):
        return "a numpy .npy array (object arrays are pickles)"
    if _is_pickle(head, complete):
        return "a Python pickle (pickles run code when loaded)"
    if depth < 3:
        unpacked = _decompress_prefix(head, fileobj)
        if unpacked is not None:
            kind, inner = unpacked
            problem = _content_problem(inner, io.BytesIO(b""), len(inner) < SNIFF_BYTES, depth + 1)
            if problem is None and inner.startswith(b"PK\x03\x04"):
                problem = "a zip archive"
            return f"{kind}-compressed {problem}" if problem else None
    return None


def _tar_problem(path: Path, rel: str) -> str | None:
    """Pickles (by name or content) inside a tar archive, plain or gzip/bz2/xz-compressed."""
    import tarfile

    try:
        if not tarfile.is_tarfile(path):
            return None
        with tarfile.open(path, "r:*") as archive:
            for count, member in enumerate(archive, 1):
                if count > MAX_ZIP_MEMBERS:
                    return f"{rel}: tar archive with more than {MAX_ZIP_MEMBERS} members"
                if member.name.lower().endswith((".pkl", ".pickle", *PICKLE_SUFFIXES)):
                    return f"{rel}: tar archive holding {member.name}, a pickle-based format"
                stream = archive.extractfile(member) if member.isfile() else None
                if stream is None:
                    continue
                inner = stream.read(SNIFF_BYTES)
                problem = _content_problem(inner, stream, len(inner) < SNIFF_BYTES, depth=1)
                if problem:
                    return f"{rel}: tar archive member {member.name} is {problem}"
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as err:
        return f"{rel}: looks like a tar archive but cannot be inspected ({type(err).__name__}: {err})"
    return None


def _pickle_problem(path: Path, rel: str) -> str | None:
    """Pickle-based formats by name or by content: plain pickles of any protocol (0 and 1 have no magic
    number), gzip/bz2/xz-compressed pickles, numpy arrays, and zip or tar archives (whatever their name)
    holding pickles, compressed pickles or numpy arrays. Each file, stream or member is inspected over
    its first SNIFF_BYTES (1 MB)."""
    if rel.lower().endswith(PICKLE_SUFFIXES):
        return f"{rel}: pickle-based format ({path.suffix}) is not allowed; save weights as safetensors"
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
        problem = _content_problem(head, handle, len(head) < SNIFF_BYTES)
    if problem:
        return f"{rel}: file content is {problem}; save weights as safetensors"
    if rel.lower().endswith(".safetensors"):
        return None
    if not zipfile.is_zipfile(path):
        return _tar_problem(path, rel)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > MAX_ZIP_MEMBERS:
                return f"{rel}: zip archive with {len(members)} members (more than {MAX_ZIP_MEMBERS})"
            for member in members:
                if member.filename.lower().endswith((".pkl", ".pickle", *PICKLE_SUFFIXES)):
                    return f"{rel}: zip archive holding {member.filename}, a pickle-based format (e.g. torch.save)"
                if member.is_dir():
                    continue
                with archive.open(member) as stream:
                    inner = stream.read(SNIFF_BYTES)
                    problem = _content_problem(inner, stream, len(inner) < SNIFF_BYTES, depth=1)
                if problem:
                    return f"{rel}: zip archive member {member.filename} is {problem}"
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError, zlib.error) as err:
        return f"{rel}: looks like a zip archive but cannot be inspected ({type(err).__name__}: {err})"
    return None


def _auto_map_refs(folder: Path) -> list[tuple[str, str, str]]:
    """(source file, auto class, 'module.Class') for every auto_map entry of the folder's JSON files."""
    refs = []
    for name in JSON_FILES[:5]:
        data = _read_json(folder / name)
        auto_map = data.get("auto_map") or {}
        if not isinstance(auto_map, dict):
            raise FolderValidationError(folder, [f"{name}: auto_map must be an object, not {type(auto_map).__name__}"])
        for auto_name, value in auto_map.items():
            for ref in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(ref, str) and "--" not in ref:  # "other/repo--module.Class" lives elsewhere
                    refs.append((name, auto_name, ref))
    return refs


def _check_remote_code(folder: Path, problems: list[str]) -> list[str]:
    """Every module that auto_map names exists, defines the class, and its relative imports exist too."""
    needed: list[str] = []
    for source, auto_name, ref in _auto_map_refs(folder):
        module, _, class_name = ref.rpartition(".")
        if not _MODULE_RE.match(module) or not class_name.isidentifier():
            problems.append(f"{source}: auto_map {auto_name} -> {ref!r} is not 'module.Class'")
            continue
        path = folder / f"{module.replace('.', '/')}.py"
        if not path.is_file():
            problems.append(f"{source}: auto_map {auto_name} -> {ref}, but {path.name} is not in the folder")
            continue
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except SyntaxError as err:
            problems.append(f"{path.name}: does not parse ({err})")
            continue
        defined = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
        defined |= {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
        if class_name not in defined:
            problems.append(f"{path.name}: auto_map {auto_name} names {class_name}, which it does not define")
        needed.append(path.name)
    seen: set[str] = set()
    queue = list(dict.fromkeys(needed))
    while queue:
        name = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        path = folder / name
        if not path.is_file():
            continue
        with contextlib.suppress(SyntaxError):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                    dep = f"{node.module.replace('.', '/')}.py"
                    if not (folder / dep).is_file():
                        problems.append(f"{name}: imports .{node.module}, but {dep} is not in the folder")
                    else:
                        queue.append(dep)
    return sorted(seen)


def _weight_files(folder: Path, problems: list[str]) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map", {})
        shards = sorted(set(weight_map.values())) if isinstance(weight_map, dict) and all(
            isinstance(v, str) for v in weight_map.values()) else None
        if shards is None:
            problems.append("model.safetensors.index.json: weight_map must map names to shard file names")
            return []
        outside = [s for s in shards if Path(s).is_absolute() or ".." in Path(s).parts or "\\" in s]
        if outside:
            problems.append(f"model.safetensors.index.json names shards outside the folder: {', '.join(outside)}")
            return []
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            problems.append(f"model.safetensors.index.json names missing shards: {', '.join(missing)}")
        return [folder / s for s in shards if (folder / s).is_file()]
    single = folder / "model.safetensors"
    if not single.is_file():
        problems.append("no model.safetensors (or model.safetensors.index.json): weights must be safetensors")
        return []
    return [single]


def _load_model_strictly(folder: Path, config: dict[str, Any], problems: list[str]) -> str | None:
    import transformers
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config.get("model_type")
    native = model_type in CONFIG_MAPPING
    remote = not native and bool(config.get("auto_map"))
    if not native and not remote:
        problems.append(f"config.json: model_type {model_type!r} is not registered and there is no auto_map")
        return None
    try:
        loaded_config = AutoConfig.from_pretrained(folder, trust_remote_code=remote)
    except Exception as err:  # noqa: BLE001 - reported as a validation problem
        problems.append(f"config.json does not load with AutoConfig: {type(err).__name__}: {err}")
        return None
    architecture = (config.get("architectures") or [None])[0]
    if architecture is None:
        problems.append("config.json has no 'architectures'; save the model with save_pretrained")
        return None
    model_class = None
    if native:
        for family in families().values():
            if family.config_class.model_type == model_type:
                model_class = family.model_classes.get(architecture)
        if model_class is None:
            model_class = getattr(transformers, architecture, None)
    else:
        auto_name = next((k for k, v in config["auto_map"].items() if str(v).rsplit(".", 1)[-1] == architecture), None)
        model_class = getattr(transformers, auto_name) if auto_name else None
    if model_class is None:
        problems.append(f"config.json: architecture {architecture} is not a known class of {model_type!r}")
        return None
    try:
        kwargs = {"trust_remote_code": True} if remote else {}
        _, info = model_class.from_pretrained(folder, config=loaded_config, output_loading_info=True, **kwargs)
    except Exception as err:  # noqa: BLE001
        problems.append(f"weights do not load into {architecture}: {type(err).__name__}: {err}")
        return architecture
    for key, label in (("missing_keys", "missing"), ("unexpected_keys", "unexpected"),
                       ("mismatched_keys", "shape-mismatched"), ("error_msgs", "errors")):
        values = sorted(map(str, info.get(key) or []))
        if values:
            shown = ", ".join(values[:8]) + (f" (+{len(values) - 8} more)" if len(values) > 8 else "")
            problems.append(f"weights do not load strictly into {architecture}: {label} keys: {shown}")
    return architecture


def _check_card(folder: Path, problems: list[str]) -> dict[str, Any]:
    from .hub_server.cardmeta import load_card_metadata

    readme = folder / "README.md"
    if not readme.is_file():
        problems.append("no README.md: render the card first (zoo.hub.write_card(folder, variant=...))")
        return {}
    try:
        _, errors = load_card_metadata(readme.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        errors = ["README.md is not UTF-8 text"]
    if errors:  # bounded parse and type checks first: an alias bomb never reaches ModelCard.load
        problems.extend(f"README.md metadata: {error}" for error in errors)
        return {}
    try:
        card = ModelCard.load(readme, ignore_metadata_errors=False)
    except Exception as err:  # noqa: BLE001
        problems.append(f"README.md metadata does not parse: {type(err).__name__}: {err}")
        return {}
    metadata = card.data.to_dict()
    missing = [key for key in REQUIRED_CARD_METADATA if not metadata.get(key)]
    if missing:
        problems.append(f"README.md metadata lacks {', '.join(missing)}")
    metrics = _read_json(folder / METRICS_FILE)
    if metrics.get("base_model") and not metadata.get("base_model"):
        problems.append(f"README.md metadata lacks base_model (metrics.json says {metrics['base_model']})")
    if metrics.get("results") and not metadata.get("model-index"):
        problems.append("README.md metadata lacks model-index although metrics.json has evaluation results")
    if not card.text.strip():
        problems.append("README.md has metadata but no card text")
    return metadata


def validate_folder(folder: str | os.PathLike, *, load_weights: bool = True) -> FolderCheck:
    """Check a folder before publishing; raises FolderValidationError listing every problem found.

    Checks: config.json loads through AutoConfig; weights are safetensors and load strictly (no missing,
    unexpected or mismatched keys) into the config's architecture; no pickle files (by suffix or by
    content); README.md has complete metadata (library_name, license, tags, pipeline_tag, base_model and
    model-index where metrics.json calls for them); every module that auto_map names is present.

        check = validate_folder("converted/toy")
        print(check.model_class, check.remote_code_files)
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FolderValidationError(folder, [f"{folder} is not a folder"])
    problems: list[str] = []
    names = _walk_folder(folder, problems)
    readme = folder / "README.md"
    if readme.is_symlink() and not readme.resolve().is_relative_to(folder.resolve()):
        problems.append(f"README.md: symbolic link to {readme.resolve()}, outside the folder")
    elif readme.is_file():
        names.append("README.md")
    if problems:  # links out of the folder, FIFOs, ...: read nothing more through them
        raise FolderValidationError(folder, problems)
    files = [{"name": rel, "size": (folder / rel).stat().st_size, "sha256": sha256_file(folder / rel)}
             for rel in names]
    for row in files:
        problem = _pickle_problem(folder / row["name"], row["name"])
        if problem:
            problems.append(problem)
    for name in JSON_FILES:  # every JSON file the checks below read must be a sane JSON object
        try:
            _read_json(folder / name)
        except FolderValidationError as err:
            problems.extend(err.problems)
    if any(problem.split(":")[0] in JSON_FILES for problem in problems):
        raise FolderValidationError(folder, problems)
    config = _read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    if not config:
        problems.append("no config.json")
    remote_files = _check_remote_code(folder, problems)
    weights = _weight_files(folder, problems)
    for path in weights:
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                list(handle.keys())
        except Exception as err:  # noqa: BLE001
            problems.append(f"{path.name}: not a readable safetensors file ({err})")
    model_class = None
    if config and weights and load_weights and not any("safetensors file" in p for p in problems):
        model_class = _load_model_strictly(folder, config, problems)
    metadata = _check_card(folder, problems)
    check = FolderCheck(folder, sorted(files, key=lambda r: r["name"]), config, model_class, remote_files,
                        metadata, problems)
    if problems:
        raise FolderValidationError(folder, problems)
    return check


# --------------------------------------------------------------------------------------------- client
DEFAULT_ENDPOINT = "https://huggingface.co"


def _is_real_hub(endpoint: str) -> bool:
    return endpoint.rstrip("/") in (DEFAULT_ENDPOINT, "https://hub-ci.huggingface.co")


@contextlib.contextmanager
def hub_session(endpoint: str | None = None, token: str | None = None) -> Iterator[str]:
    """Point huggingface_hub (and transformers) at `endpoint` for the duration of the block.

    huggingface_hub reads HF_ENDPOINT once at import; this also patches its constants, turns offline
    mode off, and for any endpoint other than the real Hub disables Xet (a local `zoo hub serve` speaks
    regular LFS only). Environment variables are set too, for subprocesses. Yields the endpoint.

        with hub_session("http://127.0.0.1:8000", token):
            model = AutoModel.from_pretrained("org/toy", revision="v1")
    """
    from huggingface_hub import constants

    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    host = urlsplit(endpoint).hostname or ""
    patches: dict[str, Any] = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": frozenset(set(getattr(constants, "HF_URL_HOSTS", frozenset())) | {host}),
        "HF_HUB_OFFLINE": False,
    }
    env = {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0"}
    if not _is_real_hub(endpoint):
        patches["HF_HUB_DISABLE_XET"] = True
        env["HF_HUB_DISABLE_XET"] = "1"
    if token is not None:
        env["HF_TOKEN"] = token
    entry = (patches, env)
    with _SESSIONS_LOCK:
        if not _SESSIONS:  # the first active session saves what was there before any of them
            _SESSION_SAVED["constants"] = {n: getattr(constants, n) for n in _SESSION_CONSTANTS if hasattr(constants, n)}
            _SESSION_SAVED["env"] = {n: os.environ.get(n) for n in _SESSION_ENV}
        _SESSIONS.append(entry)
        _apply_session(constants, entry)
    try:
        yield endpoint
    finally:
        # Sessions may overlap (threads, nesting): leaving one restores the saved state and re-applies the
        # sessions still active, so one thread leaving never switches another back to offline mode.
        with _SESSIONS_LOCK:
            _SESSIONS.remove(entry)
            for name, value in _SESSION_SAVED["constants"].items():
                setattr(constants, name, value)
            for name, value in _SESSION_SAVED["env"].items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            for active in _SESSIONS:
                _apply_session(constants, active)


_SESSIONS_LOCK = threading.Lock()
_SESSIONS: list[tuple[dict[str, Any], dict[str, str]]] = []  # active hub_session patches, oldest first
_SESSION_SAVED: dict[str, dict[str, Any]] = {}
_SESSION_CONSTANTS = ("ENDPOINT", "HUGGINGFACE_CO_URL_TEMPLATE", "HF_URL_HOSTS", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_XET")
_SESSION_ENV = ("HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_XET", "HF_TOKEN")


def _apply_session(constants: Any, entry: tuple[dict[str, Any], dict[str, str]]) -> None:
    patches, env = entry
    for name, value in patches.items():
        setattr(constants, name, value)
    os.environ.update(env)


class UploadConflictError(RuntimeError):
    """Another commit landed on the branch during an upload; ours was refused and nothing was committed."""

    def __init__(self, repo_id: str, branch: str, parent: str | None):
        self.repo_id, self.branch, self.parent = repo_id, branch, parent
        super().__init__(
            f"conflict: {repo_id}@{branch} moved on from {parent} while this upload ran (another writer "
            "committed first). Nothing was committed; check the branch and upload again."
        )


@dataclass
class UploadResult:
    """What `upload_folder` did (or, with dry_run, would do)."""

    repo_id: str
    url: str  # the repo's page (browse page on a local hub)
    commit: str | None  # commit id; None for a dry run
    commit_url: str | None
    revision: str
    tag: str | None
    files: list[dict[str, Any]]
    dry_run: bool = False


def upload_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    revision: str | None = None,
    tag: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    dry_run: bool = False,
    validate: bool = True,
) -> UploadResult:
    """Validate `folder`, then publish it to `repo_id` in ONE commit (optionally on a branch, then tagged).

    Creates the repo if needed (`private` applies to a new repo), creates `revision` as a branch from
    main if it does not exist, sends weights, config, code, processor files and README.md together in
    one commit, and tags that commit with `tag`. Nothing is committed unless every file was uploaded
    first, so a failed upload leaves the repo as it was.

        result = upload_folder("converted/toy", "org/toy", tag="v1")
        print(result.commit, result.url)
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    if not dry_run:
        rerender_card_for(folder, repo_id)  # the card names the repo it is published to
    if validate:
        files = validate_folder(folder).files
    else:
        files = folder_files(folder) + (
            [{"name": "README.md", "size": (folder / "README.md").stat().st_size,
              "sha256": sha256_file(folder / "README.md")}] if (folder / "README.md").is_file() else []
        )
    branch = revision or "main"
    with hub_session(endpoint, token) as url:
        repo_url = f"{url}/{repo_id}"
        if dry_run:
            return UploadResult(repo_id, repo_url, None, None, branch, tag, files, dry_run=True)
        api = HfApi(endpoint=url, token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if branch != "main":
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        # The commit is made on top of the head seen now: if another writer commits to the branch in the
        # meantime, the Hub refuses ours (412) instead of mixing the two uploads' trees.
        parent = api.model_info(repo_id, revision=branch).sha
        operations = []
        for row in files:
            operation = CommitOperationAdd(path_in_repo=row["name"], path_or_fileobj=str(folder / row["name"]))
            if operation.upload_info.sha256.hex() != row["sha256"]:
                raise FolderValidationError(folder, [f"{row['name']}: changed after validation; nothing was committed"])
            operations.append(operation)
        message = commit_message or f"Upload {folder.name} with zoo hub_upload"
        try:
            info = api.create_commit(repo_id, operations=operations, commit_message=message, revision=branch,
                                     parent_commit=parent)
        except HfHubHTTPError as err:
            if err.response is not None and err.response.status_code in (409, 412):
                raise UploadConflictError(repo_id, branch, parent) from err
            raise
        if tag:
            api.create_tag(repo_id, tag=tag, revision=info.oid)
    return UploadResult(repo_id, repo_url, info.oid, info.commit_url, branch, tag, files)


def download_folder(
    repo_id: str,
    *,
    revision: str | None = None,
    local_dir: str | os.PathLike | None = None,
    endpoint: str | None = None,
    token: str | None = None,
) -> Path:
    """snapshot_download a repo at `revision` (branch, tag or commit) and return the local folder.

        path = download_folder("org/toy", revision="v1")
    """
    from huggingface_hub import snapshot_download

    with hub_session(endpoint, token):
        path = snapshot_download(repo_id, revision=revision, local_dir=local_dir, token=token)
    return Path(path)
