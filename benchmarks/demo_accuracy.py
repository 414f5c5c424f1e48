"""The ablation table: fusion variants and the research's options against single-source models.

Trains every model with the same recipe (the Makefile's MODEL_SEEDS as training cities) for each
training seed, and scores each on the demo city (seed 7), which no model saw:

- the fusion variants (concatenation, attention bottleneck, cross-attention), and the first of
  them with each of ``--options`` on (convlstm, pyramid, exchange, align, align-momentum,
  distill, double: see README's training options; ``distill+convlstm`` is both at once; a
  pre-trained ViT is ``--image-encoder vit --image-weights V.pt``);
- image-only and signalling-only models, and each fused model with one input masked at
  inference (the branch heads should stay within 3 points of the single-source models);
- with ``--image-weights ENCODER.pt`` (from ``urbanfusion pretrain-image``), the first variant
  again with its image encoder initialised from those weights.

Per model: parameters, onnxruntime CPU cells/s, and over the seeds the mean and the worst of
overall accuracy, kappa, macro-F1, "imagery missing" minus signalling-only, "signalling
missing" minus image-only, and fusion minus the better single-source model of the same seed.
Takes 5 to 8 minutes per model and seed on 2 CPU cores. ``--keep DIR`` keeps the ONNX files.

    .venv/bin/python benchmarks/demo_accuracy.py [--variants concat bottleneck cross]
        [--options convlstm pyramid exchange align align-momentum distill double]
        [--train-seeds 0 1 2]
        [--image-encoder resnet|resnext|vit] [--image-weights ENCODER.pt] [--epochs 60]
        [--select heads|fused] [--keep DIR] [--rows ROWS.jsonl]

Each saved row records its recipe (training cities, epochs, --select, dropout, aux weight, image
encoder and weights); a run or a --table refuses rows of another recipe.
    .venv/bin/python benchmarks/demo_accuracy.py --table ROWS.jsonl [MORE.jsonl ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from model_speed import best_of

from urbanfusion.models.evaluation import evaluate
from urbanfusion.models.inference import Predictor
from urbanfusion.models.training.configs import NetworkConfig, TrainConfig
from urbanfusion.models.training.export import sample_inputs
from urbanfusion.models.training.train import train_and_export
from urbanfusion.workflows.democity.city import DEMO_SEED, generate_demo_city
from urbanfusion.workflows.labelled import load_labelled_cities, load_labelled_city

SPEED_CELLS = 2048


def cells_per_second(path: Path) -> float:
    """onnxruntime CPU cells per second at the default inference batch, best of 5 runs."""
    predictor = Predictor(path, ["CPUExecutionProvider"])
    inputs = sample_inputs(predictor.contract, SPEED_CELLS)
    return SPEED_CELLS / best_of(lambda: predictor.predict(*inputs))


def exported_parameters(path: Path) -> int:
    """Numbers in the ONNX file's weights: what inference runs, without the alignment
    projections that no output uses, nor a single-source model's unused encoder."""
    graph = onnx.load(str(path)).graph
    return sum(int(np.prod(t.dims)) for t in graph.initializer)


# Each option: what it changes in the network and in the training.
OPTIONS: dict[str, tuple[dict[str, object], dict[str, object]]] = {
    "convlstm": ({"activity_encoder": "convlstm"}, {}),
    "pyramid": ({"pyramid": True}, {}),
    "exchange": ({"exchange": True}, {}),
    "align": ({}, {"align": 0.1}),
    # ALBEF's full recipe: momentum encoders, a key queue and momentum distillation.
    "align-momentum": ({}, {"align": 0.1, "align_momentum": 0.995}),
    "distill": ({}, {"distill": 0.5}),
    "double": ({"double_fusion": True}, {}),
}
# The options that change a branch's encoder, and so its single-source model.
ENCODER_OPTIONS = {"convlstm": {"activity_encoder": "convlstm"}}


# The recipe of rows saved before rows carried one: every one of them used these settings.
DEFAULT_RECIPE: dict[str, object] = {
    "cities": [101, 102, 103, 104, 105, 106],
    "epochs": 60,
    "select": "heads",
    "modality_dropout": TrainConfig().modality_dropout,
    "aux_weight": TrainConfig().aux_weight,
    "image_encoder": NetworkConfig().image_encoder,
    "image_weights": None,
}


