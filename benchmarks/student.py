"""A distilled student against its teacher: onnxruntime CPU cells/s and accuracy on unseen cities.

Students are trained with ``urbanfusion train ... --teacher TEACHER.onnx`` on the Makefile's
model cities (``make model``'s recipe, a smaller network), one per seed, for example:

    C=build/model-cities
    for s in 0 1 2; do .venv/bin/urbanfusion train $C/city-10{1..6}/city.yaml \\
        $(for c in 101 102 103 104 105 106; do echo --labels $C/city-$c/zones.gpkg; done) \\
        --out students/s$s.onnx --seed $s --image-encoder resnet --activity-encoder convlstm \\
        --fusion concat --image-width 16 --features 64 --distill 0.5 \\
        --teacher models/weights/urbanfusion-teacher.onnx -q; done

Then this scores the teacher and every student on demo cities none of them saw (seed 7, the
demo's, by default), through the run's own stages (``urbanfusion evaluate``), and times each on
onnxruntime's CPU provider (batch 1,024, 5 rounds taking turns, best of 10 each),
all in one process. The students' figures are their mean and spread (max - min) over the seeds.
``--real-city DIR`` also scores them on a city of real pixels (``benchmarks/real_pixels.py``'s
test city: its ``city.yaml`` and ``zones.gpkg``).

    .venv/bin/python benchmarks/student.py --teacher models/weights/urbanfusion-teacher.onnx \\
        --students students/s0.onnx students/s1.onnx students/s2.onnx [--cities 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from urbanfusion.models.inference import Predictor

METRICS = ("overall_accuracy", "kappa", "macro_f1")


def cells_per_second(path: Path, batch: int = 1024, repeat: int = 15) -> float:
    """onnxruntime CPU cells/s of a model on random inputs of its own contract's shapes."""
    predictor = Predictor(path, ["CPUExecutionProvider"])
    c = predictor.contract
    rng = np.random.default_rng(0)
    image = rng.standard_normal((batch, len(c.bands), c.chip_px, c.chip_px)).astype(np.float32)
    activity = rng.standard_normal((batch, c.days, c.hours)).astype(np.float32)
    ones = np.ones(batch, np.float32)
    predictor.predict(image, activity, ones, ones, batch=batch)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        predictor.predict(image, activity, ones, ones, batch=batch)
        best = min(best, time.perf_counter() - start)
    return batch / best


def scores(model: Path, cities: list[Path]) -> dict[str, float]:
    """``urbanfusion evaluate`` of ``model`` on the demo cities: its overall figures."""
    args = [str(c / "city.yaml") for c in cities]
    labels = [a for c in cities for a in ("--labels", str(c / "zones.gpkg"))]
    command = ["evaluate", str(model), *args, *labels, "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "urbanfusion.workflows", *command],
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        sys.exit(proc.stderr)
    result = json.loads(proc.stdout)
    return {m: float(result[m]) for m in METRICS}


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--students", type=Path, nargs="+", required=True)
    parser.add_argument("--cities", type=int, nargs="+", default=[7])
    parser.add_argument("--work", type=Path, help="where the demo cities are written (kept)")
    parser.add_argument("--real-city", type=Path, help="a real-pixel city folder to score too")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="uf-student-"))
    cities = []
    for seed in args.cities:
        city = work / f"demo-{seed}"
        if not (city / "city.yaml").is_file():
            command = ["demo-city", str(city), "--seed", str(seed)]
            subprocess.run(
                [sys.executable, "-m", "urbanfusion.workflows", *command],
                check=True,
                capture_output=True,
            )
        cities.append(city)
    models = {"teacher": args.teacher, **{p.stem: p for p in args.students}}
    # Rounds taking turns, each model best of 10: this machine has slow spells that last
    # seconds, and a single best-of-N of one model can fall in one (2.0x instead of 2.6x).
    rounds = [
        {name: cells_per_second(path, repeat=10) for name, path in models.items()} for _ in range(5)
    ]
    speed = {name: max(r[name] for r in rounds) for name in models}
    ratios = [statistics.mean(r[p.stem] for p in args.students) / r["teacher"] for r in rounds]
    tables = {f"demo cities {args.cities} (unseen)": cities}
    if args.real_city:
        tables[f"real-pixel city {args.real_city.name}"] = [args.real_city]
    print(f"onnxruntime CPU batch 1,024, 5 rounds; {len(args.students)} students")
    for title, where in tables.items():
        got = {name: scores(path, where) for name, path in models.items()}
        print(f"\n{title}")
        print(f"{'model':<14} {'cells/s':>9} " + " ".join(f"{m:>17}" for m in METRICS))
        for name, s in got.items():
            row = " ".join(f"{s[m]:>17.3f}" for m in METRICS)
            print(f"{name:<14} {speed[name]:>9,.0f} {row}")
        students = [got[p.stem] for p in args.students]
        for m in METRICS:
            values = [s[m] for s in students]
            mean, spread = statistics.mean(values), max(values) - min(values)
            teacher = got["teacher"][m]
            print(
                f"  {m}: students' mean {mean:.3f} (spread {spread:.3f}), teacher "
                f"{teacher:.3f}, difference {100 * (mean - teacher):+.1f} points"
            )
    mean_speed = statistics.mean(speed[p.stem] for p in args.students)
    print(
        f"\nstudents: {mean_speed:,.0f} cells/s (best of 5 rounds), teacher "
        f"{speed['teacher']:,.0f}; students / teacher per round: median "
        f"{statistics.median(ratios):.2f}x (from {min(ratios):.2f} to {max(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
