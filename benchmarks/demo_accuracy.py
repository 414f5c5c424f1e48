"""Fusion variants against single-source models on a demo city no model saw in training.

Trains every model with the same recipe (seed 0, the Makefile's MODEL_SEEDS as training cities)
and scores each on the demo city (seed 7):

- the fusion variants (concatenation, attention bottleneck, cross-attention) with their
  parameters, overall accuracy, macro-F1 and onnxruntime CPU cells per second;
- image-only and signalling-only models, and each fused model with one input masked at inference
  (modality dropout should keep those within 3 points of the single-source models);
- with ``--image-weights ENCODER.pt`` (from ``urbanfusion pretrain-image``), the first variant
  again with its image encoder initialised from those weights.

Takes about 6 minutes per model on 2 CPU cores. ``--keep DIR`` keeps the ONNX files.

    .venv/bin/python benchmarks/demo_accuracy.py [--variants concat bottleneck cross]
        [--image-encoder resnet|resnext|vit] [--image-weights ENCODER.pt] [--epochs 60]
        [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from model_speed import best_of

from urbanfusion.models.evaluation import evaluate
from urbanfusion.models.inference import Predictor
from urbanfusion.models.training.export import sample_inputs
from urbanfusion.models.training.network import NetworkConfig
from urbanfusion.models.training.train import TrainConfig, train_and_export
from urbanfusion.workflows.democity.city import DEMO_SEED, generate_demo_city
from urbanfusion.workflows.labelled import load_labelled_cities, load_labelled_city

SPEED_CELLS = 2048


def cells_per_second(path: Path) -> float:
    """onnxruntime CPU cells per second at the default inference batch, best of 5 runs."""
    predictor = Predictor(path, ["CPUExecutionProvider"])
    inputs = sample_inputs(predictor.contract, SPEED_CELLS)
    return SPEED_CELLS / best_of(lambda: predictor.predict(*inputs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103, 104, 105, 106])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument(
        "--variants", nargs="+", default=["cross", "concat", "bottleneck"], help="fusions"
    )
    parser.add_argument("--single", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--image-encoder",
        default=NetworkConfig.image_encoder,
        choices=["resnet", "resnext", "vit"],
    )
    parser.add_argument("--image-weights", type=Path, help="pre-trained image encoder (.pt)")
    parser.add_argument("--modality-dropout", type=float, default=TrainConfig.modality_dropout)
    parser.add_argument("--aux-weight", type=float, default=TrainConfig.aux_weight)
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--select", default=TrainConfig.select, choices=["heads", "fused"])
    parser.add_argument("--keep", type=Path, help="folder to keep the ONNX files in")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="urbanfusion-bench-"))
    models = args.keep or work
    models.mkdir(parents=True, exist_ok=True)
    cities = [generate_demo_city(work / f"city-{s}", s) for s in args.seeds]
    train_data = load_labelled_cities([c.config for c in cities], [c.zones for c in cities])
    demo = generate_demo_city(work / "demo", DEMO_SEED)
    test_data = load_labelled_city(demo.config, demo.zones)
    print(
        f"training cells {len(train_data)} (seeds {args.seeds}); unseen demo city cells "
        f"{len(test_data)}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )

    base = NetworkConfig(image_encoder=args.image_encoder)
    runs: list[tuple[str, NetworkConfig, str | None]] = [
        (f"fusion {f}", replace(base, fusion=f), None) for f in args.variants
    ]
    weights_arg = str(args.image_weights) if args.image_weights else None
    if weights_arg:
        first = args.variants[0]
        runs.append((f"fusion {first}, pre-trained", replace(base, fusion=first), weights_arg))
    if args.single:
        runs += [
            ("image-only", replace(base, use_activity=False), None),
            ("signalling-only", replace(base, use_image=False), None),
        ]
    rows = []
    for name, net, weights in runs:
        start = time.perf_counter()
        cfg = TrainConfig(
            epochs=args.epochs,
            network=net,
            image_weights=weights,
            modality_dropout=args.modality_dropout,
            aux_weight=args.aux_weight,
            seed=args.seed,
            select=args.select,
        )
        path = models / f"{name.replace(' ', '-').replace(',', '')}.onnx"
        result, _ = train_and_export(
            train_data, path, cfg, name, quiet=True, checkpoint=path.with_suffix(".ckpt")
        )
        seconds = time.perf_counter() - start
        row = {
            "model": name,
            "params": sum(p.numel() for p in result.model.parameters()),
            "val_oa": result.validation["overall_accuracy"],
            "best_epoch": result.best_epoch,
            "train_s": round(seconds),
            "cells_per_s": round(cells_per_second(path)),
            **{k: v for k, v in evaluate(path, test_data).items() if k != "confusion"},
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    print(
        f"\n{'model':<28} {'params':>9} {'demo OA':>8} {'kappa':>6} {'macro-F1':>9} "
        f"{'masked: img':>12} {'sig':>6} {'ORT cells/s':>12} {'train s':>8}"
    )
    for r in rows:
        a = r["ablation"]
        print(
            f"{r['model']:<28} {r['params']:>9,} {r['overall_accuracy']:>8.3f} "
            f"{r['kappa']:>6.3f} {r['macro_f1']:>9.3f} {a['image_only']:>12.3f} "
            f"{a['signalling_only']:>6.3f} {r['cells_per_s']:>12,} {r['train_s']:>8}"
        )
    single = {r["model"]: r["overall_accuracy"] for r in rows if "only" in r["model"]}
    if len(single) == 2:
        best_single = max(single.values())
        print(f"\nbetter single-source model: {best_single:.3f}")
        for r in rows:
            if r["model"].startswith("fusion"):
                a = r["ablation"]
                print(
                    f"{r['model']:<28} fusion {r['overall_accuracy'] - best_single:+.3f} over it; "
                    f"imagery missing {a['signalling_only'] - single['signalling-only']:+.3f} "
                    f"vs signalling-only, signalling missing "
                    f"{a['image_only'] - single['image-only']:+.3f} vs image-only"
                )


if __name__ == "__main__":
    main()
