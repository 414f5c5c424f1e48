"""Files written whole or not at all: a temporary file beside the target, renamed over it.

The one way every module writes a file that someone else may read while it is being written
(stored results, the lock's owner, the publish record, batch reports, the tile index cache,
dehazed rasters, models, checkpoints). A reader never sees half a file, and a failed or killed
writer leaves at most its temporary file, named ``.<target>.<random><suffix>`` beside it.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from urbanfusion.pipeline.errors import write_failure

SHARED = 0o644  # readers, workers and logs of other users may read it
# Room kept free beyond what a write itself needs: file system metadata, a TIFF's directory.
ROOM_MARGIN = 1 << 20


def usual_mode() -> int:
    """The mode a plainly created file gets: 0666 less the process's umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def replacing(path: Path, mode: int | None = SHARED) -> Iterator[Path]:
    """A fresh temporary path beside ``path``; renamed over it when the block ends cleanly.

    The temporary file exists (empty) and keeps ``path``'s suffix, for writers that choose a
    format by it (GDAL, pandas). On any error in the block it is removed and the error goes on.
    ``mode`` None gives the user's usual mode (:func:`usual_mode`); mkstemp alone would leave
    it private (0600).

    Raises:
        OSError: the rename failed, naming ``path`` (:func:`write_failure`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        try:
            tmp.chmod(usual_mode() if mode is None else mode)
            os.replace(tmp, path)
        except OSError as err:
            raise write_failure(err, path) from None
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[BinaryIO], object], mode: int = SHARED) -> None:
    """Write ``path`` through ``write(file)``, whole or not at all (see :func:`replacing`).

    Raises:
        OSError: the write failed, naming ``path`` (ENOSPC on a full disk); numpy alone would
            say only "problem writing element N".
    """
    with replacing(path, mode) as tmp:
        try:
            with tmp.open("wb") as f:
                write(f)
        except OSError as err:
            raise write_failure(err, path) from None


def ensure_room(path: Path, nbytes: int) -> None:
    """Fail with ENOSPC naming ``path`` unless its file system has ``nbytes`` (and a margin) free.

    For writers that do not fail on a full disk. GDAL's GeoTIFF driver only prints libtiff's "No
    space left on device" and goes on; building overviews on the truncated file then crashed
    the whole process (a segmentation fault, no message at all).

    Raises:
        OSError: ENOSPC, naming ``path``; the command line prints it as one line.
    """
    free = shutil.disk_usage(path.parent).free
    if free < nbytes + ROOM_MARGIN:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
