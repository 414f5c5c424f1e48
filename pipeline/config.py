"""The run configuration: YAML validated by pydantic, unknown keys rejected by name.

Relative paths in a config file are relative to the directory of that file. Globs are expanded
by :func:`expand_paths`, which fails with the pattern's name when it matches nothing.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import glob
import json
import os
import re
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from urbanfusion.pipeline.cache import cache_dir
from urbanfusion.pipeline.errors import ConfigError, InputNotFoundError
from urbanfusion.pipeline.object_store import S3Location, is_s3
from urbanfusion.pipeline.remote_files import (
    InputPath,
    expand_remote,
    forget_identities,
    gdal_for_remote,
    is_remote,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GridConfig(_Strict):
    """Cell size in metres, pixels per cell side, and at most how many cells a partition holds.

    ``partition_cells`` (default: as many as memory holds) cuts a run into partitions of at most
    so many cells, each prepared and predicted on its own; the maps are the same either way.
    """

    cell_size_m: float = Field(250.0, gt=0)
    chip_px: int = Field(32, ge=4, le=512)
    partition_cells: int | None = Field(None, ge=1)


def _rgb() -> list[int | str]:
    """The first three bands: a tile's red, green and blue, as most tiles store them."""
    return [1, 2, 3]


class ImageryConfig(_Strict):
    """Satellite tiles: paths or globs, dehazing policy, bands in the model's order, strictness.

    ``bands`` are 1-based indexes or names (a band's description or colour, e.g. ``red``).
    ``strict`` makes any unreadable or unusable tile an error instead of a gap in the map.
    """

    paths: list[str] = Field(min_length=1)
    dehaze: Literal["auto", "always", "never"] = "auto"
    bands: list[int | str] = Field(default_factory=_rgb, min_length=1)
    strict: bool = False

    @field_validator("bands")
    @classmethod
    def _positive_bands(cls, bands: list[int | str]) -> list[int | str]:
        if any(isinstance(b, int) and b < 1 for b in bands):
            raise ValueError(f"band indexes are 1-based, got {bands}")
        return bands


class ColumnsConfig(_Strict):
    """Names of the signalling columns in the user's files."""

    time: str = "time"
    lon: str = "lon"
    lat: str = "lat"
    count: str = "count"
    grid_id: str = "grid_id"


class PlatformGridConfig(_Strict):
    """The platform's own grid, for ``format: grid`` and ``format: wide``.

    A GeoPackage/GeoJSON of polygons with an id column, or a CSV with an id column and either the
    cell extents (``bounds``: xmin, ymin, xmax, ymax column names) or centres (``centre``: x, y
    column names) with a ``cell_size``, in ``crs`` (CSV only; default WGS84 degrees, in the
    datum of ``signalling.coords``).
    """

    path: str
    id_column: str = "id"
    layer: str | None = None
    crs: str = "EPSG:4326"
    bounds: tuple[str, str, str, str] | None = None
    centre: tuple[str, str] | None = None
    cell_size: float | None = Field(None, gt=0)


class WideConfig(_Strict):
    """Wide tables: one row per grid id, one column per hour, a day type per file or row.

    ``day_types`` maps a day type to the weekdays it stands for (Monday = 0). The day type of a
    file is the first of those names found in its file name, or the value of ``day_type_column``.
    """

    hour_columns: str = "H{hour}"
    day_types: dict[str, list[int]] = Field(
        default_factory=lambda: {"workdays": [0, 1, 2, 3, 4], "sat": [5], "sun": [6]}
    )
    day_type_column: str | None = None


class SignallingConfig(_Strict):
    """Hourly signalling counts: format, paths or globs, datum, local time zone, day range."""

    format: Literal["points", "grid", "wide", "activity"] = "points"
    paths: list[str] = Field(min_length=1)
    coords: Literal["wgs84", "gcj02", "bd09"] = "wgs84"
    timezone: str = "Asia/Shanghai"
    columns: ColumnsConfig = ColumnsConfig()
    grid: PlatformGridConfig | None = None
    wide: WideConfig = WideConfig()
    start: dt.date | None = None
    end: dt.date | None = None
    window_days: int | None = Field(None, ge=1)
    # People per place and hour above which a count is a data error (1e30, inf), not people.
    max_count: float = Field(1e6, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> SignallingConfig:
        if self.format in ("grid", "wide") and self.grid is None:
            raise ValueError(f"format '{self.format}' needs signalling.grid (the platform's grid)")
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        if self.window_days and self.format == "wide":
            raise ValueError(
                "window_days needs dated rows; wide tables give one reference week (remove it)"
            )
        return self

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {name!r} (use an IANA name such as Asia/Shanghai)"
            ) from None
        return name


