"""An output folder that runs share night after night: locked, published as one set, with history.

::

    OUT/
      .urbanfusion.lock              one run at a time (filelock: the kernel frees it if a run dies)
      runs/<run id>/                 each run's files; older runs keep only their map and manifest
      store/<kind>/<fingerprint>.*   the stage results the latest run came from (reused by reruns)
      latest -> runs/<run id>        publishing = one atomic switch of this link
      class_map.tif -> latest/class_map.tif, ...   the names readers open, through ``latest``

A run writes into ``runs/.staging-<id>/``, renames it to ``runs/<id>`` and then replaces the
``latest`` link with a new one in a single ``rename``: a reader that resolves ``latest`` sees
one whole run, never a mix, whatever moment the writer is killed at. Everything happens inside
``OUT``, so ``OUT`` may be a mount point. A killed run leaves at most a staging folder or a
temporary link, which the next run removes once it holds the lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from urbanfusion.pipeline.atomic import atomic_write
from urbanfusion.pipeline.errors import ConfigError, OutputBusyError
from urbanfusion.pipeline.fingerprint import file_sha256, stat_identity
from urbanfusion.workflows.output_names import KEPT_IN_HISTORY, MANIFEST, OUTPUT_FILES

# Never deleted, even after a failed first run: a process waiting on the old file would then
# hold a lock on a file no one else sees while a newcomer locks a new one.
LOCK = ".urbanfusion.lock"
# Who holds the lock (pid, host, start, command), so a run that waits can say whom it waits for.
LOCK_OWNER = ".urbanfusion.lock.owner"
# The published run's files as they were published (stat identities): a file changed in place
# afterwards (`cp other.tif OUT/class_map.tif`) is noticed, and the run is made again.
PUBLISHED = ".published.json"
RUNS = "runs"
LATEST = "latest"
STORE = "store"  # the run store (urbanfusion.pipeline.store): results by fingerprint
_STAGING = ".staging-"
_NEW_LINK = ".latest-"
_STORE_SUFFIXES = ("npy", "json", "parquet")


def written_paths(out: Path) -> list[Path]:
    """A path of every kind a run writes under ``out``: outputs, runs and the store."""
    return [
        *(out / name for name in OUTPUT_FILES),
        *(out / RUNS / "run" / name for name in OUTPUT_FILES),
        *(out / STORE / "kind" / f"key.{suffix}" for suffix in _STORE_SUFFIXES),
    ]


# Runs this process published (an interrupted command says truly whether it had published).
_published_here: list[Path] = []


def published_here() -> list[Path]:
    """The run folders this process published, oldest first."""
    return list(_published_here)


def lock_owner() -> dict[str, object]:
    """The running process as a lock's holder: pid, host, start time and command."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": dt.datetime.now(dt.UTC).isoformat(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def describe_owner(owner: object) -> str:
    """A lock holder in words: ``run PID 1234 on host (started ..., 5 min ago: ...)``."""
    try:
        fields = owner if isinstance(owner, dict) else {}
        started = dt.datetime.fromisoformat(fields["started"])
        minutes = (dt.datetime.now(dt.UTC) - started).total_seconds() / 60
        return (
            f"run PID {fields['pid']} on {fields['host']} (started "
            f"{started:%Y-%m-%d %H:%M:%S} UTC, {minutes:.0f} min ago: {fields['command']})"
        )
    except (ValueError, KeyError, TypeError):
        return "another run"


def _write_owner(path: Path) -> None:
    """Say who holds the lock (written whole: a reader never sees half of it)."""
    owner = lock_owner()
    atomic_write(path, lambda f: f.write(json.dumps(owner).encode()))


_RUN_ID = "%Y%m%dT%H%M%S%fZ"


def new_run_id(now: dt.datetime | None = None, after: str | None = None) -> str:
    """A run id that sorts in time order: ``20261126T021500123456Z``.

    ``after``: the newest run id of the folder. With the clock set back, the id is one
    microsecond after it instead, so ids still sort in the order runs were published (history is
    trimmed in that order).
    """
    now = now or dt.datetime.now(dt.UTC)
    if after is not None:
        with contextlib.suppress(ValueError):
            last = dt.datetime.strptime(after, _RUN_ID).replace(tzinfo=dt.UTC)
            now = max(now, last + dt.timedelta(microseconds=1))
    return now.strftime(_RUN_ID)


def _replace_link(link: Path, target: str, tmp_name: str) -> None:
    """Point ``link`` at ``target`` atomically (a new link renamed over the old one)."""
    tmp = link.with_name(tmp_name)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)


