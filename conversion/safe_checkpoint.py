"""The one restricted reader for original `torch.save` checkpoints.

Original releases are pickles: loading them with plain `torch.load` would run whatever code they name.
This reader lets tensors, storages, numpy arrays and plain containers through, turns the configuration
objects research code pickles (argparse.Namespace, omegaconf DictConfig/ListConfig, fairseq classes)
into plain dicts, lists and values, and refuses every other global with an error naming it.

    from conversion.safe_checkpoint import read_checkpoint
    ckpt = read_checkpoint("checkpoint_best.pt")
    state_dict, args = ckpt["model"], ckpt["args"]
"""

from __future__ import annotations

import codecs
import collections
import copyreg
import enum
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointReadError", "UnsafeCheckpointError", "read_checkpoint", "read_state_dict"]


class CheckpointReadError(ValueError):
    """The file is missing, truncated or not a torch checkpoint."""


class UnsafeCheckpointError(CheckpointReadError):
    """The pickle names a global the reader does not allow."""


# Module prefixes whose classes only ever carry configuration in research checkpoints. Their objects are
# rebuilt as inert placeholders and then flattened into plain data; none of their code is imported.
CONFIG_NAMESPACES = ("argparse", "typing", "omegaconf", "fairseq", "fairseq_cli", "yacs", "easydict", "musicbert", "pathlib")

_SAFE_BUILTINS = {
    "dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset, "int": int,
    "float": float, "complex": complex, "str": str, "bytes": bytes, "bytearray": bytearray,
    "bool": bool, "slice": slice, "range": range, "object": object, "NoneType": type(None),
}
# Names a protocol-2 pickle written by Python 3 uses for builtins (pickle's fix_imports mapping).
_PY2_BUILTINS = {"long": int, "unicode": str, "xrange": range, "basestring": str}


def _safe_reconstructor(cls, base, state):
    if base is not object and base not in _SAFE_BUILTINS.values():
        raise UnsafeCheckpointError(f"copyreg._reconstructor with base class {base!r} is not allowed")
    if isinstance(cls, type) and issubclass(cls, _Placeholder):
        return cls.__new__(cls)
    return copyreg._reconstructor(cls, base, state)


def _torch_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "defaultdict"): collections.defaultdict,
        ("_codecs", "encode"): codecs.encode,
        ("copyreg", "_reconstructor"): _safe_reconstructor,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
        ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
        ("torch._tensor", "_rebuild_from_type_v2"): torch._tensor._rebuild_from_type_v2,
        ("torch.storage", "UntypedStorage"): torch.storage.UntypedStorage,
        ("torch", "Tensor"): torch.Tensor,
    }
    for name in dir(torch):
        value = getattr(torch, name, None)
        if isinstance(value, torch.dtype):
            allowed[("torch", name)] = value
    try:
        import numpy as np

        for core in ("numpy.core.multiarray", "numpy._core.multiarray"):
            allowed[(core, "_reconstruct")] = _numpy_reconstruct
            allowed[(core, "scalar")] = _numpy_scalar
        allowed[("numpy", "ndarray")] = np.ndarray
        allowed[("numpy", "dtype")] = np.dtype
        for name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool_"):
            allowed[("numpy", name)] = getattr(np, name)
        allowed[("numpy.dtypes", "Float32DType")] = type(np.dtype("float32"))
        allowed[("numpy.dtypes", "Float64DType")] = type(np.dtype("float64"))
        allowed[("numpy.dtypes", "Int64DType")] = type(np.dtype("int64"))
    except ImportError:  # numpy is optional for the reader; checkpoints holding arrays then fail clearly
        pass
    return allowed


def _numpy_reconstruct(subtype, shape, dtype):
    import numpy as np

    if subtype is not np.ndarray:
        raise UnsafeCheckpointError(f"numpy array subclass {subtype!r} is not allowed")
    return np.ndarray.__new__(subtype, shape, dtype)


def _numpy_scalar(dtype, data=None):
    import numpy as np

    return np.frombuffer(data, dtype=dtype, count=1)[0] if data is not None else dtype.type()


class _Placeholder:
    """Inert stand-in for a configuration class: records constructor arguments and pickled state."""

    _zoo_qualname = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj._zoo_args = args
        obj._zoo_state = None
        obj._zoo_items = {}
        return obj

    def __init__(self, *args, **kwargs):
        self._zoo_args = args

    def __setstate__(self, state):
        self._zoo_state = state

    def __setitem__(self, key, value):  # dict subclasses (yacs CfgNode, easydict) pickle their items
        self._zoo_items[key] = value

    def append(self, value):  # list subclasses
        self._zoo_items[len(self._zoo_items)] = value

    def extend(self, values):
        for value in values:
            self.append(value)

    def __repr__(self):
        return f"<{self._zoo_qualname} placeholder>"


class _PlaceholderFactory:
    def __init__(self):
        self._classes: dict[tuple[str, str], type] = {}

    def get(self, module: str, name: str) -> type:
        key = (module, name)
        if key not in self._classes:
            self._classes[key] = type(name, (_Placeholder,), {"_zoo_qualname": f"{module}.{name}"})
        return self._classes[key]