class OutputConfig(_Strict):
    """Where the outputs of a run go, and the per-cell table's format.

    ``dir``: a folder, or ``s3://bucket/prefix`` (published through a pointer object there,
    see ``urbanfusion.workflows.s3_output``). ``work_dir``: for an S3 ``dir``, the local copy a
    run works in (default: under ``~/.cache/urbanfusion/outputs``); on a cluster whose workers
    are other machines, a folder they all see. ``cells_format``: ``gpkg`` (``cells.gpkg``,
    styled for QGIS) or ``parquet`` (``cells.parquet``, GeoParquet: a region's millions of
    polygons open far faster).
    """

    dir: str = Field(min_length=1)
    work_dir: str | None = None
    cells_format: Literal["gpkg", "parquet"] = "gpkg"

    @model_validator(mode="after")
    def _work_dir_for_s3(self) -> OutputConfig:
        if is_s3(self.dir):
            S3Location.parse(self.dir)
        elif self.work_dir is not None:
            raise ValueError(
                "work_dir is the local copy of an s3:// output.dir; leave it out for a folder"
            )
        return self


class HistoryConfig(_Strict):
    """How many runs an output folder keeps (the latest whole, older ones' maps and manifests)."""

    keep: int = Field(30, ge=1)


class DaskConfig(_Strict):
    """Which dask scheduler runs the stages.

    ``threads`` (default) and ``synchronous`` are dask's local schedulers; ``local-cluster``
    starts a distributed LocalCluster; any ``tcp://host:port`` connects to an existing one.
    """

    scheduler: str = "threads"
    workers: int | None = Field(None, ge=1)
    # The memory a worker (and the run's own process) may take: partitions are sized to fit it
    # (default: what is free on this machine).
    worker_memory_gb: float | None = Field(None, gt=0)
    # A cluster with no live worker this long (none joined, or all died) ends the run with an
    # error instead of holding the output's lock for ever.
    worker_timeout_s: float = Field(60.0, gt=0)

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        if value not in {"threads", "synchronous", "local-cluster"} and not value.startswith(
            "tcp://"
        ):
            raise ValueError(
                f"unknown scheduler {value!r} (use threads, synchronous, local-cluster "
                "or a tcp://host:port address)"
            )
        return value


class ExtentArea(_Strict):
    """An extent given as an area: the feature of a vector file (GeoPackage, GeoJSON...).

    The feature whose ``field`` is ``value`` in ``layer`` (the file's only or first layer when
    not given); a city's administrative boundary, say. Cells whose centre lies outside it get no
    prediction and are not computed.
    """

    path: str = Field(min_length=1)
    layer: str | None = None
    field: str = Field("name", min_length=1)
    value: str | int

    def describe(self) -> str:
        """Which feature, in words."""
        layer = f" layer {self.layer}" if self.layer else ""
        return f"{self.path}{layer} where {self.field} = {self.value!r}"


