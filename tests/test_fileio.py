import pytest

from zoo.fileio import atomic_write_json, atomic_write_text, sha256_file, staged_folder


def test_staged_folder_replaces_atomically(tmp_path):
    out = tmp_path / "out"
    with staged_folder(out) as stage:
        (stage / "a.txt").write_text("first")
    with staged_folder(out, overwrite=True) as stage:
        (stage / "b.txt").write_text("second")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging or trash folders left behind


def test_failure_leaves_previous_folder_intact(tmp_path):
    out = tmp_path / "out"
    with staged_folder(out) as stage:
        (stage / "a.txt").write_text("kept")
    with pytest.raises(RuntimeError), staged_folder(out, overwrite=True) as stage:
        (stage / "half.bin").write_bytes(b"\0" * 10)
        raise RuntimeError("crash mid-write")
    assert (out / "a.txt").read_text() == "kept" and not (out / "half.bin").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_refuses_non_empty_target_without_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="overwrite"), staged_folder(tmp_path / "out"):
        pass


def test_atomic_writes_and_hash(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "abc")
    atomic_write_json(tmp_path / "b.json", {"x": 1})
    assert (tmp_path / "b.json").read_text() == '{\n  "x": 1\n}\n'
    # sha256("abc") is a published test vector (FIPS 180-2)
    assert sha256_file(tmp_path / "a.txt") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_read_json_object_bounds_and_types(tmp_path):
    from zoo.fileio import read_json_object

    class Refused(Exception):
        pass

    path = tmp_path / "x.json"
    path.write_text('{"a": 1}')
    assert read_json_object(path, max_bytes=100) == {"a": 1}
    for text, problem in (("[1, 2]", "not a JSON object"), ("{", "not valid JSON"), (b"\xff\xfe{", "not valid JSON"),
                          ('{"a": "' + "x" * 200 + '"}', "larger than 100 bytes")):
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(Refused, match=f"config.json: {problem}"):
            read_json_object(path, max_bytes=100, error=Refused, name="config.json")
