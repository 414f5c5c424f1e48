"""Lazy (dask) forms of :mod:`.chips`: chips and thumbnails of a whole imagery array, by block.

Kept apart from the numpy functions so that inference, which works on numpy chips, does not
import dask.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from urbanfusion.preprocess.chips import thumbnails, to_chips


def chips_dask(image: da.Array, chip: int) -> da.Array:
    """Lazily cut a ``(band, y, x)`` dask array into ``(row, col, band, chip, chip)`` chips.

    Every spatial chunk must be a whole number of cells (the imagery stage guarantees it).
    """
    image = image.rechunk({0: -1})
    if any(size % chip for sizes in image.chunks[1:] for size in sizes):
        raise ValueError(f"imagery chunks {image.chunks[1:]} are not multiples of chip_px={chip}")
    return da.blockwise(
        to_chips,
        "rcbpq",
        image,
        "brc",
        new_axes={"p": chip, "q": chip},
        adjust_chunks={"r": lambda n: n // chip, "c": lambda n: n // chip},
        dtype=image.dtype,
        chip=chip,
        # The band axis of the input maps to a new output position; declare it concatenated.
        concatenate=True,
    )


def thumbnails_dask(chips: da.Array, px: int) -> da.Array:
    """:func:`thumbnails` of every block of a lazy chip array: ``(rows*px, cols*px, 4)`` uint8."""
    return da.map_blocks(
        thumbnails,
        chips,
        px,
        dtype=np.uint8,
        drop_axis=[3, 4],
        chunks=(
            tuple(n * px for n in chips.chunks[0]),
            tuple(n * px for n in chips.chunks[1]),
            (4,),
        ),
    )
