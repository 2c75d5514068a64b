"""The checks every zoo family inherits (transformers-style model tester mixin).

A family's test module subclasses `ModelTesterMixin` and fills in three things:

    class TestGraphormerModel(ModelTesterMixin):
        family = "graphormer"
        def get_config(self): return GraphormerConfig(num_hidden_layers=2, ...)   # tiny
        def get_inputs(self, model_class, config, with_labels): return {...}    # tensors only

and inherits: forward of every class, loss + gradients of every head, config and save/load round trips
through the Auto classes with strict loading and float32 equality, a trust_remote_code reload in a
clean subprocess where zoo is not importable, and a 2-step Trainer run per head.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel, Trainer, TrainingArguments
from transformers.utils import ModelOutput

from zoo.auto import Family, expected_auto_map, get_family

OUTPUT_ATOL = 1e-6  # float32 outputs of bit-identical weights (see check_save_load)


def output_tensors(output: Any, prefix: str = "out") -> dict[str, torch.Tensor]:
    """Flatten a ModelOutput (nested tuples of tensors included) into name -> tensor."""
    flat: dict[str, torch.Tensor] = {}
    if isinstance(output, torch.Tensor):
        flat[prefix] = output
    elif isinstance(output, dict):
        for key, value in output.items():
            flat.update(output_tensors(value, f"{prefix}.{key}"))
    elif isinstance(output, (tuple, list)):
        for index, value in enumerate(output):
            flat.update(output_tensors(value, f"{prefix}.{index}"))
    return flat


def assert_outputs_equal(expected: Any, actual: Any, atol: float = 0.0, rtol: float = 0.0) -> None:
    left, right = output_tensors(expected), output_tensors(actual)
    assert left.keys() == right.keys(), f"output fields differ: {sorted(left)} vs {sorted(right)}"
    for name in left:
        torch.testing.assert_close(right[name], left[name], atol=atol, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}")


def check_save_load(model: PreTrainedModel, auto_class_name: str, inputs: dict, tmp_path: Path) -> PreTrainedModel:
    """Save, reload strictly through the Auto class, and require identical float32 outputs."""
    model.eval()
    with torch.no_grad():
        before = model(**inputs)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file(), "weights must be saved as model.safetensors"
    assert not list(tmp_path.glob("*.bin")), "no pickle weight files may be written"
    auto_class = getattr(transformers, auto_class_name)
    reloaded, info = auto_class.from_pretrained(tmp_path, output_loading_info=True)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        assert not info.get(kind), f"{kind} after reload: {info[kind]}"
    assert type(reloaded) is type(model)
    saved_state, loaded_state = model.state_dict(), reloaded.state_dict()
    assert saved_state.keys() == loaded_state.keys()
    for name, tensor in saved_state.items():
        assert torch.equal(tensor, loaded_state[name]), f"{name} differs after reload"
    reloaded.eval()
    with torch.no_grad():
        after = reloaded(**inputs)
    # Bit-identical weights; outputs may still differ in the last bits because weights mmapped from
    # safetensors need not be 64-byte aligned and CPU BLAS kernels round differently on unaligned data.
    assert_outputs_equal(before, after, atol=OUTPUT_ATOL, rtol=OUTPUT_ATOL)
    return reloaded


_REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["zoo"] = None  # zoo must not be importable: the folder's own code has to suffice
    sys.modules["conversion"] = None
    import torch, transformers
    from safetensors.torch import load_file
    torch.set_num_threads(int(sys.argv[2]))  # the parent's count: reductions split the same way
    cases = json.loads(sys.argv[1])
    for case in cases:
        auto = getattr(transformers, case["auto_class"])
        model = auto.from_pretrained(case["folder"], trust_remote_code=True)
        assert type(model).__name__ == case["class_name"], type(model).__name__
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        model.eval()
        inputs = load_file(case["inputs"])
        expected = load_file(case["expected"])
        with torch.no_grad():
            out = model(**inputs)
        flat = {}
        def walk(value, prefix):
            if isinstance(value, torch.Tensor):
                flat[prefix] = value
            elif isinstance(value, dict):
                for k, v in value.items():
                    walk(v, prefix + "." + k)
            elif isinstance(value, (tuple, list)):
                for i, v in enumerate(value):
                    walk(v, prefix + "." + str(i))
        walk(out, "out")
        assert flat.keys() == expected.keys(), (sorted(flat), sorted(expected))
        for name in expected:
            torch.testing.assert_close(flat[name], expected[name], atol=1e-6, rtol=1e-6)
        print("ok", case["class_name"])
    """
)


