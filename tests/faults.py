"""Faulty inputs, made on demand from a clean demo city: tiny, seeded, one fault each.

In the manner of TorchGeo's test-data generators: each :class:`Fault` rewrites a copy of a demo
city (its ``tiles/``, ``signalling/`` and ``city.yaml``) the way a careless export or a typo
would, and says what a run must do about it. ``tests/test_faults.py`` runs every one through
the command line in seconds; ``benchmarks/faults.py`` prints them as a before/after table.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import yaml
from affine import Affine
from rasterio.enums import ColorInterp

from urbanfusion.ingest.coords import wgs84_to_gcj02

ONE_TILE = "a_nw_utm.tif"  # a UTM tile with ground no other tile covers
HAZY_TILE = "c_sw_utm_hazy.tif"


@dataclass(frozen=True)
class Fault:
    """One faulty situation: how to make it, and what a run must do.

    ``make(city)`` edits the city folder in place and returns the extra command-line arguments;
    ``command`` is the CLI command (``run`` unless said). ``outcome`` is "error" (exit 2, one
    line), "warning" (exit 0, a ``warning:`` line) or "ok" (exit 0, nothing to say); ``says`` is
    a phrase of that line.
    """

    name: str
    what: str
    make: Callable[[Path], list[str]]
    outcome: str
    says: str = ""
    command: tuple[str, ...] = ("run",)
    needs: tuple[str, ...] = field(default_factory=tuple)  # "onnx", "shared"


def edit_config(city: Path, **changes: object) -> None:
    """Set dotted keys of ``city.yaml`` (a value of None removes the key)."""
    path = city / "city.yaml"
    config = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        node = config
        *parents, last = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    path.write_text(yaml.safe_dump(config))


def _rewrite(tile: Path, data: np.ndarray | None = None, **profile: object) -> None:
    with rasterio.open(tile) as src:
        meta, pixels = src.profile, src.read()
    meta.update(profile)
    tile.unlink()
    with rasterio.open(tile, "w", **meta) as dst:
        dst.write(pixels if data is None else data)


def _truncated(city: Path) -> list[str]:
    tile = city / "tiles" / ONE_TILE
    tile.write_bytes(tile.read_bytes()[:4000])
    return []


def _zero_bytes(city: Path) -> list[str]:
    (city / "tiles" / ONE_TILE).write_bytes(b"")
    return []


def _text(city: Path) -> list[str]:
    (city / "tiles" / ONE_TILE).write_text("<html>404 Not Found</html>\n")
    return []


def _no_crs(city: Path) -> list[str]:
    _rewrite(city / "tiles" / ONE_TILE, crs=None)
    return []


def _with_alpha(city: Path, alpha: Callable[[np.ndarray], np.ndarray]) -> None:
    tile = city / "tiles" / ONE_TILE
    with rasterio.open(tile) as src:
        meta, data, mask = src.profile, src.read(), src.dataset_mask()
    meta.update(count=4, nodata=None)
    tile.unlink()
    with rasterio.open(tile, "w", **meta) as dst:
        dst.write(np.concatenate([data, alpha(mask).astype(data.dtype)[None]]))
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]


def _rgba(city: Path) -> list[str]:
    _with_alpha(city, lambda mask: mask > 0)  # a 0/1 mask written as alpha (numpy habit)
    return []


def _rgba_255(city: Path) -> list[str]:
    _with_alpha(city, lambda mask: mask)  # GDAL's own convention: 255 opaque
    return []


def _transparent(city: Path) -> list[str]:
    _with_alpha(city, np.zeros_like)
    return []


def _coarse(city: Path) -> list[str]:
    """A 500 m tile over the whole city, named to be listed first."""
    with rasterio.open(city / "tiles" / ONE_TILE) as src:
        crs, left, top = src.crs, src.bounds.left - 2000, src.bounds.top + 2000
    rng = np.random.default_rng(0)
    data = rng.integers(60, 200, (3, 30, 30), dtype=np.uint8)
    with rasterio.open(
        city / "tiles" / "0_coarse.tif",
        "w",
        driver="GTiff",
        width=30,
        height=30,
        count=3,
        dtype="uint8",
        crs=crs,
        transform=Affine(500, 0, left, 0, -500, top),
    ) as dst:
        dst.write(data)
    return []


def _world(shared: Path) -> Callable[[Path], list[str]]:
    def make(city: Path) -> list[str]:
        shutil.copy(shared / "geotiff" / "world.rgb.tif", city / "tiles" / "0_world.tif")
        return []

    return make


def _real_pixels(shared: Path) -> Callable[[Path], list[str]]:
    """Real aerial pixels (cogeo.tif, 0.6 m, Korea) repeated over the whole city as one VRT."""

    def make(city: Path) -> list[str]:
        source = shared / "geotiff" / "cogeo.tif"
        with rasterio.open(city / "tiles" / ONE_TILE) as src:
            crs = src.crs
        config = yaml.safe_load((city / "city.yaml").read_text())
        from rasterio.warp import transform_bounds

        west, south, east, north = transform_bounds("EPSG:4326", crs, *config["extent"])
        with rasterio.open(source) as src:
            px, side = src.res[0], src.width
        n_x, n_y = int((east - west) / (px * side)) + 2, int((north - south) / (px * side)) + 2
        bands = []
        for band, colour in ((1, "Red"), (2, "Green"), (3, "Blue")):
            sources = "".join(
                f'<SimpleSource><SourceFilename relativeToVRT="0">{source}</SourceFilename>'
                f"<SourceBand>{band}</SourceBand>"
                f'<SrcRect xOff="0" yOff="0" xSize="{side}" ySize="{side}"/>'
                f'<DstRect xOff="{i * side}" yOff="{j * side}" xSize="{side}" ySize="{side}"/>'
                "</SimpleSource>"
                for i in range(n_x)
                for j in range(n_y)
            )
            bands.append(
                f'<VRTRasterBand dataType="Byte" band="{band}"><ColorInterp>{colour}'
                f"</ColorInterp>{sources}</VRTRasterBand>"
            )
        origin = (west - px * side / 2, north + px * side / 2)
        for tile in (city / "tiles").glob("*.tif"):
            tile.unlink()
        (city / "tiles" / "real.vrt").write_text(
            f'<VRTDataset rasterXSize="{n_x * side}" rasterYSize="{n_y * side}">'
            f"<SRS>{crs.to_string()}</SRS><GeoTransform>{origin[0]}, {px}, 0, {origin[1]}, 0, "
            f"{-px}</GeoTransform>{''.join(bands)}</VRTDataset>"
        )
        edit_config(city, **{"imagery.paths": ["tiles/*.vrt"]})
        return []

    return make


def _retyped(dtype: str, factor: float) -> Callable[[Path], list[str]]:
    def make(city: Path) -> list[str]:
        tile = city / "tiles" / HAZY_TILE
        with rasterio.open(tile) as src:
            data = src.read().astype(np.float64) * factor
            nodata = None if src.nodata is None else src.nodata * factor
        _rewrite(tile, data.astype(dtype), dtype=dtype, nodata=nodata)
        return []

    return make


def _infinite_pixels(city: Path) -> list[str]:
    """A float tile whose tool wrote +inf and -inf where it divided by zero."""
    tile = city / "tiles" / HAZY_TILE
    with rasterio.open(tile) as src:
        data = src.read().astype(np.float32) / 255
    data[:, 100:140, 100:140] = np.inf
    data[:, 200:220, 50:90] = -np.inf
    _rewrite(tile, data, dtype="float32", nodata=None)
    return []


def _sparse_bigtiff(city: Path) -> list[str]:
    """A sparse BigTIFF declaring 300,000 x 300,000 pixels; only one tile's pixels are written."""
    from rasterio.windows import Window

    with rasterio.open(city / "tiles" / ONE_TILE) as src:
        profile, pixels, t = src.profile, src.read(), src.transform
    side, off = 300_000, 140_000  # the small tile sits inside, on the same pixel grid
    origin = Affine(t.a, 0, t.c - off * t.a, 0, t.e, t.f - off * t.e)
    profile.update(
        width=side,
        height=side,
        transform=origin,
        tiled=True,
        blockxsize=1024,
        blockysize=1024,
        compress="deflate",
        BIGTIFF="YES",
        SPARSE_OK=True,
        nodata=0,  # the blocks never written read as nodata
    )
    with rasterio.open(city / "tiles" / "0_province.tif", "w", **profile) as dst:
        dst.write(pixels, window=Window(off, off, pixels.shape[2], pixels.shape[1]))
    return []


