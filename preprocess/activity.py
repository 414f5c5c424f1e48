"""Activity features: the (cell, day, hour) matrix to a weekly profile the model reads.

One place computes them for training and inference alike. Days are folded onto the 7 days of the
week (Monday first), so the model does not depend on how many days a run covers or on which
weekday it starts; every observed hour counts, unobserved ones are filled, never taken as zero.
"""

from __future__ import annotations

import numpy as np

WEEKDAYS = 7
# A cell needs at least a day's worth of observed hours to have an activity input.
MIN_OBSERVED_HOURS = 24


def weekly_profile(
    activity: np.ndarray, observed: np.ndarray, weekdays: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``log1p(count)`` per (cell, weekday, hour) over the observed days.

    Args:
        activity: ``(cell, day, 24)`` counts (NaN or anything where not observed).
        observed: ``(cell, day, 24)`` bool.
        weekdays: ``(day,)`` weekday of each day, Monday = 0.

    Returns:
        The profile ``(cell, 7, 24)`` with NaN where a weekday-hour was never observed, and the
        number of observed hours per cell.
    """
    x = np.where(observed, np.log1p(np.maximum(np.nan_to_num(activity), 0)), 0.0)
    onehot = np.eye(WEEKDAYS, dtype=np.float64)[np.asarray(weekdays)]  # (day, 7)
    sums = np.einsum("cdh,dw->cwh", x, onehot)
    counts = np.einsum("cdh,dw->cwh", observed.astype(np.float64), onehot)
    with np.errstate(invalid="ignore", divide="ignore"):
        profile = sums / counts
    return profile, observed.sum(axis=(1, 2))


def activity_inputs(
    activity: np.ndarray, observed: np.ndarray, weekdays: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs from activity: features ``(cell, 7, 24)`` float32 and ``has_activity`` (cell,).

    Gaps in the weekly profile take the cell's mean for that hour over all observed days (then
    its overall mean). The features are ``log1p`` counts minus the cell's peak, a per-cell scaling
    that removes the operator's market share and the cell's population (a constant factor on
    counts) and keeps the rhythm. Cells with too few observed hours get zeros and flag 0.
    """
    profile, n_observed = weekly_profile(activity, observed, weekdays)
    x = np.where(observed, np.log1p(np.maximum(np.nan_to_num(activity), 0)), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        hour_mean = x.sum(axis=1) / observed.sum(axis=1)  # (cell, 24)
        cell_mean = x.sum(axis=(1, 2)) / observed.sum(axis=(1, 2))  # (cell,)
    hour_mean = np.where(np.isnan(hour_mean), cell_mean[:, None], hour_mean)
    profile = np.where(np.isnan(profile), hour_mean[:, None, :], profile)
    has_activity = n_observed >= MIN_OBSERVED_HOURS
    # With a day of observations every gap is filled, so only cells without activity hold NaN.
    profile = np.where(has_activity[:, None, None], profile, 0.0)
    features = profile - profile.max(axis=(1, 2), keepdims=True)
    return features.astype(np.float32), has_activity.astype(np.float32)
