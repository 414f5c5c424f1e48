"""Training settings validate themselves, from Python as from the command line."""

import pytest
from pydantic import ValidationError

from urbanfusion.models.training.configs import NetworkConfig, PretrainConfig, TrainConfig


@pytest.mark.parametrize(
    ("model", "values", "says"),
    [
        (NetworkConfig, {"activity_encoder": "lstm"}, "'conv', 'bilstm', 'mlp' or 'convlstm'"),
        (NetworkConfig, {"image_encoder": "vit", "pyramid": True}, "needs a convolutional"),
        (NetworkConfig, {"image_encoder": "vit", "chip_px": 20}, "multiple of 8"),
        (NetworkConfig, {"use_activity": False, "exchange": True}, "between the two branches"),
        (NetworkConfig, {"image_width_px": 8}, "Extra inputs are not permitted"),
        (TrainConfig, {"loss": "hinge"}, "'ce', 'balanced' or 'focal'"),
        (TrainConfig, {"align_momentum": 0.9}, "needs the alignment loss"),
        (TrainConfig, {"align_momentum": 1.0, "align": 0.1}, "less than 1"),
        (TrainConfig, {"distill": 0.5, "network": {"use_image": False}}, "two branches"),
        (TrainConfig, {"lr": 0}, "greater than 0"),
        (PretrainConfig, {"image_encoder": "vit", "side": 12}, "multiple of its 8 px"),
    ],
)
def test_a_setting_that_cannot_work_is_refused_from_python(model, values, says):
    with pytest.raises(ValidationError, match=says.replace("(", r"\(").replace(")", r"\)")):
        model(**values)


def test_settings_are_frozen_and_round_trip_through_their_dump():
    cfg = TrainConfig(network=NetworkConfig(activity_encoder="convlstm"), distill=0.5)
    with pytest.raises(ValidationError, match="frozen"):
        cfg.lr = 1.0  # type: ignore[misc]
    assert TrainConfig.model_validate(cfg.model_dump()) == cfg


def test_the_cli_takes_its_choices_and_defaults_from_the_settings():
    from typer.testing import CliRunner

    from urbanfusion.workflows.cli import app

    help_text = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "250"}).output
    shown = " ".join(help_text.split())
    assert "<conv|bilstm|mlp|convlstm>" in shown and "<heads|fused>" in shown
    assert f"[default: {TrainConfig().epochs}]" in shown
    assert f"[default: {NetworkConfig().activity_encoder}]" in shown
