"""Render a demo city's imagery: class textures drawn block by block, roads and rails on top.

The textures are meant to be distinct but overlapping, as real ones are: schools are residential
blocks that sometimes have a sports ground, hospitals and administrative districts share their
mid-rise buildings, shopping and industrial both have large flat roofs. Imagery alone therefore
confuses some classes that activity tells apart, and the other way round.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from urbanfusion.workflows.democity.layout import CLS, Layout
from urbanfusion.workflows.democity.scenes import SceneBank

Canvas = np.ndarray  # (h, w, 3) uint8 RGB
Rng = np.random.Generator

ROOFS_HOUSING = np.array(
    [
        [150, 150, 155],
        [170, 95, 80],
        [120, 125, 140],
        [195, 185, 165],
        [140, 110, 95],
        [175, 175, 180],
    ]
)
ROOFS_LARGE = np.array([[205, 205, 210], [120, 150, 185], [225, 225, 220], [160, 165, 170]])
ROOFS_CIVIC = np.array([[215, 210, 200], [190, 190, 195], [170, 160, 150], [230, 228, 222]])
GRASS = np.array([95, 130, 70])
TREE = np.array([45, 85, 45])
ASPHALT = np.array([85, 85, 90])
CONCRETE = np.array([175, 172, 165])


def _colour(rng: Rng, palette: np.ndarray, jitter: float = 12.0) -> tuple[int, int, int]:
    r, g, b = (
        int(v)
        for v in np.clip(palette[rng.integers(len(palette))] + rng.normal(0, jitter, 3), 0, 255)
    )
    return r, g, b


def _fill(canvas: Canvas, rng: Rng, base: np.ndarray, noise: float) -> None:
    h, w, _ = canvas.shape
    canvas[:] = np.clip(base + rng.normal(0, noise, (h, w, 3)), 0, 255)


def _rect(
    canvas: Canvas,
    rng: Rng,
    cx: float,
    cy: float,
    w: float,
    h: float,
    colour: tuple[int, int, int],
    angle: float = 0.0,
    shadow: bool = True,
) -> None:
    box = cv2.boxPoints(((cx, cy), (w, h), angle)).astype(np.int32)
    if shadow:  # a shadow to the south-east, as under a morning sun
        off = max(1, int(min(w, h) * 0.25))
        cv2.fillPoly(canvas, [box + off], (40, 40, 45))
    cv2.fillPoly(canvas, [box], colour)


def _trees(canvas: Canvas, rng: Rng, density: float, radius: tuple[int, int] = (1, 3)) -> None:
    h, w, _ = canvas.shape
    for _ in range(int(h * w * density / 25)):
        r = int(rng.integers(radius[0], radius[1] + 1))
        c = _colour(rng, TREE[None], 10)
        cv2.circle(canvas, (int(rng.integers(w)), int(rng.integers(h))), r, c, -1)


def _street_grid(canvas: Canvas, rng: Rng, spacing: int, width: int) -> None:
    h, w, _ = canvas.shape
    off = int(rng.integers(spacing))
    for x in range(off, w, spacing):
        cv2.line(canvas, (x, 0), (x, h), (110, 110, 112), width)
    for y in range(off, h, spacing):
        cv2.line(canvas, (0, y), (w, y), (110, 110, 112), width)


def _building_grid(
    canvas: Canvas,
    rng: Rng,
    step: int,
    width: tuple[float, float],
    depth: tuple[float, float],
    palette: np.ndarray,
    keep: float | None = None,
    angles: tuple[float, ...] | None = None,
) -> None:
    """Buildings on a regular grid of ``step`` pixels; sizes in pixels drawn per building."""
    h, w, _ = canvas.shape
    for y in range(step // 2, h, step):
        for x in range(step // 2, w, step):
            if keep is not None and rng.random() >= keep:
                continue
            bw, bd = rng.uniform(*width), rng.uniform(*depth)
            colour = _colour(rng, palette, 8)
            angle = float(rng.choice(angles)) if angles else 0.0
            _rect(canvas, rng, x, y, bw, bd, colour, angle)


def _housing(canvas: Canvas, rng: Rng, px: float) -> None:
    """Rows of apartment blocks and houses between local streets."""
    _fill(canvas, rng, np.array([150, 145, 130]), 10)
    h, w, _ = canvas.shape
    step = int(rng.uniform(30, 45) / px)
    angle = float(rng.choice([0.0, 0.0, 90.0]))
    for y in range(step // 2, h, step):
        for x in range(step // 2, w, step):
            if rng.random() < 0.85:
                bw, bh = rng.uniform(18, 40) / px, rng.uniform(10, 16) / px
                _rect(
                    canvas,
                    rng,
                    x + rng.normal(0, 1),
                    y + rng.normal(0, 1),
                    bw,
                    bh,
                    _colour(rng, ROOFS_HOUSING),
                    angle,
                )
    _trees(canvas, rng, 0.06)
    _street_grid(canvas, rng, int(rng.uniform(110, 150) / px), max(1, int(8 / px)))


def residential(canvas: Canvas, rng: Rng, px: float) -> None:
    """Dense housing."""
    _housing(canvas, rng, px)


def school(canvas: Canvas, rng: Rng, px: float) -> None:
    """Housing-like teaching blocks; often a running track or a playground."""
    _housing(canvas, rng, px)
    h, w, _ = canvas.shape
    if rng.random() < 0.55:
        cx, cy = int(w * rng.uniform(0.35, 0.65)), int(h * rng.uniform(0.35, 0.65))
        axes = (int(95 / px), int(55 / px))
        cv2.ellipse(canvas, (cx, cy), (axes[0] + 3, axes[1] + 3), 0, 0, 360, (175, 75, 60), -1)
        cv2.ellipse(canvas, (cx, cy), axes, 0, 0, 360, (80, 140, 70), -1)
    elif rng.random() < 0.5:
        cx, cy = int(w * rng.uniform(0.3, 0.7)), int(h * rng.uniform(0.3, 0.7))
        cv2.rectangle(canvas, (cx - 10, cy - 7), (cx + 10, cy + 7), (190, 170, 130), -1)


def industrial(canvas: Canvas, rng: Rng, px: float) -> None:
    """Large sheds on concrete yards."""
    _fill(canvas, rng, CONCRETE, 8)
    step = int(rng.uniform(130, 170) / px)
    _building_grid(canvas, rng, step, (60 / px, 130 / px), (40 / px, 90 / px), ROOFS_LARGE)
    _street_grid(canvas, rng, step, max(1, int(10 / px)))
    _trees(canvas, rng, 0.01)


def shopping(canvas: Canvas, rng: Rng, px: float) -> None:
    """Malls with big roofs and parking lots full of cars."""
    _fill(canvas, rng, np.array([120, 120, 125]), 6)
    h, w, _ = canvas.shape
    for y in range(0, h, 3):
        for x in range(0, w, 2):
            if rng.random() < 0.35:
                canvas[y, x] = _colour(
                    rng, np.array([[200, 40, 40], [230, 230, 230], [30, 30, 30], [60, 90, 160]]), 20
                )
    step = int(rng.uniform(160, 220) / px)
    _building_grid(canvas, rng, step, (80 / px, 140 / px), (60 / px, 100 / px), ROOFS_LARGE)
    _trees(canvas, rng, 0.01)


def _civic(canvas: Canvas, rng: Rng, px: float, lawn: float) -> None:
    """Mid-rise civic buildings among plazas and lawns (administration, hospitals)."""
    _fill(canvas, rng, np.array([185, 180, 165]), 8)
    h, w, _ = canvas.shape
    for _ in range(int(h * w * lawn / 400)):
        x, y = int(rng.integers(w)), int(rng.integers(h))
        cv2.rectangle(
            canvas,
            (x, y),
            (x + int(rng.integers(6, 14)), y + int(rng.integers(6, 14))),
            _colour(rng, GRASS[None], 10),
            -1,
        )
    step = int(rng.uniform(90, 120) / px)
    _building_grid(
        canvas, rng, step, (40 / px, 75 / px), (25 / px, 45 / px), ROOFS_CIVIC, 0.8, (0.0, 90.0)
    )
    _trees(canvas, rng, 0.04)
    _street_grid(canvas, rng, step * 2, max(1, int(8 / px)))


def administrative(canvas: Canvas, rng: Rng, px: float) -> None:
    """Government offices around plazas."""
    _civic(canvas, rng, px, lawn=0.5)


def hospital(canvas: Canvas, rng: Rng, px: float) -> None:
    """Hospital wards: the same mid-rise buildings, a little more green."""
    _civic(canvas, rng, px, lawn=0.7)


def park(canvas: Canvas, rng: Rng, px: float) -> None:
    """Lawns, tree clumps, a lake, footpaths."""
    _fill(canvas, rng, GRASS, 12)
    h, w, _ = canvas.shape
    for _ in range(int(h * w / 1500)):
        cx, cy = int(rng.integers(w)), int(rng.integers(h))
        for _ in range(12):
            cv2.circle(
                canvas,
                (cx + int(rng.normal(0, 6)), cy + int(rng.normal(0, 6))),
                int(rng.integers(2, 5)),
                _colour(rng, TREE[None], 10),
                -1,
            )
    if rng.random() < 0.6:
        cx, cy = int(w * rng.uniform(0.3, 0.7)), int(h * rng.uniform(0.3, 0.7))
        cv2.ellipse(
            canvas,
            (cx, cy),
            (int(w * rng.uniform(0.1, 0.25)), int(h * rng.uniform(0.1, 0.2))),
            float(rng.uniform(0, 180)),
            0,
            360,
            (50, 85, 95),
            -1,
        )
    for _ in range(3):
        pts = np.stack([rng.integers(0, w, 4), rng.integers(0, h, 4)], 1).astype(np.int32)
        cv2.polylines(canvas, [pts], False, (200, 190, 160), 1)


def airport(canvas: Canvas, rng: Rng, px: float) -> None:
    """Dry grass with aprons; the runway is drawn across the whole zone by :func:`_runway`."""
    _fill(canvas, rng, np.array([140, 150, 95]), 8)
    h, w, _ = canvas.shape
    for _ in range(2):
        x, y = int(rng.integers(w)), int(rng.integers(h))
        cv2.rectangle(canvas, (x, y), (x + int(80 / px), y + int(50 / px)), CONCRETE.tolist(), -1)


def _runway(image: Canvas, zone: np.ndarray, px: float) -> None:
    """One runway with a parallel taxiway along the long axis of the airport zone."""
    ys, xs = np.nonzero(zone)
    if ys.size == 0:
        return
    layer = image.copy()
    run_w, taxi_w, dash = max(3, int(60 / px)), max(2, int(25 / px)), int(60 / px)
    horizontal = np.ptp(xs) >= np.ptp(ys)
    lo, hi = (xs.min(), xs.max()) if horizontal else (ys.min(), ys.max())
    mid = int(np.median(ys if horizontal else xs)) - run_w
    for off, width, colour in [(0, run_w, (70, 70, 75)), (run_w + 20, taxi_w, (100, 100, 105))]:
        a, b = (lo, mid + off), (hi, mid + off + width)
        if not horizontal:
            a, b = a[::-1], b[::-1]
        cv2.rectangle(layer, a, b, colour, -1)
    for t in range(lo, hi, dash):
        a, b = (t, mid + run_w // 2), (t + dash // 2, mid + run_w // 2)
        if not horizontal:
            a, b = a[::-1], b[::-1]
        cv2.line(layer, a, b, (235, 235, 235), 1)
    image[zone] = layer[zone]


def railway_station(canvas: Canvas, rng: Rng, px: float) -> None:
    """A fan of tracks with platform canopies and a station hall."""
    _fill(canvas, rng, np.array([130, 125, 120]), 8)
    h, w, _ = canvas.shape
    top = int(h * 0.15)
    for i, y in enumerate(range(top, int(h * 0.75), 3)):
        cv2.line(canvas, (0, y), (w, y), (70, 60, 55), 1)
        if i % 4 == 2:
            cv2.rectangle(
                canvas, (int(w * 0.15), y - 1), (int(w * 0.85), y + 1), (200, 200, 205), -1
            )
    _rect(canvas, rng, w * 0.5, h * 0.87, w * 0.5, h * 0.18, _colour(rng, ROOFS_LARGE, 5))


RENDERERS: dict[int, Callable[[Canvas, Rng, float], None]] = {
    CLS["residential"]: residential,
    CLS["school"]: school,
    CLS["industrial"]: industrial,
    CLS["railway_station"]: railway_station,
    CLS["airport"]: airport,
    CLS["park"]: park,
    CLS["shopping"]: shopping,
    CLS["administrative"]: administrative,
    CLS["hospital"]: hospital,
}


def render_city(
    layout: Layout,
    bounds: tuple[float, float, float, float],
    px: float,
    rng: Rng,
    scenes: SceneBank | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render the whole city at ``px`` metres per pixel.

    Blocks of a class that ``scenes`` holds are real scenes instead of drawn textures (an
    airport of real scenes gets no drawn runway).

    Returns:
        RGB uint8 ``(3, h, w)`` (values >= 1, so 0 can mark nodata) and the class of each pixel.
    """
    xmin, _, _, ymax = bounds
    w = round((bounds[2] - xmin) / px)
    h = round((ymax - bounds[1]) / px)
    image = np.zeros((h, w, 3), dtype=np.uint8)
    classes = np.zeros((h, w), dtype=np.uint8)

    def to_px(xy: np.ndarray) -> np.ndarray:
        return np.stack([(xy[..., 0] - xmin) / px, (ymax - xy[..., 1]) / px], -1)

    for poly, k in zip(layout.polygons, layout.classes, strict=True):
        ring = np.round(to_px(np.asarray(poly.exterior.coords))).astype(np.int32)
        x0, y0 = np.maximum(ring.min(0), 0)
        x1, y1 = np.minimum(ring.max(0) + 1, [w, h])
        if x1 <= x0 or y1 <= y0:
            continue
        local = np.zeros((y1 - y0, x1 - x0, 3), dtype=np.uint8)
        if scenes is not None and int(k) in scenes.files:
            scenes.fill(local, int(k), px)
        else:
            RENDERERS[int(k)](local, rng, px)
        mask = np.zeros((h, w), dtype=np.uint8)
        cv2.fillPoly(mask, [ring], 1)
        sub = mask[y0:y1, x0:x1].astype(bool)
        image[y0:y1, x0:x1][sub] = local[sub]
        classes[y0:y1, x0:x1][sub] = k

    airfield = classes == CLS["airport"]
    unpaved = image.copy()

    # Main roads on every block edge, the railway along its row's upper edge.
    corners = to_px(layout.corners)
    width = max(2, int(22 / px))
    for r in range(corners.shape[0]):
        cv2.polylines(image, [np.round(corners[r]).astype(np.int32)], False, (75, 75, 80), width)
    for c in range(corners.shape[1]):
        cv2.polylines(image, [np.round(corners[:, c]).astype(np.int32)], False, (75, 75, 80), width)
    rail = np.round(corners[layout.rail_row]).astype(np.int32)
    for off in (-4, -2, 2, 4):
        cv2.polylines(image, [rail + np.array([0, off], dtype=np.int32)], False, (85, 70, 60), 1)

    # Public roads stop at the airport fence.
    image[airfield] = unpaved[airfield]
    if scenes is None or CLS["airport"] not in scenes.files:
        _runway(image, airfield, px)

    blurred = cv2.GaussianBlur(image, (3, 3), 0.7)  # the sensor's blur
    noise = rng.normal(0, 3.0, blurred.shape)
    final = np.clip(blurred.astype(np.float64) + noise, 1, 255).astype(np.uint8)
    return np.moveaxis(final, -1, 0), classes


def add_haze(image: np.ndarray, rng: Rng, strength: float = 0.45) -> np.ndarray:
    """Thin haze by the scattering model ``I = J t + A (1 - t)`` with a smooth, uneven ``t``."""
    _, h, w = image.shape
    field = cv2.resize(rng.random((4, 4)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    t = np.clip(1.0 - strength * (0.7 + 0.6 * field), 0.25, 1.0)[None]
    light = np.array([0.86, 0.88, 0.9])[:, None, None]
    hazy = image / 255.0 * t + light * (1 - t)
    return np.clip(np.round(hazy * 255), 1, 255).astype(np.uint8)
