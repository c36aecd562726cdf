"""atomic_path: a failed write leaves the old version and no temp file; a good one replaces it."""

import pytest

from alignkit.atomic import atomic_path


def test_failed_write_keeps_old_file_and_cleans_up(tmp_path):
    target = tmp_path / "f.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_replaces_a_folder_whole(tmp_path):
    target = tmp_path / "final"
    target.mkdir()
    (target / "stale.bin").write_text("x")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "model.safetensors").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
