"""Legitimate checkpoints in every container and pickle protocol torch.save writes still read, exactly.

The hardening in conversion/safe_checkpoint.py must not refuse real files: these round-trip objects saved by
torch.save itself (the truth is the saved object), plus the byte orders and legacy storage views only old or
big-endian machines write, assembled by hand.
"""

from __future__ import annotations

import argparse
import struct

import numpy as np
import pytest
import torch

import conversion.safe_checkpoint as safe_checkpoint
from conversion.safe_checkpoint import CheckpointReadError, read_checkpoint
from tests.security.reader_pickles import (
    FALSE,
    NONE,
    call,
    glob,
    integer,
    legacy_file,
    legacy_storage,
    program,
    storage,
    tensor,
    text,
    torch_zip,
    tup,
)


def _payload():
    generator = torch.Generator().manual_seed(3)
    base = torch.randn(4, 6, generator=generator)
    return {
        "args": argparse.Namespace(arch="tiny", sizes=[1, 2], nested={"a": (1, (2, 3))}, tags={"x", "y"},
                                   frozen=frozenset([3]), raw=b"\x00\xff", big=2**70, negative=-5, ratio=0.25),
        "transposed": base.t(),
        "window": base[1:3, 2:5],
        "shares_with_window": base,
        "half": torch.randn(3, generator=generator).half(),
        "bfloat": torch.randn(3, generator=generator).bfloat16(),
        "flags": torch.tensor([True, False]),
        "uint16": torch.tensor([1, 65535], dtype=torch.uint16),
        "empty": torch.zeros(0, 3),
        "scalar_tensor": torch.tensor(2.5),
        "complex": torch.tensor([1 + 2j, -3j], dtype=torch.complex64),
        "parameter": torch.nn.Parameter(torch.ones(2)),
        "array": np.arange(6, dtype=">f8").reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
        "number": np.float32(1.5),
        "mask": np.array([True, False, True]),
        "truth": np.bool_(True),
    }


def _assert_same(got, want):
    for key in ("transposed", "window", "shares_with_window", "half", "bfloat", "flags", "uint16", "empty",
                "scalar_tensor", "complex", "parameter"):
        assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape, key
        assert got[key].stride() == want[key].stride() and torch.equal(got[key].detach(), want[key].detach()), key
    assert isinstance(got["parameter"], torch.nn.Parameter) and got["parameter"].requires_grad
    assert got["window"].untyped_storage().data_ptr() == got["shares_with_window"].untyped_storage().data_ptr()
    for key in ("array", "fortran", "mask"):
        assert got[key].dtype == want[key].dtype and (got[key] == want[key]).all(), key
    assert got["fortran"].flags.f_contiguous
    assert got["number"] == want["number"] and got["number"].dtype == np.float32
    assert got["truth"] is np.True_
    assert got["args"] == vars(want["args"])


@pytest.mark.parametrize("protocol", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_save_round_trips(tmp_path, protocol, zip_format):
    want = _payload()
    path = tmp_path / "ckpt.pt"
    torch.save(want, path, pickle_protocol=protocol, _use_new_zipfile_serialization=zip_format)
    _assert_same(read_checkpoint(path), want)


VALUES = (1.5, -2.0, 3.25, 1e-3)


def test_big_endian_zip_checkpoint_is_byte_swapped(tmp_path):
    path = torch_zip(tmp_path / "big.pt", program(tensor(storage())), {"0": struct.pack(">4f", *VALUES)}, byteorder=b"big")
    assert read_checkpoint(path).tolist() == pytest.approx(VALUES)


def test_big_endian_legacy_checkpoint_is_byte_swapped(tmp_path):
    main = program(tensor(legacy_storage(numel=4, storage_type="DoubleStorage")))
    path = legacy_file(tmp_path / "big.pt", main, ["1"], [(4, struct.pack(">4d", *VALUES))], little_endian=False)
    assert read_checkpoint(path).tolist() == list(VALUES)


def test_legacy_storage_view_reads_its_slice(tmp_path):
    view = legacy_storage(numel=4, view=tup(text("v"), integer(1), integer(2)))
    path = legacy_file(tmp_path / "view.pt", program(tensor(view, size=(2,))), ["1"], [(4, struct.pack("<4f", *VALUES))])
    assert read_checkpoint(path).tolist() == [VALUES[1], VALUES[2]]


def test_the_opcode_budget_is_enforced(tmp_path, monkeypatch):
    monkeypatch.setattr(safe_checkpoint, "MAX_PICKLE_OPS", 1000)
    path = torch_zip(tmp_path / "long.pt", program((NONE + b"0") * 600 + NONE), {})
    with pytest.raises(CheckpointReadError, match="long.pt.*more than 1000 opcodes"):
        read_checkpoint(path)
    short = torch_zip(tmp_path / "short.pt", program((NONE + b"0") * 400 + call(glob("torch", "Size"), tup(integer(2)))), {})
    assert read_checkpoint(short) == torch.Size([2])


def test_numpy_dtype_is_rebuilt_from_its_name_not_its_state(tmp_path):
    # a plain dtype pickle names the byte order in its state; that is the only part the reader takes
    big = call(glob("numpy", "dtype"), text("i4"), FALSE, FALSE) + tup(
        integer(3), text(">"), NONE, NONE, NONE, integer(-1), integer(-1), integer(0)) + b"b"
    path = torch_zip(tmp_path / "dtype.pt", program(big), {})
    assert read_checkpoint(path) == np.dtype(">i4")


def test_many_distinct_integer_keys_still_read(tmp_path):
    # the hash-flooding bound counts keys per hash value, so large integer-keyed dicts (optimizer state) pass
    want = {"state": {i: torch.tensor([float(i)]) for i in range(3000)}, "sets": {frozenset(range(100)), (1, 2)}}
    path = tmp_path / "optimizer.pt"
    torch.save(want, path)
    got = read_checkpoint(path)
    assert sorted(got["state"]) == list(range(3000)) and float(got["state"][2999]) == 2999.0
    assert got["sets"] == want["sets"]


def test_tensors_are_read_onto_the_cpu_only(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(ValueError, match="reads onto the CPU"):
        read_checkpoint(path, map_location="meta")
    assert read_checkpoint(path, map_location=torch.device("cpu"))["w"].device.type == "cpu"
