import numpy as np
import pytest
from pyproj import CRS
from rasterio.windows import transform as rasterio_window_transform

from urbanfusion.pipeline.errors import ConfigError
from urbanfusion.pipeline.grid import CityGrid, abs_rowcol_of, cell_ids_for, utm_crs_for
from urbanfusion.pipeline.windows import ChunkGrid, Window

ZHENGZHOU = (113.55, 34.70, 113.80, 34.85)


def test_default_crs_is_the_utm_zone_of_the_extent_centre():
    assert CityGrid.from_extent(ZHENGZHOU).crs == CRS.from_epsg(32649)
    assert utm_crs_for(-58.4, -34.6) == CRS.from_epsg(32721)  # Buenos Aires, south
    assert utm_crs_for(179.9, 10) == CRS.from_epsg(32660)


def test_edges_snap_to_multiples_of_the_cell_size_and_cover_the_extent():
    grid = CityGrid.from_extent(ZHENGZHOU, cell_size=250)
    xmin, ymin, xmax, ymax = grid.bounds
    for v in grid.bounds:
        assert v % 250 == 0
    from pyproj import Transformer

    t = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True)
    for lon in (ZHENGZHOU[0], ZHENGZHOU[2]):
        for lat in (ZHENGZHOU[1], ZHENGZHOU[3]):
            x, y = t.transform(lon, lat)
            assert xmin <= x <= xmax and ymin <= y <= ymax


def test_cell_ids_are_stable_across_overlapping_extents():
    a = CityGrid.from_extent((113.55, 34.70, 113.70, 34.80), crs="EPSG:32649")
    b = CityGrid.from_extent((113.62, 34.74, 113.80, 34.85), crs="EPSG:32649")
    ca, cb = a.cells(), b.cells()
    shared = set(ca.cell_id) & set(cb.cell_id)
    assert len(shared) > 100
    ga = ca.set_index("cell_id").geometry
    gb = cb.set_index("cell_id").geometry
    for cid in list(shared)[:50]:
        assert ga[cid].equals(gb[cid])  # same id, same ground
    assert len(set(ca.cell_id)) == a.n_cells


def test_cell_ids_unpack_to_absolute_rows_and_columns():
    rows, cols = np.array([-15412, 0, 7]), np.array([2961, -5, 0])
    r, c = abs_rowcol_of(cell_ids_for(rows, cols))
    assert (r == rows).all() and (c == cols).all()


def test_pixel_grid_nests_exactly_chip_px_pixels_per_cell():
    grid = CityGrid.from_extent(ZHENGZHOU, cell_size=250, chip_px=32)
    assert grid.pixel_shape == (grid.nrows * 32, grid.ncols * 32)
    assert grid.pixel_transform @ (32, 32) == grid.transform @ (1, 1)
    assert grid.pixel_size == 250 / 32


def test_points_map_to_the_cell_that_contains_them():
    grid = CityGrid.from_extent(ZHENGZHOU)
    polys = grid.cell_polygons()
    centres = np.array([(p.centroid.x, p.centroid.y) for p in polys[:: grid.ncols + 3]])
    idx = grid.cell_index(centres[:, 0], centres[:, 1])
    assert (idx == np.arange(grid.n_cells)[:: grid.ncols + 3]).all()
    x0, y0, x1, y1 = grid.bounds
    assert (grid.cell_index(np.array([x0 - 1, x1 + 1]), np.array([y1, y0])) == -1).all()


def test_a_continent_sized_extent_is_refused_with_a_hint():
    with pytest.raises(ConfigError, match="cell_size_m"):
        CityGrid.from_extent((100, 20, 120, 45), cell_size=10)


def test_chunks_tile_the_raster_exactly_once_with_the_last_ones_clipped():
    chunks = ChunkGrid(height=250, width=101, size=77)
    assert chunks.shape == (4, 2)
    covered = np.zeros((250, 101), dtype=int)
    for _, w in chunks:
        covered[w.row : w.row + w.height, w.col : w.col + w.width] += 1
    assert (covered == 1).all()
    assert chunks.window(3, 1) == Window(231, 77, 19, 24)
    assert chunks.dask_chunks == ((77, 77, 77, 19), (77, 24))
    assert chunks.span(range(1, 4), range(1, 2)) == Window(77, 77, 173, 24)


def test_a_grown_window_stays_inside_its_bounds_and_finds_itself_again():
    layer = Window(0, 0, 100, 100)
    inner = Window(10, 90, 20, 10)
    outer = inner.grow(16, within=layer)
    assert outer == Window(0, 74, 46, 26)
    assert inner.relative_to(outer) == Window(10, 16, 20, 10)
    assert inner.to_rasterio().col_off == 90 and inner.to_rasterio().height == 20


def test_grid_chunks_hold_whole_cells_and_windows_are_georeferenced_like_rasterio():
    grid = CityGrid.from_extent(ZHENGZHOU, cell_size=250, chip_px=24)
    chunks = grid.chunks(1000)
    assert chunks.size == 984 and chunks.size % grid.chip_px == 0
    assert (chunks.height, chunks.width) == grid.pixel_shape
    window = chunks.window(1, 2)
    expected = rasterio_window_transform(window.to_rasterio(), grid.pixel_transform)
    assert grid.window_transform(window).almost_equals(expected)


def test_chunks_touching_bounds_are_the_ones_the_bounds_overlap():
    grid = CityGrid.from_bounds((0, -10_000, 10_000, 0), 250, 32, "EPSG:32649")
    chunks = grid.chunks(320)  # 10 cells = 2,500 m a chunk: 4 x 4 chunks
    rows, cols = grid.chunks_touching(chunks, (2_600, -5_100, 4_000, -100))
    assert (list(rows), list(cols)) == ([0, 1, 2], [1])
    rows, cols = grid.chunks_touching(chunks, (-9e9, -9e9, 9e9, 9e9))
    assert (list(rows), list(cols)) == ([0, 1, 2, 3], [0, 1, 2, 3])
