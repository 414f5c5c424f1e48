"""Signalling files read in blocks of rows, in bounded memory, every row keeping its line number.

Two CSV paths give identical results. The fast one lets pyarrow parse typed columns on all cores;
the first time a block holds something it cannot type (a malformed line, ``abc`` as a count, a
time with a zone designator), the file is read again by the exact path, which parses strings on
one thread so that every malformed line is reported with its number. Clean files, the usual
case at city scale, never leave the fast path. Parquet is typed already and read by row groups.

A block's ``line`` is the 1-based line of the row in its file (the header is line 1); for
Parquet it is the 1-based row number. Blank lines are not rows, but they count as lines.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from urbanfusion.pipeline.errors import InputFormatError

# Small blocks: Arrow's streaming reader parses about 40 blocks ahead of its consumer, so the
# block size bounds memory (4 MB: about 165 MB of parsed rows on a 1 GB file; 8 MB took twice).
BLOCK_BYTES = 4 << 20
_AWARE = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})$")


@dataclass
class RowBlock:
    """Parsed rows of one block: numeric values (NaN where missing or unparsable)."""

    source: str
    line: np.ndarray  # int64
    columns: dict[str, np.ndarray]  # float64; datetime64[s] wall time for ``time``; object text
    raw: np.ndarray | None = None  # (row, column) original text (exact path only)
    malformed: list[tuple[int, str]] = field(default_factory=list)  # (line, text)

    def __len__(self) -> int:
        return len(self.line)

    def take(self, keep: np.ndarray, malformed: list[tuple[int, str]] | None = None) -> RowBlock:
        """The rows where ``keep`` is true, with ``malformed`` lines (default: none)."""
        return RowBlock(
            self.source,
            self.line[keep],
            {k: v[keep] for k, v in self.columns.items()},
            None if self.raw is None else self.raw[keep],
            malformed or [],
        )

    def blank(self) -> np.ndarray:
        """Rows with every field empty: blank lines, which are not data."""
        empty = np.ones(len(self.line), dtype=bool)
        for v in self.columns.values():
            if v.dtype.kind == "M":
                empty &= np.isnat(v)
            elif v.dtype.kind == "O":
                empty &= pd.isna(v)
            else:
                empty &= np.isnan(v)
        return empty

    def text(self, index: np.ndarray) -> list[str]:
        """The rows at ``index`` as text, for the rejects table."""
        if self.raw is not None:
            return [",".join(row) for row in self.raw[index]]
        parts = [
            np.datetime_as_string(v[index], unit="s")
            if v.dtype.kind == "M"
            else v[index].astype(str)
            if v.dtype.kind == "O"
            else np.char.mod("%.10g", v[index])
            for v in self.columns.values()
        ]
        return [",".join(str(x) for x in row) for row in zip(*parts, strict=True)]


# The longest text of a line a rejects table keeps (a line of megabytes is cut, and says so).
MAX_RAW_CHARS = 4096


def lines_as_read(path: Path, wanted: Iterable[int]) -> dict[int, str]:
    """The text of some lines (1-based, the header is line 1) of a CSV file, as written.

    Plain or compressed; read again, streaming, up to the last line wanted (rejects are rare,
    and the parsed values would lose quotes, other columns and the time's own spelling). A line
    longer than :data:`MAX_RAW_CHARS` is cut there with a note of its length.
    """
    want = set(wanted)
    found: dict[int, str] = {}
    if not want or path.suffix.lower() == ".parquet":
        return found
    last, n, rest = max(want), 0, b""

    def keep(number: int, line: bytes) -> None:
        text = line.rstrip(b"\r").decode("utf-8-sig" if number == 1 else "utf-8", "replace")
        if len(text) > MAX_RAW_CHARS:
            text = f"{text[:MAX_RAW_CHARS]}... [{len(line):,} bytes in all]"
        found[number] = text

    with pa.input_stream(str(path), compression="detect") as f:
        while n < last:
            chunk = f.read(1 << 20)
            if not chunk:
                if rest:
                    n += 1
                    if n in want:
                        keep(n, rest)
                break
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                n += 1
                if n in want:
                    keep(n, line)
    return found


def file_header(path: Path) -> list[str]:
    """Column names of a CSV (plain or compressed) or Parquet file.

    Raises:
        InputFormatError: the file cannot be read.
    """
    try:
        if path.suffix.lower() == ".parquet":
            return list(pq.ParquetFile(path).schema_arrow.names)
        _compressed_as_named(path)
        with pa.input_stream(str(path), compression="detect") as stream:
            head = stream.read(1 << 16).decode("utf-8-sig", errors="replace")
    except (OSError, pa.ArrowException) as err:
        raise InputFormatError(
            f"{path}: cannot read it ({str(err).splitlines()[0]}); check that it is a CSV, "
            "CSV.gz or Parquet file"
        ) from None
    first = head.splitlines()[0] if head else ""
    return next(csv.reader(io.StringIO(first)), [])


# Magic bytes of compressed files, and the suffix pyarrow needs to read them as such.
_COMPRESSED = {b"\x1f\x8b": ".gz", b"BZh": ".bz2", b"\x28\xb5\x2f\xfd": ".zst"}


def _compressed_as_named(path: Path) -> None:
    """Fail when a file is compressed but its name does not say so (it would read as binary)."""
    with path.open("rb") as f:
        head = f.read(4)
    for magic, suffix in _COMPRESSED.items():
        if head.startswith(magic) and path.suffix.lower() != suffix:
            named = f"named {path.suffix}" if path.suffix else "its name has no suffix"
            raise InputFormatError(
                f"{path}: the file is {suffix[1:]}-compressed but {named}; rename it to "
                f"{path.name}{suffix} (or decompress it)"
            )


def require_columns(path: Path, expected: list[str], found: list[str], key: str) -> None:
    """Fail with the expected and found column names when one is missing."""
    missing = [c for c in expected if c not in found]
    if not missing:
        return
    if len(found) == 1 and any(d in found[0] for d in ";\t|"):
        delimiter = next(d for d in ";\t|" if d in found[0])
        raise InputFormatError(
            f"{path}: fields are separated by {delimiter!r}, not commas (header {found[0]!r}); "
            "save it as comma-separated CSV"
        )
    raise InputFormatError(
        f"{path}: missing column(s) {missing}; expected {expected} ({key}), found {found}; "
        f"map the names under {key}"
    )


def local_wall_time(text: pd.Series, timezone: str) -> np.ndarray:
    """ISO-8601-like strings to naive local wall time (datetime64[s]); NaT where unparsable.

    Naive strings already are wall time in ``timezone``; strings with an offset or ``Z`` are
    converted to it.
    """
    out = np.full(len(text), np.datetime64("NaT"), dtype="datetime64[s]")
    valid = text.notna().to_numpy()
    stripped = text.str.strip()
    aware = valid & stripped.str.contains(_AWARE, na=False).to_numpy()
    naive = valid & ~aware
    if naive.any():
        parsed = pd.to_datetime(stripped[naive], errors="coerce", format="ISO8601")
        out[naive] = parsed.to_numpy().astype("datetime64[s]")
    if aware.any():
        parsed = pd.to_datetime(stripped[aware], errors="coerce", format="ISO8601", utc=True)
        out[aware] = (
            parsed.dt.tz_convert(timezone).dt.tz_localize(None).to_numpy().astype("datetime64[s]")
        )
    return out


def _typed(name: str, text: frozenset[str]) -> pa.DataType:
    if name == "time":
        return pa.timestamp("s")
    return pa.string() if name in text else pa.float64()


def _values(arr: pa.Array, name: str, text: frozenset[str]) -> np.ndarray:
    if name in text:
        return np.asarray(arr.cast(pa.string()).to_pandas().to_numpy(), dtype=object)
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        return arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return pd.to_numeric(arr.to_pandas(), errors="coerce").to_numpy(np.float64)


def _parquet_times(arr: pa.Array, timezone: str) -> np.ndarray:
    if pa.types.is_timestamp(arr.type):
        series = arr.to_pandas()
        if arr.type.tz is not None:
            series = series.dt.tz_convert(timezone).dt.tz_localize(None)
        return series.to_numpy().astype("datetime64[s]")
    try:
        # Naive ISO text casts in Arrow; anything else (offsets, junk) takes the careful path.
        return arr.cast(pa.timestamp("s")).to_numpy(zero_copy_only=False).astype("datetime64[s]")
    except pa.ArrowInvalid:
        return local_wall_time(arr.cast(pa.string()).to_pandas(), timezone)


def _typed_columns(
    batch: pa.RecordBatch, mapping: dict[str, str], timezone: str, text: frozenset[str]
) -> dict[str, np.ndarray]:
    """Columns of a typed batch (fast CSV path, Parquet) as RowBlock arrays."""
    return {
        n: _parquet_times(batch.column(mapping[n]), timezone)
        if n == "time"
        else _values(batch.column(mapping[n]), n, text)
        for n in mapping
    }


def _open_csv(
    path: Path,
    mapping: dict[str, str],
    threads: bool,
    on_invalid: Callable[[pcsv.InvalidRow], str],
    types: Callable[[str], pa.DataType],
    block_bytes: int | None = None,
) -> pcsv.CSVStreamingReader:
    return pcsv.open_csv(
        path,
        read_options=pcsv.ReadOptions(use_threads=threads, block_size=block_bytes or BLOCK_BYTES),
        parse_options=pcsv.ParseOptions(invalid_row_handler=on_invalid, ignore_empty_lines=False),
        convert_options=pcsv.ConvertOptions(
            include_columns=list(mapping.values()),
            column_types={mapping[n]: types(n) for n in mapping},
            strings_can_be_null=True,
            null_values=[""],  # "n/a" or "NaN" is a bad value with a reason, not a gap
        ),
    )


def _csv_fast(
    path: Path, mapping: dict[str, str], timezone: str, text: frozenset[str]
) -> Iterator[RowBlock]:
    def refuse(row: pcsv.InvalidRow) -> str:
        return "error"  # surfaces as ArrowInvalid: the exact path takes over

    start = 2
    for batch in _open_csv(path, mapping, True, refuse, lambda n: _typed(n, text)):
        line = np.arange(start, start + batch.num_rows, dtype=np.int64)
        start += batch.num_rows
        yield RowBlock(str(path), line, _typed_columns(batch, mapping, timezone, text))


def _csv_exact(
    path: Path,
    mapping: dict[str, str],
    timezone: str,
    text: frozenset[str],
    block_bytes: int | None = None,
) -> Iterator[RowBlock]:
    malformed: list[tuple[int, str]] = []

    def keep(row: pcsv.InvalidRow) -> str:
        malformed.append((row.number, row.text))
        return "skip"

    names = list(mapping)
    # One thread: pyarrow then knows the line number of every malformed row.
    reader = _open_csv(path, mapping, False, keep, lambda n: pa.string(), block_bytes)
    next_line, reported = 2, 0
    for batch in reader:
        frame = batch.to_pandas()
        frame.columns = names
        # This batch's rows take the next lines that no malformed line took.
        bad = np.array(sorted(n for n, _ in malformed if n >= next_line), dtype=np.int64)
        candidates = np.arange(next_line, next_line + len(frame) + len(bad), dtype=np.int64)
        line = np.setdiff1d(candidates, bad, assume_unique=True)[: len(frame)]
        if len(line):
            next_line = int(line[-1]) + 1
        cols = {
            n: local_wall_time(frame[n], timezone)
            if n == "time"
            else np.asarray(frame[n].to_numpy(), dtype=object)
            if n in text
            else pd.to_numeric(frame[n], errors="coerce").to_numpy(np.float64)
            for n in names
        }
        # The text stays in columns; only rejected rows are ever joined back into lines.
        raw = frame.fillna("").to_numpy(dtype=object)
        yield RowBlock(str(path), line, cols, raw, malformed[reported:])
        reported = len(malformed)
    if len(malformed) > reported:  # malformed lines after the last batch
        yield RowBlock(
            str(path),
            np.zeros(0, np.int64),
            {n: _empty(n, text) for n in names},
            np.zeros((0, len(names)), dtype=object),
            malformed[reported:],
        )


def _empty(name: str, text: frozenset[str]) -> np.ndarray:
    if name == "time":
        return np.zeros(0, "datetime64[s]")
    return np.zeros(0, object if name in text else np.float64)


def _parquet(
    path: Path, mapping: dict[str, str], timezone: str, text: frozenset[str]
) -> Iterator[RowBlock]:
    start = 1
    source = pq.ParquetFile(path)
    # A row group at a time: iter_batches reads far ahead (1.3 GB for a 25 M-row city-week).
    groups = (
        source.read_row_group(i, columns=list(mapping.values()))
        for i in range(source.num_row_groups)
    )
    for batch in (b for group in groups for b in group.to_batches(max_chunksize=1 << 20)):
        line = np.arange(start, start + batch.num_rows, dtype=np.int64)
        start += batch.num_rows
        yield RowBlock(str(path), line, _typed_columns(batch, mapping, timezone, text))


# A line longer than this is not a row of counts: the file is refused, not read into memory.
MAX_LINE_BYTES = 256 << 20


def _blocks_for_longest_line(path: Path) -> int:
    """A block size that holds the file's longest line twice over (Arrow needs a whole row).

    Raises:
        InputFormatError: a line is longer than :data:`MAX_LINE_BYTES`.
    """
    longest = current = number = 0
    with pa.input_stream(str(path), compression="detect") as f:
        while chunk := f.read(1 << 20):
            *ended, rest = chunk.split(b"\n")
            for piece in ended:
                longest, current, number = max(longest, current + len(piece)), 0, number + 1
            current += len(rest)
            if current > MAX_LINE_BYTES:
                raise InputFormatError(
                    f"{path}: line {number + 1} is over {MAX_LINE_BYTES >> 20} MiB long, not a "
                    "row of counts; cut it out of the file"
                )
    return max(BLOCK_BYTES, 2 * max(longest, current) + (1 << 20))


def read_blocks(
    path: Path,
    mapping: dict[str, str],
    timezone: str,
    text: frozenset[str] = frozenset(),
    key: str = "signalling.columns",
) -> Iterator[RowBlock]:
    """Blocks of ``mapping``'s columns (our name -> the file's column name) from one file.

    ``time`` is parsed to local wall time, names in ``text`` stay strings, the rest are numbers.

    Raises:
        InputFormatError: the file is unreadable or lacks a mapped column.
    """
    require_columns(path, list(mapping.values()), file_header(path), key)
    if path.suffix.lower() == ".parquet":
        yield from _parquet(path, mapping, timezone, text)
        return
    done = 1  # the last line delivered: the exact path resumes after it, nothing counts twice
    try:
        try:
            for block in _csv_fast(path, mapping, timezone, text):
                yield block
                if len(block):
                    done = int(block.line[-1])
        except pa.ArrowInvalid:
            # The exact path resumes after the fast one; a retry with larger blocks resumes
            # after the rows and malformed lines the exact path delivered before it failed.
            said: set[int] = set()
            block_bytes, fast_done = None, done
            while True:
                try:
                    for block in _csv_exact(path, mapping, timezone, text, block_bytes):
                        bad = [
                            (n, t) for n, t in block.malformed if n > fast_done and n not in said
                        ]
                        said.update(n for n, _ in bad)
                        yield block.take(block.line > done, bad)
                        if len(block):
                            done = max(done, int(block.line[-1]))
                    break
                except pa.ArrowInvalid as err:
                    # A line longer than a block (megabytes of garbage): blocks that hold it.
                    if "straddl" not in str(err) or block_bytes is not None:
                        raise
                    block_bytes = _blocks_for_longest_line(path)
    except (pa.ArrowException, OSError) as err:
        detail = str(err).splitlines()[0]
        hint = "re-export it as UTF-8" if "UTF8" in detail else "check that it is a CSV file"
        raise InputFormatError(f"{path}: cannot read it as CSV ({detail}); {hint}") from None
