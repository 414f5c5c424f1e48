"""``wide`` format: a row per platform grid id with a column per hour and a day type.

A day type stands for weekdays (``signalling.wide.day_types``), so wide tables become a
reference week starting ``signalling.start`` (default Monday 2024-01-01).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from urbanfusion.ingest.hourly import HourlyTotals
from urbanfusion.ingest.row_blocks import read_blocks
from urbanfusion.ingest.signalling.days import day_number
from urbanfusion.ingest.signalling.ledger import RowLedger
from urbanfusion.ingest.signalling.platform_rows import (
    account_spread,
    inside_rows,
    platform_ids,
    platform_of,
    spread_days,
)
from urbanfusion.ingest.signalling.reader import Read
from urbanfusion.ingest.signalling.reasons import TOO_LARGE, flag
from urbanfusion.pipeline.config import SignallingConfig
from urbanfusion.pipeline.errors import InputFormatError
from urbanfusion.pipeline.grid import CityGrid

WIDE_WEEK_START = dt.date(2024, 1, 1)  # a Monday


def _day_type(path: Path, cfg: SignallingConfig) -> str | None:
    stem = path.stem.lower()
    for name in cfg.wide.day_types:
        if name.lower() in stem:
            return name
    return None


def read(
    paths: list[Path],
    grid: CityGrid,
    cfg: SignallingConfig,
    ledger: RowLedger,
    totals: HourlyTotals,
) -> Read:
    """Each day type's table summed per platform cell, laid on its weekdays, spread on ``grid``."""
    platform = platform_of(grid, cfg)
    hours = [cfg.wide.hour_columns.format(hour=h) for h in range(24)]
    mapping = {"grid_id": cfg.columns.grid_id, **{f"h{h}": col for h, col in enumerate(hours)}}
    text = {"grid_id"}
    if cfg.wide.day_type_column:
        mapping["day_type"] = cfg.wide.day_type_column
        text.add("day_type")
    week_start = cfg.start or WIDE_WEEK_START
    first = day_number(week_start)
    weekday_of = {first + i: (week_start + dt.timedelta(days=i)).weekday() for i in range(7)}
    per_type: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for path in paths:
        file_type = _day_type(path, cfg)
        if file_type is None and not cfg.wide.day_type_column:
            raise InputFormatError(
                f"{path}: its name holds none of the day types {list(cfg.wide.day_types)}; "
                "rename it or set signalling.wide.day_type_column"
            )
        for block in read_blocks(path, mapping, cfg.timezone, frozenset(text)):
            ledger.malformed(block)
            block = block.take(~block.blank())
            ledger.read(rows=len(block))
            place, reason = platform_ids(block, platform)
            values = np.stack([block.columns[f"h{h}"] for h in range(24)], axis=1)
            kind = (
                block.columns["day_type"].astype(str)
                if cfg.wide.day_type_column
                else np.full(len(block), file_type, dtype=object)
            )
            flag(reason, ~np.isin(kind, list(cfg.wide.day_types)), "unknown day type")
            flag(reason, np.isnan(values).any(axis=1), "missing or non-numeric hour")
            flag(reason, (values < 0).any(axis=1), "negative count")
            flag(reason, (values > cfg.max_count).any(axis=1), TOO_LARGE)
            numeric = np.where(np.isnan(values) | (values > cfg.max_count), 0.0, values).sum(axis=1)
            ledger.read(count=float(numeric.sum()))
            bad = np.flatnonzero(reason)
            ledger.reject(
                block.source,
                block.line[bad],
                reason[bad],
                block.text(bad),
                float(numeric[bad].sum()),
            )
            ok = np.flatnonzero(reason == 0)
            ok = ok[inside_rows(place[ok], numeric[ok], platform, ledger)]
            for name in np.unique(kind[ok]):
                rows = ok[kind[ok] == name]
                acc, obs = per_type.setdefault(
                    name,
                    (np.zeros((len(platform.ids), 24)), np.zeros((len(platform.ids), 24), bool)),
                )
                np.add.at(acc, place[rows], values[rows])
                obs[place[rows]] = True
    # Each table counts once in the ledger, however many days of the week its day type covers.
    for acc, _ in per_type.values():
        account_spread(acc.sum(axis=1), platform, ledger)
    sums = HourlyTotals(len(platform.ids))
    for day, weekday in weekday_of.items():
        for name, (acc, obs) in per_type.items():
            if weekday in cfg.wide.day_types[name]:
                sums.add_dense(day, acc, obs)
    ledger.report.distinct_places = len(platform.ids)
    return Read(spread_days(platform, sums, totals), (first, first + 6))
