import re

import pytest

torch = pytest.importorskip("torch", reason="checkpoint tests need the train extra (torch)")

from typer.testing import CliRunner  # noqa: E402

from tests.test_model import _tiny_data  # noqa: E402
from urbanfusion.models.classes import CLASS_NAMES  # noqa: E402
from urbanfusion.models.inference import Predictor  # noqa: E402
from urbanfusion.models.training.checkpoint import (  # noqa: E402
    BEFORE_IT_EXISTED,
    flat_settings,
    load_checkpoint,
)
from urbanfusion.models.training.configs import NetworkConfig, TrainConfig  # noqa: E402
from urbanfusion.models.training.export import PARITY_TOLERANCE, parity  # noqa: E402
from urbanfusion.models.training.train import train  # noqa: E402
from urbanfusion.pipeline.errors import ModelError  # noqa: E402
from urbanfusion.workflows.cli import app  # noqa: E402

NET = NetworkConfig(chip_px=16, image_width=8, activity_width=4, features=16)
CFG = TrainConfig(epochs=5, batch=32, seed=2, patience=100, network=NET)


def _stop_after(epochs: int):
    def on_epoch(entry: dict[str, float]) -> None:
        if entry["epoch"] == epochs:
            raise KeyboardInterrupt

    return on_epoch


# ALBEF's momentum encoders and key queue are state outside the model: the checkpoint holds them.
MOMENTUM = CFG.model_copy(update={"align": 0.1, "align_momentum": 0.9, "align_queue": 64})


