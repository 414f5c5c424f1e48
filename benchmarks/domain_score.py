"""Does the in-domain flag pick out the doubtful cells of cities a model never saw?

For a calibrated model trained on the `make model` cities (``build/model-cities``, seeds
101-106), maps unseen demo cities (seeds 7 and 21, 6 km; 11, 3 km) and prints, per city and
pooled: the share of cells in domain, the accuracy of the cells in and out of domain, and the
AUROC of the score as a detector of wrong cells (0.5: no better than chance). The model's own
score (the 10th nearest training embedding at unit length) is compared with the peer it
replaced, one Gaussian around all training embeddings (probabilistic PCA, 16 components,
Tipping & Bishop 1999), fitted here on the same embeddings and the same validation blocks.

    make model   # once: writes build/model-cities
    .venv/bin/python benchmarks/domain_score.py [MODEL.onnx] [--seed 0]

``--seed`` is the seed the model was trained with (it chose the validation blocks).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from urbanfusion.models.calibration import IN_DOMAIN_QUANTILE
from urbanfusion.models.dataset import CellData
from urbanfusion.models.inference import SHIPPED_MODEL, Predictor
from urbanfusion.models.training.configs import TrainConfig
from urbanfusion.models.training.train import block_split
from urbanfusion.workflows.democity.city import generate_demo_city
from urbanfusion.workflows.labelled import load_labelled_cities, load_labelled_city

MODEL_CITIES = Path("build/model-cities")
TRAIN_SEEDS = (101, 102, 103, 104, 105, 106)
UNSEEN = ((7, 6.0), (11, 3.0), (21, 6.0))


class GaussianPeer:
    """One Gaussian around all training embeddings: Mahalanobis on the top ``k`` principal
    components plus the residual (probabilistic PCA), radius at the validation quantile."""

    def __init__(self, train: np.ndarray, validation: np.ndarray, k: int = 16) -> None:
        x = train.astype(np.float64)
        self.mean = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        var = s**2 / max(len(x) - 1, 1)
        floor = max(float(var.mean()) * 1e-6, 1e-12)
        self.components, self.variances = vt[:k], np.maximum(var[:k], floor)
        self.residual = max(float(var[k:].mean()) if len(var) > k else floor, floor)
        self.threshold = 1.0
        self.threshold = float(np.quantile(self.score(validation), IN_DOMAIN_QUANTILE))

    def score(self, features: np.ndarray) -> np.ndarray:
        x = features.astype(np.float64) - self.mean
        z = x @ self.components.T
        rest = np.maximum((x * x).sum(axis=1) - (z * z).sum(axis=1), 0)
        d2 = (z * z / self.variances).sum(axis=1) + rest / self.residual
        return np.sqrt(d2 / x.shape[1]) / self.threshold


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a positive (a wrong cell) scores above a negative (ties count half)."""
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # 1-based, ties averaged
    p, n = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - p * (p + 1) / 2) / (p * n)) if p and n else float("nan")


def line(name: str, score: np.ndarray, wrong: np.ndarray) -> str:
    """Share in domain, accuracy in / out, AUROC for wrong cells."""
    inside = score <= 1
    acc_in = 1 - wrong[inside].mean() if inside.any() else float("nan")
    acc_out = 1 - wrong[~inside].mean() if (~inside).any() else float("nan")
    return (
        f"{name:<28} {inside.mean():>9.3f} {acc_in:>7.3f} {acc_out:>7.3f} "
        f"{auroc(score, wrong):>6.3f} {len(wrong):>6}"
    )


def branch_max(scores: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> np.ndarray:
    """Per cell, the largest score of the branches it has (as the model's own score does)."""
    out = np.full(len(next(iter(present.values()))), -np.inf)
    for branch, s in scores.items():
        out[present[branch]] = np.maximum(out[present[branch]], s[present[branch]])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (MODEL_CITIES / "city-101" / "city.yaml").exists():
        raise SystemExit(f"no {MODEL_CITIES}: run `make model` first (it writes the cities)")
    model = Predictor(args.model)
    train: CellData = load_labelled_cities(
        [MODEL_CITIES / f"city-{s}" / "city.yaml" for s in TRAIN_SEEDS],
        [MODEL_CITIES / f"city-{s}" / "zones.gpkg" for s in TRAIN_SEEDS],
    )
    val = block_split(train.blocks, TrainConfig().val_fraction, args.seed)
    _, features, has_image, has_activity = model.raw_outputs(
        train.chips, train.activity, train.has_activity
    )
    present = {"image": has_image, "activity": has_activity}
    peers = {
        b: GaussianPeer(features[b][~val & present[b]], features[b][val & present[b]])
        for b in features
    }
    print(f"{args.model}: cells in domain, accuracy in / out of domain, AUROC for wrong cells")
    heads = ("in domain", 9), ("acc in", 7), ("acc out", 7), ("AUROC", 6), ("cells", 6)
    print(f"{'city / score':<28} " + " ".join(f"{h:>{w}}" for h, w in heads))
    pooled: dict[str, list[np.ndarray]] = {"own": [], "peer": [], "wrong": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed, km in UNSEEN:
            city = generate_demo_city(Path(tmp) / f"city-{seed}", seed=seed, size_km=km)
            data = load_labelled_city(city.config, city.zones)
            cells = model.predict_cells(data.chips, data.activity, data.has_activity)
            wrong = cells.prob.argmax(axis=1) != data.labels
            _, f, hi, ha = model.raw_outputs(data.chips, data.activity, data.has_activity)
            peer = branch_max(
                {b: p.score(f[b]) for b, p in peers.items()}, {"image": hi, "activity": ha}
            )
            print(line(f"seed {seed} ({km:g} km), own", cells.domain, wrong))
            print(line(f"seed {seed} ({km:g} km), peer", peer, wrong))
            pooled["own"].append(cells.domain)
            pooled["peer"].append(peer)
            pooled["wrong"].append(wrong)
    wrong = np.concatenate(pooled["wrong"])
    own, peer = np.concatenate(pooled["own"]), np.concatenate(pooled["peer"])
    print(line("all, own (10th neighbour)", own, wrong))
    print(line("all, peer (one Gaussian)", peer, wrong))
    print(
        f"out-of-domain cells' error rate over in-domain cells': own "
        f"{wrong[own > 1].mean() / max(wrong[own <= 1].mean(), 1e-9):.2f}x, peer "
        f"{wrong[peer > 1].mean() / max(wrong[peer <= 1].mean(), 1e-9):.2f}x"
    )


if __name__ == "__main__":
    main()
