"""Training and evaluation from a URFC-layout folder (generated files plus the real images)."""

import datetime as dt
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from urbanfusion.ingest.urfc import FIRST_DAY, N_DAYS, parse_visits
from urbanfusion.models.dataset import load_urfc_folder
from urbanfusion.preprocess.activity import activity_inputs
from urbanfusion.workflows.cli import app

CLASSES = 9


def _visits(rng: np.random.Generator, category: int, users: int) -> str:
    """Visit lines in the URFC format whose busy hours depend on the category."""
    peak = (2 * category + 6) % 24
    lines = []
    for _ in range(users):
        days = np.sort(rng.choice(N_DAYS, rng.integers(1, 12), replace=False))
        entries = []
        for d in days:
            hours = sorted({int((peak + rng.normal(0, 1.5)) % 24) for _ in range(3)})
            date = (FIRST_DAY + dt.timedelta(days=int(d))).strftime("%Y%m%d")
            entries.append(f"{date}&" + "|".join(f"{h:02d}" for h in hours))
        lines.append(f"{rng.integers(0, 2**63):016x}\t" + ",".join(entries))
    return "\n".join(lines) + "\n"


def _image(rng: np.random.Generator, category: int) -> np.ndarray:
    """A 100 x 100 BGR picture whose colour and stripes depend on the category."""
    hue = np.array([40 + 20 * category, 200 - 15 * category, 90 + 10 * (category % 4)])
    img = np.clip(hue + rng.normal(0, 20, (100, 100, 3)), 0, 255)
    img[:, :: 3 + category] *= 0.5
    return img.astype(np.uint8)


def write_urfc_folder(root: Path, per_class: int, seed: int) -> Path:
    """The competition layout: ``train_image/00C/AreaID_00C.jpg`` and ``train_visit/*.txt``."""
    rng = np.random.default_rng(seed)
    area = 100
    for category in range(1, CLASSES + 1):
        for _ in range(per_class):
            name = f"{area:06d}_{category:03d}"
            (root / "train_image" / f"{category:03d}").mkdir(parents=True, exist_ok=True)
            (root / "train_visit").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(
                str(root / "train_image" / f"{category:03d}" / f"{name}.jpg"), _image(rng, category)
            )
            (root / "train_visit" / f"{name}.txt").write_text(_visits(rng, category, 15))
            area += 1
    return root


def test_a_urfc_folder_becomes_labelled_cells_paired_by_name(tmp_path):
    root = write_urfc_folder(tmp_path / "urfc", per_class=2, seed=0)
    # One area with only an image, one with only visits.
    cv2.imwrite(str(root / "999001_005.jpg"), _image(np.random.default_rng(1), 5))
    (root / "999002_007.txt").write_text(_visits(np.random.default_rng(2), 7, 4))
    (root / "999003_002.txt").write_text("u\t20181001&08,20190401&10,2018x&1\n")
    data = load_urfc_folder(root)
    assert data.notes == [
        f"{root}: 2 visit entries were malformed or outside the 182 days from 2018-10-01 and "
        "were not counted",
        f"{root}: 2 areas have no image and 1 no visit file; that input is flagged missing for "
        "them",
    ]
    assert len(data) == 2 * CLASSES + 3 and data.chip_px == 100 and data.bands == [1, 2, 3]
    assert np.bincount(data.labels).tolist() == [2, 3, 2, 2, 3, 2, 3, 2, 2]
    row = int(np.flatnonzero(data.blocks == 999001)[0])
    assert data.has_activity[row] == 0 and not np.isnan(data.chips[row]).any()
    row = int(np.flatnonzero(data.blocks == 999002)[0])
    assert data.has_activity[row] == 1 and np.isnan(data.chips[row]).all()
    # The activity is the run's weekly profile of the parsed visits, Monday first.
    text = (root / "train_visit" / "000100_001.txt").read_text()
    counts = parse_visits(text).counts[None]
    expected, _ = activity_inputs(counts, np.ones(counts.shape, bool), np.arange(N_DAYS) % 7)
    np.testing.assert_allclose(data.activity[data.blocks == 100], expected, atol=1e-6)