@pytest.mark.parametrize("cfg", [CFG, MOMENTUM], ids=["plain", "align-momentum"])
def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(tmp_path, cfg):
    data = _tiny_data()
    whole = train(data, list(CLASS_NAMES), cfg, quiet=True, checkpoint=tmp_path / "a.ckpt")
    ckpt = tmp_path / "b.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(data, list(CLASS_NAMES), cfg, quiet=True, checkpoint=ckpt, on_epoch=_stop_after(2))
    assert load_checkpoint(ckpt).loop.epoch == 2
    resumed = train(data, list(CLASS_NAMES), cfg, quiet=True, checkpoint=ckpt, resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4, 5]
    assert resumed.history == whole.history
    for (name, a), (_, b) in zip(
        whole.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert load_checkpoint(ckpt).loop.epoch == 5


def test_resuming_with_other_settings_or_data_is_refused(tmp_path):
    data = _tiny_data()
    ckpt = tmp_path / "c.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(data, list(CLASS_NAMES), CFG, quiet=True, checkpoint=ckpt, on_epoch=_stop_after(1))
    other = CFG.model_copy(update={"lr": 1e-2})
    with pytest.raises(ModelError, match=r"lr was 0\.002"):
        train(data, list(CLASS_NAMES), other, quiet=True, checkpoint=ckpt, resume=True)
    with pytest.raises(ModelError, match="training cells differ"):
        train(_tiny_data(seed=5), list(CLASS_NAMES), CFG, quiet=True, checkpoint=ckpt, resume=True)


def test_export_writes_the_checkpoints_best_model_with_parity(tmp_path):
    ckpt = tmp_path / "d.ckpt"
    result = train(_tiny_data(), list(CLASS_NAMES), CFG, quiet=True, checkpoint=ckpt)
    model = tmp_path / "m.onnx"
    out = CliRunner().invoke(app, ["export", str(ckpt), "--out", str(model)])
    assert out.exit_code == 0, out.output
    assert "parity" in out.output and model.is_file()
    contract = Predictor(model).contract
    assert contract.chip_px == 16 and contract.image_mean == result.image_mean
    assert contract.metrics["best_epoch"] == result.best_epoch
    assert parity(result.model, model, contract) < PARITY_TOLERANCE


@pytest.mark.parametrize("content", [b"not a checkpoint", None])
def test_export_of_a_bad_or_missing_checkpoint_is_one_line(tmp_path, content):
    ckpt = tmp_path / "bad.ckpt"
    if content is not None:
        ckpt.write_bytes(content)
    out = CliRunner().invoke(app, ["export", str(ckpt), "--out", str(tmp_path / "m.onnx")])
    assert out.exit_code == 2
    assert len(out.output.strip().splitlines()) == 1 and str(ckpt) in out.output
    assert not (tmp_path / "m.onnx").exists()


# The training config when checkpoints were first written (urbanfusion.checkpoint/1).
FORMAT_1_SETTINGS = {
    "epochs", "batch", "lr", "weight_decay", "patience", "seed", "aux_weight",
    "modality_dropout", "loss", "image_weights", "focal_gamma", "consistency", "val_fraction",
    "device", "network.bands", "network.chip_px", "network.days", "network.hours",
    "network.classes", "network.image_width", "network.activity_width", "network.features",
    "network.dropout", "network.use_image", "network.use_activity", "network.image_encoder",
    "network.activity_encoder", "network.fusion", "network.heads", "network.bottleneck_tokens",
}  # fmt: skip


def test_every_setting_added_since_format_1_says_what_runs_did_before_it():
    added = set(flat_settings(TrainConfig().model_dump())) - FORMAT_1_SETTINGS
    assert added == set(BEFORE_IT_EXISTED)


def _interrupted_after(epochs: int, ckpt, cfg: TrainConfig = CFG) -> None:
    """A checkpoint of a run on the tiny data stopped after ``epochs``."""
    with pytest.raises(KeyboardInterrupt):
        train(
            _tiny_data(),
            list(CLASS_NAMES),
            cfg,
            quiet=True,
            checkpoint=ckpt,
            on_epoch=_stop_after(epochs),
        )


def _as_if_from_another_version(ckpt, edit) -> None:
    """Rewrite a checkpoint as another version would have written it."""
    state = torch.load(ckpt, weights_only=True)
    edit(state)
    torch.save(state, ckpt)


def _strip_later_settings(state: dict) -> None:
    for key in BEFORE_IT_EXISTED:
        if key.startswith("network."):
            del state["train_config"]["network"][key.removeprefix("network.")]
            del state["network"][key.removeprefix("network.")]
        else:
            del state["train_config"][key]


def test_a_checkpoint_older_than_the_research_options_resumes_with_the_options_it_had(tmp_path):
    data, fused = _tiny_data(), CFG.model_copy(update={"select": "fused"})
    whole = train(data, list(CLASS_NAMES), fused, quiet=True, checkpoint=tmp_path / "a.ckpt")
    ckpt = tmp_path / "old.ckpt"
    _interrupted_after(2, ckpt, fused)
    _as_if_from_another_version(ckpt, _strip_later_settings)
    # Early stopping then looked at the fused accuracy only: today's default would change the run.
    with pytest.raises(ModelError, match="select was 'fused' in the checkpoint, now 'heads'"):
        train(data, list(CLASS_NAMES), CFG, quiet=True, checkpoint=ckpt, resume=True)
    resumed = train(data, list(CLASS_NAMES), fused, quiet=True, checkpoint=ckpt, resume=True)
    assert resumed.history == whole.history
    for (name, a), (_, b) in zip(
        whole.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_a_checkpoint_without_a_setting_nobody_listed_is_refused_by_name(tmp_path):
    ckpt = tmp_path / "c.ckpt"
    _interrupted_after(1, ckpt)
    _as_if_from_another_version(ckpt, lambda state: state["train_config"].pop("consistency"))
    with pytest.raises(ModelError, match="predates the setting consistency"):
        train(_tiny_data(), list(CLASS_NAMES), CFG, quiet=True, checkpoint=ckpt, resume=True)


def _a_setting_from_a_newer_version(state: dict) -> None:
    state["train_config"]["network"]["hologram"] = True
    state["network"]["hologram"] = True


def _a_layer_this_version_lacks(state: dict) -> None:
    for weights in (state["model"], state["best"]):
        weights["image.retired.weight"] = torch.zeros(3)


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (_a_setting_from_a_newer_version, "network.hologram"),
        (_a_layer_this_version_lacks, "image.retired.weight"),
    ],
    ids=["newer-setting", "other-layers"],
)
def test_a_checkpoint_of_another_network_is_refused_by_name_on_resume_and_export(
    tmp_path, edit, named
):
    ckpt = tmp_path / "n.ckpt"
    _interrupted_after(1, ckpt)
    _as_if_from_another_version(ckpt, edit)
    with pytest.raises(ModelError, match=re.escape(named)):
        train(_tiny_data(), list(CLASS_NAMES), CFG, quiet=True, checkpoint=ckpt, resume=True)
    out = CliRunner().invoke(app, ["export", str(ckpt), "--out", str(tmp_path / "m.onnx")])
    assert out.exit_code == 2, out.output
    assert len(out.output.strip().splitlines()) == 1
    assert named in out.output and str(ckpt) in out.output
    assert not (tmp_path / "m.onnx").exists()


def test_fine_tuning_starts_from_a_checkpoint_s_best_weights_and_image_statistics(tmp_path):
    ckpt = tmp_path / "cities.ckpt"
    first = train(_tiny_data(), list(CLASS_NAMES), CFG, quiet=True, checkpoint=ckpt)
    # No epoch at all: the fine-tuned network is the checkpoint's best, on its input scale.
    start = train(
        _tiny_data(seed=3),
        list(CLASS_NAMES),
        CFG.model_copy(update={"epochs": 0, "init": str(ckpt)}),
        quiet=True,
    )
    for (name, a), b in zip(
        first.model.state_dict().items(), start.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    assert start.image_mean == first.image_mean and start.image_std == first.image_std
    # Another network cannot start from it; the message says how to match it.
    wider = CFG.model_copy(
        update={"init": str(ckpt), "network": NET.model_copy(update={"image_width": 16})}
    )
    with pytest.raises(ModelError, match="network options it was trained with"):
        train(_tiny_data(seed=3), list(CLASS_NAMES), wider, quiet=True)
