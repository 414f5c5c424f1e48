"""The demo: generate the built-in demo city, run the pipeline on it, score it against its zones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from urbanfusion.ingest.labels import NO_LABEL, cell_labels, read_zones
from urbanfusion.models.classes import NO_CLASS
from urbanfusion.models.metrics import scores
from urbanfusion.pipeline.config import load_config
from urbanfusion.pipeline.progress import StageTimer
from urbanfusion.workflows.democity.city import DEMO_SEED, generate_demo_city
from urbanfusion.workflows.run import RunResult, holds_another_city, run


@dataclass
class DemoResult:
    """The run on the demo city and its accuracy against the city's labelled zones."""

    inputs: Path
    run: RunResult
    scores: dict[str, object]


def run_demo(out: Path, seed: int = DEMO_SEED, timer: StageTimer | None = None) -> DemoResult:
    """Write the demo city to ``out/inputs``, run it into ``out/outputs`` and score it."""
    timer = timer or StageTimer()
    with timer.stage("demo city", f"seed {seed} -> {out / 'inputs'}"):
        city = generate_demo_city(out / "inputs", seed)
    config = load_config(city.config)
    # The demo's folder shows whichever seed was asked for last: another seed takes it over.
    result = run(config, timer, new_city=holds_another_city(config))
    contract_classes = list(result.manifest["cells"]["per_class"])  # type: ignore[index]
    zones = read_zones(city.zones, contract_classes)
    labels, _ = cell_labels(result.grid, zones, len(contract_classes))
    scored = (labels != NO_LABEL) & (result.class_id != NO_CLASS)
    return DemoResult(
        city.root, result, scores(labels[scored], result.class_id[scored], contract_classes)
    )
