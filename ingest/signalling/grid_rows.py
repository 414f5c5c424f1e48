"""``grid`` format: long rows ``time, grid_id, count`` plus the platform's grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from urbanfusion.ingest.hourly import HourlyTotals, SeenHours
from urbanfusion.ingest.row_blocks import read_blocks
from urbanfusion.ingest.signalling.days import apply_window, day_range
from urbanfusion.ingest.signalling.ledger import RowLedger
from urbanfusion.ingest.signalling.platform_rows import (
    account_spread,
    inside_rows,
    platform_ids,
    platform_of,
    spread_days,
)
from urbanfusion.ingest.signalling.reader import Read
from urbanfusion.ingest.signalling.timed_rows import timed_rows
from urbanfusion.pipeline.config import SignallingConfig
from urbanfusion.pipeline.grid import CityGrid


def read(
    paths: list[Path],
    grid: CityGrid,
    cfg: SignallingConfig,
    ledger: RowLedger,
    totals: HourlyTotals,
) -> Read:
    """Rows summed per platform cell, windowed, then spread onto ``grid`` by area."""
    platform = platform_of(grid, cfg)
    c = cfg.columns
    mapping = {"time": c.time, "grid_id": c.grid_id, "count": c.count}
    seen = SeenHours()
    sums = HourlyTotals(len(platform.ids))
    days = day_range(cfg)
    for path in paths:
        for block in read_blocks(path, mapping, cfg.timezone, frozenset({"grid_id"})):
            ledger.malformed(block)
            block = block.take(~block.blank())
            ledger.read(rows=len(block))
            place, reason = platform_ids(block, platform)
            kept = timed_rows(block, ledger, place, reason, days, seen, cfg.max_count)
            inside = inside_rows(kept.place, kept.counts, platform, ledger)
            sums.add(kept.place[inside], kept.day[inside], kept.hour[inside], kept.counts[inside])
    # Counts are split inside/outside only once the window has left its days out.
    days = apply_window(sums, cfg, ledger, counted=False)
    per_id = np.zeros(len(platform.ids))
    for d in sums.days:
        per_id += sums.sums[d].reshape(-1, 24).sum(axis=1)
    account_spread(per_id, platform, ledger)
    ledger.report.distinct_places = len(platform.ids)
    return Read(spread_days(platform, sums, totals), days)
