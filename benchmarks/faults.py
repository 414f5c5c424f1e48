"""The faulty-input table: every fault of ``tests/faults.py`` through the CLI, before and after.

For each fault, a fresh copy of the demo city (seed 7, 6 km, 702 cells) gets the fault and the
command runs in its own process. Prints exit status, the line the run printed about it (error
or warning; "-" for none), cells whose class differs from the clean run, peak RSS and seconds.
With ``--before REV`` the same cases also run on the code of git revision REV (checked out into
a temporary worktree and put first on PYTHONPATH), side by side.

    .venv/bin/python benchmarks/faults.py [--before c2b03c3^] [--only NAME ...] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.package_bytecode import PACKAGES, compile_packages  # noqa: E402
from tests.faults import Outcome, clean_run, faults, run_fault  # noqa: E402
from urbanfusion.workflows.democity.city import generate_demo_city  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def code_of(rev: str, folder: Path) -> dict[str, str]:
    """An environment whose ``urbanfusion`` is the code of ``rev``."""
    src = folder / "src"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "-f", "--detach", str(src), rev],
        check=True,
        capture_output=True,
    )
    compile_packages(src)
    shim = folder / "shim" / "urbanfusion"
    shim.mkdir(parents=True)
    for name in PACKAGES:
        (shim / name).symlink_to(src / name)
    return {**os.environ, "PYTHONPATH": str(shim.parent)}


def cell(outcome: Outcome, says: str) -> str:
    line = outcome.line(says) or "-"
    line = line if len(line) <= 150 else line[:147] + "..."
    changed = "-" if outcome.changed is None else str(outcome.changed)
    return f"{outcome.exit} | {line} | {changed} | {outcome.peak_mb:.0f} | {outcome.seconds:.1f}"


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="also run the code of this git revision")
    parser.add_argument("--only", nargs="*", help="only the faults whose name contains these")
    parser.add_argument("--timeout", type=float, default=120, help="seconds before 'hung'")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="uf-faults-"))
    clean = generate_demo_city(root / "clean").root
    envs = {"after": None}
    if args.before:
        envs = {"before": code_of(args.before, root / "before"), **envs}
    cases = faults(SHARED if SHARED.is_dir() else None)
    if args.only:
        cases = [f for f in cases if any(o in f.name for o in args.only)]
    baselines = {}
    for label, env in envs.items():
        baselines[label], outcome = clean_run(clean, root / label / "clean", env)
        print(
            f"clean city ({label}): exit {outcome.exit}, {outcome.cells} cells, "
            f"{outcome.peak_mb:.0f} MB, {outcome.seconds:.1f} s",
            flush=True,
        )
    header = " | ".join(f"{k}: exit | line | cells changed | peak MB | s" for k in envs)
    print(f"| case | {header} |")
    print("|" + " --- |" * (1 + 5 * len(envs)))
    for k, fault in enumerate(cases):
        cells = []
        for label, env in envs.items():
            work = root / label / f"{k:02d}"
            outcome = run_fault(fault, clean, work, baselines[label], env=env, timeout=args.timeout)
            cells.append(cell(outcome, fault.says))
        print(f"| {fault.name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
