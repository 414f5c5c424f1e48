"""Real pixels: the image encoder on AID, fusion on real-pixel cities, and a new city's few labels.

Research use only (AID's licence): nothing here ships, and the default model is not trained on
it. Three steps, each a sub-command, so that the heavy one can run where a GPU is:

``prepare``: splits AID's ten urban classes by pre-training's held-out rule (``held_out``: a
fifth of each class, the same whatever the seed), builds real-pixel cities (training cities
from the training scenes; the test city and the newcomer city from held-out scenes only; a
drawn demo city for comparison) and stores their labelled cells through the run's own stages.

``pretrain``: ``--seeds`` encoders on the AID folder(s), then each scored on the held-out scenes
of the ten urban classes (``evaluate_encoder``, predicting among those ten).

``train``: per seed, with that seed's encoder: fused, image-only and signalling-only models on
the training cities, scored on the test city (the fused one also with each input masked), the
in-domain share of the test city and of the drawn city; then the new city with 5, 10, 25, 50 %
and all of its non-scored blocks labelled, starting (a) from scratch, (b) from the pre-trained
encoder, (c) from the fused model of the training cities (``TrainConfig.init``), scored on a
fixed 40 % of its blocks. Jobs run in ``--jobs`` processes (one GPU serves them all).
``report`` prints the tables and draws the curve (``few_labels.png``) from ``results.json``.

    python benchmarks/real_pixels.py prepare --aid ../shared/data/scenes/aid --work W
    python benchmarks/real_pixels.py pretrain --aid ../shared/data/scenes/aid --work W --seeds 0 1 2
    python benchmarks/real_pixels.py train --work W --seeds 0 1 2 [--jobs 1]
    python benchmarks/real_pixels.py report --work W
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import time
from pathlib import Path

import numpy as np

from urbanfusion.models.dataset import CellData  # no torch: the spawned jobs import it first

URBAN = (
    "Airport",
    "Center",
    "Commercial",
    "DenseResidential",
    "Industrial",
    "MediumResidential",
    "Park",
    "RailwayStation",
    "School",
    "SparseResidential",
)
TRAIN_CITY_SEEDS = (201, 202, 203, 204)
TEST_CITY_SEED, NEW_CITY_SEED, DRAWN_CITY_SEED = 301, 302, 7
FRACTIONS = (0.05, 0.10, 0.25, 0.50)
SCORED_SHARE = 0.4  # of the new city's blocks, never labelled
STARTS = ("scratch", "encoder", "cities")
CELL_FIELDS = ("chips", "activity", "has_activity", "labels", "blocks", "city")


def _link_split(aid: Path, work: Path) -> dict[str, int]:
    """``scenes-train/`` and ``scenes-test/``: links to the ten urban classes' scenes."""
    from urbanfusion.models.training.configs import PretrainConfig
    from urbanfusion.models.training.pretrain import held_out
    from urbanfusion.models.training.scenes import scene_listing

    paths, labels, _ = scene_listing(aid)
    test = held_out(labels, PretrainConfig().test_fraction)
    counts = {"train": 0, "test": 0}
    for part in ("train", "test"):
        shutil.rmtree(work / f"scenes-{part}", ignore_errors=True)
    for path, is_test in zip(paths, test, strict=True):
        if path.parent.name not in URBAN:
            continue
        part = "test" if is_test else "train"
        dest = work / f"scenes-{part}" / path.parent.name / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(path.resolve())
        counts[part] += 1
    return counts


def _save_cells(data: CellData, path: Path) -> None:
    np.savez_compressed(
        path,
        **{f: getattr(data, f) for f in CELL_FIELDS},
        bands=np.asarray(data.bands),
        chip_px=data.chip_px,
        cell_size_m=data.cell_size_m,
    )


def load_cells(path: Path, city: int = 0) -> CellData:
    """Cells saved by ``prepare``, as the city ``city`` of a training set."""
    z = np.load(path)
    fields = {f: z[f] for f in CELL_FIELDS}
    fields["city"] = np.full(len(z["labels"]), city, np.int64)
    fields["blocks"] = fields["blocks"] % 10**13 + city * 10**13
    return CellData(
        **fields,
        bands=[int(b) for b in z["bands"]],
        chip_px=int(z["chip_px"]),
        cell_size_m=float(z["cell_size_m"]),
    )


