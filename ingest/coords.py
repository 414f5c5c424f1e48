"""Chinese map datums to and from WGS84: GCJ-02 (Chinese web maps) and BD-09 (Baidu).

The forward GCJ-02 transform is the published algorithm (Krasovsky ellipsoid constants); it has
no closed-form inverse, so :func:`gcj02_to_wgs84` iterates the forward transform, which converges
to well under a millimetre in a few steps. Points outside mainland China are not shifted.
BD-09 is a further, invertible rotation of GCJ-02 used by Baidu Maps.
"""

from __future__ import annotations

import numpy as np

_A = 6378245.0
_EE = 0.00669342162296594323


def _outside_china(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    return (lon < 72.004) | (lon > 137.8347) | (lat < 0.8293) | (lat > 55.8271)


def _delta(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = lon - 105.0, lat - 35.0
    dlat = (
        -100.0
        + 2.0 * x
        + 3.0 * y
        + 0.2 * y * y
        + 0.1 * x * y
        + 0.2 * np.sqrt(np.abs(x))
        + (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
        + (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
        + (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0
    )
    dlon = (
        300.0
        + x
        + 2.0 * y
        + 0.1 * x * x
        + 0.1 * x * y
        + 0.1 * np.sqrt(np.abs(x))
        + (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
        + (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
        + (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0
    )
    rad = lat / 180.0 * np.pi
    magic = 1 - _EE * np.sin(rad) ** 2
    sqrt_magic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1 - _EE)) / (magic * sqrt_magic) * np.pi)
    dlon = (dlon * 180.0) / (_A / sqrt_magic * np.cos(rad) * np.pi)
    outside = _outside_china(lon, lat)
    return np.where(outside, 0.0, dlon), np.where(outside, 0.0, dlat)


def wgs84_to_gcj02(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shift WGS84 degrees to GCJ-02 (the forward, published transform)."""
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    dlon, dlat = _delta(lon, lat)
    return lon + dlon, lat + dlat


def gcj02_to_wgs84(
    lon: np.ndarray, lat: np.ndarray, iterations: int = 6
) -> tuple[np.ndarray, np.ndarray]:
    """Recover WGS84 degrees from GCJ-02 by fixed-point iteration of the forward transform."""
    glon = np.asarray(lon, dtype=np.float64)
    glat = np.asarray(lat, dtype=np.float64)
    wlon, wlat = glon.copy(), glat.copy()
    for _ in range(iterations):
        flon, flat = wgs84_to_gcj02(wlon, wlat)
        wlon = wlon - (flon - glon)
        wlat = wlat - (flat - glat)
    return wlon, wlat


_BD_X = np.pi * 3000.0 / 180.0


def gcj02_to_bd09(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shift GCJ-02 degrees to BD-09 (Baidu)."""
    x, y = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    z = np.sqrt(x * x + y * y) + 0.00002 * np.sin(y * _BD_X)
    theta = np.arctan2(y, x) + 0.000003 * np.cos(x * _BD_X)
    return z * np.cos(theta) + 0.0065, z * np.sin(theta) + 0.006


def bd09_to_gcj02(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recover GCJ-02 degrees from BD-09 by fixed-point iteration of :func:`gcj02_to_bd09`."""
    blon = np.asarray(lon, dtype=np.float64)
    blat = np.asarray(lat, dtype=np.float64)
    glon, glat = blon - 0.0065, blat - 0.006
    for _ in range(6):
        flon, flat = gcj02_to_bd09(glon, glat)
        glon, glat = glon - (flon - blon), glat - (flat - blat)
    return glon, glat


def to_wgs84(lon: np.ndarray, lat: np.ndarray, datum: str) -> tuple[np.ndarray, np.ndarray]:
    """Degrees in ``datum`` (``wgs84``, ``gcj02`` or ``bd09``) to WGS84."""
    if datum == "wgs84":
        return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    if datum == "bd09":
        lon, lat = bd09_to_gcj02(lon, lat)
    return gcj02_to_wgs84(lon, lat)
