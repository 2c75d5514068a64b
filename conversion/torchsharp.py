"""Read and write TorchSharp's native state-dict format (`.tsm`, `Module.save`) without pickle.

Layout (every integer unsigned LEB128): entry count; per entry the key's byte length and UTF-8 bytes,
the element type (c10 ScalarType code, 6 = float32), the number of dims, each dim, then the raw
little-endian row-major data. There is no header and nothing else in the file.

    from conversion.torchsharp import read_tsm
    state = read_tsm("NasBert2000000.tsm")   # {"TokenEmbedding.weight": tensor [50265, 64], ...}
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from conversion.safe_checkpoint import CheckpointReadError
from zoo.fileio import atomic_write_bytes

__all__ = ["SCALAR_TYPES", "TsmReadError", "read_tsm", "tsm_bytes", "write_tsm"]

# c10::ScalarType codes TorchSharp writes, with the little-endian numpy dtype of the raw data.
SCALAR_TYPES: dict[int, tuple[torch.dtype, str]] = {
    0: (torch.uint8, "u1"), 1: (torch.int8, "i1"), 2: (torch.int16, "<i2"), 3: (torch.int32, "<i4"),
    4: (torch.int64, "<i8"), 5: (torch.float16, "<f2"), 6: (torch.float32, "<f4"), 7: (torch.float64, "<f8"),
    11: (torch.bool, "?"), 15: (torch.bfloat16, "<u2"),
}
_CODES = {dtype: code for code, (dtype, _) in SCALAR_TYPES.items()}
_MAX_NDIM = 16


class TsmReadError(CheckpointReadError):
    """A `.tsm` file that is truncated, corrupt or uses an element type zoo cannot read."""


class _Cursor:
    def __init__(self, data: bytes | memoryview, source: str):
        self.data = memoryview(data)
        self.pos = 0
        self.source = source

    def fail(self, what: str) -> TsmReadError:
        return TsmReadError(f"{self.source}: {what} (at byte {self.pos} of {len(self.data)}); "
                            "the file is truncated, corrupt or not a TorchSharp .tsm state dict")

    def uleb128(self, what: str) -> int:
        value, shift = 0, 0
        while True:
            if self.pos >= len(self.data):
                raise self.fail(f"file ends inside the {what}")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise self.fail(f"the {what} is not a valid LEB128 number (more than 9 bytes)")

    def take(self, size: int, what: str) -> memoryview:
        if size > len(self.data) - self.pos:
            raise self.fail(f"{what} needs {size} bytes but only {len(self.data) - self.pos} remain")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk


def _read_entry(cursor: _Cursor, index: int) -> tuple[str, torch.Tensor]:
    key_bytes = cursor.take(cursor.uleb128(f"key length of entry {index}"), f"key of entry {index}")
    try:
        key = bytes(key_bytes).decode("utf-8")
    except UnicodeDecodeError:
        raise cursor.fail(f"key of entry {index} is not UTF-8") from None
    code = cursor.uleb128(f"element type of '{key}'")
    if code not in SCALAR_TYPES:
        known = ", ".join(f"{c}={d}" for c, (d, _) in sorted(SCALAR_TYPES.items()))
        raise TsmReadError(f"{cursor.source}: tensor '{key}' has unknown element type code {code} "
                           f"(known: {known})")
    ndim = cursor.uleb128(f"number of dims of '{key}'")
    if ndim > _MAX_NDIM:
        raise cursor.fail(f"tensor '{key}' claims {ndim} dims")
    shape = [cursor.uleb128(f"dim {d} of '{key}'") for d in range(ndim)]
    dtype, np_dtype = SCALAR_TYPES[code]
    itemsize = np.dtype(np_dtype).itemsize
    count = int(np.prod(shape, dtype=object)) if shape else 1
    raw = cursor.take(count * itemsize, f"data of '{key}' {shape}")
    array = np.frombuffer(raw, dtype=np_dtype, count=count).copy().reshape(shape)
    tensor = torch.from_numpy(array)
    if dtype is torch.bfloat16:
        tensor = tensor.view(torch.int16).view(torch.bfloat16)
    return key, tensor


def read_tsm(path: str | os.PathLike) -> OrderedDict[str, torch.Tensor]:
    """Every tensor of a TorchSharp `.tsm` file, in file order, bit-exact (dtype kept).

    Raises `TsmReadError` naming the file and the problem for a truncated file, trailing bytes,
    a duplicate key or an unknown element type.

        state = read_tsm("encoder.tsm")
    """
    path = Path(path)
    if not path.is_file():
        raise TsmReadError(f"{path}: no such file")
    cursor = _Cursor(path.read_bytes(), str(path))
    if not len(cursor.data):
        raise TsmReadError(f"{path}: the file is empty")
    count = cursor.uleb128("entry count")
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for index in range(count):
        key, tensor = _read_entry(cursor, index)
        if key in state:
            raise TsmReadError(f"{path}: key '{key}' appears twice")
        state[key] = tensor
    if cursor.pos != len(cursor.data):
        raise cursor.fail(f"{len(cursor.data) - cursor.pos} unexpected bytes after the {count} declared entries")
    return state


def _uleb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def tsm_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """Serialise a state dict in TorchSharp's format (what `Module.load` in C# reads)."""
    parts = [_uleb128(len(state))]
    for key, tensor in state.items():
        if tensor.dtype not in _CODES:
            raise ValueError(f"tensor '{key}': dtype {tensor.dtype} has no TorchSharp element type code")
        encoded = key.encode("utf-8")
        parts += [_uleb128(len(encoded)), encoded, _uleb128(_CODES[tensor.dtype]), _uleb128(tensor.dim())]
        parts += [_uleb128(size) for size in tensor.shape]
        data = tensor.detach().cpu().contiguous()
        if data.dtype is torch.bfloat16:
            data = data.view(torch.int16)
        parts.append(data.numpy().astype(data.numpy().dtype.newbyteorder("<"), copy=False).tobytes())
    return b"".join(parts)


def write_tsm(path: str | os.PathLike, state: dict[str, torch.Tensor]) -> Path:
    """Write a state dict as a `.tsm` file, atomically."""
    return atomic_write_bytes(path, tsm_bytes(state))