def split(args: argparse.Namespace) -> None:
    """``scenes-train/`` and ``scenes-test/`` under the work folder (links)."""
    args.work.mkdir(parents=True, exist_ok=True)
    counts = _link_split(args.aid, args.work)
    print(f"scenes of the ten urban classes: {counts['train']} train, {counts['test']} held out")


def prepare(args: argparse.Namespace) -> None:
    """Split the scenes, build the cities, store their labelled cells."""
    from urbanfusion.workflows.democity.city import generate_demo_city
    from urbanfusion.workflows.labelled import load_labelled_city

    work = args.work
    split(args)
    cities = [(f"train-{s}", s, "train") for s in TRAIN_CITY_SEEDS[: args.train_cities]]
    cities += [(f"test-{TEST_CITY_SEED}", TEST_CITY_SEED, "test")]
    cities += [(f"new-{NEW_CITY_SEED}", NEW_CITY_SEED, "test")]
    cities += [(f"drawn-{DRAWN_CITY_SEED}", DRAWN_CITY_SEED, None)]
    (work / "cells").mkdir(exist_ok=True)
    info = {}
    for name, seed, part in cities:
        t0 = time.perf_counter()
        scenes = None if part is None else work / f"scenes-{part}"
        root = work / "cities" / name
        shutil.rmtree(root, ignore_errors=True)
        city = generate_demo_city(root, seed, args.size_km, args.activity_from, scenes)
        data = load_labelled_city(city.config, city.zones)
        _save_cells(data, work / "cells" / f"{name}.npz")
        used = json.loads((root / "scenes.json").read_text())["distinct_scenes_used"] if part else 0
        info[name] = {"cells": len(data), "distinct_scenes": used}
        print(
            f"{name}: {len(data)} labelled cells, {used} distinct real scenes "
            f"({time.perf_counter() - t0:.0f} s)"
        )
    (work / "cities.json").write_text(json.dumps(info, indent=1))


def _timed(fn, *a, **k):
    """``fn``'s result with its wall, user and system seconds (this process's)."""
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    out = fn(*a, **k)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return out, {
        "wall_s": round(time.perf_counter() - t0, 1),
        "user_s": round(r1.ru_utime - r0.ru_utime, 1),
        "system_s": round(r1.ru_stime - r0.ru_stime, 1),
    }


def pretrain_seeds(args: argparse.Namespace) -> None:
    """Pre-train an encoder per seed and score it on the held-out urban scenes."""
    from urbanfusion.models.training.configs import PretrainConfig
    from urbanfusion.models.training.pretrain import (
        evaluate_encoder,
        pretrain,
        save_encoder,
        scene_px,
    )
    from urbanfusion.models.training.scenes import load_scene_sets

    for seed in args.seeds:
        cfg = PretrainConfig(seed=seed, epochs=args.epochs, batch=args.batch)
        path = args.work / f"encoder-{args.tag}-{seed}.pt"

        def run(cfg: PretrainConfig = cfg, path: Path = path) -> dict:
            state = pretrain(load_scene_sets(args.aid, scene_px(cfg)), cfg)
            save_encoder(path, state)
            return state

        state, times = _timed(run)
        held = evaluate_encoder(path, args.work / "scenes-test")
        row = {
            "seed": seed,
            "epochs": args.epochs,
            **times,
            "held_out_urban": held,
            "test_all_classes": state["test"],
        }
        (args.work / f"pretrain-{args.tag}-{seed}.json").write_text(json.dumps(row, indent=1))
        print(
            f"seed {seed}: held-out urban OA {held['overall_accuracy']:.3f} macro-F1 "
            f"{held['macro_f1']:.3f} ({held['n']} scenes); all 30 classes "
            f"{state['test']['overall_accuracy']:.3f}; {times}",
            flush=True,
        )


# ---- training jobs ------------------------------------------------------------------------


def _score(labels: np.ndarray, prob: np.ndarray) -> dict:
    from urbanfusion.models.classes import CLASS_NAMES
    from urbanfusion.models.metrics import scores

    s = scores(labels, prob.argmax(1), list(CLASS_NAMES))
    return {k: s[k] for k in ("overall_accuracy", "kappa", "macro_f1", "n")}


