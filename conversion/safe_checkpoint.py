"""The one restricted reader for original `torch.save` checkpoints.

Original releases are pickles: loading them with plain `torch.load` would run whatever code they name.
This reader never hands a pickle to Python's unpickler. It runs the pickle program on its own small
machine that knows a short list of globals (tensor and storage rebuilders, numpy arrays of plain dtypes,
plain containers), turns the configuration objects research code pickles (argparse.Namespace, omegaconf
DictConfig/ListConfig, fairseq classes) into plain dicts, lists and values, and refuses everything else
with an error naming the file.

    from conversion.safe_checkpoint import read_checkpoint
    ckpt = read_checkpoint("checkpoint_best.pt")
    state_dict, args = ckpt["model"], ckpt["args"]

What it promises (SECURITY.md, "The checkpoint reader"): no code named by the file runs; nothing outside
the objects it creates is changed (no BUILD, SETITEM or APPEND on a global); every tensor is a checked
view of bytes present in the file; dtypes come only from a whitelist of plain dtype names; every failure
is a `CheckpointReadError` naming the file. Memory is bounded by the limits below, not promised smaller.
"""

from __future__ import annotations

import codecs
import collections
import enum
import math
import mmap
import os
import re
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointReadError", "UnsafeCheckpointError", "read_checkpoint", "read_state_dict"]


class CheckpointReadError(ValueError):
    """The file is missing, truncated, malformed or not a torch checkpoint."""


class UnsafeCheckpointError(CheckpointReadError):
    """The pickle names a global the reader does not allow."""


class _Malformed(Exception):
    """Raised inside the reader; `read_checkpoint` turns it into a CheckpointReadError naming the file."""


class _Refused(_Malformed):
    """A global outside the allow-list; becomes an UnsafeCheckpointError."""


# Bounds on what a file may make the reader allocate before its data is checked against them.
MAX_PICKLE_BYTES = 1 << 30  # the pickle program (data.pkl, or a legacy file's pickles); tensor bytes are apart
MAX_PICKLE_OPS = 20_000_000  # opcodes run per pickle; each creates at most one Python object
MAX_NESTING = 100  # containers inside containers, for the plain data handed back
MAX_TENSOR_DIMS = 64
MAX_LINE = 1 << 16  # protocol-0 lines holding a number, a name or a key
MAX_INT_BYTES = 1 << 12  # LONG1/LONG4 integers
COPY_FACTOR = 16  # containers, bytes and arrays built from other objects: at most this many times the pickle's size
COPY_ALLOWANCE = 64 << 20  # ... plus this many bytes
MAX_SAME_HASH = 64  # keys of one dict or set sharing a hash (int and tuple hashes can be made to collide)

# Module prefixes whose classes only ever carry configuration in research checkpoints. Their objects are
# rebuilt as inert placeholders and then flattened into plain data; none of their code is imported.
CONFIG_NAMESPACES = ("argparse", "typing", "omegaconf", "fairseq", "fairseq_cli", "yacs", "easydict", "musicbert", "pathlib")

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch's legacy (non-zip) serialization
LEGACY_PROTOCOL_VERSION = 1001

_TORCH_DTYPES = {
    name: getattr(torch, name)
    for name in (
        "float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "bool",
        "complex64", "complex128", "half", "float", "double", "short", "int", "long", "cfloat", "cdouble",
        "uint16", "uint32", "uint64",
    )
    if hasattr(torch, name)
}
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128,
}
# numpy dtypes are rebuilt from these names only: no records, objects, strings, voids or datetimes.
_NUMPY_CODES = {
    "b1": "b1", "bool": "b1", "i1": "i1", "int8": "i1", "i2": "i2", "int16": "i2", "i4": "i4", "int32": "i4",
    "i8": "i8", "int64": "i8", "u1": "u1", "uint8": "u1", "u2": "u2", "uint16": "u2", "u4": "u4", "uint32": "u4",
    "u8": "u8", "uint64": "u8", "f2": "f2", "float16": "f2", "f4": "f4", "float32": "f4", "f8": "f8",
    "float64": "f8", "c8": "c8", "complex64": "c8", "c16": "c16", "complex128": "c16",
}
_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMPY_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")
_LATIN1 = ("latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1")
_STORAGE_KEY = re.compile(r"[A-Za-z0-9_.]{1,64}")


# ---------------------------------------------------------------------------------------------------------
# Values the machine creates that stand for something it will not build directly


class _Global:
    """A name the pickle may refer to. Never the real object: BUILD or SETITEM on it is refused.

    `call(machine, args)` is the validated constructor (None: the name may only be passed around as a value);
    `value` is what a bare reference turns into in the plain data handed back.
    """

    __slots__ = ("qualname", "call", "value", "kind", "dtype")

    def __init__(self, qualname: str, call: Callable | None = None, value: Any = None, kind: str = "", dtype=None):
        self.qualname, self.call, self.value, self.kind, self.dtype = qualname, call, value, kind, dtype


class _Placeholder:
    """Inert stand-in for a configuration object: constructor arguments, pickled state and items."""

    __slots__ = ("qualname", "args", "kwargs", "state", "items")

    def __init__(self, qualname: str, args: tuple, kwargs: dict | None = None):
        self.qualname, self.args, self.kwargs, self.state, self.items = qualname, args, kwargs or {}, None, {}

    def __repr__(self):
        return f"<{self.qualname} placeholder>"


class _PendingDtype:
    """numpy.dtype(name, align, copy) before its BUILD state (byte order) arrives; checked, never a real BUILD."""

    __slots__ = ("code", "byteorder")

    def __init__(self, code: str):
        self.code, self.byteorder = code, "="

    def resolve(self):
        import numpy as np

        dtype = np.dtype(self.code)
        return dtype.newbyteorder(self.byteorder) if self.byteorder in "<>" and dtype.itemsize > 1 else dtype


class _PendingArray:
    """numpy's _reconstruct(ndarray, ...) before BUILD supplies shape, dtype and bytes."""

    __slots__ = ("array",)

    def __init__(self):
        self.array = None


class _Storage:
    """A checked, flat tensor over bytes that are in the file (or, for the legacy format, will be read)."""

    __slots__ = ("key", "dtype", "flat", "views")

    def __init__(self, key: str, dtype: torch.dtype, flat: torch.Tensor):
        self.key, self.dtype, self.flat = key, dtype, flat
        self.views: dict[torch.dtype, torch.Tensor] = {dtype: flat}

    def typed(self, dtype: torch.dtype) -> torch.Tensor:
        if dtype not in self.views:
            self.views[dtype] = self._reinterpret(dtype)
        return self.views[dtype]

    def _reinterpret(self, dtype: torch.dtype) -> torch.Tensor:
        nbytes = self.flat.numel() * self.flat.element_size()
        size = _element_size(dtype)
        if nbytes % size or (self.flat.storage_offset() * self.flat.element_size()) % size:
            raise _Malformed(f"storage '{self.key}' ({nbytes} bytes of {self.dtype}) cannot be read as {dtype}")
        raw = self.flat.view(torch.uint8)
        if dtype == torch.bool:
            _need(not raw.numel() or int(raw.max()) <= 1, f"storage '{self.key}' read as bool holds bytes other than 0 and 1")
        return raw.view(dtype)


def _element_size(dtype: torch.dtype) -> int:
    return dtype.itemsize


def _describe(value: Any) -> str:
    if isinstance(value, _Global):
        return f"the global '{value.qualname}'"
    if isinstance(value, _Placeholder):
        return f"a {value.qualname} object"
    return f"a {type(value).__name__}"


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise _Malformed(message)