def _day_files(city: Path) -> list[Path]:
    return sorted((city / "signalling").glob("*.csv"))


def _append_rows(city: Path, rows: str) -> None:
    first = _day_files(city)[0]
    with first.open("a") as f:
        f.write(rows)


def _far_dates(city: Path) -> list[str]:
    _append_rows(city, "2300-03-02 08:00:00,113.65,34.76,10\n2099-03-02 08:00:00,113.65,34.76,10\n")
    return []


def _stray_row(city: Path) -> list[str]:
    """A nightly window, and one row whose date was typed months after the rest."""
    edit_config(city, **{"signalling.window_days": 7})
    _append_rows(city, "2026-09-03 08:00:00,113.66,34.76,10\n")
    return []


def _long_line(city: Path) -> list[str]:
    """Nine megabytes of one line (a binary blob pasted into an export)."""
    _append_rows(city, "blob," * (9 << 18) + "\n")
    return []


def _inf_counts(city: Path) -> list[str]:
    _append_rows(
        city, "2026-03-02 08:00:00,113.651,34.761,inf\n2026-03-02 09:00:00,113.651,34.761,1e30\n"
    )
    return []


def _swapped(city: Path) -> list[str]:
    edit_config(city, **{"signalling.columns.lon": "lat", "signalling.columns.lat": "lon"})
    return []


