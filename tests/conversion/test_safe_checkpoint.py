"""The restricted reader: real original checkpoints come through, code execution never does."""

import argparse
import os
import pickle
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from conversion.safe_checkpoint import (
    CheckpointReadError,
    UnsafeCheckpointError,
    read_checkpoint,
    read_state_dict,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".tar", ".pkl")
# Every family's reference fixtures hold original-format pickled checkpoints (NAS-BERT's are TorchSharp
# .tsm files, read by their own non-pickle reader).
PICKLE_FAMILIES = {"graphormer", "graphormer3d", "dmp", "musicbert", "priorgrad", "deq"}


def fixture_checkpoints() -> list[Path]:
    found = [p for p in FIXTURES.rglob("*") if p.suffix in CHECKPOINT_SUFFIXES or p.name == "pytorch_model.bin"]
    return sorted(found)


@pytest.mark.parametrize("path", fixture_checkpoints(), ids=lambda p: str(p.relative_to(FIXTURES)))
def test_reads_every_fixture_checkpoint(path):
    data = read_checkpoint(path)
    tensors = _tensors(data)
    assert tensors, f"{path}: no tensors came through"
    _assert_plain(data)


def test_fixture_checkpoints_cover_every_pickle_family():
    families = {p.relative_to(FIXTURES).parts[0] for p in fixture_checkpoints()}
    assert PICKLE_FAMILIES <= families, f"missing original checkpoints for {PICKLE_FAMILIES - families}"


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    return []


def _assert_plain(obj, depth=0):
    """Only tensors, numbers, strings, None and plain containers may come out of the reader."""
    import numpy as np

    assert depth < 200
    if isinstance(obj, dict):
        for key, value in obj.items():
            _assert_plain(key, depth + 1)
            _assert_plain(value, depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for value in obj:
            _assert_plain(value, depth + 1)
    else:
        assert obj is None or isinstance(obj, (torch.Tensor, str, bytes, int, float, bool, np.ndarray, np.generic,
                                              torch.dtype, torch.Size, torch.device)), type(obj)


def test_float16_tensors_keep_their_dtype(tmp_path):
    path = tmp_path / "half.pt"
    torch.save({"model": OrderedDict(w=torch.ones(2, 3, dtype=torch.float16))}, path)
    assert read_state_dict(path)["w"].dtype == torch.float16


def test_argparse_namespace_becomes_a_dict(tmp_path):
    path = tmp_path / "args.pt"
    torch.save({"args": argparse.Namespace(arch="graphormer_base", layers=12), "model": {}}, path)
    assert read_checkpoint(path)["args"] == {"arch": "graphormer_base", "layers": 12}


def test_fairseq_style_class_becomes_plain_data_without_importing_it(tmp_path, monkeypatch):
    module = types.ModuleType("fairseq.dataclass.configs")

    class FairseqConfig:
        def __init__(self):
            self.lr = [0.1]
            self.nested = {"fp16": True}

    FairseqConfig.__module__ = module.__name__
    FairseqConfig.__qualname__ = "FairseqConfig"
    module.FairseqConfig = FairseqConfig
    monkeypatch.setitem(sys.modules, "fairseq", types.ModuleType("fairseq"))
    monkeypatch.setitem(sys.modules, "fairseq.dataclass", types.ModuleType("fairseq.dataclass"))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    path = tmp_path / "cfg.pt"
    torch.save({"cfg": FairseqConfig(), "model": {"w": torch.zeros(1)}}, path)
    for name in ("fairseq", "fairseq.dataclass", module.__name__):
        monkeypatch.delitem(sys.modules, name)
    assert read_checkpoint(path)["cfg"] == {"lr": [0.1], "nested": {"fp16": True}}
    assert "fairseq" not in sys.modules


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_refuses_code_execution_in_zip_checkpoint(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": _Exploit(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"(posix|os)\.system"):
        read_checkpoint(path)
    assert not marker.exists()


def test_refuses_code_execution_in_plain_pickle(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(UnsafeCheckpointError, match="system"):
        read_checkpoint(path)
    assert not marker.exists()


def test_refuses_builtin_eval(tmp_path):
    class Eval:
        def __reduce__(self):
            return (eval, ("1+1",))

    path = tmp_path / "eval.pt"
    torch.save({"x": Eval()}, path)
    with pytest.raises(UnsafeCheckpointError, match="builtins.eval"):
        read_checkpoint(path)


def test_truncated_checkpoint_gets_a_clear_error(tmp_path):
    path = tmp_path / "full.pt"
    torch.save({"model": {"w": torch.randn(64, 64)}}, path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert not zipfile.is_zipfile(truncated)
    with pytest.raises(CheckpointReadError, match="truncated"):
        read_checkpoint(truncated)


@pytest.mark.parametrize("content", [b"", b"hello, this is not a checkpoint\n"], ids=["empty", "text"])
def test_non_checkpoint_files_get_a_clear_error(tmp_path, content):
    path = tmp_path / "notes.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointReadError, match="notes.pt"):
        read_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointReadError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "absent.pt")


def test_read_state_dict_names_the_missing_key(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointReadError, match="no 'ema' entry"):
        read_state_dict(path, key="ema")
