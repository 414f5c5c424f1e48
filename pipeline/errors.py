"""The one exception hierarchy of urbanfusion.

Every error a user can cause derives from :class:`UrbanFusionError` and from the builtin it
resembles, so callers may catch either. Messages say what was wrong, where, and how to fix it;
the CLI prints them on one line and exits non-zero without a traceback.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

# Under this much free space, a failed write is taken for a full disk: the libraries that write
# (numpy, GDAL, SQLite) often say only "problem writing element" or "write failed".
_NEARLY_FULL = 16 << 20


class UrbanFusionError(Exception):
    """Base class of every error caused by the user's input or environment."""

    #: The command line's exit status for this error.
    exit_code = 2


class ConfigError(UrbanFusionError, ValueError):
    """The run configuration is invalid (unknown key, wrong type, impossible value)."""


class InputNotFoundError(UrbanFusionError, FileNotFoundError):
    """A file or glob named by the user does not exist or matched nothing."""

    def __str__(self) -> str:
        # FileNotFoundError formats (errno, strerror) pairs; we always pass one message.
        return str(self.args[0]) if self.args else ""


class InputFormatError(UrbanFusionError, ValueError):
    """An input file exists but its content does not match what the config declares."""


class NoCoverageError(UrbanFusionError, ValueError):
    """The inputs do not cover the extent of the run (e.g. no tile touches it)."""


class CRSError(UrbanFusionError, ValueError):
    """A coordinate reference system is missing, unknown or unsuitable."""


class ModelError(UrbanFusionError, ValueError):
    """A model file is missing, unreadable or does not carry the urbanfusion contract."""


class StoreError(UrbanFusionError, ValueError):
    """A result kept in the run store cannot be read back (damaged outside urbanfusion)."""


class ClusterError(UrbanFusionError, RuntimeError):
    """The dask cluster a run was given has no worker to run it (none joined, or all died)."""


class RemoteStorageError(UrbanFusionError, OSError):
    """Object storage (S3) could not be reached, or refused a request (credentials, bucket)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class OutputBusyError(UrbanFusionError, BlockingIOError):
    """Another run holds the output folder's lock and the caller asked not to wait."""

    # EX_TEMPFAIL: "try again later", which schedulers and `flock -n` users expect; distinct from
    # bad input (2) so a nightly job can tell an overlap from a broken city.
    exit_code = 75

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def write_failure(err: Exception, path: Path) -> OSError:
    """What a failed write of ``path`` was, as an OSError naming the path.

    ``ENOSPC`` when the file system is full or nearly (``err`` may not say so), else ``err``'s
    own errno and words. The command line prints it as one line.
    """
    try:
        full = shutil.disk_usage(path.parent if not path.is_dir() else path).free < _NEARLY_FULL
    except OSError:
        full = False
    code = getattr(err, "errno", None)
    if full or code == errno.ENOSPC:
        return OSError(errno.ENOSPC, "No space left on device", str(path))
    said = str(err).splitlines()[0] if str(err) else "write failed"
    return OSError(code or errno.EIO, getattr(err, "strerror", None) or said, str(path))