class RunConfig(_Strict):
    """One run: an extent, a grid, the inputs, the model and where outputs go."""

    name: str = Field(min_length=1)
    extent: tuple[float, float, float, float] | ExtentArea
    crs: str | None = None
    grid: GridConfig = GridConfig()
    imagery: ImageryConfig
    signalling: SignallingConfig
    model: str | None = None
    output: OutputConfig
    history: HistoryConfig = HistoryConfig()
    dask: DaskConfig = DaskConfig()
    base_dir: Path = Field(Path("."), exclude=True)

    @field_validator("extent", mode="before")
    @classmethod
    def _box_or_area(cls, value: object) -> object:
        """Say which of the two forms is wrong, not both (pydantic reports every union arm)."""
        if isinstance(value, dict):
            try:
                return ExtentArea.model_validate(value, strict=True)
            except ValidationError as err:
                first = err.errors()[0]
                where = ".".join(str(k) for k in first["loc"])
                raise ValueError(
                    f"an area extent needs path and value (and optionally layer, field); "
                    f"{where}: {first['msg']}"
                ) from None
        items = list(value) if isinstance(value, list | tuple) else []
        if len(items) == 4 and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in items
        ):
            return tuple(float(v) for v in items)
        raise ValueError(
            "extent must be [min_lon, min_lat, max_lon, max_lat] in WGS84 degrees, or an "
            f"area {{path: FILE, field: name, value: NAME}}; got {value!r}"
        )

    @field_validator("extent")
    @classmethod
    def _valid_extent(
        cls, extent: tuple[float, float, float, float] | ExtentArea
    ) -> tuple[float, float, float, float] | ExtentArea:
        if isinstance(extent, ExtentArea):
            return extent
        min_lon, min_lat, max_lon, max_lat = extent
        if -180 <= max_lon < min_lon <= 180 and -90 <= min_lat < max_lat <= 90:
            raise ValueError(
                f"extent {list(extent)} has min_lon {min_lon} east of max_lon {max_lon}: an "
                "extent across the antimeridian (180 degrees) is not supported; map it as two "
                "runs, one on each side, or swap the two longitudes if that was the mistake"
            )
        if not (-180 <= min_lon < max_lon <= 180 and -90 <= min_lat < max_lat <= 90):
            raise ValueError(
                f"extent must be [min_lon, min_lat, max_lon, max_lat] in WGS84 degrees with "
                f"min < max, got {list(extent)}"
            )
        return extent

    @field_validator("crs")
    @classmethod
    def _projected_crs(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # pyproj on first use: `urbanfusion dehaze` imports this module for the default grid's
        # pixel size only, and pyproj is 0.04 s of its start.
        from pyproj import CRS
        from pyproj.exceptions import CRSError as PyprojCRSError

        try:
            crs = CRS.from_user_input(value)
        except PyprojCRSError:
            raise ValueError(f"unknown CRS {value!r} (use e.g. EPSG:32649)") from None
        if not crs.is_projected:
            raise ValueError(
                f"crs {value!r} is not projected; the grid needs metres (e.g. a UTM zone)"
            )
        return value

    def resolve(self, path: str) -> Path:
        """Return ``path`` made absolute against the config file's directory."""
        p = Path(path).expanduser()
        # normpath, not resolve(): tidy '..' for people without following the user's symlinks.
        return Path(os.path.normpath(p if p.is_absolute() else self.base_dir / p))

    @property
    def output_url(self) -> str | None:
        """``s3://bucket/prefix`` when the outputs are published to S3, else None."""
        return S3Location.parse(self.output.dir).url if is_s3(self.output.dir) else None

    @property
    def output_dir(self) -> Path:
        """The absolute output folder runs are made in: ``output.dir``, or an S3 one's copy."""
        if not is_s3(self.output.dir):
            return self.resolve(self.output.dir)
        if self.output.work_dir is not None:
            return self.resolve(self.output.work_dir)
        return cache_dir() / "outputs" / S3Location.parse(self.output.dir).local_name()

    @property
    def resolved_signalling(self) -> SignallingConfig:
        """``signalling`` with the platform grid's path made absolute (what the reader takes)."""
        g = self.signalling.grid
        if g is None:
            return self.signalling
        grid = g.model_copy(update={"path": str(self.resolve(g.path))})
        return self.signalling.model_copy(update={"grid": grid})

    @property
    def model_path(self) -> Path | None:
        """The absolute model path, or None for the shipped model."""
        return None if self.model is None else self.resolve(self.model)


class _ConfigLoader(yaml.SafeLoader):
    """YAML as a config needs it: a key given twice is an error, ``1e6`` is a number.

    PyYAML keeps the last of two equal keys without a word (a second ``grid:`` silently
    replaces the first), and reads ``1e6`` as text, since YAML 1.1 wants ``1.0e6``.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool | None):
                continue  # an unhashable key: PyYAML's own check names it
            if key in seen:
                raise ConfigError(
                    f"key '{key}' is given twice (lines {seen[key]} and "
                    f"{key_node.start_mark.line + 1}); keep one of them"
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _got(e: Any) -> str:
    """What a value of the wrong type was, in YAML's words (``yes`` is read as true)."""
    value = e.get("input")
    if isinstance(value, bool):
        return f" (got {str(value).lower()}: YAML reads yes/no/on/off as true/false)"
    return f" (got {value!r})" if isinstance(value, str | int | float) else ""


def _format_validation_error(source: str, err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown key '{where}'")
        elif e["type"] == "missing":
            parts.append(f"missing key '{where}'")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = _got(e) if e["type"].endswith(("_type", "_parsing")) else ""
            parts.append(f"'{where}': {msg}{got}")
    return f"{source}: invalid config: " + "; ".join(parts) + " (see README.md, config reference)"


def parse_config(data: Any, base_dir: Path, source: str = "config") -> RunConfig:
    """Validate a config mapping; relative paths will resolve against ``base_dir``.

    Types are strict, as the mapping's JSON would be checked: ``keep: yes`` (true) is not the
    number 1, ``chip_px: "32"`` is not 32. A value that only looks right is refused by name
    rather than changed.

    Raises:
        ConfigError: the mapping is not a valid config; the message names every bad key.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a config must be a YAML mapping of keys to values")
    if "base_dir" in data:
        raise ConfigError(f"{source}: invalid config: unknown key 'base_dir'")
    try:
        # Through JSON: strict types, while lists still fill tuples and ISO text fills dates.
        text = json.dumps({**data, "base_dir": str(base_dir.resolve())}, default=str)
        return RunConfig.model_validate_json(text, strict=True)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err)) from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML run config.

    Raises:
        InputNotFoundError: the file does not exist.
        ConfigError: the YAML is malformed or does not validate.
    """
    path = Path(path)
    if path.is_dir():
        raise InputNotFoundError(f"config {path} is a folder; give the YAML file in it")
    if not path.is_file():
        raise InputNotFoundError(f"config file {path} does not exist; check the path")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_ConfigLoader)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {err.start}); save the config as UTF-8"
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}; fix the syntax") from None
    return parse_config(data, path.parent, source=str(path))