def _main_job(
    work: Path, encoders: str, seed: int, branches: str, epochs: int, device: str
) -> dict:
    """A model of the training cities, scored on the test and drawn cities (ORT, CPU)."""
    import torch

    from urbanfusion.models.dataset import CellData
    from urbanfusion.models.evaluation import evaluate
    from urbanfusion.models.inference import Predictor
    from urbanfusion.models.training.checkpoint import save_checkpoint
    from urbanfusion.models.training.configs import NetworkConfig, TrainConfig
    from urbanfusion.models.training.train import train_and_export

    torch.set_num_threads(int(os.environ.get("RP_THREADS", "1")))
    names = sorted(p.stem for p in (work / "cells").glob("train-*.npz"))
    data = CellData.concat(
        [load_cells(work / "cells" / f"{n}.npz", i) for i, n in enumerate(names)]
    )
    net = NetworkConfig(use_image=branches != "signalling", use_activity=branches != "image")
    cfg = TrainConfig(
        seed=seed,
        epochs=epochs,
        network=net,
        device=device,
        image_weights=(
            str(work / f"encoder-{encoders}-{seed}.pt") if branches != "signalling" else None
        ),
    )
    out = work / "models" / encoders / f"{branches}-{seed}.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    (result, _), times = _timed(train_and_export, data, out, cfg, "real-pixel cities", True)
    save_checkpoint(out.with_suffix(".ckpt"), result.checkpoint)
    predictor = Predictor(out, ["CPUExecutionProvider"])
    row = {"seed": seed, "model": branches, **times, "best_epoch": result.best_epoch}
    for city in (f"test-{TEST_CITY_SEED}", f"drawn-{DRAWN_CITY_SEED}"):
        cells = load_cells(work / "cells" / f"{city}.npz")
        hides = {"": None}
        if branches == "fusion":
            hides |= {"imagery masked": "image", "signalling masked": "activity"}
        for label, hide in hides.items():
            prob = predictor.predict_cells(
                cells.chips, cells.activity, cells.has_activity, hide
            ).prob
            row[f"{city} {label}".strip()] = _score(cells.labels, prob)
        row[f"{city} in-domain"] = evaluate(out, cells)["calibration"]["in_domain_share"]
    return row


