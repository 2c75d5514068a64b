"""The catalogue: named variants of every family, as data.

    import zoo
    zoo.list_models("graphormer*")
    model = zoo.create_model("graphormer_base_pcqm4mv2", pretrained="path/or/repo-id")
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from transformers import PretrainedConfig, PreTrainedModel

from .auto import get_family

__all__ = [
    "ModelEntry", "OriginalCheckpoint", "UnknownModelError", "create_model", "list_models", "model_info",
    "register_model",
]


class UnknownModelError(LookupError):
    """A variant name that is not in the registry."""


@dataclass(frozen=True)
class OriginalCheckpoint:
    """A checkpoint as the original authors published it (zoo converts it; it is never downloaded here)."""

    filename: str
    url: str
    format: str  # "fairseq", "transformers-4.x", "torchsharp", "priorgrad-learner", "state-dict", ...
    size_bytes: int | None = None  # None: not known
    sha256: str | None = None  # None: not known
    dtype: str | None = None  # e.g. "float16" for releases trained with --fp16
    notes: str = ""
    archive: str | None = None  # the file to download when it is a zip holding the checkpoint (a Hub file name)
    archive_member: str | None = None  # the checkpoint's path inside `archive`
    companions: tuple[str, ...] = ()  # more files from the same place that conversion needs (zips, unpacked)


@dataclass(frozen=True)
class ModelEntry:
    """One named variant: how to build it, where its original weights are, and what the paper reports."""

    name: str
    family: str
    task: str
    architecture: str  # model class name within the family, e.g. "GraphormerForGraphRegression"
    config: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    original: OriginalCheckpoint | None = None
    converter: str | None = None  # e.g. "conversion/convert_graphormer.py"
    card: str | None = None  # e.g. "cards/graphormer.md"
    paper: str = ""
    paper_url: str = ""
    license: str = "mit"
    metrics: dict[str, float] = field(default_factory=dict)  # what the paper / release reports
    params: int | None = None  # parameter count the release reports, when known
    recipe: str | None = None  # name of a fine-tuning recipe (zoo finetune) that suits this variant
    test_config: dict[str, Any] = field(default_factory=dict)  # shrinks the variant for the registry walk
    hub_id: str | None = None  # converted weights on the Hub: "NAME" (org from ZOO_HUB_ORG) or "ORG/NAME"

    @property
    def pretrained(self) -> bool:
        """True when original weights were published for this variant."""
        return self.original is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add a variant to the catalogue (families call this from zoo/catalog/<family>.py)."""
    if entry.name in _REGISTRY and _REGISTRY[entry.name] != entry:
        raise ValueError(f"model '{entry.name}' is already registered with a different definition")
    _REGISTRY[entry.name] = entry
    return entry


def list_models(pattern: str = "*", pretrained: bool | None = None, family: str | None = None) -> list[str]:
    """Names of registered variants matching a shell-style pattern, sorted.

    `pretrained=True` keeps variants with published original weights, `False` those without.

        zoo.list_models("musicbert*", pretrained=True)
    """
    names = []
    for name, entry in _REGISTRY.items():
        if not fnmatch.fnmatch(name, pattern):
            continue
        if pretrained is not None and entry.pretrained != pretrained:
            continue
        if family is not None and entry.family != family:
            continue
        names.append(name)
    return sorted(names)


def model_info(name: str) -> ModelEntry:
    """The registry entry for `name`; unknown names raise `UnknownModelError` suggesting close names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else " Run `zoo list` to see every variant."
        raise UnknownModelError(f"no model named '{name}' in the zoo registry.{hint}") from None


def build_config(name: str, **overrides: Any) -> PretrainedConfig:
    """The config of a variant, with keyword overrides applied on top of the entry's."""
    entry = model_info(name)
    family = get_family(entry.family)
    return family.config_class(**{**entry.config, **overrides})


def model_class(name: str) -> type[PreTrainedModel]:
    entry = model_info(name)
    classes = get_family(entry.family).model_classes
    if entry.architecture not in classes:
        raise ValueError(f"{name}: the {entry.family} family has no class {entry.architecture}")
    return classes[entry.architecture]


def create_model(
    name: str,
    pretrained: bool | str | os.PathLike | None = None,
    revision: str | None = None,
    **overrides: Any,
) -> PreTrainedModel:
    """Build a registered variant, randomly initialised or from converted weights.

    `pretrained=True` loads the variant's released weights: the converted Hub repo (`hub_id`) when the
    entry names one, else the original release, downloaded, checked and converted once into the zoo cache
    (see `zoo.pull.pull`). `pretrained` may also be a local folder or a Hub repo id holding a zoo folder
    (config.json + model.safetensors); its config is checked against the variant (family, architecture,
    sizes) and a mismatch is refused. `revision` picks a branch, tag or commit. Keyword overrides change
    the config (e.g. `num_labels=3` for a new classification head).

        model = zoo.create_model("graphormer_base_pcqm4mv2", pretrained=True)
        model = zoo.create_model("musicbert_base", pretrained="org/musicbert_base", num_labels=13)
    """
    cls = model_class(name)
    if pretrained is None or pretrained is False:
        return cls(build_config(name, **overrides))
    from .pull import check_folder_matches, pull

    if pretrained is True:
        target = check_folder_matches(name, pull(name, revision=revision), overrides=overrides)
    else:
        target = check_folder_matches(name, pretrained, revision=revision, overrides=overrides)
    return cls.from_pretrained(target, **overrides)


def dummy_inputs(name: str, config: PretrainedConfig) -> dict[str, Any]:
    """A small valid batch for the variant's architecture (used by the registry walk and smoke tests)."""
    entry = model_info(name)
    family = get_family(entry.family)
    if family.dummy_inputs is None:
        raise ValueError(f"the {entry.family} family registered no dummy_inputs function")
    return family.dummy_inputs(config, model_class(name))