def glob_matches(pattern: Path, path: Path) -> bool:
    """Whether ``glob.glob(pattern, recursive=True)`` would list ``path`` if it existed.

    Segment by segment, as glob does: ``*`` stays inside one folder, ``**`` spans any number.
    """
    parts, names = pattern.parts, path.parts

    def match(i: int, j: int) -> bool:
        if i == len(parts):
            return j == len(names)
        if parts[i] == "**":
            return any(match(i + 1, k) for k in range(j, len(names) + 1))
        return j < len(names) and fnmatch.fnmatchcase(names[j], parts[i]) and match(i + 1, j + 1)

    return match(0, 0)


def _not_a_file(path: Path) -> str:
    """What a path a glob listed is when it is neither a file nor a folder."""
    if path.is_symlink():
        return f"a link to {os.readlink(path)}, which does not exist"
    kind = "a FIFO (named pipe)" if path.is_fifo() else "a socket" if path.is_socket() else None
    return f"{kind or 'a device'}, not a file: reading it could wait for ever"


def expand_paths(config: RunConfig, patterns: list[str], key: str, first: int = 0) -> list[Path]:
    """Expand globs in order, each pattern's matches sorted; duplicates kept once.

    ``first``: the index of ``patterns[0]`` in the config's list (messages name ``key[i]``).

    Raises:
        InputNotFoundError: a pattern matched no file, or it matched a broken link, a FIFO or
            a device (never skipped unsaid); the message names the key and pattern.
    """
    found: list[Path] = []
    for i, pattern in enumerate(patterns, first):
        if is_remote(pattern):
            raise InputNotFoundError(
                f"{key}[{i}] '{pattern}': {key} are read from local files only (imagery.paths "
                "may be URLs); copy them to a local or shared folder"
            )
        full = config.resolve(pattern)
        matches = sorted(Path(m) for m in glob.glob(str(full), recursive=True))
        for m in matches:
            if not m.is_file() and not m.is_dir():  # folders a glob lists are not inputs
                raise InputNotFoundError(
                    f"{key}[{i}] '{pattern}' matched {m}, {_not_a_file(m)}; remove it or "
                    "narrow the pattern"
                )
        matches = [m for m in matches if m.is_file()]
        if not matches:
            raise InputNotFoundError(
                f"{key}[{i}] '{pattern}' matched no file (looked for {full}); "
                "check the path, relative paths are relative to the config file"
            )
        found.extend(m for m in matches if m not in found)
    return found


def expand_inputs(config: RunConfig, patterns: list[str], key: str) -> list[InputPath]:
    """Like :func:`expand_paths`, where a pattern may also be a URL (http, https, s3).

    A URL is read where it lies (:mod:`urbanfusion.pipeline.remote_files`); an ``s3://`` one
    may hold a glob.

    Raises:
        InputNotFoundError: a pattern matched no file or object.
    """
    forget_identities()  # each plan asks the servers afresh (a batch plans many runs)
    found: list[InputPath] = []
    for i, pattern in enumerate(patterns):
        if is_remote(pattern):
            gdal_for_remote()
            matches: list[InputPath] = [*expand_remote(pattern, f"{key}[{i}]")]
        else:
            matches = [*expand_paths(config, [pattern], key, i)]
        found.extend(m for m in matches if m not in found)
    return found