def _as_int(value: Any, what: str, low: int = 0, high: int = 1 << 62) -> int:
    _need(type(value) is int, f"{what} must be an integer, got {_describe(value)}")
    _need(low <= value <= high, f"{what} must be in [{low}, {high}], got {value}")
    return value


def _as_shape(value: Any, what: str) -> tuple[int, ...]:
    _need(isinstance(value, (tuple, list, torch.Size)), f"{what} must be a tuple of integers, got {_describe(value)}")
    _need(len(value) <= MAX_TENSOR_DIMS, f"{what} has {len(value)} dimensions (at most {MAX_TENSOR_DIMS})")
    return tuple(_as_int(v, what) for v in value)


def _as_str(value: Any, what: str, limit: int = 256) -> str:
    _need(isinstance(value, str) and len(value) <= limit, f"{what} must be a short string, got {_describe(value)}")
    return value


def _empty_mapping(value: Any, what: str) -> None:
    _need(value is None or (type(value) in (dict, collections.OrderedDict) and not value),
          f"{what} must be empty (the reader restores no hooks, metadata or Python attributes on tensors)")


# ---------------------------------------------------------------------------------------------------------
# The allowed globals: each constructor checks its arguments before anything is allocated


def _call_builtin(kind: str) -> Callable:
    def build(machine: _Machine, args: tuple) -> Any:
        if kind in ("dict", "list", "tuple", "set", "frozenset"):
            _need(len(args) <= 1, f"{kind}() takes at most one argument")
            if not args:
                return machine.track({"dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[kind]())
            source = args[0]
            _need(type(source) in (list, tuple, set, frozenset, dict, collections.OrderedDict),
                  f"{kind}() of {_describe(source)} (only a list, tuple, set or dict is accepted)")
            machine.charge(16 * len(source), f"{kind}()")
            if kind == "dict":
                _need(type(source) is not set and type(source) is not frozenset, "dict() of a set")
                if isinstance(source, dict):
                    return dict(source)
                pairs = _pairs(source)
                _distinct_hashes(key for key, _ in pairs)
                return dict(pairs)
            if kind in ("set", "frozenset") and not isinstance(source, (set, frozenset)):
                _distinct_hashes(source)
            made = {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[kind](source)
            return machine.track(made)
        if kind in ("int", "float", "bool"):
            _need(len(args) <= 1 and all(type(a) in (int, float, bool, str) for a in args), f"{kind}() takes one number or string")
            if args and isinstance(args[0], str):
                _need(len(args[0]) <= MAX_LINE, f"{kind}() of a {len(args[0])}-character string")
            return {"int": int, "float": float, "bool": bool}[kind](*args)
        if kind == "complex":
            _need(len(args) <= 2 and all(type(a) in (int, float) for a in args), "complex() takes two numbers")
            return complex(*args)
        if kind == "str":
            _need(len(args) <= 1 and all(type(a) in (str, int, float, bool) for a in args), "str() takes one string or number")
            return str(*args)
        if kind in ("bytes", "bytearray"):
            maker = bytes if kind == "bytes" else bytearray
            if not args:
                return maker()
            if len(args) == 1:
                _need(type(args[0]) in (bytes, bytearray), f"{kind}() of {_describe(args[0])} (a size or an iterable is refused)")
                machine.charge(len(args[0]), f"{kind}()")
                return maker(args[0])
            _need(len(args) == 2 and isinstance(args[0], str) and args[1] in _LATIN1 + ("utf-8", "utf8", "ascii"),
                  f"{kind}(text, encoding) with an encoding outside latin-1/utf-8/ascii")
            machine.charge(4 * len(args[0]), f"{kind}()")
            return maker(args[0], args[1])
        if kind == "slice":
            _need(len(args) <= 3 and all(a is None or type(a) is int for a in args), "slice() takes integers or None")
            return slice(*args)
        if kind == "range":
            _need(1 <= len(args) <= 3 and all(type(a) is int for a in args), "range() takes one to three integers")
            return range(*args)
        if kind == "object":
            _need(not args, "object() takes no arguments")
            return object()
        if kind == "NoneType":
            _need(not args, "NoneType() takes no arguments")
            return None
        raise _Malformed(f"builtins.{kind} may not be called")

    return build


def _flooding(count: int) -> _Malformed:
    return _Malformed(f"more than {MAX_SAME_HASH} keys of one dict or set share a hash value ({count} seen; "
                      "a hash-flooding pattern that would make reading take quadratic time)")


def _distinct_hashes(keys) -> None:
    counts: dict[int, int] = {}
    for key in keys:
        if type(key) is not str:
            h = hash(key)
            counts[h] = counts.get(h, 0) + 1
            if counts[h] > MAX_SAME_HASH:
                raise _flooding(counts[h])


def _pairs(items) -> list:
    pairs = []
    for item in items:
        _need(isinstance(item, (tuple, list)) and len(item) == 2, "a dict must be built from (key, value) pairs")
        pairs.append((item[0], item[1]))
    return pairs


def _codecs_encode(machine: _Machine, args: tuple) -> bytes:
    _need(len(args) in (1, 2) and isinstance(args[0], str), "_codecs.encode takes a string and an encoding")
    encoding = args[1] if len(args) == 2 else "utf-8"
    _need(isinstance(encoding, str) and encoding.lower() in _LATIN1 + ("utf-8", "utf8", "ascii"),
          f"_codecs.encode with the codec {encoding!r:.40} (only latin-1, utf-8 and ascii are read)")
    machine.charge(4 * len(args[0]), "_codecs.encode")
    return args[0].encode(encoding.lower())


def _copyreg_reconstructor(machine: _Machine, args: tuple) -> _Placeholder:
    # protocol 0/1 pickles of plain objects: copyreg._reconstructor(cls, base, state)
    _need(len(args) == 3, "copyreg._reconstructor takes (class, base, state)")
    cls, base, state = args
    _need(isinstance(cls, _Global) and cls.kind == "placeholder",
          f"copyreg._reconstructor of {_describe(cls)} (only configuration classes are rebuilt this way)")
    _need(isinstance(base, _Global) and base.kind == "builtin-type" and base.value in (object, dict, list),
          f"copyreg._reconstructor with the base {_describe(base)}")
    placeholder = cls.call(machine, ())
    if base.value is object:
        _need(state is None, "copyreg._reconstructor of an object with a base state")
    elif state is not None:
        _need(type(state) is type(base.value()), f"copyreg._reconstructor base state is {_describe(state)}")
        machine.charge(16 * len(state), "copyreg._reconstructor")
        placeholder.items.update(state if isinstance(state, dict) else enumerate(state))
    return placeholder


def _ordered_dict(machine: _Machine, args: tuple) -> collections.OrderedDict:
    _need(len(args) <= 1, "OrderedDict() takes at most one argument")
    if not args:
        return collections.OrderedDict()
    source = args[0]
    _need(type(source) in (list, tuple, dict, collections.OrderedDict), f"OrderedDict() of {_describe(source)}")
    machine.charge(16 * len(source), "OrderedDict()")
    if isinstance(source, dict):
        return collections.OrderedDict(source)
    pairs = _pairs(source)
    _distinct_hashes(key for key, _ in pairs)
    return collections.OrderedDict(pairs)


def _default_dict(machine: _Machine, args: tuple) -> dict:
    _need(len(args) <= 1, "defaultdict() takes at most one argument")
    factory = args[0] if args else None
    _need(factory is None or (isinstance(factory, _Global) and factory.kind == "builtin-type"),
          f"defaultdict with the factory {_describe(factory)} (only None or a builtin container type)")
    return {}  # handed back as a plain dict: the factory would never be called by a reader of plain data


def _torch_size(machine: _Machine, args: tuple) -> torch.Size:
    _need(len(args) <= 1, "torch.Size takes one tuple")
    return torch.Size(_as_shape(args[0], "torch.Size") if args else ())


def _torch_device(machine: _Machine, args: tuple) -> torch.device:
    _need(1 <= len(args) <= 2, "torch.device takes a type and an optional index")
    name = _as_str(args[0], "device", 32)
    if len(args) == 2:
        return torch.device(name, _as_int(args[1], "device index", 0, 1 << 16))
    return torch.device(name)


def _tensor(machine: _Machine, storage: Any, offset: Any, size: Any, stride: Any, dtype: torch.dtype | None) -> torch.Tensor:
    _need(isinstance(storage, _Storage), f"a tensor over {_describe(storage)} (expected a storage from the file)")
    offset = _as_int(offset, "tensor storage offset")
    size = _as_shape(size, "tensor size")
    stride = _as_shape(stride, "tensor stride")
    _need(len(size) == len(stride), f"tensor size {size} and stride {stride} differ in length")
    flat = storage.typed(dtype or storage.dtype)
    available = flat.numel()
    numel = math.prod(size)
    if numel == 0:
        _need(offset <= available, f"tensor storage offset {offset} is past the end of storage '{storage.key}' ({available} elements)")
        return torch.empty(size, dtype=flat.dtype)
    _need(numel <= available, f"a tensor of {numel} elements over storage '{storage.key}' that holds {available} "
          "(expanded or overlapping views are refused)")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    _need(last < available, f"a tensor view (offset {offset}, size {size}, stride {stride}) reaches element {last} "
          f"of storage '{storage.key}' that holds {available}")
    return flat.as_strided(size, stride, flat.storage_offset() + offset)


def _requires_grad(tensor: torch.Tensor, flag: Any) -> torch.Tensor:
    _need(type(flag) is bool, f"requires_grad must be True or False, got {_describe(flag)}")
    if flag:
        _need(tensor.is_floating_point() or tensor.is_complex(), f"requires_grad on a {tensor.dtype} tensor")
        tensor.requires_grad_(True)
    return tensor


def _rebuild_tensor(machine: _Machine, args: tuple) -> torch.Tensor:
    _need(len(args) == 4, "_rebuild_tensor takes (storage, offset, size, stride)")
    return _tensor(machine, *args, dtype=None)


def _rebuild_tensor_v2(machine: _Machine, args: tuple) -> torch.Tensor:
    _need(len(args) in (6, 7), "_rebuild_tensor_v2 takes (storage, offset, size, stride, requires_grad, hooks[, metadata])")
    tensor = _tensor(machine, *args[:4], dtype=None)
    _empty_mapping(args[5], "backward hooks")
    if len(args) == 7:
        _empty_mapping(args[6], "tensor metadata")
    return _requires_grad(tensor, args[4])


def _rebuild_tensor_v3(machine: _Machine, args: tuple) -> torch.Tensor:
    _need(len(args) in (7, 8), "_rebuild_tensor_v3 takes (storage, offset, size, stride, requires_grad, hooks, dtype[, metadata])")
    dtype = args[6]
    _need(isinstance(dtype, _Global) and dtype.kind == "torch-dtype", f"_rebuild_tensor_v3 with the dtype {_describe(dtype)}")
    tensor = _tensor(machine, *args[:4], dtype=dtype.value)
    _empty_mapping(args[5], "backward hooks")
    if len(args) == 8:
        _empty_mapping(args[7], "tensor metadata")
    return _requires_grad(tensor, args[4])


def _parameter(data: Any, requires_grad: Any) -> torch.nn.Parameter:
    _need(isinstance(data, torch.Tensor), f"a Parameter of {_describe(data)}")
    _need(type(requires_grad) is bool, "Parameter requires_grad must be True or False")
    _need(not requires_grad or data.is_floating_point() or data.is_complex(), f"requires_grad on a {data.dtype} Parameter")
    return torch.nn.Parameter(data.detach(), requires_grad)


def _rebuild_parameter(machine: _Machine, args: tuple) -> torch.nn.Parameter:
    _need(len(args) == 3, "_rebuild_parameter takes (data, requires_grad, hooks)")
    _empty_mapping(args[2], "Parameter backward hooks")
    return _parameter(args[0], args[1])


def _empty_state(state: Any, what: str) -> None:
    if isinstance(state, tuple) and len(state) == 2:
        for part in state:
            _empty_mapping(part, what)
    else:
        _empty_mapping(state, what)


def _rebuild_parameter_with_state(machine: _Machine, args: tuple) -> torch.nn.Parameter:
    _need(len(args) == 4, "_rebuild_parameter_with_state takes (data, requires_grad, hooks, state)")
    _empty_mapping(args[2], "Parameter backward hooks")
    _empty_state(args[3], "Parameter state")
    return _parameter(args[0], args[1])


def _rebuild_from_type_v2(machine: _Machine, args: tuple) -> torch.Tensor:
    _need(len(args) == 4, "_rebuild_from_type_v2 takes (function, type, args, state)")
    func, new_type, inner, state = args
    _need(isinstance(func, _Global) and func.kind == "tensor-rebuild", f"_rebuild_from_type_v2 calling {_describe(func)}")
    _need(isinstance(new_type, _Global) and new_type.kind == "tensor-type", f"_rebuild_from_type_v2 to {_describe(new_type)}")
    _need(isinstance(inner, tuple), "_rebuild_from_type_v2 arguments must be a tuple")
    _empty_state(state, "tensor state")
    tensor = func.call(machine, inner)
    return _parameter(tensor, tensor.requires_grad) if new_type.value is torch.nn.Parameter else tensor


def _numpy_dtype_code(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("latin-1")
    _need(isinstance(value, str) and value in _NUMPY_CODES, f"numpy dtype {value!r:.40} (only plain numeric dtypes are read)"
          if isinstance(value, str) else f"numpy dtype from {_describe(value)}")
    return _NUMPY_CODES[value]


def _numpy_dtype(machine: _Machine, args: tuple) -> _PendingDtype:
    _need(1 <= len(args) <= 3, "numpy.dtype takes (name, align, copy)")
    _need(all(type(a) is bool for a in args[1:]), "numpy.dtype align/copy must be True or False")
    _need(len(args) < 2 or args[1] is False, "aligned numpy dtypes are not read")
    return _PendingDtype(_numpy_dtype_code(args[0]))


def _build_numpy_dtype(dtype: _PendingDtype, state: Any) -> None:
    # numpy's dtype state: (version, byte order, subarray, names, fields, elsize, alignment, flags[, metadata]).
    # Only the byte order is taken; everything that could describe a structured or object dtype must be absent.
    _need(isinstance(state, tuple) and len(state) in (8, 9), "numpy dtype state is not a plain dtype's")
    version, order, subarray, names, fields, elsize, alignment, flags = state[:8]
    _need(version in (3, 4) and order in ("<", ">", "|", "=") and subarray is None and names is None and fields is None
          and elsize == -1 and alignment == -1 and flags == 0 and (len(state) == 8 or state[8] is None),
          f"numpy dtype state for '{dtype.code}' declares fields, sizes, flags or metadata (only plain dtypes are read)")
    dtype.byteorder = order


def _final_numpy_dtype(value: Any):
    _need(isinstance(value, _PendingDtype), f"a numpy dtype given as {_describe(value)}")
    return value.resolve()


def _raw_bytes(value: Any, what: str) -> bytes:
    if isinstance(value, str):  # a Python 2 str that happened to decode as UTF-8: its original bytes
        return value.encode("utf-8")
    _need(isinstance(value, (bytes, bytearray)), f"{what} must be bytes, got {_describe(value)}")
    return bytes(value)


def _numpy_array(machine: _Machine, shape: Any, dtype: Any, raw: Any, fortran: bool):
    import numpy as np

    shape = _as_shape(shape, "numpy array shape")
    dtype = _final_numpy_dtype(dtype)
    raw = _raw_bytes(raw, "numpy array data")
    machine.charge(2 * len(raw), "numpy array")
    expected = math.prod(shape) * dtype.itemsize
    _need(len(raw) == expected, f"numpy array of shape {shape} and dtype {dtype} needs {expected} bytes, the file holds {len(raw)}")
    _plain_bools(dtype, raw)
    flat = np.frombuffer(bytearray(raw), dtype=dtype) if raw else np.empty(0, dtype=dtype)
    return flat.reshape(shape, order="F" if fortran else "C")


def _plain_bools(dtype, raw: bytes) -> None:
    import numpy as np

    if dtype.kind == "b" and raw:
        _need(int(np.frombuffer(raw, dtype=np.uint8).max()) <= 1, "numpy bool data holds bytes other than 0 and 1")


def _numpy_reconstruct(machine: _Machine, args: tuple) -> _PendingArray:
    _need(len(args) == 3, "numpy _reconstruct takes (type, shape, code)")
    subtype, shape, _code = args
    _need(isinstance(subtype, _Global) and subtype.kind == "numpy-ndarray", f"numpy array of the type {_describe(subtype)}")
    _as_shape(shape, "numpy _reconstruct shape")
    return _PendingArray()


def _build_numpy_array(machine: _Machine, pending: _PendingArray, state: Any) -> None:
    _need(pending.array is None, "numpy array state given twice")
    _need(isinstance(state, tuple) and len(state) in (4, 5), "numpy array state must be (version, shape, dtype, fortran, data)")
    if len(state) == 5:
        _need(state[0] == 1, f"numpy array state version {state[0]!r:.20}")
        state = state[1:]
    shape, dtype, fortran, raw = state
    _need(type(fortran) is bool, "numpy array fortran flag must be True or False")
    pending.array = _numpy_array(machine, shape, dtype, raw, fortran)


def _numpy_frombuffer(machine: _Machine, args: tuple):
    _need(len(args) == 4, "numpy _frombuffer takes (buffer, dtype, shape, order)")
    buffer, dtype, shape, order = args
    _need(order in ("C", "F"), "numpy _frombuffer order must be 'C' or 'F'")
    return _numpy_array(machine, shape, dtype, buffer, order == "F")


def _numpy_scalar(machine: _Machine, args: tuple):
    import numpy as np

    _need(len(args) == 2, "numpy scalar takes (dtype, data)")
    dtype = _final_numpy_dtype(args[0])
    raw = _raw_bytes(args[1], "numpy scalar data")
    _need(len(raw) == dtype.itemsize, f"numpy {dtype} scalar needs {dtype.itemsize} bytes, the file holds {len(raw)}")
    _plain_bools(dtype, raw)
    return np.frombuffer(raw, dtype=dtype, count=1)[0]


def _allowed_globals() -> dict[tuple[str, str], _Global]:
    allowed: dict[tuple[str, str], _Global] = {}

    def add(module: str, name: str, call=None, value=None, kind: str = "", dtype=None):
        allowed[(module, name)] = _Global(f"{module}.{name}", call, value, kind, dtype)

    for name, value in [("dict", dict), ("list", list), ("tuple", tuple), ("set", set), ("frozenset", frozenset),
                        ("int", int), ("float", float), ("complex", complex), ("str", str), ("bytes", bytes),
                        ("bytearray", bytearray), ("bool", bool), ("slice", slice), ("range", range),
                        ("object", object), ("NoneType", type(None))]:
        add("builtins", name, _call_builtin(name), value, "builtin-type")
    for old, new in [("long", "int"), ("unicode", "str"), ("xrange", "range"), ("basestring", "str")]:
        add("builtins", old, _call_builtin(new), allowed[("builtins", new)].value, "builtin-type")
    add("collections", "OrderedDict", _ordered_dict, collections.OrderedDict, "builtin-type")
    add("collections", "defaultdict", _default_dict, collections.defaultdict, "builtin-type")
    add("_codecs", "encode", _codecs_encode)
    add("copyreg", "_reconstructor", _copyreg_reconstructor)
    add("torch", "Size", _torch_size, torch.Size)
    add("torch", "device", _torch_device, torch.device)
    add("torch", "Tensor", None, torch.Tensor, "tensor-type")
    add("torch.nn.parameter", "Parameter", None, torch.nn.Parameter, "tensor-type")
    add("torch._utils", "_rebuild_tensor", _rebuild_tensor, None, "tensor-rebuild")
    add("torch._utils", "_rebuild_tensor_v2", _rebuild_tensor_v2, None, "tensor-rebuild")
    add("torch._utils", "_rebuild_tensor_v3", _rebuild_tensor_v3, None, "tensor-rebuild")
    add("torch._utils", "_rebuild_parameter", _rebuild_parameter)
    add("torch._utils", "_rebuild_parameter_with_state", _rebuild_parameter_with_state)
    add("torch._tensor", "_rebuild_from_type_v2", _rebuild_from_type_v2)
    for name, dtype in _TORCH_DTYPES.items():
        add("torch", name, None, dtype, "torch-dtype")
    for name, dtype in _STORAGE_DTYPES.items():
        add("torch", name, None, None, "storage-type", dtype)
    for module in ("torch", "torch.storage"):
        add(module, "UntypedStorage", None, None, "storage-type", torch.uint8)
    for module in _NUMPY_MODULES:
        add(module, "_reconstruct", _numpy_reconstruct)
        add(module, "scalar", _numpy_scalar)
    for module in _NUMPY_NUMERIC:
        add(module, "_frombuffer", _numpy_frombuffer)
    add("numpy", "dtype", _numpy_dtype)
    try:
        import numpy as np

        add("numpy", "ndarray", None, np.ndarray, "numpy-ndarray")
        for name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool_"):
            add("numpy", name, None, getattr(np, name))
    except ImportError:  # numpy is optional: checkpoints holding arrays then fail with a clear error
        add("numpy", "ndarray", None, None, "numpy-ndarray")
    return allowed


_ALLOWED = _allowed_globals()
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}  # names protocol-0..2 pickles use


def _find_global(module: str, name: str) -> _Global:
    module = _PY2_MODULES.get(module, module)
    token = _ALLOWED.get((module, name))
    if token is not None:
        return token
    if module.split(".")[0] in CONFIG_NAMESPACES and all(part.isidentifier() for part in name.split(".")):
        qualname = f"{module}.{name}"
        return _Global(qualname, lambda machine, args, kwargs=None: _Placeholder(qualname, args, kwargs), qualname, "placeholder")
    raise _Refused(
        f"the checkpoint names the global '{module[:80]}.{name[:80]}', which the safe reader does not allow "
        "(only tensors, plain containers and configuration objects are read)"
    )


# ---------------------------------------------------------------------------------------------------------
# The pickle machine


class _Machine:
    """Runs one pickle program over `buf[pos:]`. Every object it touches after creation is one it created."""

    def __init__(self, buf, pos: int = 0, persistent_load: Callable[[Any], Any] | None = None):
        self.buf, self.pos, self.end = buf, pos, len(buf)
        self.persistent_load = persistent_load
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        self.depth: dict[int, int] = {}  # nesting of tuples and frozensets, the only hashable containers
        self.keep: list[Any] = []  # keeps those alive so their ids stay theirs
        self.result: Any = None
        self.same_hash: dict[tuple[int, int], int] = {}  # (container id, key hash) -> keys inserted
        self.copies_left = COPY_FACTOR * (self.end - pos) + COPY_ALLOWANCE

    def charge(self, nbytes: int, what: str) -> None:
        self.copies_left -= nbytes
        if self.copies_left < 0:
            raise _Malformed(f"{what}: the pickle builds more than {COPY_FACTOR} times its own size in copies "
                             "(containers, bytes and arrays made from other objects)")

    def admit(self, container: Any, key: Any) -> None:
        if type(key) is not str:
            slot = (id(container), hash(key))
            count = self.same_hash[slot] = self.same_hash.get(slot, 0) + 1
            if count > MAX_SAME_HASH:
                raise _flooding(count)

    # -- reading the program
    def take(self, n: int) -> bytes:
        pos = self.pos
        if not 0 <= n <= self.end - pos:
            raise _Malformed(f"truncated pickle: an opcode needs {n} bytes at byte {pos}, {self.end - pos} are left")
        self.pos = pos + n
        return bytes(self.buf[pos:pos + n])

    def byte(self) -> int:
        pos = self.pos
        if pos >= self.end:
            raise _Malformed(f"truncated pickle: an opcode needs 1 byte at byte {pos}, none is left")
        self.pos = pos + 1
        return self.buf[pos]

    def line(self, limit: int = MAX_LINE) -> bytes:
        stop = self.buf.find(b"\n", self.pos, min(self.end, self.pos + limit + 1))
        _need(stop >= 0, f"truncated or oversized protocol-0 line at byte {self.pos}")
        data = bytes(self.buf[self.pos:stop])
        self.pos = stop + 1
        return data

    def unpack(self, fmt: str) -> int:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    # -- stack helpers
    def pop(self) -> Any:
        _need(self.stack and (not self.marks or self.marks[-1] < len(self.stack)),
              f"malformed pickle: nothing to pop at byte {self.pos}")
        return self.stack.pop()

    def pop_mark(self) -> list:
        _need(self.marks, f"malformed pickle: no MARK before byte {self.pos}")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def track(self, obj: Any) -> Any:
        if isinstance(obj, (tuple, frozenset)):
            inner = max((self.depth.get(id(item), 0) for item in obj if isinstance(item, (tuple, frozenset))), default=0)
            _need(inner < MAX_NESTING, f"tuples nested more than {MAX_NESTING} deep")
            if inner:
                self.depth[id(obj)] = inner + 1
                self.keep.append(obj)
            elif obj:
                self.depth[id(obj)] = 1
                self.keep.append(obj)
        return obj

    def py2_string(self, data: bytes) -> Any:
        # torch reads Python 2 `str` as UTF-8 text; bytes that are not UTF-8 (numpy buffers) stay bytes
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data

    # -- calling, building, filling
    def call(self, func: Any, args: Any, kwargs: dict | None = None, how: str = "REDUCE") -> Any:
        _need(isinstance(func, _Global), f"{how} on {_describe(func)} (only allowed globals may be called)")
        _need(func.call is not None, f"{how}: '{func.qualname}' may not be called")
        _need(isinstance(args, tuple), f"{how} arguments must be a tuple, got {_describe(args)}")
        if func.kind == "placeholder":
            return func.call(self, args, kwargs)
        _need(not kwargs, f"{how}: keyword arguments for '{func.qualname}'")
        return func.call(self, args)

    def build(self, target: Any, state: Any) -> None:
        if isinstance(target, _Placeholder):
            target.state = state
        elif isinstance(target, _PendingArray):
            _build_numpy_array(self, target, state)
        elif isinstance(target, _PendingDtype):
            _build_numpy_dtype(target, state)
        elif type(target) is collections.OrderedDict:
            # a state_dict's `_metadata` (module versions): checked and dropped, the plain data has no use for it
            _need(state is None or type(state) is dict, "OrderedDict state must be a dict")
        else:
            raise _Malformed(f"BUILD on {_describe(target)} (the reader sets state only on configuration objects "
                             "and numpy arrays it created)")

    def setitem(self, target: Any, key: Any, value: Any) -> None:
        if isinstance(target, _Placeholder):
            self.admit(target, key)
            target.items[key] = value
        else:
            _need(type(target) in (dict, collections.OrderedDict), f"SETITEM on {_describe(target)} (only dicts the reader created)")
            self.admit(target, key)
            target[key] = value

    def append(self, target: Any, values: list) -> None:
        if isinstance(target, _Placeholder):
            for value in values:
                target.items[len(target.items)] = value
        else:
            _need(type(target) is list, f"APPEND on {_describe(target)} (only lists the reader created)")
            target.extend(values)

    # -- the program
    def run(self) -> Any:
        budget = MAX_PICKLE_OPS
        ops, buf, end = _OPS, self.buf, self.end
        while True:
            pos = self.pos
            if pos >= end:
                raise _Malformed("truncated pickle: no STOP opcode")
            handler = ops.get(buf[pos])
            self.pos = pos + 1
            if handler is None:
                raise _Malformed(f"unknown or unsupported pickle opcode 0x{buf[pos]:02x} at byte {pos}")
            budget -= 1
            if budget <= 0:
                raise _Malformed(f"the pickle runs more than {MAX_PICKLE_OPS} opcodes")
            if handler(self) is _STOP:
                return self.result


_STOP = object()
_OPS: dict[int, Callable[[_Machine], Any]] = {}


def _op(code: bytes):
    def register(function):
        _OPS[code[0]] = function
        return function

    return register


@_op(b"\x80")
def _proto(m):
    _need(m.byte() <= 5, "pickle protocol above 5")


@_op(b"\x95")
def _frame(m):
    _need(m.unpack("<Q") <= m.end - m.pos, "pickle frame longer than the data")


@_op(b".")
def _stop(m):
    m.result = m.pop()
    return _STOP


@_op(b"(")
def _mark(m):
    m.marks.append(len(m.stack))


@_op(b"0")
def _pop(m):
    if m.stack and (not m.marks or m.marks[-1] < len(m.stack)):
        m.stack.pop()
    else:
        m.pop_mark()


@_op(b"1")
def _pop_mark(m):
    m.pop_mark()


@_op(b"2")
def _dup(m):
    _need(m.stack, "DUP on an empty stack")
    m.stack.append(m.stack[-1])


@_op(b"N")
def _none(m):
    m.stack.append(None)


@_op(b"\x88")
def _true(m):
    m.stack.append(True)


@_op(b"\x89")
def _false(m):
    m.stack.append(False)


@_op(b"I")
def _int(m):
    text = m.line()
    m.stack.append({b"00": False, b"01": True}[text] if text in (b"00", b"01") else int(text))


@_op(b"L")
def _long(m):
    text = m.line()
    m.stack.append(int(text[:-1] if text.endswith(b"L") else text))


@_op(b"J")
def _binint(m):
    m.stack.append(m.unpack("<i"))


@_op(b"K")
def _binint1(m):
    m.stack.append(m.byte())


@_op(b"M")
def _binint2(m):
    m.stack.append(m.unpack("<H"))


@_op(b"\x8a")
def _long1(m):
    m.stack.append(int.from_bytes(m.take(m.byte()), "little", signed=True))


@_op(b"\x8b")
def _long4(m):
    n = m.unpack("<i")
    _need(0 <= n <= MAX_INT_BYTES, f"LONG4 integer of {n} bytes")
    m.stack.append(int.from_bytes(m.take(n), "little", signed=True))


@_op(b"F")
def _float(m):
    m.stack.append(float(m.line()))


@_op(b"G")
def _binfloat(m):
    m.stack.append(m.unpack(">d"))


@_op(b"S")
def _string(m):
    text = m.line(m.end - m.pos).rstrip(b"\r")
    _need(len(text) >= 2 and text[0] == text[-1] and text[:1] in (b"'", b'"'), "STRING opcode without quotes")
    m.stack.append(m.py2_string(codecs.escape_decode(text[1:-1])[0]))


@_op(b"T")
def _binstring(m):
    n = m.unpack("<i")
    _need(n >= 0, "negative BINSTRING length")
    m.stack.append(m.py2_string(m.take(n)))


@_op(b"U")
def _short_binstring(m):
    m.stack.append(m.py2_string(m.take(m.byte())))


@_op(b"V")
def _unicode(m):
    m.stack.append(m.line(m.end - m.pos).decode("raw-unicode-escape"))


def _text(m, n):
    m.stack.append(m.take(n).decode("utf-8", "surrogatepass"))


_OPS[b"X"[0]] = lambda m: _text(m, m.unpack("<I"))
_OPS[b"\x8c"[0]] = lambda m: _text(m, m.byte())
_OPS[b"\x8d"[0]] = lambda m: _text(m, m.unpack("<Q"))
_OPS[b"B"[0]] = lambda m: m.stack.append(m.take(m.unpack("<I")))
_OPS[b"C"[0]] = lambda m: m.stack.append(m.take(m.byte()))
_OPS[b"\x8e"[0]] = lambda m: m.stack.append(m.take(m.unpack("<Q")))
_OPS[b"\x96"[0]] = lambda m: m.stack.append(bytearray(m.take(m.unpack("<Q"))))


@_op(b"\x97")
def _next_buffer(m):
    raise _Malformed("out-of-band pickle buffers (NEXT_BUFFER) are not read")


@_op(b"\x98")
def _readonly_buffer(m):
    _need(m.stack and isinstance(m.stack[-1], (bytes, bytearray)), "READONLY_BUFFER on something that is not bytes")
    if type(m.stack[-1]) is bytearray:
        m.charge(len(m.stack[-1]), "READONLY_BUFFER")
        m.stack[-1] = bytes(m.stack[-1])


@_op(b")")
def _empty_tuple(m):
    m.stack.append(())


@_op(b"t")
def _tuple(m):
    m.stack.append(m.track(tuple(m.pop_mark())))


def _tuple_n(n):
    def handler(m):
        _need(len(m.stack) >= n and (not m.marks or m.marks[-1] <= len(m.stack) - n), f"TUPLE{n} with too few items")
        items = tuple(m.stack[-n:])
        del m.stack[-n:]
        m.stack.append(m.track(items))

    return handler


_OPS[0x85], _OPS[0x86], _OPS[0x87] = _tuple_n(1), _tuple_n(2), _tuple_n(3)


@_op(b"]")
def _empty_list(m):
    m.stack.append([])


@_op(b"l")
def _list(m):
    m.stack.append(m.pop_mark())


@_op(b"}")
def _empty_dict(m):
    m.stack.append({})


@_op(b"d")
def _dict(m):
    items = m.pop_mark()
    _need(len(items) % 2 == 0, "DICT with an odd number of items")
    _distinct_hashes(items[::2])
    m.stack.append(dict(zip(items[::2], items[1::2])))


@_op(b"\x8f")
def _empty_set(m):
    m.stack.append(set())


@_op(b"\x91")
def _frozenset(m):
    items = m.pop_mark()
    _distinct_hashes(items)
    m.stack.append(m.track(frozenset(items)))


@_op(b"\x90")
def _additems(m):
    items = m.pop_mark()
    _need(m.stack and type(m.stack[-1]) is set, "ADDITEMS on something that is not a set the reader created")
    for item in items:
        m.admit(m.stack[-1], item)
    m.stack[-1].update(items)


@_op(b"a")
def _append(m):
    value = m.pop()
    _need(m.stack, "APPEND without a list")
    m.append(m.stack[-1], [value])


@_op(b"e")
def _appends(m):
    items = m.pop_mark()
    _need(m.stack, "APPENDS without a list")
    m.append(m.stack[-1], items)


@_op(b"s")
def _setitem(m):
    value, key = m.pop(), m.pop()
    _need(m.stack, "SETITEM without a dict")
    m.setitem(m.stack[-1], key, value)


@_op(b"u")
def _setitems(m):
    items = m.pop_mark()
    _need(len(items) % 2 == 0 and m.stack, "SETITEMS with an odd number of items or without a dict")
    target = m.stack[-1]
    for i in range(0, len(items), 2):
        m.setitem(target, items[i], items[i + 1])


def _get(m, index):
    _need(index in m.memo, f"malformed pickle: memo entry {index} read before it was written")
    m.stack.append(m.memo[index])


def _put(m, index):
    _need(m.stack, "PUT on an empty stack")
    m.memo[index] = m.stack[-1]


def _line_index(m):
    index = int(m.line())
    _need(index >= 0, "negative memo index")
    return index


_OPS[b"g"[0]] = lambda m: _get(m, _line_index(m))
_OPS[b"h"[0]] = lambda m: _get(m, m.byte())
_OPS[b"j"[0]] = lambda m: _get(m, m.unpack("<I"))
_OPS[b"p"[0]] = lambda m: _put(m, _line_index(m))
_OPS[b"q"[0]] = lambda m: _put(m, m.byte())
_OPS[b"r"[0]] = lambda m: _put(m, m.unpack("<I"))
_OPS[b"\x94"[0]] = lambda m: _put(m, len(m.memo))


def _name(data: bytes) -> str:
    return data.decode("utf-8")


@_op(b"c")
def _global(m):
    module = _name(m.line(1024))
    m.stack.append(_find_global(module, _name(m.line(1024))))


@_op(b"\x93")
def _stack_global(m):
    name, module = m.pop(), m.pop()
    _need(isinstance(module, str) and isinstance(name, str) and len(module) <= 1024 and len(name) <= 1024,
          "STACK_GLOBAL needs a module and a name as strings")
    m.stack.append(_find_global(module, name))


def _extension(m):
    raise _Malformed("pickle extension codes (EXT1/2/4) are not read")


_OPS[0x82] = _OPS[0x83] = _OPS[0x84] = _extension


@_op(b"R")
def _reduce(m):
    args = m.pop()
    m.stack.append(m.call(m.pop(), args))


@_op(b"\x81")
def _newobj(m):
    args = m.pop()
    m.stack.append(_new_object(m, m.pop(), args, None, "NEWOBJ"))


@_op(b"\x92")
def _newobj_ex(m):
    kwargs, args = m.pop(), m.pop()
    _need(type(kwargs) is dict and all(isinstance(k, str) for k in kwargs), "NEWOBJ_EX keyword arguments must be a dict")
    m.stack.append(_new_object(m, m.pop(), args, kwargs, "NEWOBJ_EX"))


def _new_object(m, cls, args, kwargs, how):
    # cls.__new__(cls, *args): only configuration placeholders and the plain containers, which ignore args
    _need(isinstance(cls, _Global) and cls.kind in ("placeholder", "builtin-type"), f"{how} on {_describe(cls)}")
    _need(isinstance(args, tuple), f"{how} arguments must be a tuple")
    if cls.kind == "placeholder":
        return m.call(cls, args, kwargs, how)
    _need(not kwargs and cls.value in (dict, list, set, object, collections.OrderedDict), f"{how} on '{cls.qualname}'")
    return m.call(cls, (), None, how)


@_op(b"i")
def _inst(m):
    module = _name(m.line(1024))
    cls = _find_global(module, _name(m.line(1024)))
    m.stack.append(m.call(cls, tuple(m.pop_mark()), None, "INST"))


@_op(b"o")
def _obj(m):
    items = m.pop_mark()
    _need(items, "OBJ without a class")
    m.stack.append(m.call(items[0], tuple(items[1:]), None, "OBJ"))


@_op(b"b")
def _build(m):
    state = m.pop()
    _need(m.stack, "BUILD without an object")
    m.build(m.stack[-1], state)


@_op(b"P")
def _persid(m):
    _need(m.persistent_load is not None, "persistent id outside a torch checkpoint's main pickle")
    m.stack.append(m.persistent_load(m.line(1024).decode("ascii")))


@_op(b"Q")
def _binpersid(m):
    _need(m.persistent_load is not None, "persistent id outside a torch checkpoint's main pickle")
    m.stack.append(m.persistent_load(m.pop()))


# ---------------------------------------------------------------------------------------------------------
# The two torch.save container formats


def _swap_bytes(flat: torch.Tensor) -> None:
    size = flat.element_size() // (2 if flat.is_complex() else 1)
    if size > 1:
        raw = flat.view(torch.uint8).view(-1, size)
        raw.copy_(raw.flip(-1))


def _check_bools(storage: _Storage) -> None:
    """Every bool view of the storage (its own dtype, or a reinterpretation) holds only 0 and 1."""
    for dtype, view in storage.views.items():
        if dtype == torch.bool and view.numel():
            _need(int(view.view(torch.uint8).max()) <= 1, f"bool storage '{storage.key}' holds bytes other than 0 and 1")


def _storage_id(saved_id: Any, legacy: bool):
    _need(isinstance(saved_id, tuple) and len(saved_id) == (6 if legacy else 5) and saved_id[0] == "storage",
          f"persistent id {_describe(saved_id)} is not a torch storage reference")
    _, stype, key, location, numel = saved_id[:5]
    _need(isinstance(stype, _Global) and stype.kind == "storage-type", f"storage of the type {_describe(stype)}")
    _need(isinstance(key, str) and _STORAGE_KEY.fullmatch(key) is not None, "storage key must be a short name")
    _as_str(location, "storage location", 64)
    return stype.dtype, key, _as_int(numel, f"storage '{key}' size")


class _ZipCheckpoint:
    def __init__(self, path: Path):
        self.path = path
        self.size = path.stat().st_size
        self.zip = zipfile.ZipFile(path)
        try:
            self.check()
        except BaseException:
            self.zip.close()
            raise
        self.storages: dict[str, _Storage] = {}

    def check(self) -> None:
        infos = self.zip.infolist()
        names = [info.filename for info in infos]
        _need(len(set(names)) == len(names), "the zip archive holds duplicate record names")
        for info in infos:
            _need(info.compress_type == zipfile.ZIP_STORED, f"record '{info.filename}' is compressed (torch.save stores records uncompressed)")
            _need(info.file_size == info.compress_size and info.header_offset + info.compress_size <= self.size,
                  f"record '{info.filename}' declares {info.file_size} bytes, more than the file holds")
            _need(not info.flag_bits & 0x1, f"record '{info.filename}' is encrypted")
        self.records = {info.filename: info for info in infos}
        pickles = [name for name in names if name.endswith("/data.pkl") and name.count("/") == 1]
        _need(len(pickles) == 1, "no data.pkl record (not a torch.save checkpoint)" if not pickles else "more than one data.pkl record")
        self.prefix = pickles[0][: -len("/data.pkl")]
        order = self.read_record(f"{self.prefix}/byteorder", 16) if f"{self.prefix}/byteorder" in self.records else b"little"
        _need(order in (b"little", b"big"), f"byteorder record says {order[:16]!r}, expected 'little' or 'big'")
        self.swap = order.decode() != "little"

    def read_record(self, name: str, limit: int) -> bytes:
        info = self.records.get(name)
        _need(info is not None, f"record '{name}' is missing from the archive")
        _need(info.file_size <= limit, f"record '{name}' holds {info.file_size} bytes, at most {limit} are read")
        with self.zip.open(info) as handle:
            data = handle.read(info.file_size + 1)
        _need(len(data) == info.file_size, f"record '{name}' is shorter than declared")
        return data

    def load_storage(self, saved_id: Any) -> _Storage:
        dtype, key, numel = _storage_id(saved_id, legacy=False)
        nbytes = numel * _element_size(dtype)
        if key in self.storages:
            storage = self.storages[key]
            _need(storage.flat.numel() * storage.flat.element_size() == nbytes,
                  f"storage '{key}' is referenced with two different sizes")
            return storage if storage.dtype == dtype else _Storage(key, dtype, storage.typed(dtype))
        name = f"{self.prefix}/data/{key}"
        _need(name in self.records, f"storage '{key}' has no data record '{name}'")
        _need(self.records[name].file_size == nbytes,
              f"storage '{key}' declares {numel} x {dtype} ({nbytes} bytes) but its record holds {self.records[name].file_size}")
        data = bytearray(self.read_record(name, nbytes))
        flat = torch.frombuffer(data, dtype=dtype) if nbytes else torch.empty(0, dtype=dtype)
        if self.swap:
            _swap_bytes(flat)
        storage = _Storage(key, dtype, flat)
        _check_bools(storage)
        self.storages[key] = storage
        return storage

    def read(self) -> Any:
        program = self.read_record(f"{self.prefix}/data.pkl", MAX_PICKLE_BYTES)
        return _Machine(program, persistent_load=self.load_storage).run()

    def close(self):
        self.zip.close()


class _LegacyCheckpoint:
    """torch.save(..., _use_new_zipfile_serialization=False): five pickles, then each storage's bytes."""

    def __init__(self, path: Path):
        self.path = path
        with path.open("rb") as handle:
            self.buf = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        self.pos = 0
        self.storages: dict[str, _Storage] = {}
        self.views: dict[str, _Storage] = {}
        self.declared = 0

    def pickle(self, persistent_load=None) -> Any:
        machine = _Machine(self.buf, self.pos, persistent_load)
        machine.end = min(machine.end, self.pos + MAX_PICKLE_BYTES)
        result = machine.run()
        self.pos = machine.pos
        return result

    def load_storage(self, saved_id: Any) -> _Storage:
        dtype, key, numel = _storage_id(saved_id, legacy=True)
        view = saved_id[5]
        if key not in self.storages:
            nbytes = numel * _element_size(dtype)
            self.declared += nbytes + 8
            _need(self.declared <= len(self.buf) - self.pos,
                  f"storages declare {self.declared} bytes, more than the {len(self.buf) - self.pos} left in the file")
            self.storages[key] = _Storage(key, dtype, torch.zeros(numel, dtype=dtype))  # filled after the pickles
        root = self.storages[key]
        _need(root.dtype == dtype, f"storage '{key}' is referenced with two dtypes")
        if view is None:
            return root
        _need(isinstance(view, tuple) and len(view) == 3, "storage view metadata must be (key, offset, size)")
        view_key, offset, view_size = view
        _need(isinstance(view_key, str) and _STORAGE_KEY.fullmatch(view_key) is not None, "storage view key must be a short name")
        offset, view_size = _as_int(offset, "storage view offset"), _as_int(view_size, "storage view size")
        _need(offset + view_size <= root.flat.numel(), f"storage view '{view_key}' reaches past storage '{key}'")
        if view_key not in self.views:
            self.views[view_key] = _Storage(view_key, dtype, root.flat[offset:offset + view_size])
        return self.views[view_key]

    def read(self) -> Any:
        magic = self.pickle()
        _need(type(magic) is int and magic == MAGIC_NUMBER, "the file is not torch.save output (no torch magic number)")
        _need(self.pickle() == LEGACY_PROTOCOL_VERSION, "unknown legacy torch serialization version")
        info = self.pickle()
        _need(type(info) is dict and type(info.get("little_endian")) is bool, "legacy system info lacks the byte order")
        little = info["little_endian"]
        result = self.pickle(self.load_storage)
        keys = self.pickle()
        _need(type(keys) is list and all(isinstance(k, str) for k in keys) and len(set(keys)) == len(keys),
              "the legacy storage key list is malformed")
        _need(set(keys) == set(self.storages), "the storage list does not match the storages the tensors use "
              f"(missing data for {sorted(set(self.storages) - set(keys))[:5]})")
        for key in keys:
            storage = self.storages[key]
            count = struct.unpack("<q" if little else ">q", self.take(8))[0]
            _need(count == storage.flat.numel(), f"storage '{key}' holds {count} elements, the pickle declared {storage.flat.numel()}")
            nbytes = count * storage.flat.element_size()
            if nbytes:
                storage.flat.view(torch.uint8).copy_(torch.frombuffer(bytearray(self.take(nbytes)), dtype=torch.uint8))
            if not little:
                _swap_bytes(storage.flat)
        for storage in [*self.storages.values(), *self.views.values()]:
            _check_bools(storage)
        return result

    def take(self, n: int) -> bytes:
        _need(n <= len(self.buf) - self.pos, "truncated legacy checkpoint: storage data is missing")
        data = self.buf[self.pos:self.pos + n]
        self.pos += n
        return data

    def close(self):
        self.buf.close()


# ---------------------------------------------------------------------------------------------------------
# Plain data out


def _resolve(obj: Any) -> Any:
    if isinstance(obj, _Global):
        return obj.value if obj.value is not None else obj.qualname
    if isinstance(obj, _PendingArray):
        _need(obj.array is not None, "a numpy array without its data (no BUILD)")
        return obj.array
    if isinstance(obj, _PendingDtype):
        return obj.resolve()
    return obj


def _to_plain(obj: Any, memo: dict[int, Any], depth: int = 0) -> Any:
    """Flatten placeholders (and the omegaconf node tree inside them) into plain Python data."""
    _need(depth <= MAX_NESTING, f"data nested more than {MAX_NESTING} containers deep")
    if id(obj) in memo:
        return memo[id(obj)]
    obj = _resolve(obj)
    if obj is None or isinstance(obj, (str, bytes, int, float, bool)):
        return obj
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, _Placeholder):
        result = _placeholder_to_plain(obj, memo, depth)
    elif isinstance(obj, dict):
        result = collections.OrderedDict() if type(obj) is collections.OrderedDict else {}
        memo[id(obj)] = result
        for key, value in obj.items():
            result[_to_plain(key, memo, depth + 1)] = _to_plain(value, memo, depth + 1)
        return result
    elif isinstance(obj, list):
        result = []
        memo[id(obj)] = result
        result.extend(_to_plain(value, memo, depth + 1) for value in obj)
        return result
    elif isinstance(obj, (tuple, set, frozenset)):
        result = type(obj)(_to_plain(value, memo, depth + 1) for value in obj)
    elif isinstance(obj, enum.Enum):
        result = obj.value
    else:
        result = obj
    memo[id(obj)] = result
    return result


def _placeholder_to_plain(obj: _Placeholder, memo: dict[int, Any], depth: int) -> Any:
    def plain(value):
        return _to_plain(value, memo, depth + 1)

    qualname, state = obj.qualname, obj.state
    if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)) \
            and (state[1] is None or isinstance(state[1], dict)):
        state = {**(state[0] or {}), **(state[1] or {})}  # (dict state, slot state)
    if qualname.startswith("omegaconf."):
        if isinstance(state, dict) and "_content" in state:
            return plain(state["_content"])
        if isinstance(state, dict) and "_val" in state:
            return plain(state["_val"])
    if qualname.startswith("pathlib."):
        _need(all(isinstance(part, str) for part in obj.args), f"{qualname} with parts that are not strings")
        return str(Path(*obj.args)) if obj.args else ""
    if obj.items:
        items = {**obj.items, **(state if isinstance(state, dict) else {})}
        return {plain(key): plain(value) for key, value in items.items()}
    if isinstance(state, dict):
        result: dict[Any, Any] = {}
        memo[id(obj)] = result
        result.update({plain(key): plain(value) for key, value in state.items()})
        return result
    if state is not None:
        return plain(state)
    if obj.kwargs and not obj.args:
        return {key: plain(value) for key, value in obj.kwargs.items()}
    if len(obj.args) == 1:  # enum members and single-value wrappers
        return plain(obj.args[0])
    return [plain(arg) for arg in obj.args]


