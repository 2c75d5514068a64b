"""The registry API on the toy family, and one walk over the whole real catalogue."""

import pytest
import torch

import tests.toy  # noqa: F401  (registers the toy family and its two variants)
import zoo
from tests.model_tester import check_save_load
from zoo.auto import get_family
from zoo.registry import build_config, dummy_inputs, model_class


def test_list_models_filters_by_pattern_and_pretrained():
    assert {"toy_tiny", "toy_wide"} <= set(zoo.list_models("toy_*"))
    assert zoo.list_models("toy_t*") == ["toy_tiny"]
    assert "toy_tiny" in zoo.list_models("toy*", pretrained=False)
    assert "toy_tiny" not in zoo.list_models("toy*", pretrained=True)
    assert zoo.list_models("toy*", family="toy") == ["toy_tiny", "toy_wide"]


def test_unknown_name_suggests_close_names():
    with pytest.raises(zoo.UnknownModelError, match="Did you mean: toy_tiny"):
        zoo.model_info("toy_tinny")
    with pytest.raises(zoo.UnknownModelError, match="zoo list"):
        zoo.model_info("qqqqqqqqqqqqqqqqqqq")


def test_create_model_applies_overrides_and_loads_pretrained(tmp_path):
    model = zoo.create_model("toy_tiny", num_labels=4)
    assert model.config.hidden_size == 8 and model.config.num_labels == 4
    model.save_pretrained(tmp_path)
    reloaded = zoo.create_model("toy_tiny", pretrained=tmp_path)
    assert torch.equal(reloaded.classifier.weight, model.classifier.weight)


def test_register_model_refuses_a_conflicting_redefinition():
    entry = zoo.model_info("toy_tiny")
    zoo.register_model(entry)  # identical: fine
    with pytest.raises(ValueError, match="already registered"):
        zoo.register_model(zoo.ModelEntry(**{**entry.to_dict(), "task": "other", "original": None}))


def _real_entries():
    return [name for name in zoo.list_models() if zoo.model_info(name).family != "toy"]


@pytest.mark.parametrize("name", _real_entries())
def test_registry_walk(name, tmp_path):
    """Every catalogued variant: full-size meta build (parameter count), tiny build, forward, save, load."""
    entry = zoo.model_info(name)
    cls = model_class(name)
    assert entry.architecture in get_family(entry.family).model_classes
    if entry.params:
        with torch.device("meta"):
            full = cls(build_config(name))
        count = sum(p.numel() for p in full.parameters())
        assert abs(count - entry.params) / entry.params < 0.02, f"{name}: {count} parameters, release says {entry.params}"
    torch.manual_seed(0)
    model = zoo.create_model(name, **entry.test_config).eval()
    inputs = dummy_inputs(name, model.config)
    auto_name = get_family(entry.family).auto_class_of(cls)
    check_save_load(model, auto_name, inputs, tmp_path)


def test_toy_entry_parameter_count_matches_build():
    entry = zoo.model_info("toy_wide")
    with torch.device("meta"):
        model = model_class("toy_wide")(build_config("toy_wide"))
    assert sum(p.numel() for p in model.parameters()) == entry.params