def _rewrite_rows(city: Path, files: list[Path], edit: Callable[[list[str]], None]) -> None:
    """Edit the fields of every well-formed data row (malformed lines stay as they are)."""
    for f in files:
        lines = f.read_text().splitlines()
        for i, line in enumerate(lines[1:], start=1):
            fields = line.split(",")
            if len(fields) == 4:
                edit(fields)
                lines[i] = ",".join(fields)
        f.write_text("\n".join(lines) + "\n")


def _count_as_text(city: Path) -> list[str]:
    frame = pd.concat(
        pd.read_csv(f, dtype=str, on_bad_lines="skip", keep_default_na=False)
        for f in _day_files(city)
    )
    for f in _day_files(city):
        f.unlink()
    frame.to_parquet(city / "signalling" / "all.parquet")  # every column text, counts too
    edit_config(city, **{"signalling.paths": ["signalling/*.parquet"]})
    return []


def _local_as_z(city: Path) -> list[str]:
    """A day delivered again, its local times now written with a Z (UTC) suffix."""
    day = _day_files(city)[3]
    again = day.with_name(f"{day.stem}_resent.csv")
    shutil.copy(day, again)

    def mark(fields: list[str]) -> None:
        fields[0] = fields[0].replace(" ", "T") + "Z"

    _rewrite_rows(city, [again], mark)
    return []


def _gcj_as_wgs(city: Path) -> list[str]:
    def shift(fields: list[str]) -> None:
        try:
            lon, lat = float(fields[1]), float(fields[2])
        except ValueError:
            return
        glon, glat = wgs84_to_gcj02(np.array([lon]), np.array([lat]))
        fields[1], fields[2] = f"{glon[0]:.6f}", f"{glat[0]:.6f}"

    _rewrite_rows(city, _day_files(city), shift)
    return []


def _wgs_as_gcj(city: Path) -> list[str]:
    edit_config(city, **{"signalling.coords": "gcj02"})
    return []


def _yaml_text(text: str) -> Callable[[Path], list[str]]:
    """Lines appended to ``city.yaml`` as a person would type them (not through a YAML dump)."""

    def make(city: Path) -> list[str]:
        with (city / "city.yaml").open("a") as f:
            f.write(text)
        return []

    return make


def _broken_link(city: Path) -> list[str]:
    (city / "tiles" / "z_moved.tif").symlink_to(city / "tiles" / "moved-away.tif")
    return []


def _fifo(city: Path) -> list[str]:
    import os

    os.mkfifo(city / "signalling" / "z_pipe.csv")
    return []


