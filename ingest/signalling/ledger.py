"""The row ledger: every row read is aggregated, outside the extent, outside the days or rejected.

The ledger owns the report's counters: readers tell it what became of rows (and of their
counts) through its methods, never by adding to the report, and :meth:`RowLedger.check` proves
at the end that ``rows_read == rows_aggregated + rows_outside + rows_outside_time +
rows_rejected``, and the same for the sums of counts: a row lost between two counters is an
error, not a smaller map.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from urbanfusion.ingest.row_blocks import RowBlock, lines_as_read
from urbanfusion.ingest.signalling.reasons import REASONS, codes
from urbanfusion.ingest.signalling.report import SignallingReport
from urbanfusion.pipeline.errors import UrbanFusionError

REJECT_COLUMNS = ["source_file", "line", "reason", "raw"]
# Sums of counts are float64 sums taken in different orders: equal to this relative tolerance.
COUNT_TOLERANCE = 1e-9


class LedgerError(UrbanFusionError, RuntimeError):
    """Rows or counts were lost between the ledger's counters (a bug: please report it)."""


class RowLedger:
    """Rejects and counters of a file or a run, filled block by block."""

    def __init__(self, report: SignallingReport) -> None:
        """Count into ``report`` (its counters are the ledger's from here on)."""
        self.report = report
        self.frames: list[pd.DataFrame] = []
        self.reasons: Counter[str] = Counter()
        # Sources whose rejected rows already hold the lines as read (a stored part's).
        self.as_read: set[str] = set()

    def read(self, rows: int = 0, count: float = 0.0) -> None:
        """Rows read, and the sum of their counts (what is not a number counts 0)."""
        self.report.rows_read += rows
        self.report.count_read += count

    def aggregated(self, rows: int = 0, count: float = 0.0) -> None:
        """Rows (and counts) that went into the activity."""
        self.report.rows_aggregated += rows
        self.report.count_aggregated += count

    def outside(self, rows: int = 0, count: float = 0.0) -> None:
        """Rows (and counts) outside the extent."""
        self.report.rows_outside += rows
        self.report.count_outside += count

    def outside_days(self, rows: int = 0, count: float = 0.0) -> None:
        """Rows (and counts) outside the day range."""
        self.report.rows_outside_time += rows
        self.report.count_outside_time += count

    def left_by_window(self, rows: int, count: float, counted: bool) -> None:
        """Aggregated rows whose days ``window_days`` leaves out: now outside the days.

        ``counted``: their counts were added to the aggregated count already (the platform
        formats count theirs only once the window is set).
        """
        self.report.rows_aggregated -= rows
        self.outside_days(rows, count)
        self.report.rows_left_by_window = rows
        if counted:
            self.report.count_aggregated -= count

    def malformed(self, block: RowBlock) -> None:
        """Reject the block's lines with the wrong number of fields (counted as read)."""
        if block.malformed:
            self.read(rows=len(block.malformed))
            self.reject(
                block.source,
                np.array([n for n, _ in block.malformed]),
                codes("wrong number of fields", len(block.malformed)),
                [t for _, t in block.malformed],
                0.0,
            )

    def reject(
        self, source: str, line: np.ndarray, code: np.ndarray, raw: list[str], count: float
    ) -> None:
        """Reject rows of ``source`` at ``line`` for reason ``code``; ``count`` is their sum."""
        if len(line) == 0:
            return
        reason = REASONS[code]
        self.report.rows_rejected += len(line)
        self.report.count_rejected += count
        self.reasons.update(reason.tolist())
        self.frames.append(
            pd.DataFrame(
                {"source_file": source, "line": line.astype(np.int64), "reason": reason, "raw": raw}
            )
        )

    def merge(self, part: RowLedger) -> None:
        """Add what one file's own reading counted and rejected."""
        r = part.report
        self.read(r.rows_read, r.count_read)
        self.outside_days(r.rows_outside_time, r.count_outside_time)
        self.report.rows_rejected += r.rows_rejected
        self.report.count_rejected += r.count_rejected
        self.reasons.update(part.reasons)
        self.frames.extend(part.frames)
        self.as_read |= part.as_read

    def record(self, source: str) -> dict[str, object]:
        """A JSON-friendly record of a file's ledger (its rejects are kept apart)."""
        return {"source": source, "report": self.report.to_dict(), "reasons": dict(self.reasons)}

    @classmethod
    def from_record(cls, record: dict[str, object], rejects: pd.DataFrame) -> RowLedger:
        """A file's ledger from :meth:`record` and its rejects table (lines as read)."""
        report, reasons = record["report"], record["reasons"]
        if not isinstance(report, dict) or not isinstance(reasons, dict):
            raise ValueError(f"not a ledger record: {sorted(record)}")
        ledger = cls(SignallingReport(**report))
        ledger.reasons.update(reasons)
        ledger.frames.append(rejects)
        ledger.as_read.add(str(record["source"]))  # rejects() filled their lines
        return ledger

    def check(self) -> None:
        """Raise :class:`LedgerError` unless every row read, and its count, is accounted for."""
        r = self.report
        rows = r.rows_aggregated + r.rows_outside + r.rows_outside_time + r.rows_rejected
        count = r.count_aggregated + r.count_outside + r.count_outside_time + r.count_rejected
        if rows != r.rows_read or not math.isclose(
            count, r.count_read, rel_tol=COUNT_TOLERANCE, abs_tol=1e-6
        ):
            raise LedgerError(
                f"signalling: the row ledger does not balance: read {r.rows_read} rows "
                f"(count {r.count_read:.6g}), accounted {rows} (count {count:.6g}: aggregated "
                f"{r.rows_aggregated}, outside {r.rows_outside}, outside the days "
                f"{r.rows_outside_time}, rejected {r.rows_rejected}); nothing was published: "
                "this is a bug, please report it with the signalling files"
            )

    def rejects(self) -> pd.DataFrame:
        """Every rejected row (source_file, line, reason, raw); sets the report's reasons.

        ``raw`` is the line as the file has it (read again for the files with rejects), or for
        Parquet the row's values.
        """
        self.report.reject_reasons = dict(self.reasons)
        if not self.frames:
            return pd.DataFrame(
                {
                    c: pd.Series(dtype=t)
                    for c, t in zip(REJECT_COLUMNS, ["str", "int64", "str", "str"], strict=True)
                }
            )
        table = pd.concat(self.frames, ignore_index=True)
        for source in table["source_file"].unique():
            if source in self.as_read:
                continue
            rows = (table["source_file"] == source).to_numpy()
            text = lines_as_read(Path(source), table.loc[rows, "line"].tolist())
            if text:
                raw = table.loc[rows, ["line", "raw"]]
                table.loc[rows, "raw"] = [text.get(n, r) for n, r in raw.itertuples(index=False)]
            self.as_read.add(source)
        self.frames = [table]
        return table