def read_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> Any:
    """Read an original checkpoint without executing any code from it.

    Tensors keep their dtype (float16 releases stay float16) and are read onto the CPU (`map_location`
    must say "cpu"; move them afterwards). Configuration objects come back as plain dicts. Raises `UnsafeCheckpointError` for any other global and `CheckpointReadError` for missing,
    truncated, malformed or non-checkpoint files; both name the file.

        ckpt = read_checkpoint("checkpoint_last_musicbert_base.pt")
        ckpt["cfg"]["model"]["arch"]
    """
    path = Path(path)
    if torch.device(map_location).type != "cpu":
        raise ValueError(f"read_checkpoint reads onto the CPU, got map_location={map_location!r}; move the tensors afterwards")
    if not path.is_file():
        raise CheckpointReadError(f"{path}: no such checkpoint file")
    with path.open("rb") as handle:
        head = handle.read(512)
    if not head:
        raise CheckpointReadError(f"{path}: the file is empty")
    if head.startswith(b"PK") and not zipfile.is_zipfile(path):
        raise CheckpointReadError(f"{path}: truncated or corrupt zip archive (torch.save format); re-download it")
    if head[257:262] == b"ustar":
        raise CheckpointReadError(f"{path}: the tar checkpoint format of torch < 0.4 is not read; re-save it with a newer torch")
    reader = None
    try:
        reader = _ZipCheckpoint(path) if head.startswith(b"PK") else _LegacyCheckpoint(path)
        return _to_plain(reader.read(), {})
    except _Refused as err:
        raise UnsafeCheckpointError(f"{path}: {err}") from None
    except _Malformed as err:
        raise CheckpointReadError(f"{path}: not a readable torch checkpoint: {err}") from None
    except Exception as err:  # anything else a hostile file provokes: the same clear error
        detail = str(err)[:300]
        raise CheckpointReadError(
            f"{path}: not a readable torch checkpoint (truncated, malformed or a different format): "
            f"{type(err).__name__}: {detail}"
        ) from None
    finally:
        if reader is not None:
            reader.close()


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
