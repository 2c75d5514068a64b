"""Hand-assembled pickles and torch.save containers for the safe reader's hostile-input tests.

Nothing here calls pickle.dumps on a hostile object: each program is written opcode by opcode, the way an
attacker would, and packed into the two containers torch.save writes (the zip archive and the legacy
stream of pickles followed by raw storage bytes).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROTO2 = b"\x80\x02"
STOP = b"."
MARK = b"("
NONE = b"N"
TRUE = b"\x88"
FALSE = b"\x89"
EMPTY_DICT = b"}"
EMPTY_LIST = b"]"
EMPTY_TUPLE = b")"
REDUCE = b"R"
BUILD = b"b"
APPEND = b"a"
SETITEM = b"s"
BINPERSID = b"Q"
MAGIC_NUMBER = 0x1950A86A20F9469CFC6C


def glob(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def stack_glob(module: str, name: str) -> bytes:
    return text(module) + text(name) + b"\x93"


def text(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(raw)) + raw


def raw_bytes(value: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(value)) + value


def integer(value: int) -> bytes:
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def tup(*items: bytes) -> bytes:
    return MARK + b"".join(items) + b"t"


def ints(*values: int) -> bytes:
    return tup(*(integer(v) for v in values))


def call(func: bytes, *args: bytes) -> bytes:
    return func + tup(*args) + REDUCE


def dictionary(**items: bytes) -> bytes:
    return EMPTY_DICT + MARK + b"".join(text(k) + v for k, v in items.items()) + b"u"


def program(body: bytes, protocol: bytes = PROTO2) -> bytes:
    return protocol + body + STOP


def storage(key: str = "0", numel: int = 4, storage_type: str = "FloatStorage", location: str = "cpu",
            module: str = "torch") -> bytes:
    return tup(text("storage"), glob(module, storage_type), text(key), text(location), integer(numel)) + BINPERSID


def legacy_storage(key: str = "1", numel: int = 4, storage_type: str = "FloatStorage", view: bytes = NONE) -> bytes:
    return tup(text("storage"), glob("torch", storage_type), text(key), text("cpu"), integer(numel), view) + BINPERSID


def tensor(storage_ref: bytes, offset: int = 0, size=(4,), stride=(1,), requires_grad: bytes = FALSE,
           hooks: bytes | None = None, metadata: bytes | None = None) -> bytes:
    hooks = call(glob("collections", "OrderedDict")) if hooks is None else hooks
    args = [storage_ref, integer(offset), ints(*size), ints(*stride), requires_grad, hooks]
    if metadata is not None:
        args.append(metadata)
    return call(glob("torch._utils", "_rebuild_tensor_v2"), *args)


def numpy_dtype(code: str, state: bytes | None = None) -> bytes:
    made = call(glob("numpy", "dtype"), text(code), FALSE, TRUE)
    state = tup(integer(3), text("<"), NONE, NONE, NONE, integer(-1), integer(-1), integer(0)) if state is None else state
    return made + state + BUILD


def numpy_array(shape, dtype: bytes, data: bytes, version: bool = True) -> bytes:
    made = call(glob("numpy.core.multiarray", "_reconstruct"), glob("numpy", "ndarray"), ints(0), raw_bytes(b"b"))
    state = [ints(*shape), dtype, FALSE, data]
    if version:
        state.insert(0, integer(1))
    return made + tup(*state) + BUILD


def torch_zip(path: Path, pickle_program: bytes, records: dict[str, bytes] | None = None, prefix: str = "archive",
              byteorder: bytes | None = b"little", compression: int = zipfile.ZIP_STORED) -> Path:
    """The archive torch.save writes: <prefix>/data.pkl, byteorder, data/<key> records, version."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{prefix}/data.pkl", pickle_program, compress_type=compression)
        if byteorder is not None:
            archive.writestr(f"{prefix}/byteorder", byteorder)
        for key, data in (records or {}).items():
            archive.writestr(f"{prefix}/data/{key}", data, compress_type=compression)
        archive.writestr(f"{prefix}/version", b"3\n")
    return path


