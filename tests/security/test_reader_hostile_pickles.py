"""Crafted checkpoints against the safe reader: each is refused with a CheckpointReadError naming the file, leaves
torch and numpy as they were, and a legitimate checkpoint still reads afterwards in the same process.

Every case runs in one fresh checker process per batch (reader_pickles.run_cases), so a crash (the SIGSEGV a
BUILD on a numpy dtype used to give) fails the batch and names the case instead of killing pytest.
"""

from __future__ import annotations

import struct
import tarfile
import zipfile

import pytest

from tests.security.reader_pickles import (
    APPEND,
    BUILD,
    EMPTY_DICT,
    EMPTY_LIST,
    EMPTY_TUPLE,
    FALSE,
    MARK,
    NONE,
    REDUCE,
    SETITEM,
    TRUE,
    call,
    dictionary,
    glob,
    integer,
    ints,
    legacy_file,
    legacy_storage,
    numpy_array,
    numpy_dtype,
    program,
    raw_bytes,
    run_cases,
    stack_glob,
    storage,
    tensor,
    text,
    torch_zip,
    tup,
    write_legit,
)

FLOATS = struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)
ORDERED_DICT = call(glob("collections", "OrderedDict"))
SCALAR = glob("numpy.core.multiarray", "scalar")
UNSAFE, MALFORMED = "UnsafeCheckpointError", "CheckpointReadError"


def _v8_with_object_field() -> bytes:
    # numpy.dtype("V8") whose BUILD state declares an object field while clearing the has-object flag: numpy
    # then reads 8 bytes of the file as a PyObject pointer (issue 13, item 1)
    object_dtype = call(glob("numpy", "dtype"), text("O"), FALSE, TRUE)
    fields = EMPTY_DICT + text("f") + tup(object_dtype, integer(0)) + SETITEM
    state = tup(integer(3), text("|"), NONE, tup(text("f")), fields, integer(8), integer(1), integer(0))
    return call(glob("numpy", "dtype"), text("V8"), FALSE, TRUE) + state + BUILD


# Integers that are multiples of 2**61 - 1 all hash to 0: without a bound, inserting n of them takes n**2 / 2
# comparisons (20,000 keys: 14 s; a 2.4 MB pickle of 200,000: about half an hour)
COLLIDING = [integer(i * (2**61 - 1)) for i in range(1, 201)]


PUT0, GET0 = b"q\x00", b"h\x00"
COPIES = "times its own size in copies"


def _nested(opening: bytes, closing: bytes, depth: int, core: bytes = NONE) -> bytes:
    return opening * depth + core + closing * depth


