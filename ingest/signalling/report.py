"""What a run says of its signalling: the counts for the manifest and the lines to read after."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from urbanfusion.ingest.signalling.reasons import DUPLICATE

# A share of the rows above which a single cause of loss is worth a warning line.
WARN_SHARE = 0.05
# Read in the wrong datum, points move 300-600 m (GCJ-02) or ~1 km (BD-09): rows near the
# extent's edge cross it. Read in the right one, another datum loses rows at the edge (or
# changes little when the export is much larger than the extent). So a datum that brings this
# many more rows inside is the likelier one.
DATUM_SHARE = 0.0025
DATUM_MIN_ROWS = 20
DATUM_SOURCES = {
    "wgs84": "GPS or an international map (WGS84)",
    "gcj02": "Chinese web map such as Amap/Gaode or Tencent (GCJ-02)",
    "bd09": "Baidu map (BD-09)",
}
REJECT_HINTS = {
    DUPLICATE: (
        "rows repeating a place and hour often mean wrong time offsets (local times marked Z "
        "or UTC read as local): check signalling.timezone and the time column"
    ),
    "coordinates out of range": "are lon and lat swapped in signalling.columns?",
    "missing or non-numeric count": "is the count column text, or the wrong column?",
    "unparsable time": "check the time column and its format",
}


@dataclass
class SignallingReport:
    """Counts for the manifest (the counters are kept by :class:`~.ledger.RowLedger`)."""

    format: str = "points"
    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_aggregated: int = 0
    rows_outside: int = 0
    rows_outside_time: int = 0
    rows_rejected: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)
    count_read: float = 0.0
    count_aggregated: float = 0.0
    count_outside: float = 0.0
    count_outside_time: float = 0.0
    count_rejected: float = 0.0
    distinct_places: int = 0
    first_day: str | None = None
    last_day: str | None = None
    # Rows that would fall inside the extent with the points read in each datum (points
    # format): the declared one and the others, to catch a datum given wrongly.
    rows_inside_by_datum: dict[str, int] = field(default_factory=dict)
    datum: str = "wgs84"
    # signalling.window_days: the days kept, the rows it left out, and the days after it that
    # held too little data to anchor it (stray rows: a date mistyped).
    window: list[str] | None = None
    rows_left_by_window: int = 0
    stray_days: list[str] = field(default_factory=list)
    stray_rows: int = 0

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return asdict(self)

    def warnings(self) -> list[str]:
        """A line to read after a run that used rows, when many were rejected for one cause.

        (Rows outside the extent are normal: exports are often larger than the extent.)
        """
        out = []
        if self.rows_read and self.rows_rejected > WARN_SHARE * self.rows_read:
            reason, n = Counter(self.reject_reasons).most_common(1)[0]
            hint = REJECT_HINTS.get(reason, "see rejects.parquet")
            out.append(
                f"signalling: {self.rows_rejected} of {self.rows_read} rows rejected, {n} as "
                f"'{reason}'; {hint}"
            )
        if self.stray_days and self.window:
            days = ", ".join(self.stray_days[:3]) + (" ..." if len(self.stray_days) > 3 else "")
            out.append(
                f"signalling: {self.stray_rows} row(s) dated after {self.window[1]} ({days}) "
                "hold too little data to be days of the city; the window_days window ends on "
                f"{self.window[1]} and leaves them out: fix their dates if they are real"
            )
        if self.window and self.rows_read and self.rows_left_by_window > self.rows_read / 2:
            out.append(
                f"signalling: window_days keeps {self.window[0]} to {self.window[1]} and "
                f"leaves out {self.rows_left_by_window} of {self.rows_read} rows "
                f"({self.rows_left_by_window / self.rows_read:.0%}); raise "
                "signalling.window_days or deliver only the days to map"
            )
        declared = self.rows_inside_by_datum.get(self.datum)
        if declared is not None:
            best, n = max(self.rows_inside_by_datum.items(), key=lambda kv: kv[1])
            gain = n - declared
            if best != self.datum and gain >= max(DATUM_MIN_ROWS, DATUM_SHARE * self.rows_read):
                out.append(
                    f"signalling: {gain} more rows ({gain / self.rows_read:.1%}) fall inside "
                    f"the extent when the points are read as {best} instead of {self.datum}; "
                    f"if they come from a {DATUM_SOURCES[best]}, set signalling.coords: {best}"
                )
        return out

    def nothing_inside(self, n_files: int) -> str:
        """Why no row was used, with the likeliest fix first (the run stops: no rejects file)."""
        reasons = Counter(self.reject_reasons).most_common(2)
        why = "; ".join(f"{n} {reason}" for reason, n in reasons)
        rejected = f"{self.rows_rejected} rejected ({why})" if reasons else "none rejected"
        if reasons and reasons[0][1] > self.rows_read / 2:
            reason = reasons[0][0]
            hint = f"most rows are rejected as '{reason}': " + REJECT_HINTS.get(
                reason, "check signalling.columns"
            )
        elif self.rows_outside > self.rows_read / 2:
            hint = (
                "most rows fall outside the extent: check the extent, that lon and lat are not "
                "swapped in signalling.columns, and signalling.coords (wgs84, gcj02 or bd09)"
            )
        else:
            hint = "check the extent, the day range (signalling.start, end) and signalling.columns"
        return (
            f"signalling: none of the {self.rows_read} rows in {n_files} file(s) falls inside "
            f"the extent and day range ({self.rows_outside} outside the extent, "
            f"{self.rows_outside_time} outside the days, {rejected}); {hint}"
        )