class OutputFolder:
    """The output folder of one city: its lock, its published runs and their history."""

    def __init__(self, path: Path) -> None:
        """``path`` is the config's ``output.dir``; nothing is created until :meth:`locked`."""
        self.path = path
        self.runs = path / RUNS

    @contextlib.contextmanager
    def locked(
        self, wait: bool = True, on_wait: Callable[[str], None] | None = None
    ) -> Iterator[None]:
        """Hold the folder's lock for the block, then clear what killed runs left behind.

        Raises:
            ConfigError: the output folder is a file.
            OutputBusyError: another run holds the lock and ``wait`` is false.
        """
        # The folder itself or a folder above it may be a file: name the one that is.
        blocking = next((p for p in (self.path, *self.path.parents) if p.is_file()), None)
        if blocking is not None:
            where = "" if blocking == self.path else f": {blocking}"
            raise ConfigError(
                f"output.dir {self.path}{where} is a file, not a folder; point output.dir at a "
                "folder"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.path / LOCK)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = self.lock_holder()
            if not wait:
                raise OutputBusyError(
                    f"{self.path} is being written by {holder} (lock {self.path / LOCK}); "
                    "try again when it ends, or leave out --no-wait to wait for it"
                ) from None
            if on_wait is not None:
                on_wait(
                    f"waiting for {holder} to finish writing {self.path} (if it hangs, stop "
                    "it; the kernel frees its lock)"
                )
            lock.acquire()
        owner = self.path / LOCK_OWNER
        try:
            _write_owner(owner)
            self._clear_leftovers()
            yield
        finally:
            owner.unlink(missing_ok=True)
            lock.release()

    def lock_holder(self) -> str:
        """Who holds the lock, in words: ``run PID 1234 on host (started ..., 5 min ago: ...)``."""
        try:
            owner = json.loads((self.path / LOCK_OWNER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "another run"
        return describe_owner(owner)

    def _clear_leftovers(self) -> None:
        """Staging folders and half-made links of killed runs (we hold the lock: none is live)."""
        if self.runs.is_dir():
            for entry in self.runs.iterdir():
                if entry.name.startswith(_STAGING):
                    shutil.rmtree(entry, ignore_errors=True)
        for entry in self.path.glob(f"{_NEW_LINK}*"):
            entry.unlink(missing_ok=True)
        for entry in self.path.glob(f".*{_NEW_LINK}*"):
            entry.unlink(missing_ok=True)

    def latest(self) -> Path | None:
        """The folder of the published run, or None before the first one."""
        link = self.path / LATEST
        return link.resolve() if link.is_symlink() and link.resolve().is_dir() else None

    @contextlib.contextmanager
    def staging(self, run_id: str) -> Iterator[Path]:
        """A folder to write a run's files into; removed if the block fails."""
        staging = self.runs / f"{_STAGING}{run_id}"
        staging.mkdir(parents=True)
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def publish(self, staging: Path, run_id: str, keep: int) -> Path:
        """Make a staged run the published one, then trim the history to ``keep`` runs.

        Returns:
            The run's folder.
        """
        final = self.runs / run_id
        for f in staging.iterdir():  # published files are not to be written again
            f.chmod(0o444)
        os.rename(staging, final)
        _replace_link(self.path / LATEST, f"{RUNS}/{run_id}", f"{_NEW_LINK}{run_id}")
        _published_here.append(final)
        record = {
            "run": run_id,
            "files": {f.name: stat_identity(f.stat()) for f in final.iterdir()},
        }
        atomic_write(self.path / PUBLISHED, lambda f: f.write(json.dumps(record).encode()))
        for f in sorted(final.iterdir()):
            # Stable names for readers, made once: they resolve through `latest`.
            link, target = self.path / f.name, f"{LATEST}/{f.name}"
            if not (link.is_symlink() and os.readlink(link) == target):
                _replace_link(link, target, f".{f.name}{_NEW_LINK}{run_id}")
        for name in OUTPUT_FILES:  # an output this run does not write (cells in another format)
            if not (final / name).exists() and (self.path / name).is_symlink():
                (self.path / name).unlink()
        self._trim(final, keep)
        return final

    def outputs(self) -> dict[str, Path]:
        """The published run's outputs by name, as readers open them (``OUT/<name>``)."""
        latest = self.latest()
        return {
            name: self.path / name
            for name in OUTPUT_FILES
            if latest is not None and (latest / name).exists()
        }

    def next_run_id(self) -> str:
        """An id for a new run that sorts after every kept run's (:func:`new_run_id`)."""
        runs = self.history()
        return new_run_id(after=runs[-1].name if runs else None)

    def changed_outputs(self, run: Path) -> list[str]:
        """Files of the published ``run`` changed since it was published (by stat identity).

        A folder published by an earlier urbanfusion has no record: its files are compared
        with the hashes in its manifest instead.
        """
        try:
            record = json.loads((self.path / PUBLISHED).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
        if record is None or record.get("run") != run.name:
            manifest = json.loads((run / MANIFEST).read_text(encoding="utf-8"))
            listed = manifest.get("outputs", {})
            return sorted(
                name
                for name, entry in listed.items()
                if not (run / name).is_file() or file_sha256(run / name) != entry["sha256"]
            )
        changed = []
        for name, identity in record["files"].items():
            try:
                now = stat_identity((run / name).stat())
            except FileNotFoundError:
                now = {}
            if now != identity:
                changed.append(name)
        return sorted(changed)

    def history(self) -> list[Path]:
        """Folders of the runs kept, oldest first."""
        if not self.runs.is_dir():
            return []
        return sorted(d for d in self.runs.iterdir() if d.is_dir() and not d.name.startswith("."))

    def _trim(self, latest: Path, keep: int) -> None:
        runs = self.history()
        for old in runs[: max(0, len(runs) - keep)]:
            if old != latest:
                shutil.rmtree(old, ignore_errors=True)
        for run in runs[-keep:]:
            if run == latest:
                continue
            for f in run.iterdir():
                if f.name not in KEPT_IN_HISTORY:
                    f.unlink(missing_ok=True)
