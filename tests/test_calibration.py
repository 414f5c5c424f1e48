"""Calibrated probabilities and the in-domain score: fitted right, stored, used by runs."""

import numpy as np
import pytest

from urbanfusion.models.calibration import (
    DomainModel,
    calibration_error,
    fit_temperature,
    kth_largest,
    softmax,
)
from urbanfusion.models.inference import Predictor
from urbanfusion.models.shipped import SHIPPED_MODEL, SHIPPED_TEACHER
from urbanfusion.pipeline.errors import ModelError


def _overconfident(n=4000, temperature=2.5, seed=0):
    """Logits whose labels are drawn from softmax(logits / temperature): T is the truth."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, 5))
    p = softmax(logits, temperature).astype(np.float64)
    labels = np.array([rng.choice(5, p=row / row.sum()) for row in p])
    return logits, labels


def test_the_fitted_temperature_is_the_one_the_labels_come_from():
    logits, labels = _overconfident()
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(2.5, rel=0.1)
    before = calibration_error(softmax(logits), labels)
    after = calibration_error(softmax(logits, t), labels)
    assert after < before / 3 and after < 0.03
    assert (softmax(logits, t).argmax(1) == logits.argmax(1)).all()  # the map does not change


def test_the_in_domain_radius_keeps_95_percent_of_held_out_cells_and_not_other_data():
    # Embeddings like a branch's: after a ReLU, driven by a few factors.
    rng = np.random.default_rng(1)
    basis = rng.normal(0, 1, (8, 64))

    def draw(n, factors=basis):
        return np.maximum(rng.normal(0, 1, (n, 8)) @ factors + rng.normal(0, 0.1, (n, 64)), 0)

    model = DomainModel.fit(draw(3000), draw(1000))
    assert np.mean(model.score(draw(5000)) <= 1) == pytest.approx(0.95, abs=0.02)
    other = draw(1000, rng.normal(0, 1, (8, 64)))  # another kind of input
    assert np.mean(model.score(other) <= 1) < 0.05
    noisy = np.maximum(draw(1000) + rng.normal(0, 2.0, (1000, 64)), 0)  # new directions
    assert np.mean(model.score(noisy) <= 1) < 0.05


def test_a_cell_typical_of_a_distant_class_is_in_domain_and_one_between_classes_is_not():
    # Two classes far apart: one Gaussian around both would call their typical cells far (and
    # the empty middle near); the nearest training embeddings do not.
    rng = np.random.default_rng(2)
    centres = rng.normal(0, 1, (2, 32)) * 3

    def draw(n, which):
        return centres[which] + rng.normal(0, 0.3, (n, 32))

    train = np.concatenate([draw(1000, 0), draw(1000, 1)])
    model = DomainModel.fit(train, np.concatenate([draw(200, 0), draw(200, 1)]))
    assert np.mean(model.score(draw(500, 1)) <= 1) > 0.9
    middle = (centres[0] + centres[1]) / 2 + rng.normal(0, 0.3, (500, 32))
    assert np.mean(model.score(middle) <= 1) < 0.05


def test_in_domain_embeddings_survive_the_model_file_and_a_damaged_or_older_entry_is_one_error():
    rng = np.random.default_rng(3)
    model = DomainModel.fit(rng.normal(0, 1, (300, 16)), rng.normal(0, 1, (100, 16)))
    fields, blob = model.to_contract()
    again = DomainModel.from_contract(fields, blob, "m.onnx")
    x = rng.normal(0, 1, (50, 16))
    np.testing.assert_array_equal(again.score(x), model.score(x))
    with pytest.raises(ModelError, match="hold 12 bytes, not the 9600"):
        DomainModel.from_contract(fields, blob[:16], "m.onnx")
    with pytest.raises(ModelError, match="in-domain score is damaged"):
        DomainModel.from_contract({**fields, "cells": None}, blob, "m.onnx")
    with pytest.raises(ModelError, match="in-domain score is damaged"):
        DomainModel.from_contract(fields, "not base64!", "m.onnx")
    # Fields that read but cannot score: a neighbour beyond the embeddings, no radius.
    with pytest.raises(ModelError, match="damaged \\(k 301 of 300 embeddings"):
        DomainModel.from_contract({**fields, "k": 301}, blob, "m.onnx")
    with pytest.raises(ModelError, match="in-domain score is damaged"):
        DomainModel.from_contract({**fields, "threshold": 0.0}, blob, "m.onnx")
    older = {"mean": [0.0], "components": [[1.0]], "variances": [1.0], "residual": 1.0}
    with pytest.raises(ModelError, match="earlier urbanfusion; refit it with `urbanfusion calib"):
        DomainModel.from_contract({**older, "threshold": 1.0}, None, "m.onnx")


@pytest.mark.parametrize("path", [SHIPPED_MODEL, SHIPPED_TEACHER], ids=["default", "teacher"])
def test_the_shipped_models_are_calibrated_and_score_their_domain(path):
    predictor = Predictor(path)
    c = predictor.contract
    assert predictor.scored and c.temperature > 0
    assert set(c.domain) == {"image", "activity"}
    assert c.calibration["ece_after"] < c.calibration["ece_before"]
    assert c.calibration["nll_after"] <= c.calibration["nll_before"]


def test_the_teacher_was_overconfident_and_its_distilled_student_much_less():
    # Distillation from calibrated, softened predictions leaves the student near T = 1.
    teacher = Predictor(SHIPPED_TEACHER).contract.temperature
    student = Predictor(SHIPPED_MODEL).contract.temperature
    assert teacher > 1 and abs(student - 1) < abs(teacher - 1)


def test_calibrating_a_trained_model_changes_no_class_and_scores_every_cell(tmp_path):
    pytest.importorskip("torch", reason="training needs the train extra (torch)")
    from tests.test_model import _tiny_data
    from urbanfusion.models.training.configs import TrainConfig
    from urbanfusion.models.training.export import calibrate_onnx
    from urbanfusion.models.training.train import block_split, train_and_export

    data = _tiny_data(160)
    path = tmp_path / "m.onnx"
    cfg = TrainConfig(epochs=3, batch=32)
    train_and_export(data, path, cfg, quiet=True)  # calibrates by itself
    model = Predictor(path)
    assert model.scored and model.contract.temperature != 1.0
    cells = model.predict_cells(data.chips, data.activity, data.has_activity)
    assert np.isfinite(cells.domain).all() and np.allclose(cells.prob.sum(1), 1, atol=1e-5)
    raw = model.predict(*_prepared(model, data))
    assert (cells.prob.argmax(1) == raw.argmax(1)).all()
    # Calibrating again gives the same contract: no hidden state, no randomness.
    again = calibrate_onnx(path, data, block_split(data.blocks, 0.2, 0), tmp_path / "m2.onnx")
    assert again.temperature == pytest.approx(model.contract.temperature)


def _prepared(model, data):
    from urbanfusion.preprocess.chips import image_inputs

    c = model.contract
    image, has_image = image_inputs(data.chips, np.array(c.image_mean), np.array(c.image_std))
    return image, data.activity, has_image, data.has_activity


def test_calibrating_a_file_that_is_no_model_or_without_validation_cells_is_one_error(tmp_path):
    pytest.importorskip("onnx", reason="calibration needs the train extra (onnx)")
    from tests.test_model import _tiny_data
    from urbanfusion.models.training.export import calibrate_onnx
    from urbanfusion.pipeline.errors import ModelError

    data = _tiny_data(40)
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    with pytest.raises(ModelError, match="is it an ONNX file"):
        calibrate_onnx(junk, data, np.arange(40) % 5 == 0, tmp_path / "out.onnx")
    with pytest.raises(ModelError, match="both to fit and to validate"):
        calibrate_onnx(SHIPPED_MODEL, data, np.zeros(40, bool), tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_a_model_scored_by_an_earlier_urbanfusion_is_refused_until_calibrate_refits_it(tmp_path):
    onnx = pytest.importorskip("onnx", reason="calibration needs the train extra (onnx)")
    import json
    from dataclasses import replace

    from tests.faults import _older_domain
    from tests.test_model import _tiny_data
    from urbanfusion.models.contract import METADATA_KEY
    from urbanfusion.models.training.export import calibrate_onnx

    proto = onnx.load(str(SHIPPED_MODEL))
    (meta,) = [m for m in proto.metadata_props if m.key == METADATA_KEY]
    contract = json.loads(meta.value)
    meta.value = json.dumps({**contract, **_older_domain(contract)})
    older = tmp_path / "older.onnx"
    onnx.save(proto, str(older))
    tiny = _tiny_data(160)
    chips = tiny.chips.repeat(2, axis=2).repeat(2, axis=3)  # the shipped model reads 32 px
    data = replace(tiny, chips=chips, chip_px=32)
    with pytest.raises(ModelError, match="earlier urbanfusion; refit it with `urbanfusion calib"):
        Predictor(older).predict_cells(data.chips, data.activity, data.has_activity)
    refitted = tmp_path / "refitted.onnx"
    calibrate_onnx(older, data, np.arange(160) % 5 == 0, refitted)
    cells = Predictor(refitted).predict_cells(data.chips, data.activity, data.has_activity)
    assert np.isfinite(cells.domain).all()


@pytest.mark.parametrize(
    ("m", "k"),
    [
        *[(7, 1), (7, 7), (511, 10), (512, 1), (512, 10), (512, 64), (512, 200)],
        *[(4096, 1), (4096, 10), (4096, 64), (4100, 10), (4100, 200)],
    ],
)
def test_the_kth_largest_of_each_row_is_exact_for_any_width_and_ties(m, k):
    rng = np.random.default_rng(m * 1000 + k)
    values = rng.standard_normal((37, m)).astype(np.float32)
    values[:, : m // 3] = np.round(values[:, : m // 3])  # ties, as float16 embeddings give
    expected = np.sort(values, axis=1)[:, m - k]
    np.testing.assert_array_equal(kth_largest(values, k), expected)
