"""Bounded, type-checked parsing of model-card YAML metadata and config.json summaries.

A card's front matter comes from whoever pushed the repo, so it is parsed under limits before anything
else looks at it: at most MAX_METADATA_BYTES of YAML, nesting at most MAX_DEPTH deep, at most
MAX_ALIASES aliases and MAX_NODES values once aliases are expanded (a 500-byte "billion laughs" alias
bomb is refused instead of expanding to gigabytes when serialized). The result is made JSON-safe
(dates become ISO strings, non-finite floats and binary values strings, sets lists) and the keys the Hub
gives a meaning to are type-checked; a key of the wrong type is dropped and reported, never passed on.

    data, errors = load_card_metadata(readme_text)     # never raises
    summary = config_summary(config_bytes)             # {} unless config.json is a sane JSON object

Used by the server (listings, model pages, /api/validate-yaml) and by zoo.hub.validate_folder.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from typing import Any

__all__ = [
    "MAX_ALIASES", "MAX_CONFIG_BYTES", "MAX_DEPTH", "MAX_METADATA_BYTES", "MAX_NODES", "config_summary",
    "front_matter", "load_card_metadata",
]

MAX_METADATA_BYTES = 64 * 1024
MAX_DEPTH = 16
MAX_ALIASES = 32
MAX_NODES = 10_000
MAX_CONFIG_BYTES = 1_000_000
MAX_CONFIG_DEPTH = 64

STRING_KEYS = ("license", "license_name", "license_link", "library_name", "pipeline_tag", "model_name")
STRING_OR_LIST_KEYS = ("tags", "datasets", "language", "base_model", "metrics", "base_model_relation")


class _Budget(Exception):
    pass


def front_matter(text: str) -> tuple[str | None, str | None]:
    """(yaml text, error) of a README's `---` block; (None, None) when there is none."""
    if not text.startswith("---"):
        return None, None
    end = text.find("\n---", 3)
    if end < 0:
        return None, "the YAML metadata block is not closed by a '---' line"
    return text[3:end], None


def _scan(yaml_text: str) -> str | None:
    """Walk the YAML events (no objects are built): refuse deep nesting, many aliases, many nodes."""
    import yaml

    depth = aliases = events = 0
    for event in yaml.parse(yaml_text, Loader=yaml.SafeLoader):
        events += 1
        if events > 4 * MAX_NODES:
            return f"metadata has more than {MAX_NODES} values"
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                return f"metadata is nested more than {MAX_DEPTH} levels deep"
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                return f"metadata uses more than {MAX_ALIASES} YAML aliases"
    return None


