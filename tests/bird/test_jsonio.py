"""Atomic JSON / JSON Lines writing: the exact bytes, and a failed write leaves the old file."""

import pytest

from paddlemix.bird.jsonio import write_json_atomic, write_jsonl_atomic


def test_json_bytes_keep_non_ascii_and_end_in_a_newline(tmp_path):
    path = tmp_path / "a.json"
    write_json_atomic(path, {"b": "Lunge", "a": "肝"}, indent=1, sort_keys=True)
    assert path.read_bytes() == '{\n "a": "肝",\n "b": "Lunge"\n}\n'.encode("utf-8")
    write_json_atomic(path, [1, 2], indent=None)
    assert path.read_text(encoding="utf-8") == "[1, 2]\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_jsonl_is_one_object_per_line(tmp_path):
    path = tmp_path / "p.jsonl"
    write_jsonl_atomic(path, [{"id": "x"}, {"id": "ü"}])
    assert path.read_text(encoding="utf-8") == '{"id": "x"}\n{"id": "ü"}\n'


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    write_json_atomic(path, {"ok": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert path.read_text() == '{\n "ok": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failed_rename_removes_the_temporary(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()  # a folder cannot be replaced by a file
    with pytest.raises(OSError):
        write_jsonl_atomic(target, [{"id": "x"}])
    assert [p.name for p in tmp_path.iterdir()] == ["taken"] and target.is_dir()


def test_atomic_text_replaces_the_file_only_when_the_block_ends(tmp_path):
    import csv

    from paddlemix.bird.jsonio import atomic_text

    path = tmp_path / "summary.csv"
    path.write_text("old\n", encoding="utf-8")
    with pytest.raises(RuntimeError):
        with atomic_text(str(path)) as handle:
            handle.write("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text(encoding="utf-8") == "old\n" and not (tmp_path / "summary.csv.tmp").exists()
    with atomic_text(str(path)) as handle:
        csv.writer(handle).writerow(["a", "é"])
    assert path.read_bytes() == "a,é\r\n".encode("utf-8")  # csv's own line ends, untranslated
