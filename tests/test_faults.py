"""Every faulty input of ``tests/faults.py`` through the real command line, on the small city.

Each case is one export mistake or typo; the run must stop with one clear line (exit 2), finish
with a warning line that says what happened, or finish as if nothing were wrong, as the fault
says. ``benchmarks/faults.py`` prints the same cases as a table.
"""

import importlib.util

import pytest

from tests.conftest import SHARED_DATA
from tests.faults import clean_run, faults, run_fault

CASES = faults(SHARED_DATA if SHARED_DATA.is_dir() else None)


@pytest.fixture(scope="module")
def baseline(small_city, tmp_path_factory):
    classes, _ = clean_run(small_city.root, tmp_path_factory.mktemp("clean"))
    return classes


@pytest.mark.parametrize("fault", CASES, ids=[f.name for f in CASES])
def test_a_faulty_input_gets_the_answer_it_deserves(fault, small_city, baseline, tmp_path):
    if "onnx" in fault.needs and importlib.util.find_spec("onnx") is None:
        pytest.skip("making a model with a wrong contract needs onnx (the train extra)")
    outcome = run_fault(fault, small_city.root, tmp_path, baseline)
    said = "\n".join(outcome.lines)
    assert "Traceback" not in outcome.stderr, outcome.stderr
    if fault.outcome == "error":
        assert outcome.exit == 2, outcome.stderr
        assert len(outcome.stderr.strip().splitlines()) == 1, outcome.stderr
        assert fault.says in outcome.stderr
    elif fault.outcome == "failed":
        assert outcome.exit == 1 and fault.says in outcome.stdout, outcome.stdout
    else:
        assert outcome.exit == 0, outcome.stderr
        warnings = [x for x in outcome.lines if x.startswith("warning")]
        if fault.outcome == "warning":
            assert any(fault.says in x for x in warnings), said
        else:
            assert warnings == [], said
            assert fault.says in outcome.stdout, outcome.stdout
            if outcome.changed is not None:  # the same map as the clean city, or near it
                assert outcome.changed <= 0.02 * outcome.cells, outcome.changed
