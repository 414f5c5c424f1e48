"""About how many rows a signalling file holds, without reading it: for plans, before a run.

Parquet says it in its footer. A text file (CSV, compressed or not) is measured on its start:
rows = the file's size x the lines per byte of the sample (for a compressed file, per byte as
stored). Files whose rows vary in length along the file are estimated less well.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from urbanfusion.pipeline.errors import InputFormatError

_SAMPLE = 2**20
# A compressed file's sample, as decoded: its reader fetches the stored bytes 64 KiB at a time,
# so the stored bytes a sample came from are known to within one fetch (a few % at 4 MiB).
_COMPRESSED_SAMPLE = 4 * 2**20
# Compressed formats pyarrow decodes, by file suffix.
_CODECS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}


def estimate_rows(path: Path) -> int:
    """Rows of a signalling file: exact for Parquet, else estimated from a sample of its start.

    Raises:
        InputFormatError: the file cannot be read as what its name says (a damaged Parquet
            footer, a ``.gz`` that is not gzip...).
    """
    try:
        return _estimate(path)
    except (OSError, pa.ArrowException) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputFormatError(
            f"{path}: cannot read it ({first}); is it a CSV, a compressed CSV named for its "
            "compression (.gz, .bz2, .zst), or Parquet?"
        ) from None


def _estimate(path: Path) -> int:
    if path.suffix.lower() == ".parquet":
        return int(pq.ParquetFile(path).metadata.num_rows)
    size = path.stat().st_size
    codec = _CODECS.get(path.suffix.lower())
    with pa.OSFile(str(path)) as raw:
        if codec is None:
            sample = raw.read(_SAMPLE)
            stored = raw.tell()  # the bytes as stored that the sample came from
        else:
            # Ask before the decoder goes: it closes the file it reads when it is collected.
            decoder = pa.CompressedInputStream(raw, codec)
            sample = decoder.read(_COMPRESSED_SAMPLE)
            stored = raw.tell()
    lines = sample.count(b"\n")
    if stored >= size:  # the sample is the whole file
        return max(0, lines - 1 + (not sample.endswith(b"\n") and len(sample) > 0))
    return round(max(0, lines - 1) * size / max(stored, 1))
