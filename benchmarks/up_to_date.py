"""An unchanged rerun of the 1,000 km2 city: whole-process seconds, this code against REV.

The city of ``benchmarks/city_scale.py`` (2 m tiles, 8 days of signalling) is written once and
run once per code version into its own output folder; then ``urbanfusion run`` is timed on it,
unchanged, ``--repeat`` times per version, the versions alternating so that both see the same
machine. What it measures is the up-to-date check (each input file's identity, the config, the
model, the code) plus start-up; with ``--before 4b67891`` it shows what the file identity's
change time and inode cost against size and modification time alone.

With ``--batch N`` it times ``urbanfusion batch`` over N up-to-date cities instead: N configs
of the 3 km demo city, each with its own output folder, run once (2 jobs), then the batch again.

    .venv/bin/python benchmarks/up_to_date.py [--area 1000] [--repeat 7] [--before REV]
    .venv/bin/python benchmarks/up_to_date.py --batch 100 [--before REV]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from benchmarks.city_scale import write_city  # noqa: E402
from benchmarks.faults import code_of  # noqa: E402
from benchmarks.package_bytecode import compile_packages  # noqa: E402


def _run(config: Path, env: dict[str, str] | None) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "urbanfusion.workflows", "run", str(config), "-q"],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode:
        sys.exit(proc.stderr)
    return time.perf_counter() - started, proc.stdout.strip().splitlines()[-1]


def _batch(configs: list[Path], report: Path, env: dict[str, str] | None, *extra: str) -> float:
    started = time.perf_counter()
    command = ["batch", *map(str, configs), "--report", str(report), *extra]
    proc = subprocess.run(
        [sys.executable, "-m", "urbanfusion.workflows", *command],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode:
        sys.exit(proc.stdout[-2000:] + proc.stderr[-2000:])
    return time.perf_counter() - started


def batch_of_cities(n: int, root: Path, before: str | None, repeat: int) -> None:
    """Time ``urbanfusion batch`` over ``n`` up-to-date cities (this code, and ``before``'s)."""
    import yaml

    from urbanfusion.workflows.democity.city import generate_demo_city

    city = generate_demo_city(root / "inputs", seed=11)
    envs: dict[str, dict[str, str] | None] = {"after": None}
    if before:
        envs = {"before": code_of(before, Path(tempfile.mkdtemp(prefix="uf-rev-"))), **envs}
    for label, env in envs.items():
        folder = root / f"cities-{label}"
        folder.mkdir(parents=True, exist_ok=True)
        configs = []
        for k in range(n):
            data = yaml.safe_load(city.config.read_text())
            data["imagery"]["paths"] = [str(city.root / "tiles" / "*.tif")]
            data["signalling"]["paths"] = [str(city.root / "signalling" / "*.csv")]
            data["output"]["dir"] = str(root / f"out-{label}" / f"city-{k:03d}")
            configs.append(folder / f"city-{k:03d}.yaml")
            configs[-1].write_text(yaml.safe_dump(data))
        first = _batch(configs, root / f"{label}-first.json", env, "--jobs", "2")
        print(f"{label}: first batch of {n} cities (2 jobs) {first:.1f} s", flush=True)
        times = [_batch(configs, root / f"{label}.json", env) for _ in range(repeat)]
        print(
            f"{label}: batch of {n} up-to-date cities median {statistics.median(times):.2f} s "
            f"(min {min(times):.2f}, max {max(times):.2f}, {repeat} runs)",
            flush=True,
        )


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--area", type=float, default=1000.0)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--before", help="also time the code of this git revision")
    parser.add_argument("--keep", type=Path, help="reuse or keep the city here")
    parser.add_argument("--batch", type=int, help="time a batch of this many up-to-date cities")
    args = parser.parse_args()
    compile_packages(ROOT)  # code_of compiles the --before revision's
    if args.batch:
        root = args.keep or Path(tempfile.mkdtemp(prefix="uf-batch-"))
        batch_of_cities(args.batch, root, args.before, min(args.repeat, 3))
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="uf-up-to-date-"))
    city = write_city(root / f"city-{args.area:g}", args.area)
    envs: dict[str, dict[str, str] | None] = {"after": None}
    if args.before:
        envs = {"before": code_of(args.before, Path(tempfile.mkdtemp(prefix="uf-rev-"))), **envs}
    configs = {}
    for label in envs:
        text = city.read_text().replace("dir: out", f"dir: out-{label}")
        configs[label] = city.with_name(f"city-{label}.yaml")
        configs[label].write_text(text)
        first, _ = _run(configs[label], envs[label])
        print(f"{label}: first run {first:.1f} s", flush=True)
    times: dict[str, list[float]] = {label: [] for label in envs}
    said = {}
    for _ in range(args.repeat):
        for label, env in envs.items():
            seconds, said[label] = _run(configs[label], env)
            times[label].append(seconds)
    n_tiles = len(list((city.parent / "tiles").glob("*.tif")))
    n_days = len(list((city.parent / "signalling").glob("*.csv")))
    print(f"{args.area:g} km2: {n_tiles} tiles, {n_days} signalling files")
    for label, values in times.items():
        print(
            f"{label}: up-to-date rerun median {statistics.median(values):.3f} s "
            f"(min {min(values):.3f}, max {max(values):.3f}, {len(values)} runs): {said[label]}"
        )
    if len(times) == 2:
        ratio = statistics.median(times["after"]) / statistics.median(times["before"])
        print(f"after / before: {ratio:.3f}")


if __name__ == "__main__":
    main()