def _antimeridian(city: Path) -> list[str]:
    edit_config(city, extent=[179.5, -17.0, -179.5, -16.0])
    return []


def _semicolons(city: Path) -> list[str]:
    """A day saved by a spreadsheet in a locale whose list separator is ';'."""
    day = _day_files(city)[2]
    day.write_text(day.read_text().replace(",", ";"))
    return []


def _gzip_as_csv(city: Path) -> list[str]:
    import gzip

    day = _day_files(city)[2]
    day.write_bytes(gzip.compress(day.read_bytes()))
    return []


def _strict(city: Path) -> list[str]:
    return ["--strict"]


def _province(city: Path) -> list[str]:
    edit_config(city, extent=[110.35, 31.38, 116.65, 36.37])  # Henan at 250 m
    return [str(city / "city.yaml")]


def _quarter_metre(city: Path) -> list[str]:
    # 160 M cells: a typo, refused before any cell is made.
    edit_config(city, **{"grid.cell_size_m": 0.25})
    return []


def _first_classes(n: int) -> Callable[[dict[str, list[object]]], dict[str, object]]:
    return lambda c: {key: c[key][:n] for key in ("classes", "labels", "colours")}


def _lying_model(
    change: dict[str, object] | Callable[[dict[str, list[object]]], dict[str, object]],
) -> Callable[[Path], list[str]]:
    def make(city: Path) -> list[str]:
        import json

        import onnx

        from urbanfusion.models.contract import METADATA_KEY
        from urbanfusion.models.inference import SHIPPED_MODEL

        model = onnx.load(str(SHIPPED_MODEL))
        (meta,) = [m for m in model.metadata_props if m.key == METADATA_KEY]
        contract = json.loads(meta.value)
        contract.update(change(contract) if callable(change) else change)
        meta.value = json.dumps(contract)
        onnx.save(model, str(city / "lying.onnx"))
        edit_config(city, model="lying.onnx")
        return []

    return make


def _older_domain(contract: dict[str, list[object]]) -> dict[str, object]:
    """The in-domain fields of urbanfusion before the nearest-neighbour score (PPCA)."""
    ppca = {"mean": [0.0], "components": [[1.0]], "variances": [1.0], "residual": 1.0}
    return {"domain": {branch: {**ppca, "threshold": 1.0} for branch in contract["domain"]}}


def _model_folder(city: Path) -> list[str]:
    (city / "models").mkdir()
    edit_config(city, model="models")
    return []


def _config_folder(city: Path) -> list[str]:
    return ["@city"]  # the runner puts the city folder in place of city.yaml


def _output(value: str) -> Callable[[Path], list[str]]:
    def make(city: Path) -> list[str]:
        if value == "file":
            (city / "out.txt").write_text("a file\n")
            edit_config(city, **{"output.dir": "out.txt"})
        elif value == "parent-file":
            (city / "out.txt").write_text("a file\n")
            edit_config(city, **{"output.dir": "out.txt/maps"})
        elif value == "empty":
            edit_config(city, **{"output.dir": ""})
        elif value == "in-glob":
            edit_config(city, **{"output.dir": "tiles/maps", "imagery.paths": ["tiles/**/*.tif"]})
        elif value == "linked":  # a link among the tiles leads to where the maps will go
            (city / "tiles" / "maps").symlink_to(city / "maps")
            edit_config(city, **{"output.dir": "maps", "imagery.paths": ["tiles/**/*.tif"]})
        elif value == "tmpfs":
            shm = Path("/dev/shm")
            target = shm / f"uf-faults-{city.name}"
            shutil.rmtree(target, ignore_errors=True)
            edit_config(city, **{"output.dir": str(target)})
        return []

    return make


