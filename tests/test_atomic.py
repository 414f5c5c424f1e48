import errno
import os
import stat

import pytest

from urbanfusion.pipeline.atomic import SHARED, atomic_write, replacing, usual_mode


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_a_file_is_replaced_whole_with_its_mode_and_no_temporary_left(tmp_path):
    target = tmp_path / "deep" / "report.json"
    atomic_write(target, lambda f: f.write(b"first"))
    atomic_write(target, lambda f: f.write(b"second"))
    assert target.read_bytes() == b"second" and _mode(target) == SHARED
    with replacing(tmp_path / "raster.tif", mode=None) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".tif"  # GDAL picks drivers by it
        tmp.write_bytes(b"pixels")
    assert _mode(tmp_path / "raster.tif") == usual_mode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "raster.tif"]


def test_a_failed_write_keeps_the_old_file_names_the_target_and_leaves_nothing(tmp_path):
    target = tmp_path / "store.npy"
    atomic_write(target, lambda f: f.write(b"old"))

    def full_disk(f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError, match=r"store\.npy"):
        atomic_write(target, full_disk)
    with pytest.raises(ValueError, match="bad pixels"), replacing(target) as tmp:
        tmp.write_bytes(b"half")
        raise ValueError("bad pixels")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["store.npy"]
