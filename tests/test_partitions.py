"""Partitions cover the grid once, fit their size and keep imagery chunks whole."""

import numpy as np
import pytest

from urbanfusion.pipeline.partitions import Partition, partition_grid


@pytest.mark.parametrize(
    ("nrows", "ncols", "max_cells", "align"),
    [(27, 26, 10_000, 8), (27, 26, 100, 8), (27, 26, 100, 1), (9, 1000, 50, 4), (1, 1, 1, 1)],
)
def test_partitions_cover_every_cell_once_and_each_fits(nrows, ncols, max_cells, align):
    parts = partition_grid(nrows, ncols, max_cells, align)
    seen = np.zeros((nrows, ncols), dtype=int)
    for p in parts:
        seen[p.row : p.row + p.nrows, p.col : p.col + p.ncols] += 1
        assert 0 < p.n_cells <= max_cells
    assert (seen == 1).all()


def test_a_grid_that_fits_is_one_partition_and_sides_follow_the_chunks():
    assert partition_grid(27, 26, 702) == [Partition(0, 0, 27, 26)]
    parts = partition_grid(100, 100, 300, align=8)  # 17 x 17 fits 300; 16 keeps chunks whole
    assert {p.nrows for p in parts[:-1]} >= {16} and all(p.row % 16 == 0 for p in parts)
    with pytest.raises(ValueError, match="at least 1"):
        partition_grid(10, 10, 0)