def _dehaze_args(case: str) -> Callable[[Path], list[str]]:
    def make(city: Path) -> list[str]:
        tile = city / "tiles" / HAZY_TILE
        if case == "same":
            return [str(tile), str(tile)]
        broken = city / "broken.tif"
        broken.write_bytes(tile.read_bytes()[: tile.stat().st_size // 3])
        return [str(broken), str(city / "dehazed.tif")]

    return make


def _batch(case: str) -> Callable[[Path], list[str]]:
    def make(city: Path) -> list[str]:
        if case == "missing":
            return [str(city / "configs-typo")]
        folder = city / "configs"
        folder.mkdir()
        if case == "yml":
            text = (city / "city.yaml").read_text().replace("../outputs", str(city / "out"))
            (folder / "city.yml").write_text(
                text.replace("tiles/", f"{city}/tiles/").replace(
                    "signalling/", f"{city}/signalling/"
                )
            )
            return [str(folder)]
        for k in range(3):  # three cities that all fail: the exit status must say so
            (folder / f"bad{k}.yaml").write_text("name: x\nextent: [1, 2]\n")
        return [str(folder)]

    return make


def faults(shared: Path | None = None) -> list[Fault]:
    """Every fault; those needing ``../shared/data`` only when ``shared`` is given."""
    out = [
        Fault("tile truncated", "a tile cut short", _truncated, "warning", "was not used"),
        Fault("tile zero bytes", "an empty .tif", _zero_bytes, "warning", "was not used"),
        Fault("tile is text", "an HTML error page saved as .tif", _text, "warning", "not used"),
        Fault("tile without CRS", "georeferencing lost", _no_crs, "warning", "was not used"),
        Fault("tile RGBA 0/1 alpha", "a 0/1 mask written as alpha", _rgba, "ok"),
        Fault("tile RGBA 255 alpha", "a GDAL alpha band", _rgba_255, "ok"),
        Fault("tile all transparent", "alpha 0 everywhere", _transparent, "warning", "masked"),
        Fault(
            "tile 500 m listed first",
            "a coarse tile over the city",
            _coarse,
            "warning",
            "used only where no finer tile",
        ),
        Fault(
            "sparse BigTIFF of 300,000 px a side",
            "a province declared, one tile written",
            _sparse_bigtiff,
            "ok",
        ),
        Fault("hazy tile uint16", "x257", _retyped("uint16", 257.0), "ok"),
        Fault("hazy tile int16", "x128", _retyped("int16", 128.0), "ok"),
        Fault("hazy tile float32", "/255", _retyped("float32", 1 / 255), "ok"),
        Fault(
            "float tile with +-inf pixels",
            "a division by zero in the export",
            _infinite_pixels,
            "warning",
            "are not finite (+-inf or NaN) and are read as nodata",
        ),
        Fault("rows dated 2300, 2099", "two mistyped years", _far_dates, "ok"),
        Fault(
            "window_days, one row months later",
            "a mistyped month",
            _stray_row,
            "warning",
            "dated after 2026-03-09",
        ),
        Fault("counts inf, 1e30", "two absurd counts", _inf_counts, "ok"),
        Fault("signalling line of 9 MiB", "a blob in an export", _long_line, "ok"),
        Fault("lon/lat swapped", "columns mapped the wrong way", _swapped, "error", "swapped"),
        Fault("counts as text", "a Parquet of strings", _count_as_text, "ok"),
        Fault(
            "local times marked Z",
            "a day re-sent in UTC",
            _local_as_z,
            "warning",
            "local times marked Z",
        ),
        Fault(
            "GCJ-02 declared WGS84",
            "an Amap export",
            _gcj_as_wgs,
            "warning",
            "signalling.coords: gcj02",
        ),
        Fault(
            "WGS84 declared GCJ-02",
            "coords: gcj02 on GPS data",
            _wgs_as_gcj,
            "warning",
            "signalling.coords: wgs84",
        ),
        Fault("--strict, good tiles", "nothing wrong", _strict, "ok"),
        Fault(
            "signalling with ';' between fields",
            "a spreadsheet's export",
            _semicolons,
            "error",
            "fields are separated by ';', not commas",
        ),
        Fault(
            "signalling gzip named .csv",
            "compressed, not renamed",
            _gzip_as_csv,
            "error",
            "is gz-compressed but named .csv; rename it to day_2026-03-04.csv.gz",
        ),
        Fault(
            "YAML key given twice",
            "a second grid: at the end",
            _yaml_text("grid:\n  cell_size_m: 500\n"),
            "error",
            "key 'grid' is given twice",
        ),
        Fault(
            "history.keep: yes",
            "a boolean for a count",
            _yaml_text("history:\n  keep: yes\n"),
            "error",
            "'history.keep': Input should be a valid integer (got true",
        ),
        Fault("tile a broken link", "its target moved", _broken_link, "error", "z_moved.tif"),
        Fault("signalling a FIFO", "a named pipe", _fifo, "error", "a FIFO (named pipe)"),
        Fault(
            "extent across the antimeridian",
            "min_lon 179.5, max_lon -179.5",
            _antimeridian,
            "error",
            "across the antimeridian",
        ),
        # Planned in partitions, not refused (running it here would take hours).
        Fault("province at 250 m", "5.46 M cells", _province, "ok", "partitions:", ("plan",)),
        Fault("demo city at 25 cm", "cell_size_m: 0.25", _quarter_metre, "error", "50,000,000"),
        Fault(
            "model activity 5x24",
            "contract says 5 days",
            _lying_model({"days": 5}),
            "error",
            "its graph has activity",
            needs=("onnx",),
        ),
        Fault(
            "model image 48 px",
            "contract says 48 px",
            _lying_model({"chip_px": 48}),
            "error",
            "its graph has image",
            needs=("onnx",),
        ),
        Fault(
            "model 4 classes, network 9",
            "a contract of 4 classes",
            _lying_model(_first_classes(4)),
            "error",
            "its graph has prob of shape [9]",
            needs=("onnx",),
        ),
        Fault(
            "model contract damaged",
            "4 classes, 9 labels",
            _lying_model({"classes": ["residential", "school", "industrial", "park"]}),
            "error",
            "the contract is damaged",
            needs=("onnx",),
        ),
        Fault(
            "model in-domain score of an earlier version",
            "PPCA fields",
            _lying_model(_older_domain),
            "error",
            "in-domain score is of an earlier urbanfusion; refit it with `urbanfusion calibrate`",
            needs=("onnx",),
        ),
        Fault("model path a folder", "model: models/", _model_folder, "error", "is a folder"),
        Fault("config path a folder", "the city folder", _config_folder, "error", "is a folder"),
        Fault("output.dir a file", "out.txt", _output("file"), "error", "out.txt"),
        Fault(
            "output.dir under a file",
            "out.txt/maps",
            _output("parent-file"),
            "error",
            "out.txt is a file, not a folder",
        ),
        Fault("output.dir empty", "''", _output("empty"), "error", "output.dir"),
        Fault(
            "output.dir in an input glob",
            "tiles/maps, tiles/**/*.tif",
            _output("in-glob"),
            "error",
            "inside output.dir",
        ),
        Fault(
            "output.dir through a link in an input glob",
            "tiles/maps -> ../maps, tiles/**/*.tif",
            _output("linked"),
            "error",
            "inside output.dir",
        ),
        Fault("output.dir on tmpfs", "/dev/shm: another filesystem", _output("tmpfs"), "ok"),
        Fault(
            "dehaze OUT == IN",
            "would overwrite its source",
            _dehaze_args("same"),
            "error",
            "is the input itself",
            command=("dehaze",),
        ),
        Fault(
            "dehaze truncated input",
            "a third of a tile",
            _dehaze_args("truncated"),
            "error",
            "broken.tif",
            command=("dehaze",),
        ),
        Fault(
            "batch folder mistyped",
            "configs-typo",
            _batch("missing"),
            "error",
            "configs-typo",
            command=("batch",),
        ),
        Fault("batch *.yml", "a city in city.yml", _batch("yml"), "ok", command=("batch",)),
        Fault(
            "batch, every city fails",
            "3 broken configs",
            _batch("fail"),
            "failed",
            "0 ok, 3 not",
            command=("batch",),
        ),
    ]
    if shared is not None:
        out.append(
            Fault(
                "real aerial pixels, demo model",
                "cogeo.tif (0.6 m, Korea) over the city",
                _real_pixels(shared),
                "warning",
                "look like the data the model was trained on",
                needs=("shared",),
            )
        )
        out.insert(
            8,
            Fault(
                "world.rgb.tif listed first",
                "0.7 degree pixels",
                _world(shared),
                "warning",
                "used only where no finer tile",
                needs=("shared",),
            ),
        )
    return out


# The CLI in a child process that reports its own peak RSS (VmHWM) on exit.
_RUNNER = """
import atexit, sys
def _peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            print("PEAK_MB", int(line.split()[1]) / 1024, file=sys.stderr)
atexit.register(_peak)
from urbanfusion.workflows.cli import app
app(sys.argv[1:], prog_name="urbanfusion")
"""


@dataclass
class Outcome:
    """What the command line did with a fault."""

    exit: int
    lines: list[str]  # the error and warning lines it printed
    changed: int | None  # cells whose class differs from the clean run (runs that finished)
    cells: int | None
    peak_mb: float
    seconds: float
    stderr: str
    stdout: str

    def line(self, says: str = "") -> str:
        """The printed line that says ``says`` (else the first one), or ''."""
        return next(
            (x for x in self.lines if says and says in x), self.lines[0] if self.lines else ""
        )


def _classes(city: Path) -> np.ndarray | None:
    import geopandas as gpd

    config = yaml.safe_load((city / "city.yaml").read_text())
    out = Path(config["output"]["dir"] or ".")
    out = out if out.is_absolute() else city / out
    if not (out / "cells.gpkg").exists():
        return None
    return gpd.read_file(out / "cells.gpkg", columns=["class_id"])["class_id"].to_numpy()


# Address space a faulty run may take (the demo city needs under 2 GB; the old code's year-2300
# row asked for more than 15): past it, allocation fails in that process alone.
MEMORY_CAP_BYTES = 12 * 2**30


def _memory_cap() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP_BYTES, MEMORY_CAP_BYTES))