def new_city_split(blocks: np.ndarray, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Scored rows (a fixed 40 % of blocks) and, per fraction, the labelled blocks (nested)."""
    unique = np.unique(blocks)
    rng = np.random.default_rng(1000 + seed)
    order = rng.permutation(unique)
    n_scored = round(len(unique) * SCORED_SHARE)
    scored, pool = order[:n_scored], order[n_scored:]
    labelled = [pool[: max(2, round(len(unique) * f))] for f in FRACTIONS] + [pool]
    return np.isin(blocks, scored), labelled


def _few_job(
    work: Path, encoders: str, seed: int, start: str, k: int, epochs: int, device: str
) -> dict:
    """A model of the new city's labelled blocks (fraction ``k``), scored on its scored blocks."""
    import torch

    from urbanfusion.models.classes import CLASS_NAMES
    from urbanfusion.models.training.checkpoint import best_model, load_checkpoint
    from urbanfusion.models.training.configs import FINE_TUNE_LR, TrainConfig
    from urbanfusion.models.training.train import (
        TrainResult,
        _tensors,
        predict_proba,
        train,
    )

    torch.set_num_threads(int(os.environ.get("RP_THREADS", "1")))
    data = load_cells(work / "cells" / f"new-{NEW_CITY_SEED}.npz")
    scored, labelled = new_city_split(data.blocks, seed)
    chosen = labelled[k] if k >= 0 else np.zeros(0, np.int64)
    train_rows = np.flatnonzero(np.isin(data.blocks, chosen))
    init = work / "models" / encoders / f"fusion-{seed}.ckpt"
    cfg = TrainConfig(
        seed=seed,
        epochs=epochs,
        device=device,
        image_weights=str(work / f"encoder-{encoders}-{seed}.pt") if start == "encoder" else None,
        init=str(init) if start == "cities" else None,
        lr=FINE_TUNE_LR if start == "cities" else TrainConfig().lr,
    )
    if k < 0:  # no label at all: the model of the other cities as it is
        saved = load_checkpoint(init)
        model = best_model(saved, init)
        result = TrainResult(model, saved.image_mean, saved.image_std, [], {}, 0, saved)
        times = {"wall_s": 0.0, "user_s": 0.0, "system_s": 0.0}
    else:
        result, times = _timed(train, data.subset(train_rows), list(CLASS_NAMES), cfg, True)
    test = data.subset(np.flatnonzero(scored))
    mean, std = np.asarray(result.image_mean), np.asarray(result.image_std)
    prob = predict_proba(result.model, _tensors(test, mean, std), torch.device("cpu"))
    fraction = "all" if k == len(FRACTIONS) else 0.0 if k < 0 else FRACTIONS[k]
    return {
        "seed": seed,
        "start": start,
        "fraction": fraction,
        "labelled_blocks": len(chosen),
        "blocks": len(np.unique(data.blocks)),
        "labelled_cells": len(train_rows),
        **times,
        "scored": _score(test.labels, prob),
    }


def _run(job: tuple) -> dict:
    kind, *rest = job
    return _main_job(*rest) if kind == "main" else _few_job(*rest)


def train_all(args: argparse.Namespace) -> None:
    """Every model of the tables and the curve; rows appended to ``results.json``."""
    work = args.work
    main = [
        ("main", work, args.encoders, s, b, args.epochs, args.device)
        for s in args.seeds
        for b in ("fusion", "image", "signalling")
    ]
    ks = range(len(FRACTIONS) + 1)
    few_ab = [
        ("few", work, args.encoders, s, st, k, args.epochs, args.device)
        for s in args.seeds
        for st in STARTS[:2]
        for k in ks
    ]
    few_c = [
        ("few", work, args.encoders, s, "cities", k, args.epochs, args.device)
        for s in args.seeds
        for k in (-1, *ks)
    ]
    os.environ.setdefault("RP_THREADS", str(max(1, (os.cpu_count() or 1) // args.jobs)))
    rows: list[dict] = []
    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(args.jobs) as pool:
        for phase in (main + few_ab, few_c):  # (c) starts from phase one's fused models
            for row in pool.imap_unordered(_run, phase):
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"{len(rows)} models in {time.perf_counter() - t0:.0f} s with {args.jobs} jobs")
    (work / f"results-{args.tag}.json").write_text(json.dumps(rows, indent=1))


# ---- report -------------------------------------------------------------------------------


def _ms(values: list[float]) -> str:
    a = np.asarray(values, float)
    return f"{a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0:.3f}"


def report(args: argparse.Namespace) -> None:
    """Tables of the encoders, the main models and the few-label curve, mean ± SD over seeds."""
    tags: dict[str, list[dict]] = {}
    for path in sorted(args.work.glob("pretrain-*-*.json")):
        tags.setdefault(path.stem.rsplit("-", 1)[0].removeprefix("pretrain-"), []).append(
            json.loads(path.read_text())
        )
    for tag, runs in tags.items():
        held = [r["held_out_urban"] for r in runs]
        print(
            f"encoder {tag} ({runs[0]['epochs']} epochs, seeds {[r['seed'] for r in runs]}): "
            f"held-out urban OA {_ms([h['overall_accuracy'] for h in held])}, macro-F1 "
            f"{_ms([h['macro_f1'] for h in held])} ({held[0]['n']} scenes); all classes OA "
            f"{_ms([r['test_all_classes']['overall_accuracy'] for r in runs])}; wall "
            f"{_ms([r['wall_s'] for r in runs])} s, system {_ms([r['system_s'] for r in runs])} s"
        )
        for name in held[0]["per_class_f1"]:
            print(f"  F1 {name:<18} {_ms([h['per_class_f1'][name] for h in held])}")
    rows = json.loads((args.work / f"results-{args.tag}.json").read_text())
    test, drawn = f"test-{TEST_CITY_SEED}", f"drawn-{DRAWN_CITY_SEED}"
    main = [r for r in rows if "model" in r]
    print(f"\nreal-pixel test city (seeds {sorted({r['seed'] for r in main})}), mean ± SD")
    print(f"{'model / input':<28} {'OA':>14} {'kappa':>14} {'macro-F1':>14}")
    lines = [
        ("fused", "fusion", test),
        ("image-only model", "image", test),
        ("signalling-only model", "signalling", test),
        ("fused, imagery masked", "fusion", f"{test} imagery masked"),
        ("fused, signalling masked", "fusion", f"{test} signalling masked"),
        ("drawn city, fused", "fusion", drawn),
    ]
    for label, model, key in lines:
        sel = [r[key] for r in main if r["model"] == model]
        if sel:
            print(
                f"{label:<28} "
                + " ".join(
                    f"{_ms([s[m] for s in sel]):>14}"
                    for m in ("overall_accuracy", "kappa", "macro_f1")
                )
            )
    by_seed: dict[int, dict[str, dict]] = {}
    for r in main:
        by_seed.setdefault(r["seed"], {})[r["model"]] = r
    leads, gaps = [], []
    for models in by_seed.values():
        if len(models) == 3:
            oa = {m: models[m][test]["overall_accuracy"] for m in models}
            leads.append(oa["fusion"] - max(oa["image"], oa["signalling"]))
            masked = models["fusion"][f"{test} imagery masked"]["overall_accuracy"]
            gaps.append(masked - oa["signalling"])
    if leads:
        print(
            f"fusion minus better single source: {_ms(leads)}; "
            f"imagery masked minus signalling-only: {_ms(gaps)}"
        )
    for city in (test, drawn):
        shares = [r[f"{city} in-domain"] for r in main if r["model"] == "fusion"]
        if shares and None not in shares:
            print(f"in-domain share, {city}: {_ms(shares)}")
    times = [r for r in main]
    for model in ("fusion", "image", "signalling"):
        t = [r for r in times if r["model"] == model]
        if t:
            print(
                f"train {model}: wall {_ms([r['wall_s'] for r in t])} s, system "
                f"{_ms([r['system_s'] for r in t])} s"
            )
    few = [r for r in rows if "start" in r]
    if not few:
        return
    fractions = [0.0, *FRACTIONS, "all"]
    print("\nnew real-pixel city: OA on its scored 40 % of blocks, mean ± SD over seeds")
    print(f"{'start':<10} " + " ".join(f"{f!s:>14}" for f in fractions))
    curve = {}
    for start in STARTS:
        means = []
        cells = []
        for f in fractions:
            sel = [r for r in few if r["start"] == start and r["fraction"] == f]
            oa = [r["scored"]["overall_accuracy"] for r in sel]
            means.append((np.mean(oa), np.std(oa, ddof=1)) if len(oa) > 1 else (np.nan, 0.0))
            cells.append(_ms(oa) if oa else "-")
        curve[start] = means
        print(f"{start:<10} " + " ".join(f"{c:>14}" for c in cells))
    walls = [r["wall_s"] for r in few]
    print(f"few-label trainings: wall {min(walls)}-{max(walls)} s each")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    xs = [0.0] + [100 * f for f in FRACTIONS] + [100 * (1 - SCORED_SHARE)]
    for start, label in zip(
        STARTS, ("(a) scratch", "(b) pre-trained encoder", "(c) model of other cities"), strict=True
    ):
        m = np.array([v[0] for v in curve[start]])
        sd = np.array([v[1] for v in curve[start]])
        ax.errorbar(xs, m, yerr=sd, marker="o", capsize=3, label=label)
    ax.set_xlabel("blocks of the new city labelled (%)")
    ax.set_ylabel("overall accuracy on unlabelled blocks")
    ax.set_title("A new real-pixel city with few labels (mean ± SD, seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.work / "few_labels.png")
    print(f"wrote {args.work / 'few_labels.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("split")
    p.add_argument("--aid", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--aid", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--train-cities", type=int, default=4)
    p.add_argument("--size-km", type=float, default=6.0)
    p.add_argument("--activity-from", type=Path)
    p = sub.add_parser("pretrain")
    p.add_argument("--aid", type=Path, nargs="+", required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--tag", default="default")
    p = sub.add_parser("train")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--encoders", default="default", help="the pretrain --tag to start from")
    p.add_argument("--device", default="auto")
    p.add_argument("--tag", default="default")
    p = sub.add_parser("report")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--tag", default="default")
    args = parser.parse_args()
    steps = {"split": split, "prepare": prepare, "pretrain": pretrain_seeds}
    steps |= {"train": train_all, "report": report}
    steps[args.step](args)


if __name__ == "__main__":
    main()