def legacy_file(path: Path, main: bytes, keys: list[str], data: list[tuple[int, bytes]], little_endian: bool = True,
                magic: int = MAGIC_NUMBER, version: int = 1001, info: dict | None = None) -> Path:
    """torch.save(..., _use_new_zipfile_serialization=False): magic, version, sys info, main pickle, keys, data."""
    if info is None:
        info = {"protocol_version": 1001, "little_endian": little_endian, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    order = "<" if little_endian else ">"
    out = io.BytesIO()
    for value in (magic, version, info):
        out.write(pickle.dumps(value, protocol=2))
    out.write(main)
    out.write(pickle.dumps(keys, protocol=2))
    for count, raw in data:
        out.write(struct.pack(f"{order}q", count) + raw)
    path.write_bytes(out.getvalue())
    return path


def legit_payload():
    """What the control checkpoint holds: rebuilt identically by the checker subprocess to compare against."""
    import argparse

    import numpy as np
    import torch

    generator = torch.Generator().manual_seed(7)
    return {
        "model": OrderedDict(
            weight=torch.randn(3, 4, generator=generator),
            half=torch.randn(2, 5, generator=generator).half().t(),
            index=torch.arange(6).view(2, 3)[:, 1:],
            flags=torch.tensor([True, False, True]),
        ),
        "args": argparse.Namespace(arch="tiny", layers=2, dropout=0.1),
        "array": np.arange(6, dtype=np.float32).reshape(2, 3),
        "big_endian": np.arange(3, dtype=">i4"),
        "scalar": np.float64(1.25),
    }


def write_legit(path: Path) -> Path:
    import torch

    torch.save(legit_payload(), path)
    return path


CHECKER = r"""
import builtins, codecs, collections, copyreg, json, pickle, sys
sys.path[:0] = [ROOT]
import numpy as np
import torch
from conversion.safe_checkpoint import CheckpointReadError, read_checkpoint
from tests.security.reader_pickles import legit_payload

def snapshot():
    functions = [torch._utils._rebuild_tensor, torch._utils._rebuild_tensor_v2, torch._utils._rebuild_tensor_v3,
                 torch._utils._rebuild_parameter, torch._utils._rebuild_parameter_with_state,
                 torch._tensor._rebuild_from_type_v2, codecs.encode, copyreg._reconstructor]
    classes = [torch.storage.UntypedStorage, torch.storage.TypedStorage, torch.Tensor, torch.nn.Parameter, torch.Size,
               torch.device, collections.OrderedDict, collections.defaultdict, np.ndarray, np.dtype, dict, list, object]
    dtypes = ["f2", "f4", "f8", "i8", "b1", "u1", "c8", "V8", "O", "U3", "M8[s]"]
    return {
        "functions": [[f.__qualname__, repr(getattr(f, "__defaults__", None)), repr(getattr(f, "__kwdefaults__", None)),
                       sorted(getattr(f, "__dict__", {})), repr(getattr(f, "__code__", None))] for f in functions],
        "classes": [[c.__qualname__, sorted(vars(c))] for c in classes],
        "numpy": [[d, np.dtype(d).str, np.dtype(d).hasobject, int(np.dtype(d).flags), repr(np.dtype(d).fields),
                   np.dtype(d).itemsize] for d in dtypes],
        "numpy_pickle": repr(pickle.loads(pickle.dumps(np.arange(3, dtype="f4"))).tolist()),
        "torch_dtypes": [repr(getattr(torch, n)) for n in ("float32", "float16", "int64", "bool")],
        "modules": sorted(m for m in sys.modules if m.split(".")[0] in
                          ("fairseq", "omegaconf", "yacs", "easydict", "musicbert", "subprocess", "webbrowser", "pty")),
        "extensions": len(copyreg._extension_registry),
        "builtins": sorted(vars(builtins)),
    }

def legit_matches(path):
    try:
        got = read_checkpoint(path)
    except BaseException as err:
        return f"the control checkpoint no longer reads: {type(err).__name__}: {str(err)[:300]}"
    want = legit_payload()
    for key, tensor in want["model"].items():
        have = got["model"][key]
        if not (have.dtype == tensor.dtype and have.shape == tensor.shape and torch.equal(have, tensor)):
            return f"model.{key} differs"
    if got["args"] != vars(want["args"]):
        return "args differ"
    for key in ("array", "big_endian"):
        if not (got[key].dtype == want[key].dtype and (got[key] == want[key]).all()):
            return f"{key} differs"
    return "ok" if got["scalar"] == want["scalar"] else "scalar differs"

cases = json.loads(sys.argv[1])
legit = sys.argv[2]
first = legit_matches(legit)
before = snapshot()
results = {"control": first}
for name, path in cases.items():
    print("case", name, file=sys.stderr, flush=True)
    try:
        read_checkpoint(path)
        outcome = {"error": None, "message": ""}
    except CheckpointReadError as err:
        outcome = {"error": type(err).__name__, "message": str(err)}
    except BaseException as err:
        outcome = {"error": "ESCAPED " + type(err).__name__, "message": str(err)[:500]}
    after = snapshot()
    outcome["changed"] = sorted(k for k in before if before[k] != after[k])
    outcome["legit_after"] = legit_matches(legit)
    results[name] = outcome
print(json.dumps(results))
"""


def run_cases(cases: dict[str, Path], legit: Path, timeout: int = 300) -> dict:
    """Read every case in one fresh interpreter; a crash (SIGSEGV) fails the whole batch, naming the case."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    completed = subprocess.run(
        [sys.executable, "-c", CHECKER.replace("ROOT", repr(str(ROOT))), json.dumps({k: str(v) for k, v in cases.items()}),
         str(legit)],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
    )
    last_case = [line for line in completed.stderr.splitlines() if line.startswith("case ")][-1:]
    assert completed.returncode == 0, (
        f"the checker process died with exit code {completed.returncode} during {last_case}:\n{completed.stderr[-3000:]}"
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])