# name -> (pickle body run in a zip checkpoint with one 4-float storage '0', expected error, fragment of its message)
PROGRAMS: dict[str, tuple[bytes, str, str]] = {
    # item 1: numpy dtypes only from a whitelist of plain names, never a BUILD on a real dtype
    "numpy_V8_object_field_scalar": (call(SCALAR, _v8_with_object_field(), raw_bytes(b"A" * 8)), MALFORMED, "numpy dtype 'V8'"),
    "numpy_f8_state_declares_fields": (call(SCALAR, numpy_dtype("f8", tup(
        integer(3), text("|"), NONE, tup(text("f")), EMPTY_DICT, integer(8), integer(1), integer(63))), raw_bytes(b"A" * 8)),
        MALFORMED, "declares fields"),
    "numpy_dtype_flags_has_object": (numpy_dtype("f8", tup(
        integer(3), text("<"), NONE, NONE, NONE, integer(-1), integer(-1), integer(63))), MALFORMED, "flags"),
    "numpy_dtype_state_wrong_shape": (numpy_dtype("f8", tup(integer(3), text("<"))), MALFORMED, "not a plain dtype"),
    "numpy_dtype_aligned": (call(glob("numpy", "dtype"), text("f8"), TRUE, TRUE), MALFORMED, "aligned"),
    "numpy_object_dtype": (numpy_array((1,), numpy_dtype("O"), raw_bytes(b"A" * 8)), MALFORMED, "numpy dtype 'O'"),
    "numpy_datetime_dtype": (numpy_dtype("M8"), MALFORMED, "numpy dtype 'M8'"),
    "numpy_unicode_dtype": (numpy_dtype("U4"), MALFORMED, "numpy dtype 'U4'"),
    "numpy_dtype_from_class": (call(glob("numpy", "dtype"), glob("torch", "Tensor")), MALFORMED, "numpy dtype from the global"),
    "numpy_scalar_short_data": (call(SCALAR, numpy_dtype("f8"), raw_bytes(b"1234")), MALFORMED, "needs 8 bytes"),
    "numpy_scalar_dtype_as_string": (call(SCALAR, text("f8"), raw_bytes(b"A" * 8)), MALFORMED, "numpy dtype given as a str"),
    "numpy_array_shape_1e12": (numpy_array((10**12,), numpy_dtype("f4"), raw_bytes(b"1234")), MALFORMED,
                               "needs 4000000000000 bytes"),
    "numpy_reconstruct_shape_1e12_alone": (call(glob("numpy.core.multiarray", "_reconstruct"), glob("numpy", "ndarray"),
                                                ints(10**12), raw_bytes(b"b")), MALFORMED, "without its data"),
    "numpy_reconstruct_of_tensor": (call(glob("numpy._core.multiarray", "_reconstruct"), glob("torch", "Tensor"), ints(0),
                                         raw_bytes(b"b")), MALFORMED, "numpy array of the type the global 'torch.Tensor'"),
    "numpy_matrix_subclass": (call(glob("numpy.core.multiarray", "_reconstruct"), glob("numpy.matrixlib.defmatrix", "matrix"),
                                   ints(0), raw_bytes(b"b")), UNSAFE, "numpy.matrixlib.defmatrix.matrix"),
    "numpy_object_array_list_data": (numpy_array((2,), numpy_dtype("f8"), EMPTY_LIST), MALFORMED, "must be bytes"),
    "numpy_array_state_twice": (numpy_array((1,), numpy_dtype("f4"), raw_bytes(b"1234"))
                                + tup(integer(1), ints(1), numpy_dtype("f4"), FALSE, raw_bytes(b"1234")) + BUILD,
                                MALFORMED, "given twice"),
    "numpy_frombuffer_short": (call(glob("numpy._core.numeric", "_frombuffer"), raw_bytes(b"123"), numpy_dtype("f4"), ints(2),
                                    text("C")), MALFORMED, "needs 8 bytes"),
    "numpy_bool_bytes": (numpy_array((2,), numpy_dtype("b1"), raw_bytes(b"\x01\x07")), MALFORMED, "bytes other than 0 and 1"),
    "numpy_bool_scalar_byte": (call(SCALAR, numpy_dtype("b1"), raw_bytes(b"\x02")), MALFORMED, "bytes other than 0 and 1"),
    "numpy_load": (call(glob("numpy", "load"), text("/etc/passwd")), UNSAFE, "numpy.load"),
    "numpy_frombuffer_public": (call(glob("numpy", "frombuffer"), raw_bytes(b"1234")), UNSAFE, "numpy.frombuffer"),
    # item 2: BUILD / SETITEM / APPEND only on objects the reader itself created
    "build_class_attribute_on_untypedstorage": (glob("torch.storage", "UntypedStorage") + tup(NONE, dictionary(
        is_shared=NONE, pwned=integer(1))) + BUILD, MALFORMED, "BUILD on the global 'torch.storage.UntypedStorage'"),
    "build_dict_state_on_untypedstorage": (glob("torch.storage", "UntypedStorage") + dictionary(pwned=integer(1)) + BUILD,
                                           MALFORMED, "BUILD on the global 'torch.storage.UntypedStorage'"),
    "build_defaults_on_rebuild_tensor_v2": (glob("torch._utils", "_rebuild_tensor_v2")
                                            + tup(NONE, dictionary(__defaults__=tup(integer(1)))) + BUILD,
                                            MALFORMED, "BUILD on the global 'torch._utils._rebuild_tensor_v2'"),
    "build_on_ordereddict_class": (glob("collections", "OrderedDict") + dictionary(fromkeys=NONE) + BUILD,
                                   MALFORMED, "BUILD on the global 'collections.OrderedDict'"),
    "build_on_torch_dtype": (glob("torch", "float32") + dictionary(is_floating_point=FALSE) + BUILD, MALFORMED,
                             "BUILD on the global 'torch.float32'"),
    "build_on_configuration_class": (glob("argparse", "Namespace") + dictionary(__init__=NONE) + BUILD, MALFORMED,
                                     "BUILD on the global 'argparse.Namespace'"),
    "build_on_rebuilt_tensor": (tensor(storage()) + dictionary(requires_grad=TRUE) + BUILD, MALFORMED, "BUILD on a Tensor"),
    "build_on_plain_dict": (EMPTY_DICT + dictionary(x=NONE) + BUILD, MALFORMED, "BUILD on a dict"),
    "setitem_on_tensor_class": (glob("torch", "Tensor") + text("add") + NONE + SETITEM, MALFORMED,
                                "SETITEM on the global 'torch.Tensor'"),
    "setitems_on_allowed_function": (glob("_codecs", "encode") + MARK + text("a") + NONE + b"u", MALFORMED,
                                     "SETITEM on the global '_codecs.encode'"),
    "append_on_list_class": (glob("builtins", "list") + integer(1) + APPEND, MALFORMED, "APPEND on the global 'builtins.list'"),
    "appends_on_tuple": (EMPTY_TUPLE + MARK + integer(1) + b"e", MALFORMED, "APPEND on a tuple"),
    "additems_on_set_class": (glob("builtins", "set") + MARK + integer(1) + b"\x90", MALFORMED, "ADDITEMS"),
    "newobj_tensor_class": (glob("torch", "Tensor") + ints(10**12) + b"\x81", MALFORMED, "NEWOBJ on the global 'torch.Tensor'"),
    "newobj_ex_parameter": (glob("torch.nn.parameter", "Parameter") + EMPTY_TUPLE + dictionary(requires_grad=TRUE) + b"\x92",
                            MALFORMED, "NEWOBJ_EX on the global 'torch.nn.parameter.Parameter'"),
    "inst_os_system": (MARK + text("true") + b"i" + b"os\nsystem\n", UNSAFE, "os.system"),
    "obj_rebuild_tensor_bad_args": (MARK + glob("torch._utils", "_rebuild_tensor_v2") + integer(1) + b"o", MALFORMED,
                                    "_rebuild_tensor_v2 takes"),
    "reduce_untypedstorage_1e12": (call(glob("torch.storage", "UntypedStorage"), integer(10**12)), MALFORMED,
                                   "'torch.storage.UntypedStorage' may not be called"),
    "reduce_tensor_class": (call(glob("torch", "Tensor"), ints(10**6, 10**6)), MALFORMED, "'torch.Tensor' may not be called"),
    "reduce_on_configuration_object": (call(call(glob("argparse", "Namespace")), NONE), MALFORMED,
                                       "REDUCE on a argparse.Namespace object"),
    "reduce_with_list_args": (glob("builtins", "dict") + EMPTY_LIST + REDUCE, MALFORMED, "arguments must be a tuple"),
    "copyreg_reconstructor_tensor": (call(glob("copyreg", "_reconstructor"), glob("torch", "Tensor"), glob("builtins", "object"),
                                          NONE), MALFORMED, "copyreg._reconstructor of the global 'torch.Tensor'"),
    "copyreg_reconstructor_tensor_base": (call(glob("copy_reg", "_reconstructor"), glob("argparse", "Namespace"),
                                               glob("torch", "Tensor"), NONE), MALFORMED, "with the base the global"),
    "defaultdict_factory_not_a_type": (call(glob("collections", "defaultdict"), glob("argparse", "Namespace")), MALFORMED,
                                       "defaultdict with the factory"),
    "rebuild_from_type_calls_codec": (call(glob("torch._tensor", "_rebuild_from_type_v2"), glob("_codecs", "encode"),
                                           glob("torch", "Tensor"), tup(text("x")), EMPTY_DICT), MALFORMED,
                                      "_rebuild_from_type_v2 calling the global '_codecs.encode'"),
    "rebuild_from_type_to_storage": (call(glob("torch._tensor", "_rebuild_from_type_v2"),
                                          glob("torch._utils", "_rebuild_tensor_v2"), glob("torch.storage", "UntypedStorage"),
                                          EMPTY_TUPLE, EMPTY_DICT), MALFORMED, "_rebuild_from_type_v2 to the global"),
    "rebuild_from_type_with_state": (call(glob("torch._tensor", "_rebuild_from_type_v2"),
                                          glob("torch._utils", "_rebuild_tensor_v2"), glob("torch", "Tensor"),
                                          tup(storage(), integer(0), ints(4), ints(1), FALSE, ORDERED_DICT),
                                          dictionary(grad=NONE)), MALFORMED, "must be empty"),
    "parameter_with_state": (call(glob("torch._utils", "_rebuild_parameter_with_state"), tensor(storage()), FALSE, ORDERED_DICT,
                                  dictionary(data=NONE)), MALFORMED, "Parameter state must be empty"),
    "parameter_of_string": (call(glob("torch._utils", "_rebuild_parameter"), text("w"), FALSE, ORDERED_DICT), MALFORMED,
                            "a Parameter of a str"),
    # globals outside the allow-list, however they are named
    "stack_global_eval": (call(stack_glob("builtins", "eval"), text("1+1")), UNSAFE, "builtins.eval"),
    "builtin_getattr": (call(glob("__builtin__", "getattr"), glob("torch", "Tensor"), text("add")), UNSAFE, "builtins.getattr"),
    "torch_load": (call(glob("torch", "load"), text("/etc/passwd")), UNSAFE, "torch.load"),
    "torch_load_from_bytes": (call(glob("torch.storage", "_load_from_bytes"), raw_bytes(b"x")), UNSAFE, "_load_from_bytes"),
    "rebuild_device_tensor_from_numpy": (glob("torch._utils", "_rebuild_device_tensor_from_numpy"), UNSAFE,
                                         "_rebuild_device_tensor_from_numpy"),
    "pickle_extension_registry": (b"\x82\x01", MALFORMED, "extension codes"),
    # item 3: sizes bounded before anything is allocated
    "bytes_1e11": (call(glob("builtins", "bytes"), integer(10**11)), MALFORMED, "a size or an iterable is refused"),
    "bytearray_1e11": (call(glob("builtins", "bytearray"), integer(10**11)), MALFORMED, "a size or an iterable is refused"),
    "list_of_range_1e10": (call(glob("builtins", "list"), call(glob("builtins", "range"), integer(10**10))), MALFORMED,
                           "only a list, tuple, set or dict"),
    "frozenset_of_range_1e10": (call(glob("builtins", "frozenset"), call(glob("__builtin__", "xrange"), integer(10**10))),
                                MALFORMED, "only a list, tuple, set or dict"),
    "int_of_100000_digits": (call(glob("builtins", "int"), text("9" * 100_000)), MALFORMED, "100000-character string"),
    "unknown_codec_rot13": (call(glob("_codecs", "encode"), text("x"), text("rot13")), MALFORMED, "codec 'rot13'"),
    "unknown_codec_zlib": (call(glob("_codecs", "encode"), text("x"), text("zlib_codec")), MALFORMED, "codec 'zlib_codec'"),
    "codec_of_integer": (call(glob("_codecs", "encode"), integer(1), text("latin1")), MALFORMED, "takes a string"),
    "deep_list_100000": (_nested(EMPTY_LIST, APPEND, 100_000), MALFORMED, "nested more than"),
    "deep_tuple_100000": (NONE + b"\x85" * 100_000, MALFORMED, "tuples nested more than"),
    "deep_dict_100000": (_nested(EMPTY_DICT + text("a"), SETITEM, 100_000, EMPTY_DICT), MALFORMED, "nested more than"),
    "deep_configuration_1000": (_nested(call(glob("argparse", "Namespace")) + EMPTY_DICT + text("inner"), SETITEM + BUILD,
                                        1000), MALFORMED, "nested more than"),
    "bad_persistent_id_string": (text("0") + b"Q", MALFORMED, "persistent id a str is not a torch storage reference"),
    "bad_persistent_id_module": (tup(text("module"), glob("torch", "Tensor"), NONE, NONE) + b"Q", MALFORMED,
                                 "not a torch storage reference"),
    "persistent_id_storage_type_tensor": (tensor(storage(storage_type="Tensor")), MALFORMED, "storage of the type"),
    "persistent_id_quantized_storage": (tensor(storage(storage_type="QInt8Storage")), UNSAFE, "torch.QInt8Storage"),
    "persistent_id_key_traversal": (tensor(storage(key="../../../../etc/passwd")), MALFORMED, "storage key must be a short name"),
    "persistent_id_missing_record": (tensor(storage(key="7")), MALFORMED, "has no data record 'archive/data/7'"),
    "persistent_id_numel_1e12": (tensor(storage(numel=10**12)), MALFORMED, "declares 1000000000000 x torch.float32"),
    "persistent_id_negative_numel": (tensor(storage(numel=-1)), MALFORMED, "storage '0' size must be in"),
    "persistent_id_location_not_text": (tup(text("storage"), glob("torch", "FloatStorage"), text("0"), integer(0), integer(4))
                                        + b"Q", MALFORMED, "storage location must be a short string"),
    "persistent_id_two_sizes": (tup(tensor(storage()), tensor(storage(numel=2), size=(2,))), MALFORMED,
                                "referenced with two different sizes"),
    "tensor_larger_than_storage": (tensor(storage(), size=(10,)), MALFORMED, "a tensor of 10 elements over storage '0' that holds 4"),
    "tensor_view_out_of_bounds": (tensor(storage(), offset=3, size=(2,)), MALFORMED, "reaches element 4"),
    "tensor_stride0_1e12": (tensor(storage(), size=(10**12,), stride=(0,)), MALFORMED, "a tensor of 1000000000000 elements"),
    "tensor_stride0_2d_broadcast": (tensor(storage(), size=(4, 4), stride=(0, 1)), MALFORMED, "16 elements"),
    "tensor_negative_stride": (tensor(storage(), size=(2,), stride=(-1,)), MALFORMED, "tensor stride must be in"),
    "tensor_offset_2_70": (tensor(storage(), offset=2**70, size=(0,)), MALFORMED, "storage offset must be in"),
    "tensor_65_dims": (tensor(storage(), size=(1,) * 65, stride=(1,) * 65), MALFORMED, "65 dimensions"),
    "tensor_size_float": (call(glob("torch._utils", "_rebuild_tensor_v2"), storage(), integer(0), tup(b"G" + struct.pack(">d", 4.0)),
                               ints(1), FALSE, ORDERED_DICT), MALFORMED, "tensor size must be an integer, got a float"),
    "tensor_size_stride_lengths": (tensor(storage(), size=(2, 2), stride=(1,)), MALFORMED, "differ in length"),
    "tensor_backward_hooks": (tensor(storage(), hooks=dictionary(hook=glob("torch", "load"))), UNSAFE, "torch.load"),
    "tensor_backward_hooks_data": (tensor(storage(), hooks=dictionary(hook=integer(1))), MALFORMED, "backward hooks must be empty"),
    "tensor_metadata": (tensor(storage(), metadata=dictionary(conj=TRUE)), MALFORMED, "tensor metadata must be empty"),
    "tensor_requires_grad_on_long": (tensor(storage(numel=2, storage_type="LongStorage"), size=(2,), requires_grad=TRUE),
                                     MALFORMED, "requires_grad on a torch.int64 tensor"),
    "tensor_requires_grad_not_bool": (tensor(storage(), requires_grad=integer(1)), MALFORMED, "requires_grad must be True or False"),
    "float_storage_reread_as_bool": (tup(tensor(storage()), tensor(storage(numel=16, storage_type="BoolStorage"), size=(16,))),
                                     MALFORMED, "read as bool holds bytes other than 0 and 1"),
    "untyped_storage_as_bool_v3": (call(glob("torch._utils", "_rebuild_tensor_v3"), storage(numel=16, storage_type="UntypedStorage",
                                        module="torch.storage"), integer(0), ints(16), ints(1), FALSE, ORDERED_DICT,
                                        glob("torch", "bool")), MALFORMED, "read as bool holds bytes other than 0 and 1"),
    "tensor_over_a_dict": (tensor(EMPTY_DICT), MALFORMED, "a tensor over a dict"),
    "tensor_v3_dtype_string": (call(glob("torch._utils", "_rebuild_tensor_v3"), storage(numel=16, storage_type="UntypedStorage",
                                    module="torch.storage"), integer(0), ints(4), ints(1), FALSE, ORDERED_DICT, text("float32")),
                               MALFORMED, "_rebuild_tensor_v3 with the dtype a str"),
    "torch_device_not_text": (call(glob("torch", "device"), integer(3)), MALFORMED, "device must be a short string"),
    "torch_size_negative": (call(glob("torch", "Size"), ints(-1)), MALFORMED, "torch.Size must be in"),
    "pathlib_parts_not_text": (call(glob("pathlib", "PosixPath"), integer(1)), MALFORMED, "parts that are not strings"),
    # hash flooding: a bounded number of keys per hash value in every dict and set the reader builds
    "hash_flood_setitems": (EMPTY_DICT + MARK + b"".join(k + NONE for k in COLLIDING) + b"u", MALFORMED, "share a hash value"),
    "hash_flood_dict_opcode": (MARK + b"".join(tup(k) + NONE for k in COLLIDING) + b"d", MALFORMED, "share a hash value"),
    "hash_flood_set_additems": (b"\x8f" + MARK + b"".join(COLLIDING) + b"\x90", MALFORMED, "share a hash value"),
    "hash_flood_frozenset": (MARK + b"".join(COLLIDING) + b"\x91", MALFORMED, "share a hash value"),
    "hash_flood_set_of_list": (call(glob("builtins", "set"), EMPTY_LIST + MARK + b"".join(COLLIDING) + b"e"), MALFORMED,
                               "share a hash value"),
    "hash_flood_ordereddict_pairs": (call(glob("collections", "OrderedDict"), EMPTY_LIST + MARK
                                          + b"".join(tup(k, NONE) for k in COLLIDING) + b"e"), MALFORMED, "share a hash value"),
    "hash_flood_configuration_items": (call(glob("yacs.config", "CfgNode")) + MARK + b"".join(k + NONE for k in COLLIDING)
                                       + b"u", MALFORMED, "share a hash value"),
    # copies: containers, bytes and arrays made from objects already built are bounded by the pickle's own size
    "copies_of_one_big_list": (EMPTY_LIST + MARK + NONE * 10_000 + b"e" + PUT0 + b"0"
                               + (call(glob("builtins", "list"), GET0) + b"0") * 2000 + NONE, MALFORMED, COPIES),
    "copies_of_one_buffer_as_arrays": (raw_bytes(bytes(2**20)) + PUT0 + b"0"
                                       + (numpy_array((2**18,), numpy_dtype("f4"), GET0) + b"0") * 100 + NONE,
                                       MALFORMED, COPIES),
    "copies_of_one_bytearray": (b"\x96" + struct.pack("<Q", 2**20) + bytes(2**20) + PUT0 + b"0"
                                + (GET0 + b"\x98" + b"0") * 100 + NONE, MALFORMED, COPIES),
    # the pickle machine itself
    "memo_read_before_write": (b"h\x05", MALFORMED, "memo entry 5 read before it was written"),
    "reduce_on_empty_stack": (REDUCE, MALFORMED, "nothing to pop"),
    "pop_across_mark": (integer(1) + MARK + REDUCE, MALFORMED, "nothing to pop"),
    "unknown_opcode": (b"\xff", MALFORMED, "unsupported pickle opcode 0xff"),
    "text_length_1e9": (b"X" + struct.pack("<I", 10**9) + b"abc", MALFORMED, "truncated pickle"),
    "bytes8_length_2_63": (b"\x8e" + struct.pack("<Q", 2**63), MALFORMED, "truncated pickle"),
    "long4_2_gb": (b"\x8b" + struct.pack("<i", 2**31 - 1), MALFORMED, "LONG4 integer of 2147483647 bytes"),
    "int_line_oversized": (b"I" + b"9" * 100_000 + b"\n", MALFORMED, "oversized protocol-0 line"),
    "protocol_6": (b"\x80\x06", MALFORMED, "protocol above 5"),
    "out_of_band_buffer": (b"\x97", MALFORMED, "out-of-band"),
    "frame_2_40": (b"\x95" + struct.pack("<Q", 2**40), MALFORMED, "frame longer than the data"),
    "dict_odd_items": (MARK + integer(1) + b"d", MALFORMED, "odd number of items"),
    "unhashable_key": (EMPTY_DICT + EMPTY_LIST + NONE + SETITEM, MALFORMED, "unhashable"),
    "string_bad_escape": (b"S'\\x'\n", MALFORMED, "not a readable torch checkpoint"),
    "global_name_not_utf8": (b"c\xff\xfe\nx\n", MALFORMED, "UnicodeDecodeError"),
}

