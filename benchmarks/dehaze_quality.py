"""Dehazing quality on the 70 real RICE1 pairs and speed on a 2048 x 2048 RGB tile, in one run.

Compares the hazy input, plain dark channel prior (He et al. 2009, coloured airlight, omega 0.95),
the PyPI package adrishyam 0.1.1 (its array functions, chained as its ``dehaze_image`` does) and
urbanfusion's dehazing: the numpy function on the whole image, and ``urbanfusion dehaze`` on the
image written as a PNG and as GeoTIFFs of 1 m and 4 m pixels (the command takes the airlight a run
would, from a preview at the grid's 7.8 m pixels). Needs the bench extra:
``.venv/bin/pip install -e .[bench]``.

    .venv/bin/python benchmarks/dehaze_quality.py [--data ../shared/data/haze/rice1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from urbanfusion.preprocess.dehaze import dehaze as ours_chw

RICE1 = Path(__file__).resolve().parents[2] / "shared" / "data" / "haze" / "rice1"


def ours(img: np.ndarray) -> np.ndarray:
    """urbanfusion on an (h, w, 3) image."""
    return np.moveaxis(ours_chw(np.ascontiguousarray(np.moveaxis(img, -1, 0))), 0, -1)


def plain_dcp(img: np.ndarray, patch: int = 15, omega: float = 0.95, t0: float = 0.1) -> np.ndarray:
    """The textbook DCP with guided-filter refinement (He et al. 2009, 2010)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (patch, patch))
    dark = cv2.erode(img.min(axis=2), kernel)
    n = max(1, round(dark.size * 0.001))
    top = np.argpartition(dark.ravel(), dark.size - n)[dark.size - n :]
    light = img.reshape(-1, 3)[top].mean(axis=0)
    t = 1 - omega * cv2.erode((img / light).min(axis=2).astype(np.float32), kernel)
    gray = img.mean(axis=2).astype(np.float32)
    r, eps = 60, 1e-3
    box = lambda a: cv2.boxFilter(a, -1, (2 * r + 1, 2 * r + 1))  # noqa: E731
    mg, mp = box(gray), box(t)
    a = (box(gray * t) - mg * mp) / (box(gray * gray) - mg * mg + eps)
    t = box(a) * gray + box(mp - a * mg)
    return np.clip((img - light) / np.maximum(t, t0)[..., None] + light, 0, 1)


def adrishyam(img: np.ndarray) -> np.ndarray:
    """adrishyam 0.1.1's array functions, in the order of its dehaze_image."""
    from adrishyam import dehaze as a

    dark = a.get_dark_channel(img, 15)
    light = a.estimate_atmospheric_light(img, dark)
    t = a.estimate_transmission(img, light, dark, 0.95)
    refined = a.guided_filter_simple(img[:, :, 0], t, 60, 0.01)
    return a.dehaze(img, refined, light, 0.1)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio for images in [0, 1]."""
    return float(10 * np.log10(1.0 / np.mean((np.clip(a, 0, 1) - b) ** 2)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over the channels (Wang et al. 2004: Gaussian window 11, sigma 1.5)."""
    c1, c2 = 0.01**2, 0.03**2
    blur = lambda x: cv2.GaussianBlur(x, (11, 11), 1.5)  # noqa: E731
    a, b = np.clip(a, 0, 1).astype(np.float64), b.astype(np.float64)
    ma, mb = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ma**2, blur(b * b) - mb**2, blur(a * b) - ma * mb
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return float(s.mean())


def command(img: np.ndarray, pixel_m: float | None = None) -> np.ndarray:
    """``urbanfusion dehaze`` on the image as a file: a PNG, or a GeoTIFF at ``pixel_m`` metres.

    The command previews a georeferenced raster at the grid's pixel size (7.8 m by default) to
    take the airlight a run would use; a PNG has no pixel size and is previewed whole.
    """
    import tempfile
    import warnings

    import rasterio
    from affine import Affine

    from urbanfusion.preprocess.dehaze_raster import dehaze_raster

    data = np.rint(np.moveaxis(img, -1, 0) * 255).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        suffix = ".png" if pixel_m is None else ".tif"
        src, dst = Path(tmp) / f"in{suffix}", Path(tmp) / f"out{suffix}"
        profile: dict[str, object] = {
            "driver": "PNG" if pixel_m is None else "GTiff",
            "width": data.shape[2],
            "height": data.shape[1],
            "count": 3,
            "dtype": "uint8",
        }
        if pixel_m is not None:
            profile |= {"crs": "EPSG:32649", "transform": Affine(pixel_m, 0, 0, 0, -pixel_m, 0)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(src, "w", **profile) as out:
                out.write(data)
        dehaze_raster(src, dst)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            result = rasterio.open(dst)
        with result:
            return np.moveaxis(result.read(), 0, -1).astype(np.float32) / 255


def load(path: Path) -> np.ndarray:
    """An RGB image as float32 (h, w, 3) in [0, 1]."""
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).astype(np.float32) / 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=RICE1)
    args = parser.parse_args()
    hazy_files = sorted((args.data / "hazy").glob("*.png"), key=lambda p: int(p.stem))
    pairs = [(load(h), load(args.data / "clear" / h.name)) for h in hazy_files]
    methods = {
        "hazy input": lambda x: x,
        "plain DCP": plain_dcp,
        "adrishyam 0.1.1": adrishyam,
        "urbanfusion": ours,
        "dehaze cmd, PNG": command,
        "dehaze cmd, 1 m": lambda x: command(x, 1.0),
        "dehaze cmd, 4 m": lambda x: command(x, 4.0),
    }
    hazy_psnr = np.array([psnr(h, c) for h, c in pairs])
    print(f"RICE1: {len(pairs)} pairs of {pairs[0][0].shape[1]}x{pairs[0][0].shape[0]} px")
    header = f"{'method':<18} {'PSNR dB':>8} {'SSIM':>6} {'worst vs hazy':>14}"
    print(f"{header} {'images >1 dB worse':>19}")
    for name, fn in methods.items():
        outs = [fn(h) for h, _ in pairs]
        p = np.array([psnr(o, c) for o, (_, c) in zip(outs, pairs, strict=True)])
        s = np.mean([ssim(o, c) for o, (_, c) in zip(outs, pairs, strict=True)])
        d = p - hazy_psnr
        print(f"{name:<18} {p.mean():>8.2f} {s:>6.3f} {d.min():>+14.2f} {(d < -1).sum():>19d}")

    rng = np.random.default_rng(0)
    big = cv2.resize(pairs[0][0], (2048, 2048), interpolation=cv2.INTER_CUBIC)
    big = np.clip(big + rng.normal(0, 0.01, big.shape).astype(np.float32), 0, 1)
    timings = {}
    for name, fn in (
        ("urbanfusion", ours),
        ("adrishyam 0.1.1", adrishyam),
        ("plain DCP", plain_dcp),
    ):
        fn(big)  # warm-up
        best = min(_timed(fn, big) for _ in range(5 if name != "adrishyam 0.1.1" else 2))
        timings[name] = best
    print("\n2048 x 2048 RGB, best of runs:")
    for name, secs in timings.items():
        print(f"  {name:<18} {secs:.3f} s  ({timings['adrishyam 0.1.1'] / secs:.1f}x adrishyam)")


def _timed(fn: object, img: np.ndarray) -> float:
    start = time.perf_counter()
    fn(img)  # type: ignore[operator]
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
