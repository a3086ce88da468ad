"""File helpers: atomic writes never leave half-written files, moved-aside results never collide."""
import json

import pytest

from adadf_core.utils.fileio import atomic_write, unique_path, write_json
from adadf_core.runs.reader import is_finished


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "summary.json"
    write_json(target, {"finished": True, "best_acc": 0.5})

    def broken(p):
        p.write_text('{"finished": fal')   # half written, then the writer dies
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken)
    assert json.loads(target.read_text()) == {"finished": True, "best_acc": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]   # no temporary left behind


def test_unique_path_never_lands_on_an_existing_folder(tmp_path):
    base = tmp_path / "previous-20261127-120000"
    assert unique_path(base) == base
    base.mkdir()
    second = unique_path(base)
    assert second.name == "previous-20261127-120000-2"
    second.mkdir()
    assert unique_path(base).name == "previous-20261127-120000-3"


def test_is_finished_tolerates_missing_and_corrupt_summaries(tmp_path):
    assert not is_finished(tmp_path)
    (tmp_path / "summary.json").write_text("{not json")
    assert not is_finished(tmp_path)
    write_json(tmp_path / "summary.json", {"finished": False})
    assert not is_finished(tmp_path)
    write_json(tmp_path / "summary.json", {"finished": True})
    assert is_finished(tmp_path)
