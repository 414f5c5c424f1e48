"""Numbers to trust: calibrated probabilities and how far a cell is from the training data.

Both are fitted once, on labelled cells, and stored in the model's contract (numpy only, so
runs need neither torch nor onnx):

- **Temperature scaling** (Guo et al. 2017): one scalar ``T`` dividing the logits, fitted by
  minimising the negative log-likelihood of the validation blocks. It changes no argmax, so the
  map is the same; it makes "90 %" mean about 90 % right. :func:`calibration_error` (ECE) and
  :func:`reliability` measure it.
- **In-domain score**: per input branch (image, activity), the distance of a cell's embedding
  (what the branch head sees, scaled to unit length) to its 10th nearest training embedding,
  divided by the distance that 95 % of validation cells stay within. A score above 1 is out of
  domain. The training embeddings travel in the model's metadata (float16).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import numpy as np

from urbanfusion.pipeline.errors import ModelError

# Extra graph outputs a calibrated model carries (besides the probabilities).
LOGITS = "logits"
FEATURES = {"image": "image_features", "activity": "activity_features"}
IN_DOMAIN_QUANTILE = 0.95
DOMAIN_METHOD = "knn"
NEIGHBOURS = 10
# Kept training embeddings per branch: 4096 x 128 float16 is 1 MB of metadata.
REFERENCE_CELLS = 4096
_SCORE_BATCH = 4096
# Columns per block in kth_largest's first cut (measured: 64 0.049 s, 256 0.037, 1,024 0.082).
_KTH_BLOCK = 256
# The metadata entry holding a branch's training embeddings.
DOMAIN_KEY = "urbanfusion.domain.{branch}"
ECE_BINS = 15


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (float32)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(z)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the NLL of ``labels`` (golden-section search on log T)."""
    logits = np.asarray(logits, dtype=np.float64)
    lo, hi = np.log(0.05), np.log(50.0)
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = _nll(logits, labels, np.exp(a)), _nll(logits, labels, np.exp(b))
    for _ in range(60):  # the NLL is convex in 1/T: the bracket shrinks to 1e-12
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = _nll(logits, labels, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = _nll(logits, labels, np.exp(b))
    return float(np.exp((lo + hi) / 2))


def negative_log_likelihood(prob: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log of the probability given to the true class."""
    return float(-np.mean(np.log(prob[np.arange(len(labels)), labels].astype(np.float64) + 1e-12)))


def reliability(
    prob: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per confidence bin: mean confidence, accuracy and cell count (empty bins: NaN, 0)."""
    confidence = prob.max(axis=1)
    correct = prob.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, weights=confidence, minlength=bins) / count
        accuracy = np.bincount(which, weights=correct, minlength=bins) / count
    return mean_conf, accuracy, count


def calibration_error(prob: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the count-weighted gap between confidence and accuracy."""
    conf, acc, count = reliability(prob, labels, bins)
    seen = count > 0
    return float(np.sum(count[seen] * np.abs(conf[seen] - acc[seen])) / max(count.sum(), 1))


@dataclass(frozen=True, eq=False)
class DomainModel:
    """A branch's training embeddings (unit length) and the in-domain radius.

    The distance of a cell is that to its ``k``-th nearest training embedding, all of them
    scaled to unit length (Sun et al. 2022, "Out-of-distribution detection with deep nearest
    neighbors"). Unlike one Gaussian around all training cells, it follows each class's own
    clusters: a cell typical of a distinctive class (an airport) is not far just because its
    class lies far from the mean of all classes.
    """

    # (m, d) unit-length training embeddings: float16 values (what the file stores), held as
    # float32 so that scoring each chunk of cells does not convert them again.
    reference: np.ndarray
    k: int
    threshold: float  # the distance within which IN_DOMAIN_QUANTILE of validation cells stay

    @classmethod
    def fit(
        cls,
        train: np.ndarray,
        validation: np.ndarray,
        k: int = NEIGHBOURS,
        quantile: float = IN_DOMAIN_QUANTILE,
        cap: int = REFERENCE_CELLS,
    ) -> DomainModel:
        """Keep training embeddings ``(n, d)``; set the radius on validation embeddings.

        Beyond ``cap`` training embeddings, a seeded sample of ``cap`` is kept.
        """
        x = np.asarray(train, dtype=np.float32)
        if len(x) > cap:  # bounded file size and scoring time on large training sets
            x = x[np.sort(np.random.default_rng(0).choice(len(x), cap, replace=False))]
        model = cls(_unit(x).astype(np.float16).astype(np.float32), min(k, len(x)), 1.0)
        radius = float(np.quantile(model.distance(validation), quantile))
        return cls(model.reference, model.k, max(radius, 1e-6))

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Euclidean distance of each unit-length row to its k-th nearest training embedding."""
        ref = self.reference
        x = _unit(np.asarray(features, dtype=np.float32))
        out = np.empty(len(x), np.float32)
        for s in range(0, len(x), _SCORE_BATCH):  # bounds the (batch, m) similarity matrix
            kth = kth_largest(x[s : s + _SCORE_BATCH] @ ref.T, self.k)
            out[s : s + _SCORE_BATCH] = np.sqrt(np.maximum(2 - 2 * kth, 0))
        return out

    def score(self, features: np.ndarray) -> np.ndarray:
        """Distance over the in-domain radius: at most 1 for in-domain cells."""
        return self.distance(features) / np.float32(self.threshold)

    def to_contract(self) -> tuple[dict[str, object], str]:
        """The contract's fields and the embeddings (base64 float16, a metadata entry)."""
        fields = {
            "method": DOMAIN_METHOD,
            "k": self.k,
            "threshold": self.threshold,
            "cells": int(self.reference.shape[0]),
            "dims": int(self.reference.shape[1]),
        }
        return fields, base64.b64encode(self.reference.astype("<f2").tobytes()).decode("ascii")

    @classmethod
    def from_contract(cls, fields: dict[str, object], blob: str | None, source: str) -> DomainModel:
        """The model a contract entry and its metadata entry describe.

        Raises:
            ModelError: an in-domain score of an earlier urbanfusion, or a damaged one.
        """
        if fields.get("method") != DOMAIN_METHOD:
            raise ModelError(
                f"{source}: its in-domain score is of an earlier urbanfusion; refit it with "
                "`urbanfusion calibrate` (weights and classes stay the same)"
            )
        try:
            cells, dims = int(fields["cells"]), int(fields["dims"])  # type: ignore[call-overload]
            k, threshold = int(fields["k"]), float(fields["threshold"])  # type: ignore[call-overload,arg-type]
            raw = base64.b64decode(blob or "", validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error) as err:
            raise ModelError(
                f"{source}: its in-domain score is damaged ({err!r}); refit it with "
                "`urbanfusion calibrate`"
            ) from None
        if not (1 <= k <= cells and np.isfinite(threshold) and threshold > 0):
            raise ModelError(
                f"{source}: its in-domain score is damaged (k {k} of {cells} embeddings, "
                f"radius {threshold}); refit it with `urbanfusion calibrate`"
            )
        if len(raw) != cells * dims * 2:
            raise ModelError(
                f"{source}: its in-domain embeddings hold {len(raw)} bytes, not the "
                f"{cells * dims * 2} its contract names; refit them with `urbanfusion calibrate`"
            )
        reference = np.frombuffer(raw, "<f2").reshape(cells, dims).astype(np.float32)
        return cls(reference, k, threshold)


def kth_largest(values: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k``-th largest value, exactly (``values`` is ``(n, m)``).

    A row's k largest values are among the k largest of each block of its columns, so each block
    of :data:`_KTH_BLOCK` is cut to its top k first, then the candidates: rows of 256 fit a
    core's L1 cache, and 4,096 cells against 4,096 embeddings take 0.037 s instead of one
    partition's 0.093 s (a third of the in-domain score of a run).
    """
    n, m = values.shape
    if m < 2 * _KTH_BLOCK or 4 * k > _KTH_BLOCK:
        return np.partition(values, m - k, axis=1)[:, m - k]
    whole = m - m % _KTH_BLOCK
    blocks = values[:, :whole].reshape(n, whole // _KTH_BLOCK, _KTH_BLOCK)
    top = np.partition(blocks, _KTH_BLOCK - k, axis=2)[:, :, _KTH_BLOCK - k :].reshape(n, -1)
    candidates = np.concatenate([top, values[:, whole:]], axis=1)
    c = candidates.shape[1]
    return np.partition(candidates, c - k, axis=1)[:, c - k]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def domain_score(
    models: dict[str, DomainModel],
    features: dict[str, np.ndarray],
    present: dict[str, np.ndarray],
) -> np.ndarray:
    """Per cell, the largest score of the branches it has (NaN: no branch, or no model)."""
    n = len(next(iter(present.values())))
    out = np.full(n, np.nan, np.float32)
    for branch, model in models.items():
        has = present[branch]
        if has.any():
            score = model.score(features[branch][has])
            out[has] = np.fmax(out[has], score)
    return out