def _json_safe(value: Any, budget: list[int], depth: int = 0) -> Any:
    """A JSON-serializable copy of `value`; raises _Budget past MAX_NODES values or MAX_DEPTH levels."""
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_DEPTH:
        raise _Budget
    if isinstance(value, dict):
        return {str(k): _json_safe(v, budget, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_json_safe(v, budget, depth + 1) for v in items]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return str(value)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _model_index_problem(model_index: Any) -> str | None:
    """Why `model-index` does not have the Hub's shape (None when it does)."""
    if not isinstance(model_index, list):
        return "must be a list of models"
    for i, model in enumerate(model_index):
        if not isinstance(model, dict):
            return f"entry {i} is not a mapping"
        if "name" in model and not isinstance(model["name"], str):
            return f"entry {i}: name must be a string"
        results = model.get("results")
        if not isinstance(results, list):
            return f"entry {i}: results must be a list"
        for j, result in enumerate(results):
            where = f"entry {i} result {j}"
            if not isinstance(result, dict):
                return f"{where} is not a mapping"
            task, dataset, metrics = result.get("task"), result.get("dataset"), result.get("metrics")
            if not isinstance(task, dict) or not isinstance(task.get("type"), str):
                return f"{where}: task must be a mapping with a string 'type'"
            if not isinstance(dataset, dict) or not isinstance(dataset.get("type"), str) or \
                    not isinstance(dataset.get("name", ""), str) or not isinstance(dataset.get("split", ""), str):
                return f"{where}: dataset must be a mapping with string 'type' (and 'name', 'split')"
            if not isinstance(metrics, list):
                return f"{where}: metrics must be a list"
            for k, metric in enumerate(metrics):
                if not isinstance(metric, dict) or not isinstance(metric.get("type"), str) or \
                        not isinstance(metric.get("name", ""), str) or \
                        not isinstance(metric.get("value"), (int, float, str)) or isinstance(metric.get("value"), bool):
                    return f"{where} metric {k}: needs a string 'type' and a number or string 'value'"
    return None


def load_card_metadata(text: str) -> tuple[dict[str, Any], list[str]]:
    """(metadata, errors) of a README.md. Never raises; keys of the wrong type are dropped and reported.

        data, errors = load_card_metadata("---\\nlicense: [1, 2]\\ntags: [a]\\n---\\ntext")
        # data == {"tags": ["a"]}, errors == ['"license" must be a string']
    """
    import yaml

    block, error = front_matter(text)
    if error:
        return {}, [error]
    if block is None or not block.strip():
        return {}, []
    if len(block.encode("utf-8", "replace")) > MAX_METADATA_BYTES:
        return {}, [f"the YAML metadata block is larger than {MAX_METADATA_BYTES // 1024} KiB"]
    try:
        problem = _scan(block)
        if problem:
            return {}, [problem]
        raw = yaml.safe_load(block)
    except (yaml.YAMLError, RecursionError, ValueError, TypeError) as err:
        return {}, [f"metadata is not valid YAML: {' '.join(str(err).split())[:300]}"]
    if raw is None:
        return {}, []
    if not isinstance(raw, dict):
        return {}, ["metadata must be a YAML mapping"]
    try:
        data = _json_safe(raw, [MAX_NODES])
    except _Budget:
        return {}, [f"metadata expands to more than {MAX_NODES} values or {MAX_DEPTH} levels (YAML aliases?)"]
    errors = []
    for key in STRING_KEYS:
        if key in data and not isinstance(data[key], str):
            errors.append(f'"{key}" must be a string')
            del data[key]
    for key in STRING_OR_LIST_KEYS:
        if key in data and data[key] is not None and not _is_str_list(data[key]):
            errors.append(f'"{key}" must be a string or a list of strings')
            del data[key]
    if "model-index" in data:
        problem = _model_index_problem(data["model-index"])
        if problem:
            errors.append(f'"model-index" is malformed: {problem}')
            del data["model-index"]
    return data, errors


def _json_depth_ok(text: str) -> bool:
    depth = 0
    in_string = escape = False
    for char in text:
        if in_string:
            if escape:
                escape = False
            elif char == "\\":
                escape = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_CONFIG_DEPTH:
                return False
        elif char in "]}":
            depth -= 1
    return True


def config_summary(raw: bytes) -> dict[str, Any]:
    """architectures / model_type / auto_map of a config.json, type-checked; {} for anything else."""
    if len(raw) > MAX_CONFIG_BYTES:
        return {}
    try:
        text = raw.decode("utf-8")
        if not _json_depth_ok(text):
            return {}
        config = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(config, dict):
        return {}
    out: dict[str, Any] = {}
    if isinstance(config.get("model_type"), str):
        out["model_type"] = config["model_type"]
    architectures = config.get("architectures")
    if isinstance(architectures, list) and all(isinstance(a, str) for a in architectures):
        out["architectures"] = architectures
    auto_map = config.get("auto_map")
    if isinstance(auto_map, dict) and all(
        isinstance(k, str) and (isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, (str, type(None)))
                                                                                  for x in v)))
        for k, v in auto_map.items()
    ):
        out["auto_map"] = auto_map
    return out
