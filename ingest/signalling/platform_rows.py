"""What the platform-grid formats (``grid``, ``wide``) share: ids, the extent, the spread."""

from __future__ import annotations

import numpy as np
import pandas as pd

from urbanfusion.ingest.hourly import HourlyTotals
from urbanfusion.ingest.platform_grid import PlatformGrid, read_platform_grid
from urbanfusion.ingest.row_blocks import RowBlock
from urbanfusion.ingest.signalling.ledger import RowLedger
from urbanfusion.ingest.signalling.reasons import flag
from urbanfusion.pipeline.config import SignallingConfig
from urbanfusion.pipeline.errors import InputFormatError
from urbanfusion.pipeline.grid import CityGrid


def platform_of(grid: CityGrid, cfg: SignallingConfig) -> PlatformGrid:
    """The platform's grid (``signalling.grid``, read as given: absolute, as a run gives it)."""
    if cfg.grid is None:  # the config's validator already says so; callers may skip it
        raise InputFormatError(f"signalling format '{cfg.format}' needs signalling.grid")
    return read_platform_grid(cfg.grid, grid, cfg.coords)


def platform_ids(block: RowBlock, platform: PlatformGrid) -> tuple[np.ndarray, np.ndarray]:
    """Each row's platform cell (-1 unknown) and its reject code (0: known)."""
    ids = block.columns["grid_id"]
    missing = pd.isna(ids)
    place = np.full(len(block), -1, dtype=np.int64)
    known = platform.ids.get_indexer(pd.Index(ids[~missing]).astype(str))
    place[~missing] = known
    code = np.zeros(len(block), np.uint8)
    flag(code, missing, "missing grid id")
    flag(code, place < 0, "unknown grid id (not in signalling.grid)")
    return place, code


def inside_rows(
    place: np.ndarray, count: np.ndarray, platform: PlatformGrid, ledger: RowLedger
) -> np.ndarray:
    """Which rows touch the extent; the rest (platform cell wholly outside) counted outside.

    The rows that touch it are counted aggregated; their counts are split between aggregated
    and outside by :func:`account_spread` once totalled.
    """
    outside = platform.inside_share[place] <= 0
    ledger.outside(int(outside.sum()), float(count[outside].sum()))
    ledger.aggregated(rows=int((~outside).sum()))
    return ~outside


def account_spread(per_id: np.ndarray, platform: PlatformGrid, ledger: RowLedger) -> None:
    """Split each platform cell's total into the part inside the extent and the part outside."""
    share = platform.inside_share
    ledger.aggregated(count=float((per_id * share).sum()))
    ledger.outside(count=float((per_id * (1 - share)).sum()))


def spread_days(platform: PlatformGrid, sums: HourlyTotals, totals: HourlyTotals) -> HourlyTotals:
    """Spread platform-cell totals onto the analysis grid's ``totals``, day by day, by area."""
    for d in sums.days:
        observed = sums.observed[d].reshape(-1, 24)
        totals.add_dense(d, *platform.spread(sums.sums[d].reshape(-1, 24), observed))
    return totals
