import os
import stat

import pytest

from vglamm.io.atomic import atomic_path, refuse_overwrite, write_text_atomic


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]  # the temporary file is gone
    write_text_atomic(target, "new")
    assert target.read_text() == "new"


def test_atomic_write_has_normal_permissions(tmp_path):
    target = tmp_path / "out.txt"
    write_text_atomic(target, "x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


def test_refuse_overwrite_names_the_input(tmp_path):
    src = tmp_path / "in.mp4"
    src.write_bytes(b"x")
    with pytest.raises(ValueError, match="in.mp4"):
        refuse_overwrite(tmp_path / "." / "in.mp4", src)
    refuse_overwrite(tmp_path / "other.mp4", src)