def run_fault(
    fault: Fault | None,
    clean: Path,
    work: Path,
    baseline: np.ndarray | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> Outcome:
    """Copy the clean city into ``work``, apply ``fault`` (None: none) and run its command.

    A command still running after ``timeout`` seconds is killed: exit -9, "hung" as its line.
    """
    import subprocess
    import sys
    import time

    city = work / "city"
    shutil.copytree(clean, city)
    args = fault.make(city) if fault else []
    command = list(fault.command) if fault else ["run"]
    if command == ["run"]:
        target = city if "@city" in args else city / "city.yaml"
        command += [str(target), *(a for a in args if a != "@city"), "-q"]
    elif command == ["batch"]:
        command += [*args, "--report", str(work / "batch.json")]
    else:
        command += args
    started = time.perf_counter()
    # Under a memory cap: a fault may be one that allocates without end.
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _RUNNER, *command],
            preexec_fn=_memory_cap,
            capture_output=True,
            text=True,
            cwd=work,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as hung:
        said = f"hung: killed after {timeout:g} s"
        out = hung.stdout.decode() if isinstance(hung.stdout, bytes) else hung.stdout or ""
        return Outcome(-9, [said], None, None, 0.0, timeout, said, out)
    seconds = time.perf_counter() - started
    text = [x for x in proc.stderr.splitlines() if not x.startswith("PEAK_MB")]
    peak = [float(x.split()[1]) for x in proc.stderr.splitlines() if x.startswith("PEAK_MB")]
    # Paths relative to the work folder: the table reads "city/tiles/a.tif", not /tmp/...
    said = [x.strip().replace(f"{work}/", "") for x in text + proc.stdout.splitlines()]
    lines = [x for x in said if x.startswith(("error", "warning", "Traceback")) or "Error" in x]
    classes = _classes(city) if proc.returncode == 0 and command[0] == "run" else None
    changed = None
    if classes is not None and baseline is not None and len(classes) == len(baseline):
        changed = int((classes != baseline).sum())
    return Outcome(
        proc.returncode,
        lines,
        changed,
        None if classes is None else len(classes),
        peak[0] if peak else 0.0,
        seconds,
        "\n".join(text),
        proc.stdout,
    )


def clean_run(
    clean: Path, work: Path, env: dict[str, str] | None = None
) -> tuple[np.ndarray, Outcome]:
    """The untouched city's classes and outcome: what "cells changed" compares with."""
    outcome = run_fault(None, clean, work, env=env)
    classes = _classes(work / "city")
    if outcome.exit or classes is None:
        raise RuntimeError(f"the clean city does not run: {outcome.stderr[-2000:]}")
    return classes, outcome