def check_remote_code(cases: list[dict[str, Any]], tmp_path: Path) -> str:
    """Load each saved folder with trust_remote_code=True in a subprocess that cannot import zoo."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "HF_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), TRANSFORMERS_VERBOSITY="error")
    result = subprocess.run(
        [sys.executable, "-c", _REMOTE_SCRIPT, json.dumps(cases), str(torch.get_num_threads())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f"remote-code load failed:\n{result.stdout}\n{result.stderr[-4000:]}"
    return result.stdout


def unused_parameter_names(model: PreTrainedModel, allowed: list[str]) -> list[str]:
    """Trainable parameters that got no gradient, minus those matching an allowed pattern."""
    return [
        name for name, param in model.named_parameters()
        if param.requires_grad and param.grad is None and not any(re.search(p, name) for p in allowed)
    ]


class ModelTesterMixin:
    family: str = ""
    # Parameters that legitimately receive no gradient in a head's loss (regexes on parameter names),
    # e.g. Graphormer's pre-LN final norm that the original builds but does not apply.
    parameters_without_grad: list[str] = []
    trainer_steps = 2

    def get_config(self) -> PretrainedConfig:
        raise NotImplementedError

    def get_inputs(self, model_class: type[PreTrainedModel], config: PretrainedConfig, with_labels: bool) -> dict:
        """A small batch of tensors (labels included when asked and the class is a head)."""
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------------------------
    @property
    def family_info(self) -> Family:
        return get_family(self.family)

    def all_model_classes(self) -> list[type[PreTrainedModel]]:
        return list(self.family_info.model_classes.values())

    def head_classes(self) -> list[type[PreTrainedModel]]:
        return list(self.family_info.heads.values())

    def build(self, model_class: type[PreTrainedModel]) -> PreTrainedModel:
        torch.manual_seed(0)
        return model_class(self.get_config()).eval()

    def trainer_dataset(self, model_class: type[PreTrainedModel], config: PretrainedConfig) -> list[dict]:
        """Pre-collated batches; families with a real collator may override this and `trainer_collator`."""
        return [self.get_inputs(model_class, config, with_labels=True) for _ in range(self.trainer_steps)]

    def trainer_collator(self, model_class: type[PreTrainedModel], config: PretrainedConfig):
        return lambda items: items[0]

    # -- shared tests -----------------------------------------------------------------------------------
    def test_config_round_trip(self, tmp_path):
        config = self.get_config()
        config.save_pretrained(tmp_path)
        reloaded = AutoConfig.from_pretrained(tmp_path)
        assert type(reloaded) is type(config)
        for key, value in config.to_diff_dict().items():
            if key not in ("transformers_version",):
                assert getattr(reloaded, key) == value, key
        saved = json.loads((tmp_path / "config.json").read_text())
        assert saved["auto_map"] == {**saved["auto_map"], **expected_auto_map(self.family_info)}

    def test_forward_without_labels(self):
        for model_class in self.all_model_classes():
            model = self.build(model_class)
            config = model.config
            with torch.no_grad():
                output = model(**self.get_inputs(model_class, config, with_labels=False))
            assert isinstance(output, ModelOutput), f"{model_class.__name__} must return a ModelOutput"
            assert getattr(output, "loss", None) is None
            for name, tensor in output_tensors(output).items():
                assert torch.isfinite(tensor).all(), f"{model_class.__name__} {name} is not finite"

    def test_heads_loss_and_gradients(self):
        for model_class in self.head_classes():
            model = self.build(model_class).train()
            output = model(**self.get_inputs(model_class, model.config, with_labels=True))
            assert output.loss is not None, f"{model_class.__name__} returned no loss with labels"
            assert output.loss.dim() == 0 and torch.isfinite(output.loss)
            output.loss.backward()
            missing = unused_parameter_names(model, self.parameters_without_grad)
            assert not missing, f"{model_class.__name__}: no gradient reached {missing}"

    def test_save_load_auto(self, tmp_path):
        for model_class in self.all_model_classes():
            model = self.build(model_class)
            inputs = self.get_inputs(model_class, model.config, with_labels=False)
            auto_name = self.family_info.auto_class_of(model_class)
            check_save_load(model, auto_name, inputs, tmp_path / model_class.__name__)

    def test_remote_code_without_zoo(self, tmp_path):
        cases = []
        for model_class in self.all_model_classes():
            model = self.build(model_class)
            inputs = self.get_inputs(model_class, model.config, with_labels=False)
            folder = tmp_path / model_class.__name__
            model.save_pretrained(folder)
            with torch.no_grad():
                expected = output_tensors(model(**inputs))
            save_file({k: v.contiguous() for k, v in inputs.items()}, folder / "_inputs.safetensors")
            save_file({k: v.contiguous() for k, v in expected.items()}, folder / "_expected.safetensors")
            cases.append({
                "folder": str(folder), "class_name": model_class.__name__,
                "auto_class": self.family_info.auto_class_of(model_class),
                "inputs": str(folder / "_inputs.safetensors"), "expected": str(folder / "_expected.safetensors"),
            })
        stdout = check_remote_code(cases, tmp_path)
        assert stdout.count("ok ") == len(cases)

    def test_trainer_two_steps(self, tmp_path):
        for model_class in self.head_classes():
            model = self.build(model_class).train()
            before = {name: p.detach().clone() for name, p in model.named_parameters()}
            args = TrainingArguments(
                output_dir=str(tmp_path / model_class.__name__), max_steps=self.trainer_steps,
                per_device_train_batch_size=1, learning_rate=1e-2, logging_steps=1, report_to=[],
                save_strategy="no", use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,
            )
            trainer = Trainer(
                model=model, args=args, train_dataset=self.trainer_dataset(model_class, model.config),
                data_collator=self.trainer_collator(model_class, model.config),
            )
            result = trainer.train()
            assert result.global_step == self.trainer_steps
            losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
            assert losses and all(map(lambda v: v == v and abs(v) != float("inf"), losses))
            changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
            assert changed, f"{model_class.__name__}: the Trainer updated no parameter"


__all__ = [
    "ModelTesterMixin", "assert_outputs_equal", "check_remote_code", "check_save_load", "output_tensors",
    "unused_parameter_names",
]
