"""Numbers to trust: calibrated probabilities and how far a cell is from the training data.

Both are fitted once, on labelled cells, and stored in the model's contract (numpy only, so
runs need neither torch nor onnx):

- **Temperature scaling** (Guo et al. 2017): one scalar ``T`` dividing the logits, fitted by
  minimising the negative log-likelihood of the validation blocks. It changes no argmax, so the
  map is the same; it makes "90 %" mean about 90 % right. :func:`calibration_error` (ECE) and
  :func:`reliability` measure it.
- **In-domain score**: per input branch (image, activity), the distance of a cell's embedding
  (what the branch head sees) to the training cells' embeddings, under a probabilistic PCA
  model (Tipping & Bishop 1999: Mahalanobis on the top components plus the residual), divided
  by the distance that 95 % of validation cells stay within. A score above 1 is out of domain.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Extra graph outputs a calibrated model carries (besides the probabilities).
LOGITS = "logits"
FEATURES = {"image": "image_features", "activity": "activity_features"}
IN_DOMAIN_QUANTILE = 0.95
COMPONENTS = 16
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


@dataclass(frozen=True)
class DomainModel:
    """Where a branch's training embeddings live (probabilistic PCA) and the in-domain radius."""

    mean: list[float]
    components: list[list[float]]  # (k, d) principal directions
    variances: list[float]  # (k,) variance along each
    residual: float  # mean variance left in the other d - k directions
    threshold: float  # the distance within which IN_DOMAIN_QUANTILE of validation cells stay

    @classmethod
    def fit(
        cls,
        train: np.ndarray,
        validation: np.ndarray,
        k: int = COMPONENTS,
        quantile: float = IN_DOMAIN_QUANTILE,
    ) -> DomainModel:
        """Fit on training embeddings ``(n, d)``; set the radius on validation embeddings."""
        x = np.asarray(train, dtype=np.float64)
        mean = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        var = s**2 / max(len(x) - 1, 1)
        k = min(k, len(var))
        floor = max(float(var.mean()) * 1e-6, 1e-12)  # no direction with zero variance
        residual = max(float(var[k:].mean()) if len(var) > k else floor, floor)
        model = cls(
            mean.tolist(), vt[:k].tolist(), np.maximum(var[:k], floor).tolist(), residual, 1.0
        )
        radius = float(np.quantile(model.distance(validation), quantile))
        return cls(model.mean, model.components, model.variances, residual, max(radius, 1e-9))

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis-like distance of each row to the training embeddings (float32)."""
        x = np.asarray(features, dtype=np.float64) - np.asarray(self.mean)
        w = np.asarray(self.components)
        z = x @ w.T
        rest = (x * x).sum(axis=1) - (z * z).sum(axis=1)
        d2 = (z * z / np.asarray(self.variances)).sum(axis=1) + np.maximum(rest, 0) / self.residual
        return np.sqrt(d2 / x.shape[1]).astype(np.float32)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Distance over the in-domain radius: at most 1 for in-domain cells."""
        return self.distance(features) / np.float32(self.threshold)

    def to_dict(self) -> dict[str, object]:
        """For the contract (JSON)."""
        return asdict(self)


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
