"""``activity`` format: the ``activity.parquet`` of an earlier run (same CRS and cell size)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from urbanfusion.ingest.activity_store import stored_blocks
from urbanfusion.ingest.hourly import HourlyTotals, SeenHours
from urbanfusion.ingest.signalling.days import apply_window, day_range, in_days
from urbanfusion.ingest.signalling.ledger import RowLedger
from urbanfusion.ingest.signalling.reader import Read
from urbanfusion.ingest.signalling.reasons import DUPLICATE, codes
from urbanfusion.pipeline.config import SignallingConfig
from urbanfusion.pipeline.grid import CityGrid


def read(
    paths: list[Path],
    grid: CityGrid,
    cfg: SignallingConfig,
    ledger: RowLedger,
    totals: HourlyTotals,
) -> Read:
    """Stored activity rows onto ``grid``: cells of other grids outside, repeats duplicates."""
    seen = SeenHours()
    index = pd.Index(grid.cell_ids())
    days = day_range(cfg)
    for path in paths:
        row = 1
        for cell_id, day, hour, count in stored_blocks(path):
            lines = np.arange(row, row + len(cell_id))
            row += len(cell_id)
            ledger.read(len(cell_id), float(count.sum()))
            cell = index.get_indexer(cell_id)
            outside, late = cell < 0, (cell >= 0) & ~in_days(day, days)
            ledger.outside(int(outside.sum()), float(count[outside].sum()))
            ledger.outside_days(int(late.sum()), float(count[late].sum()))
            keep = np.flatnonzero(~outside & ~late)
            fresh = seen.first_time(cell[keep], day[keep], hour[keep])
            dup = keep[~fresh]
            ledger.reject(
                str(path),
                lines[dup],
                codes(DUPLICATE, len(dup)),
                [
                    f"{c},{d},{h},{n}"
                    for c, d, h, n in zip(
                        cell_id[dup], day[dup], hour[dup], count[dup], strict=True
                    )
                ],
                float(count[dup].sum()),
            )
            keep = keep[fresh]
            ledger.aggregated(len(keep), float(count[keep].sum()))
            totals.add(cell[keep], day[keep], hour[keep], count[keep])
    return Read(totals, apply_window(totals, cfg, ledger, counted=True))
