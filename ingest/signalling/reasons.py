"""Why a signalling row is rejected: small codes on the hot path, text only for rows rejected."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

DUPLICATE = "duplicate of an earlier row (same place, day and hour)"
TOO_LARGE = "infinite count, or above signalling.max_count"
IMPLAUSIBLE_DATE = "date before 2000 or after tomorrow (a typo in the year?)"
# 0 = kept.
REASONS = np.array(
    [
        "",
        "wrong number of fields",
        "unparsable time",
        "missing or non-numeric coordinates",
        "coordinates out of range",
        "missing or non-numeric count",
        "negative count",
        DUPLICATE,
        "missing grid id",
        "unknown grid id (not in signalling.grid)",
        "unknown day type",
        "missing or non-numeric hour",
        TOO_LARGE,
        IMPLAUSIBLE_DATE,
    ],
    dtype=object,
)
CODE = {reason: np.uint8(i) for i, reason in enumerate(REASONS)}


def flag(code: np.ndarray, mask: npt.ArrayLike, reason: str) -> None:
    """Give ``reason`` to rows in ``mask`` that have none yet (the first reason wins)."""
    code[(code == 0) & mask] = CODE[reason]


def codes(reason: str, n: int) -> np.ndarray:
    """``n`` rows rejected for ``reason``."""
    return np.full(n, CODE[reason])