_ALLOWED = _torch_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._placeholders = _PlaceholderFactory()

    def find_class(self, module: str, name: str) -> Any:
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[name]
        if module == "__builtin__" and name in _PY2_BUILTINS:
            return _PY2_BUILTINS[name]
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module.split(".")[0] in CONFIG_NAMESPACES:
            return self._placeholders.get(module, name)
        module = "builtins" if module == "__builtin__" else module  # name it as Python 3 does
        raise UnsafeCheckpointError(
            f"the checkpoint names the global '{module}.{name}', which the safe reader does not allow "
            "(only tensors, plain containers and configuration objects are read)"
        )


class _RestrictedPickleModule:
    """What `torch.load(pickle_module=...)` needs: an Unpickler class and a load function."""

    Unpickler = _RestrictedUnpickler
    __name__ = "zoo_restricted_pickle"

    @staticmethod
    def load(file, **kwargs):
        return _RestrictedUnpickler(file, **kwargs).load()


def _to_plain(obj: Any, memo: dict[int, Any] | None = None) -> Any:
    """Flatten placeholders (and the omegaconf node tree inside them) into plain Python data."""
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, torch.Tensor) or obj is None or isinstance(obj, (str, bytes, int, float, bool)):
        return obj
    if isinstance(obj, _Placeholder):
        result = _placeholder_to_plain(obj, memo)
    elif isinstance(obj, dict):
        result = type(obj)() if type(obj) in (dict, collections.OrderedDict) else {}
        memo[id(obj)] = result
        for key, value in obj.items():
            result[_to_plain(key, memo)] = _to_plain(value, memo)
        return result
    elif isinstance(obj, (list, tuple)):
        items = [_to_plain(value, memo) for value in obj]
        result = items if isinstance(obj, list) else tuple(items)
    elif isinstance(obj, enum.Enum):
        result = obj.value
    else:
        result = obj
    memo[id(obj)] = result
    return result


def _placeholder_to_plain(obj: _Placeholder, memo: dict[int, Any]) -> Any:
    qualname = obj._zoo_qualname
    state = obj._zoo_state
    if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
        state = {**(state[0] or {}), **(state[1] or {})}  # (dict state, slot state)
    if qualname.startswith("omegaconf."):
        if isinstance(state, dict) and "_content" in state:
            return _to_plain(state["_content"], memo)
        if isinstance(state, dict) and "_val" in state:
            return _to_plain(state["_val"], memo)
    if qualname.startswith("pathlib."):
        return str(Path(*obj._zoo_args)) if obj._zoo_args else ""
    if obj._zoo_items:
        items = {**obj._zoo_items, **(state if isinstance(state, dict) else {})}
        return {key: _to_plain(value, memo) for key, value in items.items()}
    if isinstance(state, dict):
        plain: dict[str, Any] = {}
        memo[id(obj)] = plain
        plain.update({key: _to_plain(value, memo) for key, value in state.items()})
        return plain
    if state is not None:
        return _to_plain(state, memo)
    if len(obj._zoo_args) == 1:  # enum members and single-value wrappers
        return _to_plain(obj._zoo_args[0], memo)
    return [_to_plain(arg, memo) for arg in obj._zoo_args]


def read_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> Any:
    """Read an original checkpoint without executing any code from it.

    Tensors keep their dtype (float16 releases stay float16). Configuration objects come back as plain
    dicts. Raises `UnsafeCheckpointError` for any other global and `CheckpointReadError` for missing,
    truncated or non-checkpoint files.

        ckpt = read_checkpoint("checkpoint_last_musicbert_base.pt")
        ckpt["cfg"]["model"]["arch"]
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointReadError(f"{path}: no such checkpoint file")
    with path.open("rb") as handle:
        head = handle.read(4)
    if not head:
        raise CheckpointReadError(f"{path}: the file is empty")
    if head.startswith(b"PK") and not zipfile.is_zipfile(path):
        raise CheckpointReadError(f"{path}: truncated or corrupt zip archive (torch.save format); re-download it")
    try:
        data = torch.load(path, map_location=map_location, pickle_module=_RestrictedPickleModule, weights_only=False)
    except UnsafeCheckpointError as err:
        raise UnsafeCheckpointError(f"{path}: {err}") from None
    except (EOFError, pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, ValueError, KeyError, OSError) as err:
        raise CheckpointReadError(
            f"{path}: not a readable torch checkpoint (truncated or a different format): {type(err).__name__}: {err}"
        ) from None
    return _to_plain(data)


def read_state_dict(path: str | os.PathLike, *, key: str | None = None) -> dict[str, torch.Tensor]:
    """Read a checkpoint and return its tensor dict: `key` if given, else "model", "state_dict" or the top level.

        weights = read_state_dict("weights-3000000.pt", key="model")
    """
    data = read_checkpoint(path)
    candidates = [key] if key else ["model", "state_dict", "model_state_dict", "net"]
    if isinstance(data, dict):
        for name in candidates:
            if name in data and isinstance(data[name], dict):
                data = data[name]
                break
        else:
            if key:
                raise CheckpointReadError(f"{path}: no '{key}' entry; top-level keys are {sorted(map(str, data))}")
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointReadError(f"{path}: expected a dict of tensors, found {type(data).__name__}")
    return dict(data)




