"""Registering a family with the transformers Auto classes, for `import zoo` and for remote code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import transformers
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

__all__ = ["Family", "families", "get_family", "register_family"]


@dataclass
class Family:
    """What zoo knows about one architecture family once it is registered."""

    name: str
    config_class: type[PretrainedConfig]
    base_model_class: type[PreTrainedModel]
    heads: dict[str, type[PreTrainedModel]]
    processors: dict[str, type] = field(default_factory=dict)
    dummy_inputs: Callable[[PretrainedConfig, type[PreTrainedModel]], dict[str, Any]] | None = None

    @property
    def model_classes(self) -> dict[str, type[PreTrainedModel]]:
        """Every model class of the family by class name, the base model included."""
        classes = {self.base_model_class.__name__: self.base_model_class}
        classes.update({cls.__name__: cls for cls in self.heads.values()})
        return classes

    def auto_class_of(self, model_class: type[PreTrainedModel]) -> str:
        if model_class is self.base_model_class:
            return "AutoModel"
        for auto_name, head in self.heads.items():
            if head is model_class:
                return auto_name
        raise KeyError(f"{model_class.__name__} is not a model class of the {self.name} family")


_FAMILIES: dict[str, Family] = {}


def expected_auto_map(family: Family) -> dict[str, str]:
    """The `auto_map` a saved config must carry so that every head loads with trust_remote_code."""
    def ref(cls: type) -> str:
        return f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"

    auto_map = {"AutoConfig": ref(family.config_class), "AutoModel": ref(family.base_model_class)}
    auto_map.update({auto_name: ref(head) for auto_name, head in family.heads.items()})
    return auto_map


def register_family(
    name: str,
    config_class: type[PretrainedConfig],
    base_model_class: type[PreTrainedModel],
    heads: dict[str, type[PreTrainedModel]],
    *,
    processors: dict[str, type] | None = None,
    dummy_inputs: Callable[[PretrainedConfig, type[PreTrainedModel]], dict[str, Any]] | None = None,
) -> Family:
    """Register a family's config, base model, heads and processors with the Auto classes.

    `heads` maps an Auto class name ("AutoModelForSequenceClassification") to the head class; a family
    with several heads for one task (e.g. graph regression and classification) keys the extra ones with
    an Auto class of its choosing. `processors` maps "AutoTokenizer" / "AutoFeatureExtractor" /
    "AutoProcessor" to the class. The config class must set a default `auto_map` equal to
    `expected_auto_map(...)` (checked here) so that saved folders load every head with
    `trust_remote_code=True` without zoo installed.

        register_family("graphormer", GraphormerConfig, GraphormerModel,
                        {"AutoModelForSequenceClassification": GraphormerForGraphClassification})
    """
    model_type = config_class.model_type
    if not model_type:
        raise ValueError(f"{config_class.__name__} has no model_type")
    family = Family(name, config_class, base_model_class, dict(heads), dict(processors or {}), dummy_inputs)
    for auto_name in family.heads:
        if not hasattr(transformers, auto_name):
            raise ValueError(f"{auto_name} is not a transformers Auto class")
    missing = {k: v for k, v in expected_auto_map(family).items() if config_class().auto_map.get(k) != v}
    if missing:
        raise ValueError(f"{config_class.__name__}().auto_map must include {missing} for remote-code loading")

    _quiet_head_keys_on_base(base_model_class, {head.__name__ for head in family.heads.values()})
    AutoConfig.register(model_type, config_class, exist_ok=True)
    config_class.register_for_auto_class()
    AutoModel.register(config_class, base_model_class, exist_ok=True)
    base_model_class.register_for_auto_class("AutoModel")
    for auto_name, head in family.heads.items():
        getattr(transformers, auto_name).register(config_class, head, exist_ok=True)
        head.register_for_auto_class(auto_name)
    for auto_name, processor in family.processors.items():
        auto = getattr(transformers, auto_name)
        if auto_name == "AutoTokenizer":
            auto.register(config_class, tokenizer_class=processor, exist_ok=True)
        else:
            auto.register(config_class, processor, exist_ok=True)
        if hasattr(processor, "register_for_auto_class"):
            processor.register_for_auto_class(auto_name)
    _FAMILIES[name] = family
    return family


def _quiet_head_keys_on_base(base_model_class: type[PreTrainedModel], head_names: set[str]) -> None:
    """Loading a head checkpoint (config.architectures names one of the family's heads) as the family's base
    model drops the head's weights on purpose: they are not reported as UNEXPECTED. Unexpected keys of any
    other checkpoint (a base model, a class the family does not know), or keys under the base model's own
    modules, are still reported."""
    original = base_model_class._adjust_missing_and_unexpected_keys
    if getattr(original, "_zoo_quiet_heads", False):
        return

    def adjust(self, loading_info):
        original(self, loading_info)
        architectures = getattr(self.config, "architectures", None) or []
        if architectures and architectures[0] in head_names:
            own = {name for name, _ in self.named_children()}
            loading_info.unexpected_keys = {
                key for key in loading_info.unexpected_keys
                if key.split(".", 1)[0] in own or key.startswith(self.base_model_prefix + ".")
            }

    adjust._zoo_quiet_heads = True
    base_model_class._adjust_missing_and_unexpected_keys = adjust


def families() -> dict[str, Family]:
    """Registered families by name."""
    return dict(_FAMILIES)


def get_family(name: str) -> Family:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown family '{name}'; registered: {', '.join(sorted(_FAMILIES)) or 'none'}") from None