NO_STOP = b"\x80\x02N"


def _program_cases(root):
    cases = {}
    for name, (body, _, _) in PROGRAMS.items():
        cases[name] = torch_zip(root / f"{name}.pt", program(body), {"0": FLOATS}, byteorder=b"little")
    cases["no_stop_opcode"] = torch_zip(root / "no_stop_opcode.pt", NO_STOP, {"0": FLOATS})
    return cases


def _patched_central_size(path, record: str, size: int):
    data = bytearray(path.read_bytes())
    name = record.encode()
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        name_length = struct.unpack_from("<H", data, at + 28)[0]
        if bytes(data[at + 46:at + 46 + name_length]) == name:
            struct.pack_into("<II", data, at + 20, size, size)
            break
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))
    return path


def _flip_data_byte(path):
    data = bytearray(path.read_bytes())
    data[data.find(FLOATS) + 1] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def _tar(path):
    inner = path.with_suffix(".inner")
    inner.write_bytes(b"storages")
    with tarfile.open(path, "w") as archive:
        archive.add(inner, arcname="storages")
    return path


LEGACY_TENSOR = tensor(legacy_storage(), size=(4,))

# name -> (writer(path) -> path, expected error, fragment of its message)
CONTAINERS = {
    "zip_without_data_pkl": (lambda p: _zip_records(p, {"archive/version": b"3\n"}), MALFORMED, "no data.pkl record"),
    "zip_two_data_pkl": (lambda p: _zip_records(p, {"a/data.pkl": program(NONE), "b/data.pkl": program(NONE)}), MALFORMED,
                         "more than one data.pkl"),
    "zip_deflated_records": (lambda p: torch_zip(p, program(tensor(storage())), {"0": FLOATS},
                                                 compression=zipfile.ZIP_DEFLATED), MALFORMED, "is compressed"),
    "zip_declared_size_beyond_file": (lambda p: _patched_central_size(
        torch_zip(p, program(tensor(storage())), {"0": FLOATS}), "archive/data/0", 2**31), MALFORMED,
        "declares 2147483648 bytes, more than the file holds"),
    "zip_duplicate_records": (lambda p: _zip_records(p, {"archive/data.pkl": program(tensor(storage())), "archive/data/0": FLOATS},
                                                     duplicate="archive/data/0"), MALFORMED, "duplicate record names"),
    "zip_byteorder_bogus": (lambda p: torch_zip(p, program(tensor(storage())), {"0": FLOATS}, byteorder=b"middle"), MALFORMED,
                            "byteorder record says b'middle'"),
    "zip_storage_bad_crc": (lambda p: _flip_data_byte(torch_zip(p, program(tensor(storage())), {"0": FLOATS})), MALFORMED,
                            "CRC"),
    "zip_bool_storage_bytes": (lambda p: torch_zip(p, program(tensor(storage(storage_type="BoolStorage"))),
                                                   {"0": b"\x00\x01\x07\x00"}), MALFORMED, "bytes other than 0 and 1"),
    "zip_data_pkl_as_folder": (lambda p: _zip_records(p, {"archive/data.pkl/x": b""}), MALFORMED, "no data.pkl"),
    "legacy_plain_pickle": (lambda p: _write(p, program(dictionary(a=integer(1)))), MALFORMED, "no torch magic number"),
    "legacy_plain_pickle_exploit": (lambda p: _write(p, program(call(glob("posix", "system"), text("true")))), UNSAFE,
                                    "posix.system"),
    "legacy_wrong_version": (lambda p: legacy_file(p, program(LEGACY_TENSOR), ["1"], [(4, FLOATS)], version=1002), MALFORMED,
                             "unknown legacy torch serialization version"),
    "legacy_sys_info_without_byte_order": (lambda p: legacy_file(p, program(LEGACY_TENSOR), ["1"], [(4, FLOATS)],
                                                                 info={"protocol_version": 1001}), MALFORMED,
                                           "lacks the byte order"),
    "legacy_truncated_data": (lambda p: _cut(legacy_file(p, program(LEGACY_TENSOR), ["1"], [(4, FLOATS)]), 8), MALFORMED,
                              "truncated legacy checkpoint"),
    "legacy_count_mismatch": (lambda p: legacy_file(p, program(LEGACY_TENSOR), ["1"], [(10**12, FLOATS)]), MALFORMED,
                              "holds 1000000000000 elements, the pickle declared 4"),
    "legacy_declares_huge_storage": (lambda p: legacy_file(p, program(tensor(legacy_storage(numel=10**12))), ["1"],
                                                           [(4, FLOATS)]), MALFORMED, "more than the"),
    "legacy_keys_missing": (lambda p: legacy_file(p, program(LEGACY_TENSOR), [], []), MALFORMED,
                            "storage list does not match"),
    "legacy_keys_extra": (lambda p: legacy_file(p, program(LEGACY_TENSOR), ["1", "2"], [(4, FLOATS), (4, FLOATS)]), MALFORMED,
                          "storage list does not match"),
    "legacy_view_out_of_bounds": (lambda p: legacy_file(p, program(tensor(legacy_storage(
        view=tup(text("v"), integer(3), integer(5))), size=(1,))), ["1"], [(4, FLOATS)]), MALFORMED, "reaches past storage '1'"),
    "legacy_storage_two_dtypes": (lambda p: legacy_file(p, program(tup(LEGACY_TENSOR, tensor(
        legacy_storage(numel=2, storage_type="DoubleStorage"), size=(2,)))), ["1"], [(4, FLOATS)]), MALFORMED, "two dtypes"),
    "legacy_untyped_storage_as_bool_v3": (lambda p: legacy_file(p, program(call(
        glob("torch._utils", "_rebuild_tensor_v3"), legacy_storage(numel=4, storage_type="UntypedStorage"), integer(0), ints(4),
        ints(1), FALSE, ORDERED_DICT, glob("torch", "bool"))), ["1"], [(4, b"\x00\x01\x05\x00")]), MALFORMED,
        "bool storage '1' holds bytes other than 0 and 1"),
    "legacy_persistent_id_zip_shape": (lambda p: legacy_file(p, program(tensor(storage(key="1"))), ["1"], [(4, FLOATS)]),
                                       MALFORMED, "not a torch storage reference"),
    "legacy_persistent_id_in_magic": (lambda p: _write(p, program(text("x") + b"Q")), MALFORMED,
                                      "persistent id outside a torch checkpoint's main pickle"),
    "tar_format": (_tar, MALFORMED, "tar checkpoint format"),
    "text_file": (lambda p: _write(p, b"hello, not a checkpoint\n"), MALFORMED, "not a readable torch checkpoint"),
    "zip_truncated": (lambda p: _cut(torch_zip(p, program(tensor(storage())), {"0": FLOATS}), 40), MALFORMED, "truncated or corrupt zip"),
}


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _cut(path, n: int):
    path.write_bytes(path.read_bytes()[:-n])
    return path