def test_the_real_urfc_images_load_with_their_labels(tmp_path, shared_data):
    root = tmp_path / "real"
    shutil.copytree(shared_data / "urfc" / "images", root)
    for image in root.glob("*.jpg"):  # the real set ships no visit files; write some
        category = int(image.stem.split("_")[1])
        image.with_suffix(".txt").write_text(_visits(np.random.default_rng(3), category, 5))
    data = load_urfc_folder(root)
    assert data.labels.tolist() == [5, 1, 5, 0]  # Park, School, Park, Residential
    assert data.chips.shape == (4, 3, 100, 100) and 0.05 < np.nanmean(data.chips) < 0.95
    assert data.has_activity.tolist() == [1, 1, 1, 1]


def test_train_and_evaluate_on_a_urfc_folder(tmp_path, shared_data):
    root = write_urfc_folder(tmp_path / "urfc", per_class=12, seed=4)
    for image in (shared_data / "urfc" / "images").glob("*.jpg"):
        shutil.copy(image, root / image.name)
        category = int(image.stem.split("_")[1])
        (root / image.with_suffix(".txt").name).write_text(
            _visits(np.random.default_rng(5), category, 15)
        )
    model = tmp_path / "urfc.onnx"
    runner = CliRunner()
    # A small network: this checks the URFC path, not the architecture (the suite's time).
    small = ["--image-encoder", "resnet", "--fusion", "concat", "--image-width", "16"]
    args = ["--out", str(model), "--epochs", "8", "--batch", "16", "--quiet", *small]
    out = runner.invoke(app, ["train", str(root), *args, "--features", "64"])
    assert out.exit_code == 0, out.output
    assert model.is_file() and model.with_suffix(".ckpt").is_file()
    out = runner.invoke(app, ["evaluate", str(model), str(root), "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["n"] == 12 * CLASSES + 4
    # Both sources separate the generated classes, so even a short training is far above chance.
    assert result["overall_accuracy"] > 0.5 and result["ablation"]["signalling_only"] > 0.3


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("picture.jpg", "not a URFC file name"),
        ("000001_010.jpg", "category 10 is not one of 001..009"),
        ("000100_002.txt", "area 000100 also has category"),
    ],
)
def test_badly_named_urfc_files_are_one_line_errors(tmp_path, name, message):
    root = write_urfc_folder(tmp_path / "urfc", per_class=1, seed=0)
    (root / name).write_text("u\t20181001&08\n")
    out = CliRunner().invoke(app, ["train", str(root), "--out", str(tmp_path / "m.onnx")])
    assert out.exit_code == 2 and message in out.output and name in out.output
    assert len(out.output.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


def test_images_of_different_sizes_are_refused(tmp_path):
    root = write_urfc_folder(tmp_path / "urfc", per_class=1, seed=0)
    cv2.imwrite(str(root / "777777_003.jpg"), np.zeros((80, 100, 3), np.uint8))
    out = CliRunner().invoke(app, ["evaluate", "x.onnx", str(root)])
    assert out.exit_code == 2 and "777777_003.jpg: image is 100x80 px" in out.output


def test_evaluating_a_model_of_another_chip_size_is_one_line(tmp_path):
    from urbanfusion.models.inference import SHIPPED_MODEL

    root = write_urfc_folder(tmp_path / "urfc", per_class=1, seed=0)
    out = CliRunner().invoke(app, ["evaluate", str(SHIPPED_MODEL), str(root)])
    assert out.exit_code == 2 and "chips of 32 px but the data has 3-band chips of 100 px" in (
        out.output
    )
    assert len(out.output.strip().splitlines()) == 1
