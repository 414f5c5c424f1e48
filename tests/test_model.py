import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training tests need the train extra (torch)")

from urbanfusion.models.classes import CLASS_NAMES  # noqa: E402
from urbanfusion.models.contract import METADATA_KEY, ModelContract  # noqa: E402
from urbanfusion.models.dataset import CellData  # noqa: E402
from urbanfusion.models.inference import SHIPPED_MODEL, Predictor  # noqa: E402
from urbanfusion.models.training.configs import NetworkConfig, TrainConfig  # noqa: E402
from urbanfusion.models.training.export import PARITY_TOLERANCE, export_onnx, parity, sample_inputs  # noqa: E402
from urbanfusion.models.training.network import FusionNet  # noqa: E402
from urbanfusion.models.training.train import block_split, train  # noqa: E402
from urbanfusion.pipeline.errors import InputFormatError, InputNotFoundError, ModelError  # noqa: E402

CONTRACT = ModelContract.for_urfc(
    bands=[1, 2, 3], image_mean=[0.5] * 3, image_std=[0.2] * 3, chip_px=16, cell_size_m=250.0
)


def _tiny_data(n: int = 120, seed: int = 0) -> CellData:
    """Separable toy cells: the class shows in image brightness and in the activity peak hour."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    chips = (rng.random((n, 3, 16, 16)) * 0.2 + labels[:, None, None, None] * 0.3).astype(
        np.float32
    )
    activity = -np.ones((n, 7, 24), np.float32)
    activity[np.arange(n), :, labels * 8] = 0.0
    return CellData(
        chips,
        activity,
        np.ones(n, np.float32),
        labels,
        np.arange(n) // 4,
        np.zeros(n, np.int64),
        [1, 2, 3],
        16,
        250.0,
    )


def _tiny_net(**changes):
    """A network small enough to train on the toy cells in seconds."""
    return NetworkConfig(chip_px=16, image_width=8, activity_width=4, features=16, **changes)


def test_export_matches_torch_within_1e4_on_256_cells(tmp_path):
    torch.manual_seed(0)
    net = FusionNet(NetworkConfig(chip_px=16))
    path = tmp_path / "m.onnx"
    diff = export_onnx(net, CONTRACT, path)
    assert diff < PARITY_TOLERANCE
    assert parity(net, path, CONTRACT, n=256) < PARITY_TOLERANCE
    p = Predictor(path)
    assert p.contract == CONTRACT
    shapes = {i.name: i.shape for i in p.session.get_inputs()}
    assert shapes["image"][1:] == [3, 16, 16] and isinstance(
        shapes["image"][0], str
    )  # only batch dynamic
    assert shapes["activity"][1:] == [7, 24]


def test_a_missing_modality_is_ignored_not_faked():
    torch.manual_seed(0)
    net = FusionNet(NetworkConfig(chip_px=16)).eval()
    image, activity, _, has_activity = (torch.from_numpy(a) for a in sample_inputs(CONTRACT, 8))
    no_image = torch.zeros(8, 1)
    with torch.no_grad():
        a = net(image, activity, no_image, has_activity)
        b = net(image * 5 + 3, activity, no_image, has_activity)
    torch.testing.assert_close(a, b)


def test_blocked_split_keeps_blocks_together():
    blocks = np.repeat(np.arange(50), 16)
    val = block_split(blocks, 0.2, seed=3)
    for b in np.unique(blocks):
        assert len(set(val[blocks == b])) == 1
    assert 0.1 < val.mean() < 0.3
    assert (val == block_split(blocks, 0.2, seed=3)).all()


def test_training_is_deterministic_for_a_seed_and_learns():
    data = _tiny_data()
    cfg = TrainConfig(
        epochs=15,
        batch=32,
        seed=1,
        network=NetworkConfig(chip_px=16, image_width=8, activity_width=4, features=16),
    )
    a = train(data, list(CLASS_NAMES), cfg, quiet=True)
    b = train(data, list(CLASS_NAMES), cfg, quiet=True)
    for (ka, va), (_, vb) in zip(
        a.model.state_dict().items(), b.model.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(va, vb, msg=ka)
    assert a.validation["overall_accuracy"] > 0.8


def test_a_file_without_the_contract_is_refused(tmp_path):
    net = torch.nn.Linear(3, 2).eval()
    path = tmp_path / "plain.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3),), str(path), dynamo=True, external_data=False)
    with pytest.raises(ModelError, match=METADATA_KEY):
        Predictor(path)
    bad = tmp_path / "junk.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load"):
        Predictor(bad)


def test_the_shipped_model_is_small_self_describing_and_not_trained_on_the_demo_city():
    assert SHIPPED_MODEL.stat().st_size < 5 * 2**20
    c = Predictor(SHIPPED_MODEL).contract
    assert c.classes == list(CLASS_NAMES) and c.chip_px == 32
    assert "demo-city-" in c.trained_on and "demo-city-7," not in c.trained_on + ","


def test_inference_does_not_import_torch():
    code = (
        "import sys, numpy as np, json\n"
        "from urbanfusion.models.inference import Predictor, SHIPPED_MODEL\n"
        "import urbanfusion.workflows.run, urbanfusion.workflows.demo, urbanfusion.workflows.cli\n"
        "p = Predictor(SHIPPED_MODEL)\n"
        "z, o = np.zeros, np.ones\n"
        "x = [z((2, 3, 32, 32), 'f4'), z((2, 7, 24), 'f4'), o((2, 1), 'f4'), o((2, 1), 'f4')]\n"
        "p.predict(*x)\n"
        "print(json.dumps('torch' in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) is False


VARIANTS = [
    ("resnext", "bilstm", "bottleneck"),
    ("vit", "mlp", "cross"),
    ("resnet", "bilstm", "cross"),
    ("vit", "conv", "bottleneck"),
]


def test_class_weights_favour_rare_classes_with_mean_one():
    from urbanfusion.models.training.losses import class_weights

    counts = np.array([1000, 100, 10, 0])
    for loss in ("ce", "balanced"):
        w = class_weights(counts, loss)
        assert w[3] == 0 and w[0] < w[1] < w[2] and abs(w[:3].mean() - 1) < 1e-9


@pytest.mark.parametrize(("loss", "fusion"), [("focal", "bottleneck"), ("balanced", "cross")])
def test_other_losses_and_fusions_train(loss, fusion):
    data = _tiny_data()
    net = _tiny_net(fusion=fusion)
    cfg = TrainConfig(epochs=15, batch=32, seed=1, network=net, loss=loss, consistency=0.1)
    result = train(data, list(CLASS_NAMES), cfg, quiet=True)
    assert result.validation["overall_accuracy"] > 0.8


@pytest.mark.parametrize(
    ("change", "tensor"),
    [({"days": 5}, "activity"), ({"chip_px": 48}, "image")],
)
def test_a_model_whose_graph_differs_from_its_contract_is_refused_when_opened(
    tmp_path, change, tensor
):
    import onnx

    model = onnx.load(str(SHIPPED_MODEL))
    (meta,) = [m for m in model.metadata_props if m.key == METADATA_KEY]
    contract = json.loads(meta.value)
    contract.update(change)
    meta.value = json.dumps(contract)
    path = tmp_path / "lying.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match=f"its graph has {tensor}"):
        Predictor(path)


def test_a_model_path_that_is_a_folder_says_so(tmp_path):
    with pytest.raises(InputNotFoundError, match="is a folder"):
        Predictor(tmp_path)


def _leaks(net, contract):
    """Largest change of the output when the values of a masked input change (both inputs)."""
    image, act, _, _ = (torch.from_numpy(a) for a in sample_inputs(contract, 8))
    one, none = torch.ones(8, 1), torch.zeros(8, 1)
    with torch.no_grad():
        image_missing = (net(image, act, none, one) - net(image * 3 + 1, act, none, one)).abs()
        activity_missing = (net(image, act, one, none) - net(image, act * 2 - 1, one, none)).abs()
    return float(image_missing.max()), float(activity_missing.max())


# Every image encoder, activity encoder, fusion and option is exported at least once, the
# shipped model's combination (resnet + convlstm + concat) among them. Not every pair: each
# export costs several seconds, and the suite has ten minutes.
ARCHITECTURES = [
    *((image, activity, fusion, {}) for image, activity, fusion in VARIANTS[:2]),
    ("resnet", "convlstm", "concat", {}),
    ("vit", "conv", "bottleneck", {"double_fusion": True}),
    ("resnet", "bilstm", "bottleneck", {"pyramid": True, "exchange": True}),
    ("resnext", "mlp", "concat", {"exchange": True, "align_dim": 16}),
    ("resnext", "convlstm", "cross", {"pyramid": True, "exchange": True, "align_dim": 16}),
    ("resnet", "conv", "bottleneck", {"exchange": True, "double_fusion": True}),
]


@pytest.mark.parametrize(("image", "activity", "fusion", "options"), ARCHITECTURES)
def test_every_architecture_and_option_exports_with_parity_and_no_missing_input_leaks(
    tmp_path, image, activity, fusion, options
):
    torch.manual_seed(0)
    cfg = NetworkConfig(
        chip_px=16,
        image_width=16,
        activity_width=8,
        features=32,
        image_encoder=image,
        activity_encoder=activity,
        fusion=fusion,
        **options,
    )
    net = FusionNet(cfg).eval()
    if net.exchange is not None:  # as after training: some scales shrunk, channels exchanged
        with torch.no_grad():
            net.exchange.image_norm.weight[:8] = 0.0
            net.exchange.activity_norm.weight[-8:] = 0.01
    path = tmp_path / "m.onnx"
    assert export_onnx(net, CONTRACT, path) < PARITY_TOLERANCE
    assert _leaks(net, CONTRACT) == (0.0, 0.0)
    described = cfg.describe()  # what a trained model's contract says
    for option, words in (
        ("pyramid", "pyramid"),
        ("exchange", "exchange"),
        ("align_dim", "align"),
        ("double_fusion", "double fusion"),
    ):
        assert (words in described) == (option in options), described


def test_the_research_losses_train_and_record_every_head():
    data = _tiny_data()
    net = _tiny_net(activity_encoder="convlstm", exchange=True)
    # The ConvLSTM starts slower than the convolutions: no early stop on this toy.
    cfg = TrainConfig(epochs=20, batch=32, seed=1, patience=20, network=net, distill=0.5, align=0.1)
    result = train(data, list(CLASS_NAMES), cfg, quiet=True)
    assert result.validation["overall_accuracy"] > 0.8
    assert result.model.align is not None  # align asked for, projections made
    last = result.history[-1]
    assert {"val_fused", "val_image_only", "val_activity_only"} <= set(last)
    # Early stopping kept the epoch best on the mean of the three.
    best = result.history[result.best_epoch - 1]
    mean = np.mean([best["val_fused"], best["val_image_only"], best["val_activity_only"]])
    assert best["val_accuracy"] == pytest.approx(mean)
    assert best["val_accuracy"] == max(h["val_accuracy"] for h in result.history)


def test_a_vit_pretrained_at_another_size_loads_with_resized_positions(tmp_path):

    from urbanfusion.models.training.network import ImageEncoder
    from urbanfusion.models.training.pretrain import load_into, resize_positions, save_encoder

    big = NetworkConfig(image_encoder="vit", chip_px=64, features=32)
    torch.manual_seed(0)
    encoder = ImageEncoder(big)
    path = tmp_path / "vit.pt"
    save_encoder(path, {"encoder": encoder.state_dict(), "network": big.model_dump()})
    small = NetworkConfig(image_encoder="vit", chip_px=32, features=32)
    net = FusionNet(small)
    load_into(net.image_encoder, small, path)
    pos = net.image_encoder.pos
    assert pos.shape == (1, 1 + 16, 32)
    torch.testing.assert_close(pos[:, 0], encoder.pos[:, 0])  # the class token's is kept
    torch.testing.assert_close(net.image_encoder.embed.weight, encoder.embed.weight)
    assert resize_positions(encoder.pos, encoder.pos.shape[1]) is encoder.pos
    # A smooth grid stays smooth: the resized grid's mean is the original's, near enough.
    assert abs(float(pos[:, 1:].mean() - encoder.pos[:, 1:].mean())) < 0.01


@pytest.mark.parametrize("use_image", [True, False])
def test_a_single_source_model_trains_exports_and_calibrates(tmp_path, use_image):
    from urbanfusion.models.training.train import train_and_export

    data = _tiny_data()
    net = _tiny_net(use_image=use_image, use_activity=not use_image)
    path = tmp_path / "single.onnx"
    train_and_export(data, path, TrainConfig(epochs=3, batch=32, network=net), quiet=True)
    predictor = Predictor(path)
    # Its branch head is not on its output's path, so the export drops it: a temperature, no
    # embeddings, so no in-domain score.
    assert predictor.scored and predictor.branches == []
    assert predictor.contract.domain == {} and predictor.contract.temperature > 0
    cells = predictor.predict_cells(data.chips, data.activity, data.has_activity)
    assert cells.prob.shape == (len(data), len(CLASS_NAMES)) and np.isfinite(cells.prob).all()
    assert np.isnan(cells.domain).all()
    # The unused branch's encoder never runs, so the file does not carry it.
    import onnx

    names = {t.name for t in onnx.load(str(path)).graph.initializer}
    unused, used = ("activity", "image") if use_image else ("image", "activity")
    assert not any(n.startswith(f"{unused}_encoder.") for n in names)
    assert any(n.startswith(f"{used}_encoder.") for n in names)


def test_labels_in_a_single_block_are_one_clear_error_not_a_crash():
    one_block = _tiny_data().subset(np.arange(4))  # _tiny_data's blocks are 4 cells each
    cfg = TrainConfig(epochs=1, batch=4, network=_tiny_net())
    with pytest.raises(InputFormatError, match="all lie in one block of 4 x 4 cells"):
        train(one_block, list(CLASS_NAMES), cfg, quiet=True)


def test_labels_that_leave_classes_out_say_what_training_does_with_them():
    from urbanfusion.workflows.labelled import coverage_note

    data = _tiny_data()  # residential, school and industrial only
    fine = coverage_note(data, fine_tuning=True)
    assert fine is not None and "no cell of railway_station" in fine and "unlearns" in fine
    fresh = coverage_note(data, fine_tuning=False)
    assert fresh is not None and "never predict them" in fresh
    every = data.subset(np.arange(9))
    every.labels = np.arange(9)
    assert coverage_note(every, fine_tuning=True) is None


def test_the_teachers_loss_pulls_a_student_towards_the_teachers_softened_predictions():
    from urbanfusion.models.training.losses import teacher_loss

    teacher = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 0.0]])
    assert float(teacher_loss(teacher.clone(), teacher, 3.0)) == pytest.approx(0.0, abs=1e-6)
    student = torch.zeros(2, 3, requires_grad=True)
    loss = teacher_loss(student, teacher, 3.0)
    loss.backward()
    assert float(loss) > 0
    # A step against the gradient raises each cell's teacher's class.
    assert (student.grad.argmin(dim=1) == teacher.argmax(dim=1)).all()


def test_a_student_trains_from_a_teacher_model_and_a_teacher_of_other_chips_is_refused(
    tmp_path,
):
    from urbanfusion.models.training.train import teacher_logits, train_and_export

    data = _tiny_data(n=160)
    teacher = tmp_path / "teacher.onnx"
    train_and_export(
        data, teacher, TrainConfig(epochs=2, batch=32, seed=1, network=_tiny_net()), quiet=True
    )
    said = Predictor(teacher).predict_cells(data.chips, data.activity, data.has_activity).prob
    # The student's targets are the teacher's calibrated predictions of the same cells.
    np.testing.assert_allclose(np.exp(teacher_logits(teacher, data).numpy()), said, atol=1e-6)
    student_cfg = TrainConfig(
        epochs=2,
        batch=32,
        seed=2,
        network=_tiny_net(image_encoder="resnet", fusion="concat"),
        teacher=str(teacher),
    )
    result = train(data, list(CLASS_NAMES), student_cfg, quiet=True)
    assert result.checkpoint.train_config["teacher"] == str(teacher)
    other = CellData(**{**data.__dict__, "chips": data.chips[:, :, :8, :8], "chip_px": 8})
    with pytest.raises(ModelError, match="chips of 16 px but the data has 3-band chips of 8 px"):
        train(other, list(CLASS_NAMES), student_cfg.model_copy(update={"epochs": 1}), quiet=True)
