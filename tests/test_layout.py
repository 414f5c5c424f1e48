"""The house: one namespace, floors whose imports only run down, no import cycles."""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The floors in the order data flows; a package imports only its own floor and those before it.
# `api` is the roof: the Python API (folder workflows/api, installed as urbanfusion.api).
FLOORS = ["pipeline", "preprocess", "ingest", "models", "workflows", "api"]
FOLDERS = {floor: ROOT / floor for floor in FLOORS[:-1]} | {"api": ROOT / "workflows" / "api"}
TRAINING = "urbanfusion.models.training"


def _module_name(path: Path) -> str:
    api = FOLDERS["api"]
    if path.is_relative_to(api):
        parts = ["api", *path.relative_to(api).with_suffix("").parts]
    else:
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["urbanfusion", *parts])


def _files(floor: str) -> list[Path]:
    """The floor's modules (the roof's folder sits inside workflows' but is not of it)."""
    found = sorted(FOLDERS[floor].rglob("*.py"))
    return [f for f in found if floor == "api" or not f.is_relative_to(FOLDERS["api"])]


def _imports(path: Path) -> set[str]:
    """Every module of ours that a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = {_module_name(f): f for floor in FLOORS for f in _files(floor)}
    return {
        name: {m for m in _imports(path) if m in files and m != name}
        for name, path in files.items()
    }


def test_every_import_of_ours_uses_the_namespace():
    old = set(FLOORS[:-1])
    for folder in [*FOLDERS.values(), ROOT / "tests", ROOT / "benchmarks"]:
        for path in folder.rglob("*.py"):
            bare = {m for m in _imports(path) if m.split(".")[0] in old}
            assert not bare, f"{path.relative_to(ROOT)} imports {sorted(bare)} outside urbanfusion."


def test_packages_import_only_the_floors_below_them(graph):
    for module, targets in graph.items():
        floor = FLOORS.index(module.split(".")[1])
        for target in targets:
            assert FLOORS.index(target.split(".")[1]) <= floor, f"{module} imports {target}"


def test_the_model_runtime_does_not_import_training(graph):
    for module, targets in graph.items():
        if module.startswith("urbanfusion.models") and not module.startswith(TRAINING):
            assert not {t for t in targets if t.startswith(TRAINING)}, module


def test_only_training_imports_torch():
    for floor in FLOORS:
        for path in _files(floor):
            if _module_name(path).startswith(TRAINING):
                continue
            torch = {m for m in _imports(path) if m.split(".")[0] in ("torch", "onnx")}
            assert not torch, f"{path.relative_to(ROOT)} imports {sorted(torch)}"


def test_no_module_imports_itself_back_through_others(graph):
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_every_package_folder_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        _module_name(init.parent / "__init__.py")
        for floor in FLOORS
        for init in _files(floor)
        if init.name == "__init__.py"
    }
    assert set(config["packages"]) == folders
    assert config["package-dir"] == {
        f"urbanfusion.{floor}": folder.relative_to(ROOT).as_posix()
        for floor, folder in FOLDERS.items()
    }


@pytest.mark.parametrize("name", ["pipeline", "ingest", "preprocess", "models", "workflows"])
def test_no_generic_top_level_name_is_importable(tmp_path, name):
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({name!r}) is not None)"
    assert subprocess.run([sys.executable, "-c", code], cwd=tmp_path).returncode == 0
    ours = f"import urbanfusion.{name}"
    assert subprocess.run([sys.executable, "-c", ours], cwd=tmp_path).returncode == 0


def test_the_cli_and_model_info_start_without_dask_xarray_pandas_or_torch():
    # `urbanfusion --help` and `model info` must start in a fraction of a second: the heavy
    # libraries load only in the commands that use them.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import urbanfusion.workflows.cli, urbanfusion.models.inference\n"
        "from urbanfusion.models.inference import Predictor, SHIPPED_MODEL\n"
        "Predictor(SHIPPED_MODEL)\n"
        "print(' '.join(m for m in ('dask', 'xarray', 'pandas', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_each_output_name_is_spelled_once_and_the_manifest_is_assembled_in_one_module():
    from urbanfusion.workflows.output_names import OUTPUT_FILES

    spelled, assigned = [], []
    for path in (ROOT / "workflows").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in OUTPUT_FILES:
                spelled.append(f"{path.name}: {node.value}")
            # manifest["key"] = ... outside manifest.py: a key added beside the assembly.
            if isinstance(node, ast.Assign) and path.name != "manifest.py":
                for target in node.targets:
                    if (
                        isinstance(target, ast.Subscript)
                        and isinstance(target.value, ast.Name)
                        and target.value.id == "manifest"
                    ):
                        assigned.append(f"{path.name}:{node.lineno}")
    assert sorted(spelled) == sorted(f"output_names.py: {n}" for n in OUTPUT_FILES)
    assert assigned == []


# Ratchets: lower these as the code improves, never raise them.
MOST_TYPE_IGNORES = 24
MOST_MODULE_LINES = 550


def test_type_ignores_only_go_down():
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for floor in FLOORS
        for path in _files(floor)
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "type: ignore" in line
    ]
    assert len(found) <= MOST_TYPE_IGNORES, f"{len(found)} type: ignore; the newest: {found}"


def test_no_module_is_over_the_size_of_one_concept():
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for floor in FLOORS
        for path in _files(floor)
    }
    assert {p: n for p, n in sizes.items() if n > MOST_MODULE_LINES} == {}