def _zip_records(path, records: dict[str, bytes], duplicate: str | None = None):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in records.items():
            archive.writestr(name, data)
        if duplicate:
            with pytest.warns(UserWarning, match="Duplicate name"):
                archive.writestr(duplicate, records[duplicate])
    return path


@pytest.fixture(scope="module")
def program_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile_programs")
    return run_cases(_program_cases(root), write_legit(root / "legit.pt")), root


@pytest.fixture(scope="module")
def container_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile_containers")
    cases = {name: writer(root / f"{name}.pt") for name, (writer, _, _) in CONTAINERS.items()}
    return run_cases(cases, write_legit(root / "legit.pt")), root


def _check(outcome: dict, path_name: str, expected: str, fragment: str):
    assert outcome["error"] == expected, outcome
    assert path_name in outcome["message"], f"the error does not name the file: {outcome['message']}"
    assert fragment in outcome["message"], outcome["message"]
    assert outcome["changed"] == [], f"the refused file changed {outcome['changed']} in the reading process"
    assert outcome["legit_after"] == "ok", outcome["legit_after"]


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_hostile_pickle_program_is_refused_without_side_effects(program_results, name):
    results, _ = program_results
    assert results["control"] == "ok"
    _, expected, fragment = PROGRAMS[name]
    _check(results[name], f"{name}.pt", expected, fragment)


def test_pickle_without_stop_is_refused(program_results):
    results, _ = program_results
    _check(results["no_stop_opcode"], "no_stop_opcode.pt", MALFORMED, "no STOP opcode")


@pytest.mark.parametrize("name", sorted(CONTAINERS))
def test_hostile_container_is_refused_without_side_effects(container_results, name):
    results, _ = container_results
    assert results["control"] == "ok"
    _, expected, fragment = CONTAINERS[name]
    _check(results[name], f"{name}.pt", expected, fragment)
