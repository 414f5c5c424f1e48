"""A batch of new city extents, as they usually arrive: one feature per city in a vector file.

``urbanfusion batch --extents FILE --template CONFIG`` writes one config per feature of FILE
(the template with the city's name and the feature as its area; its relative paths made
absolute, its output folder a sub-folder per city) and runs them as a batch.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyogrio
import yaml
from pyogrio.errors import DataLayerError, DataSourceError

from urbanfusion.pipeline.config import load_config
from urbanfusion.pipeline.errors import InputFormatError, InputNotFoundError


def _slug(value: str) -> str:
    """A folder and file name for a city: letters, digits, '-' and '_' (others become '-')."""
    return re.sub(r"[^\w-]+", "-", value, flags=re.UNICODE).strip("-") or "city"


def write_extent_configs(
    extents: Path, template: Path, out: Path, field: str = "name", layer: str | None = None
) -> list[Path]:
    """One config per feature of ``extents`` (named by ``field``) in ``out``; their paths.

    Raises:
        InputNotFoundError: the extents file or the template does not exist.
        InputFormatError: the file has no such layer or field, a feature has no name, or two
            features share one.
        ConfigError: the template does not validate.
    """
    if not extents.is_file():
        raise InputNotFoundError(
            f"--extents {extents} does not exist; give a GeoPackage or GeoJSON"
        )
    config = load_config(template)  # the template must be a valid config itself
    try:
        table = pyogrio.read_dataframe(extents, layer=layer, columns=[field], read_geometry=False)
    except (DataSourceError, DataLayerError) as err:
        first = str(err).splitlines()[0]
        raise InputFormatError(
            f"--extents {extents}: cannot read field {field!r} ({first}); use --field and --layer"
        ) from None
    if field not in table.columns:  # pyogrio leaves out a column the layer lacks
        raise InputFormatError(f"--extents {extents}: no field {field!r}; use --field")
    if table[field].isna().any() or (table[field].astype(str).str.strip() == "").any():
        raise InputFormatError(f"--extents {extents}: a feature has no {field}; name every city")
    names = [str(v) for v in table[field]]
    slugs = [_slug(n) for n in names]
    twice = sorted({s for s in slugs if slugs.count(s) > 1})
    if twice:
        raise InputFormatError(
            f"--extents {extents}: two features are named {twice[0]!r} (as a folder name); "
            f"give every city its own {field}"
        )
    data = yaml.safe_load(template.read_text(encoding="utf-8"))
    absolute = {
        "imagery.paths": [str(config.resolve(p)) for p in config.imagery.paths],
        "signalling.paths": [str(config.resolve(p)) for p in config.signalling.paths],
    }
    data["imagery"]["paths"] = absolute["imagery.paths"]
    data["signalling"]["paths"] = absolute["signalling.paths"]
    if config.signalling.grid is not None:
        data["signalling"]["grid"]["path"] = str(config.resolve(config.signalling.grid.path))
    if config.model is not None:
        data["model"] = str(config.resolve(config.model))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, slug in zip(names, slugs, strict=True):
        city = {
            **data,
            "name": name,
            "extent": {
                "path": str(extents.resolve()),
                **({"layer": layer} if layer else {}),
                "field": field,
                "value": name,
            },
            "output": {**data["output"], "dir": str(config.output_dir / str(slug))},
        }
        path = out / f"{slug}.yaml"
        path.write_text(
            f"# {name}: written by urbanfusion batch --extents from {template.name}\n"
            + yaml.safe_dump(city, sort_keys=False, allow_unicode=True),
            encoding="utf-8",
        )
        written.append(path)
    return written