def read_rows(path: Path) -> list[dict[str, object]]:
    """The rows a ``--rows`` file holds, one JSON object a line (older rows: the default recipe)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{"recipe": DEFAULT_RECIPE, **row} for row in rows]


def one_recipe(rows: list[dict[str, object]], recipe: dict[str, object] | None = None) -> None:
    """Stop with one line when rows (and ``recipe``, the run's) were trained differently.

    One table compares models trained the same way; mixing recipes would compare the recipes.
    """
    seen: list[dict[str, object]] = [recipe] if recipe else []
    for row in rows:
        if row["recipe"] not in seen:
            seen.append(dict(row["recipe"]))  # type: ignore[call-overload]
    if len(seen) > 1:
        a, b = seen[0], seen[1]
        keys = sorted(a.keys() | b.keys())
        differ = ", ".join(f"{k} {a.get(k)} vs {b.get(k)}" for k in keys if a.get(k) != b.get(k))
        raise SystemExit(
            f"the rows were trained with different recipes ({differ}); keep each recipe in its "
            "own --rows file, or run with the same settings"
        )


def options_of(text: str) -> list[str]:
    """``distill+convlstm`` -> its options, each checked against :data:`OPTIONS`."""
    names = text.split("+")
    for name in names:
        if name not in OPTIONS:
            raise argparse.ArgumentTypeError(f"unknown option {name!r}; use {', '.join(OPTIONS)}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103, 104, 105, 106])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument(
        "--variants", nargs="+", default=["cross", "concat", "bottleneck"], help="fusions"
    )
    parser.add_argument(
        "--options",
        nargs="*",
        default=[],
        type=options_of,
        help=f"one or more of {', '.join(OPTIONS)}; join with + for a combination",
    )
    parser.add_argument("--single", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--image-encoder",
        default=NetworkConfig().image_encoder,
        choices=["resnet", "resnext", "vit"],
    )
    parser.add_argument("--image-weights", type=Path, help="pre-trained image encoder (.pt)")
    parser.add_argument("--modality-dropout", type=float, default=TrainConfig().modality_dropout)
    parser.add_argument("--aux-weight", type=float, default=TrainConfig().aux_weight)
    parser.add_argument(
        "--train-seeds", "--seed", type=int, nargs="+", default=[0], help="training seeds"
    )
    parser.add_argument("--select", default=TrainConfig().select, choices=["heads", "fused"])
    parser.add_argument("--keep", type=Path, help="folder to keep the ONNX files in")
    parser.add_argument(
        "--rows",
        type=Path,
        help="JSON-lines file each row is appended to; a model and seed already in it is skipped",
    )
    parser.add_argument(
        "--table",
        type=Path,
        nargs="+",
        help="print the table of rows saved with --rows (e.g. from several runs); no training",
    )
    args = parser.parse_args()
    if args.table:
        saved = [row for f in args.table for row in read_rows(f)]
        one_recipe(saved)
        print_table(saved)
        return
    recipe = {
        "cities": args.seeds,
        "epochs": args.epochs,
        "select": args.select,
        "modality_dropout": args.modality_dropout,
        "aux_weight": args.aux_weight,
        "image_encoder": args.image_encoder,
        "image_weights": str(args.image_weights) if args.image_weights else None,
    }
    # Rows already in the --rows file are kept, not trained again: a long table resumes.
    rows = read_rows(args.rows) if args.rows and args.rows.exists() else []
    one_recipe(rows, recipe)
    work = Path(tempfile.mkdtemp(prefix="urbanfusion-bench-"))
    models = args.keep or work
    models.mkdir(parents=True, exist_ok=True)
    cities = [generate_demo_city(work / f"city-{s}", s) for s in args.seeds]
    train_data = load_labelled_cities([c.config for c in cities], [c.zones for c in cities])
    demo = generate_demo_city(work / "demo", DEMO_SEED)
    test_data = load_labelled_city(demo.config, demo.zones)
    print(
        f"training cells {len(train_data)} (cities {args.seeds}); unseen demo city cells "
        f"{len(test_data)}; training seeds {args.train_seeds}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )

    base = NetworkConfig(image_encoder=args.image_encoder)
    first = args.variants[0]
    runs: list[tuple[str, NetworkConfig, dict[str, object]]] = [
        (f"fusion {f}", base.model_copy(update=dict(fusion=f)), {}) for f in args.variants
    ]
    for names in args.options:
        net_changes = {k: v for n in names for k, v in OPTIONS[n][0].items()}
        train_changes = {k: v for n in names for k, v in OPTIONS[n][1].items()}
        runs.append(
            (
                f"fusion {first} + {' + '.join(names)}",
                base.model_copy(update=dict(fusion=first, **net_changes)),
                train_changes,
            )
        )
    if args.image_weights:
        runs.append(
            (
                f"fusion {first}, pre-trained",
                base.model_copy(update=dict(fusion=first)),
                {"image_weights": str(args.image_weights)},
            )
        )
    if args.single:
        runs += [
            ("image-only", base.model_copy(update=dict(use_activity=False)), {}),
            ("signalling-only", base.model_copy(update=dict(use_image=False)), {}),
        ]
        # A single-source model with the same encoder as an option's (a ConvLSTM): the fair
        # yardstick for that option's branch with the other input missing.
        for name, changes in ENCODER_OPTIONS.items():
            if any(name in names for names in args.options):
                runs.append(
                    (
                        f"signalling-only + {name}",
                        base.model_copy(update=dict(use_image=False, **changes)),
                        {},
                    )
                )
    done = {(r["model"], r["seed"]) for r in rows}
    for name, net, changes in runs:
        for seed in args.train_seeds:
            if (name, seed) in done:
                continue
            start = time.perf_counter()
            cfg = TrainConfig(
                epochs=args.epochs,
                network=net,
                modality_dropout=args.modality_dropout,
                aux_weight=args.aux_weight,
                seed=seed,
                select=args.select,
                **changes,  # type: ignore[arg-type]
            )
            stem = f"{name.replace(' ', '-').replace(',', '').replace('+', 'with')}-seed{seed}"
            path = models / f"{stem}.onnx"
            result, _ = train_and_export(
                train_data, path, cfg, name, quiet=True, checkpoint=path.with_suffix(".ckpt")
            )
            row = {
                "model": name,
                "seed": seed,
                "recipe": recipe,
                "params": exported_parameters(path),
                "val_oa": result.validation["overall_accuracy"],
                "best_epoch": result.best_epoch,
                "train_s": round(time.perf_counter() - start),
                "cells_per_s": round(cells_per_second(path)),
                **{k: v for k, v in evaluate(path, test_data).items() if k != "confusion"},
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.rows:
                with args.rows.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    print_table(rows)


def print_table(rows: list[dict[str, object]]) -> None:
    """Mean and worst over the training seeds, per model, with the single-source differences."""
    single = {
        (r["model"], r["seed"]): r["overall_accuracy"] for r in rows if "only" in str(r["model"])
    }
    print(
        f"\n{'model':<36} {'params':>9} {'cells/s':>8} {'seeds':>5}  "
        f"{'OA mean/worst':>13} {'kappa':>11} {'macro-F1':>11} "
        f"{'img missing':>11} {'sig missing':>11} {'fusion lead':>11}"
    )
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]

        def pair(values: list[float], signed: bool = False) -> str:
            fmt = "{:+.3f}" if signed else "{:.3f}"
            return f"{fmt.format(np.mean(values))}/{fmt.format(min(values))}"

        cols = [
            pair([float(r[k]) for r in mine]) for k in ("overall_accuracy", "kappa", "macro_f1")
        ]
        diffs = ["", "", ""]
        fused = str(name).startswith("fusion")
        seeds = [r["seed"] for r in mine]
        # Each branch is compared with the single-source model of its own encoder.
        options = str(name).split(" + ")[1:]
        own = {
            kind: next(
                (
                    f"{kind} + {option}"
                    for option in ENCODER_OPTIONS
                    if option in options and (f"{kind} + {option}", seeds[0]) in single
                ),
                kind,
            )
            for kind in ("image-only", "signalling-only")
        }
        if fused and all((m, s) in single for m in own.values() for s in seeds):
            img_missing = [
                r["ablation"]["signalling_only"] - single[(own["signalling-only"], r["seed"])]
                for r in mine
            ]
            sig_missing = [
                r["ablation"]["image_only"] - single[(own["image-only"], r["seed"])] for r in mine
            ]
            lead = [
                r["overall_accuracy"]
                - max(
                    single[(own["image-only"], r["seed"])],
                    single[(own["signalling-only"], r["seed"])],
                )
                for r in mine
            ]
            diffs = [pair(v, signed=True) for v in (img_missing, sig_missing, lead)]
        print(
            f"{name:<36} {mine[0]['params']:>9,} {mine[0]['cells_per_s']:>8,} {len(mine):>5}  "
            f"{cols[0]:>13} {cols[1]:>11} {cols[2]:>11} {diffs[0]:>11} {diffs[1]:>11} "
            f"{diffs[2]:>11}"
        )
    print(
        "\nmean/worst over the training seeds; 'img missing' is the fused model with imagery "
        "masked minus the signalling-only model of the same seed and activity encoder (goal: "
        ">= -0.03 on every seed), "
        "'sig missing' the same for signalling, 'fusion lead' the fused model minus the better "
        "single-source model (goal: >= +0.05 on every seed)"
    )


if __name__ == "__main__":
    main()
