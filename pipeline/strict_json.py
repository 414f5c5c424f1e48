"""JSON that strict readers accept: what every file and ``--json`` output of urbanfusion writes.

Python's ``json`` writes ``NaN`` and ``Infinity``, which are not JSON: browsers' ``JSON.parse``,
``jq`` and most languages' readers reject the whole document. An undefined number (a score on
no cell) is ``null`` instead.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: object) -> object:
    """``value`` with every non-finite float, at any depth, as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def dumps(value: object, **options: Any) -> str:
    """:func:`json.dumps` of :func:`finite` ``value``; refuses NaN that slips through."""
    return json.dumps(finite(value), allow_nan=False, **options)
