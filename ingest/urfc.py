"""The URFC visit format: one line per user, the hours they were seen in the area.

``USERID<TAB>YYYYMMDD&HH|HH,YYYYMMDD&HH|HH|HH,...`` (Baidu & XJTU Urban Region Function
Classification, 2019), one file per area (``AreaID_CategoryID.txt``), covering the 182 days from
2018-10-01 (a Monday) to 2019-03-31. Aggregated as the data set's users do: add 1 per (user,
date, hour), which gives the visit counts per (day, hour) that hourly grid signalling also gives.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import InputFormatError, InputNotFoundError

FIRST_DAY = dt.date(2018, 10, 1)
N_DAYS = 182


@dataclass
class Visits:
    """Visit counts of one area and what could not be read."""

    counts: np.ndarray  # (N_DAYS, 24) float32, users seen per day and hour
    users: int
    bad_entries: int  # date&hours entries that did not parse or fell outside the 182 days
    lines: int

    @property
    def days(self) -> np.ndarray:
        """The dates of the rows of ``counts``."""
        return np.datetime64(FIRST_DAY) + np.arange(N_DAYS)

    def weekly_tensor(self) -> np.ndarray:
        """The usual URFC tensor ``(7 weekdays, 26 weeks, 24 hours)``, Monday first."""
        return self.counts.reshape(26, 7, 24).transpose(1, 0, 2)


def parse_visits(text: str, source: str = "visits") -> Visits:
    """Aggregate URFC visit lines to counts per (day, hour).

    Raises:
        InputFormatError: a non-empty line has no tab between user id and visits.
    """
    counts = np.zeros((N_DAYS, 24), dtype=np.float32)
    users = bad = lines = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        lines += 1
        _, sep, visits = line.partition("\t")
        if not sep:
            raise InputFormatError(
                f"{source}: line {number} has no tab after the user id; URFC visit lines are "
                "USERID<TAB>YYYYMMDD&HH|HH,..."
            )
        users += 1
        for entry in visits.strip().split(","):
            date, amp, hours = entry.partition("&")
            try:
                day = (dt.date(int(date[:4]), int(date[4:6]), int(date[6:8])) - FIRST_DAY).days
                hs = [int(h) for h in hours.split("|")]
            except ValueError:
                bad += 1
                continue
            if (
                not amp
                or len(date) != 8
                or not 0 <= day < N_DAYS
                or any(not 0 <= h < 24 for h in hs)
            ):
                bad += 1
                continue
            # Each (user, date, hour) counts once, even if listed twice.
            counts[day, sorted(set(hs))] += 1
    return Visits(counts, users, bad, lines)


def read_visits(path: Path) -> Visits:
    """Read one ``AreaID_CategoryID.txt`` visit file.

    Raises:
        InputNotFoundError: the file does not exist.
        InputFormatError: it is not in the URFC visit format.
    """
    if not path.is_file():
        raise InputNotFoundError(f"visit file {path} does not exist")
    return parse_visits(path.read_text(encoding="utf-8", errors="replace"), str(path))
