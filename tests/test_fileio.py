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
