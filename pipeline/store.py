"""The run store: stage results kept under a fingerprint of exactly what they depend on.

A stage asks for a result by kind and key (a digest of its inputs' identities, the settings that
matter and the code); when it is there it is reused, else computed and put. Files are written to
a temporary name and renamed, so a run killed at any moment leaves only whole entries, which the
next run reuses: that is how a killed run resumes. After a run is published, entries it did not
use are removed (:meth:`ResultStore.keep_only_used`), so the store holds what the latest outputs
came from and no more.

Layout: ``<root>/<kind>/<key>.<ext>``: ``.npy`` arrays (numpy opens them), ``.json`` records,
``.parquet`` tables. Every method is safe to call from dask tasks in threads or processes that
share the folder; bookkeeping of what was used lives in the process that owns the store.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from urbanfusion.pipeline.atomic import atomic_write
from urbanfusion.pipeline.errors import StoreError


def _damaged(path: Path, err: Exception) -> StoreError:
    return StoreError(
        f"{path}: a stored result cannot be read ({type(err).__name__}: "
        f"{str(err).splitlines()[0] if str(err) else 'damaged'}); run again with --force to "
        "compute it afresh"
    )


class ResultStore:
    """A folder of fingerprinted results; counts what each run computed and reused."""

    def __init__(self, root: Path, reuse: bool = True) -> None:
        """Keep results under ``root`` (created when the first result is put).

        ``reuse=False`` (``--force``) computes every result again and replaces the stored one.
        """
        self.root = root
        self.reuse = reuse
        self.used: set[Path] = set()
        self.counts: Counter[str] = Counter()  # "<kind> computed" / "<kind> reused"

    def path(self, kind: str, key: str, ext: str) -> Path:
        """Where the result ``key`` of ``kind`` lives (whether or not it exists yet)."""
        return self.root / kind / f"{key}.{ext}"

    def has(self, kind: str, key: str, ext: str) -> bool:
        """Whether the result is there to reuse (never, with ``reuse=False``). Records nothing."""
        return self.reuse and self.path(kind, key, ext).is_file()

    def use(self, kind: str, key: str, ext: str) -> bool:
        """Record that this run needs the result; whether it is there to reuse.

        Counted as reused when :meth:`has` it, else as computed (the caller computes and
        puts it); either way :meth:`keep_only_used` keeps it.
        """
        found = self.has(kind, key, ext)
        self.note(kind, self.path(kind, key, ext), reused=found)
        return found

    def note(self, kind: str, path: Path, reused: bool) -> None:
        """Record that this run used ``path`` (reused, or computed and put by a task)."""
        self.used.add(path)
        self.counts[f"{kind} {'reused' if reused else 'computed'}"] += 1

    def keep(self, *paths: Path) -> None:
        """Record more files of a result already counted (kept by :meth:`keep_only_used`)."""
        self.used.update(paths)

    @staticmethod
    def save_array(path: Path, array: np.ndarray) -> np.ndarray:
        """Put an array (atomically) and return it, so a dask task can store and pass it on."""
        atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))
        return array

    @staticmethod
    def load_array(path: Path) -> np.ndarray:
        """An array put by :meth:`save_array`.

        Raises:
            StoreError: the file is damaged (writes are atomic, so not by a killed run).
        """
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise _damaged(path, err) from None

    @staticmethod
    def save_json(path: Path, value: object) -> None:
        """Put a JSON record (atomically)."""
        atomic_write(path, lambda f: f.write(json.dumps(value, sort_keys=True).encode()))

    @staticmethod
    def load_json(path: Path) -> object:
        """A record put by :meth:`save_json`.

        Raises:
            StoreError: the file is damaged.
        """
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as err:
            raise _damaged(path, err) from None

    def summary(self) -> dict[str, dict[str, int]]:
        """Per kind, how many results this run computed and reused (for the manifest)."""
        out: dict[str, dict[str, int]] = {}
        for label, n in sorted(self.counts.items()):
            kind, what = label.rsplit(" ", 1)
            out.setdefault(kind, {"computed": 0, "reused": 0})[what] = n
        return out

    def keep_only_used(self) -> None:
        """Remove every entry (and leftover temporary file) this run did not use."""
        if not self.root.is_dir():
            return
        for folder in self.root.iterdir():
            if folder.is_dir():
                for f in folder.iterdir():
                    if f not in self.used:
                        f.unlink(missing_ok=True)
