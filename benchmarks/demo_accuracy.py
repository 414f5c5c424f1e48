"""Fusion against image-only and signalling-only on a demo city no model saw in training.

Trains three models with the same recipe on demo cities of the training seeds (the Makefile's
MODEL_SEEDS), then scores each on the demo city (seed 7), together with the fused model's
ablation (one input masked at inference). Prints a table; takes ~15 minutes on 2 CPU cores.

    .venv/bin/python benchmarks/demo_accuracy.py [--seeds 101 102 ...] [--epochs 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from models.dataset import load_labelled_cities, load_labelled_city
from models.evaluation import evaluate
from models.network import NetworkConfig
from models.training import TrainConfig, train_and_export
from pipeline.democity.city import DEMO_SEED, generate_demo_city


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103, 104, 105, 106])
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="urbanfusion-bench-"))
    cities = [generate_demo_city(work / f"city-{s}", s) for s in args.seeds]
    train_data = load_labelled_cities([c.config for c in cities], [c.zones for c in cities])
    demo = generate_demo_city(work / "demo", DEMO_SEED)
    test_data = load_labelled_city(demo.config, demo.zones)
    print(
        f"training cells {len(train_data)} (seeds {args.seeds}); "
        f"unseen demo city cells {len(test_data)}"
    )

    rows = []
    for name, image, activity in (
        ("fusion", True, True),
        ("image-only", True, False),
        ("signalling-only", False, True),
    ):
        start = time.perf_counter()
        cfg = TrainConfig(
            epochs=args.epochs, network=NetworkConfig(use_image=image, use_activity=activity)
        )
        path = work / f"{name}.onnx"
        result, _ = train_and_export(train_data, path, cfg, trained_on=name, quiet=True)
        scored = evaluate(path, test_data)
        rows.append(
            (name, result.validation["overall_accuracy"], scored, time.perf_counter() - start)
        )

    print(
        f"\n{'model':<17} {'val OA':>7} {'demo OA':>8} {'kappa':>6} {'macro-F1':>9} {'train s':>8}"
    )
    for name, val, s, secs in rows:
        print(
            f"{name:<17} {val:>7.3f} {s['overall_accuracy']:>8.3f} {s['kappa']:>6.3f} "
            f"{s['macro_f1']:>9.3f} {secs:>8.0f}"
        )
    fusion = rows[0][2]
    best_single = max(rows[1][2]["overall_accuracy"], rows[2][2]["overall_accuracy"])
    print(
        "\nfusion minus the better single-source model: "
        f"{fusion['overall_accuracy'] - best_single:+.3f}"
    )
    a = fusion["ablation"]
    print(
        f"fusion model with one input masked: image only {a['image_only']:.3f}, "
        f"signalling only {a['signalling_only']:.3f}, both {a['fusion']:.3f}"
    )
    print(
        "per-class F1 (fusion):",
        ", ".join(f"{k} {v:.2f}" for k, v in fusion["per_class_f1"].items()),
    )


if __name__ == "__main__":
    main()
