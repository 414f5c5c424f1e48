"""Shared fixtures: a small seeded demo city, the real data folder, config helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from urbanfusion.workflows.democity.city import DemoCity, generate_demo_city

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# Modules of whole runs, training, clusters, browsers and the fault suite: marked slow, so that
# `make test-fast` (the edit-run loop, under a minute) leaves them to `make test` and CI.
SLOW_MODULES = frozenset(
    {
        "test_batch",
        "test_calibration",
        "test_checkpoints",
        "test_cli",
        "test_cluster",
        "test_faults",
        "test_memory",
        "test_model",
        "test_pretrain",
        "test_publish",
        "test_signalling_helsinki",
        "test_store",
        "test_urfc_training",
        "test_webmap",
        "test_workflows",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of :data:`SLOW_MODULES` slow."""
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tile-index caches go to a temporary folder, not the user's ~/.cache."""
    import os

    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder beside the repository; tests skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (fresh clone without ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def small_city(tmp_path_factory: pytest.TempPathFactory) -> DemoCity:
    """A 3 km demo city (seed 11), generated once per session."""
    return generate_demo_city(tmp_path_factory.mktemp("city") / "inputs", seed=11, size_km=3.0)


def write_config(path: Path, city: DemoCity, **changes: object) -> Path:
    """A copy of ``city``'s config at ``path`` with absolute input paths and ``changes`` applied.

    A change whose value is ``None`` under a dotted key removes that key.
    """
    config = yaml.safe_load(city.config.read_text())
    config["imagery"]["paths"] = [str(city.root / "tiles" / "*.tif")]
    config["signalling"]["paths"] = [str(city.root / "signalling" / "*.csv")]
    config["output"]["dir"] = str(path.parent / "out")
    for key, value in changes.items():
        node = config
        *parents, last = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = value
    path.write_text(yaml.safe_dump(config))
    return path
