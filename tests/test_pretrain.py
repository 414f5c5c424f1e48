import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="pre-training needs the train extra (torch)")

from urbanfusion.ingest.rgb_images import read_rgb  # noqa: E402
from urbanfusion.models.training.configs import NetworkConfig, PretrainConfig  # noqa: E402
from urbanfusion.models.training.network import FusionNet  # noqa: E402
from urbanfusion.models.training.pretrain import (  # noqa: E402
    band_statistics,
    chip_grid,
    crop_share,
    evaluate_encoder,
    held_out,
    load_into,
    normalised,
    pretrain,
    random_views,
    save_encoder,
    scene_px,
)
from urbanfusion.models.training.scenes import (  # noqa: E402
    load_scene_sets,
    load_scenes,
    scene_listing,
    stratified_split,
)
from urbanfusion.pipeline.errors import InputFormatError, ModelError  # noqa: E402


def _scene_folder(root, n=24, seed=0, names=("stripes", "dots", "flat")):
    """Three classes a small encoder can tell apart: stripes, dots and flat colour.

    ``names`` renames them (in that order), for a second data set of the same patterns.
    """
    rng = np.random.default_rng(seed)
    for pattern, name in zip(("stripes", "dots", "flat"), names, strict=False):
        (root / name).mkdir(parents=True)
        for i in range(n):
            img = np.full((40, 40, 3), rng.integers(60, 200), np.uint8)
            if pattern == "stripes":
                img[:, :: 4 + i % 3] = 20
            elif pattern == "dots":
                for _ in range(12):
                    cv2.circle(
                        img, tuple(int(v) for v in rng.integers(0, 40, 2)), 2, (250, 250, 250), -1
                    )
            img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / name / f"{i}.png"), img)
    return root


def test_scenes_load_by_class_and_split_by_class(tmp_path):
    scenes = load_scenes(_scene_folder(tmp_path / "s"), side=32)
    assert scenes.images.shape == (72, 3, 32, 32) and scenes.classes == ["dots", "flat", "stripes"]
    # Held as bytes (a quarter of float32's memory), the same pixels read_rgb scales to [0, 1].
    assert scenes.images.dtype == np.uint8
    first = read_rgb(Path(scenes.paths[0]), 32)
    np.testing.assert_array_equal(scenes.images[0] / np.float32(255), first)
    val = stratified_split(scenes.labels, 0.25, seed=0)
    assert [int(val[scenes.labels == k].sum()) for k in range(3)] == [6, 6, 6]
    with pytest.raises(InputFormatError, match="differ"):
        load_scenes(tmp_path / "s", 32, ["a", "b"])
    # Read in parallel, an unreadable file is still one error that names it.
    (tmp_path / "s" / "flat" / "5.png").write_bytes(b"not a picture")
    with pytest.raises(InputFormatError, match=r"5\.png: cannot read this image"):
        load_scenes(tmp_path / "s", 32)


def test_statistics_and_normalised_scenes_over_chunks_equal_those_of_all_scenes_at_once():
    # 300 scenes: more than one chunk, and a last chunk that is not full.
    images = np.random.default_rng(4).integers(0, 256, (300, 3, 8, 8), dtype=np.uint8)
    mean, std = band_statistics(images)
    scaled = images / 255.0
    np.testing.assert_allclose(mean, scaled.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, scaled.std(axis=(0, 2, 3)), rtol=1e-9)
    expected = (scaled - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(normalised(images, mean, std).numpy(), expected, atol=1e-5)


def test_scenes_meet_the_encoder_at_a_chip_s_ground_size():
    # A 400 m scene at a 250 m chip's 32 px: 51 px, so a chip covers 250 m of it; training
    # crops vary that by 1.5x either way, never beyond the whole scene.
    cfg = PretrainConfig()
    assert scene_px(cfg) == 51 and scene_px(PretrainConfig(scene_m=600)) == 77
    lo, hi = crop_share(cfg, 77)
    assert lo == pytest.approx(32 / 77 / 1.5) and hi == pytest.approx(32 / 77 * 1.5)
    assert crop_share(cfg, 51)[1] == pytest.approx(32 / 51 * 1.5) and crop_share(cfg, 40)[1] == 1
    # Evaluation: a 3 x 3 grid of plain slices reaching every corner of the scene.
    scenes = torch.arange(2 * 77 * 77, dtype=torch.float32).reshape(2, 1, 77, 77)
    grid = chip_grid(scenes, 32)
    assert grid.shape == (2, 9, 1, 32, 32)
    torch.testing.assert_close(grid[1, 0], scenes[1, :, :32, :32])
    torch.testing.assert_close(grid[1, 8], scenes[1, :, -32:, -32:])
    torch.testing.assert_close(grid[0, 4], scenes[0, :, 22:54, 22:54])


def test_a_whole_view_is_the_averaged_scene_turned_or_mirrored_and_crops_stay_inside():
    scenes = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    whole = torch.nn.functional.avg_pool2d(scenes, 2)
    views = random_views(scenes, 8, (1.0, 1.0), torch.Generator().manual_seed(0))
    turned = set()
    for view, avg in zip(views, whole, strict=True):
        matches = [
            (k, flip)
            for flip in (False, True)
            for k in range(4)
            if torch.allclose(view, torch.rot90(avg.flip(2) if flip else avg, k, (1, 2)), atol=1e-5)
        ]
        assert matches, "a whole-scene view must be an exact turn or mirror of the 2x2 average"
        turned.add(matches[0])
    assert len(turned) > 4  # each scene gets its own turn and mirror
    # A crop of a constant scene with a bright border never samples the border or beyond.
    framed = torch.zeros(4, 1, 32, 32)
    framed[..., 0, :] = framed[..., -1, :] = framed[..., :, 0] = framed[..., :, -1] = 1
    crops = random_views(framed, 8, (0.3, 0.6), torch.Generator().manual_seed(2))
    assert float(crops.max()) < 0.5


def test_the_held_out_scenes_do_not_move_with_the_seed_and_are_never_trained_on(tmp_path):
    scenes = load_scenes(_scene_folder(tmp_path / "s", n=10), side=16)
    cfg = PretrainConfig(side=8, epochs=1, batch=8, image_width=16, features=16)
    a = pretrain(scenes, cfg)
    b = pretrain(scenes, cfg.model_copy(update={"seed": 3, "val_fraction": 0.2}))
    assert a["test"]["n"] == b["test"]["n"] == 6  # 2 of each class's 10
    assert a["test_scenes"] == b["test_scenes"] and len(set(a["test_scenes"])) == 6
    assert b["validation"]["n"] == 6 and not set(b["validation_scenes"]) & set(b["test_scenes"])
    # The band statistics come from the training scenes alone: not the held-out ones.
    train = ~np.isin(scenes.paths, a["test_scenes"])
    kept = scenes.images[train] / 255.0
    np.testing.assert_allclose(a["mean"], kept.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(a["std"], kept.std(axis=(0, 2, 3)), rtol=1e-9)
    with pytest.raises(ModelError, match="no scenes to train"):
        pretrain(scenes, cfg.model_copy(update={"val_fraction": 0.5, "test_fraction": 0.5}))


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    root = _scene_folder(tmp_path_factory.mktemp("scenes") / "s")
    # Width 16: an 8-channel encoder at 32 px crashes torch 2.13's CPU backward on 2 threads.
    cfg = PretrainConfig(side=32, epochs=12, batch=16, image_width=16, features=32)
    state = pretrain(load_scenes(root, 64), cfg)
    path = tmp_path_factory.mktemp("enc") / "encoder.pt"
    save_encoder(path, state)
    return root, path, state


def test_pretraining_learns_the_scenes_and_evaluate_image_prints_json(encoder_file):
    root, path, state = encoder_file
    # The held-out scenes: a fifth of each class, never trained on.
    assert state["test"]["n"] == 15 and state["test"]["overall_accuracy"] > 0.8
    assert state["validation"] is None and state["best_epoch"] == 12  # the schedule's end
    assert evaluate_encoder(path, root)["overall_accuracy"] > 0.8
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "urbanfusion.workflows",
            "evaluate-image",
            str(path),
            str(root),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(proc.stdout)
    assert {"overall_accuracy", "per_class_f1"} <= set(result)
    assert set(result["per_class_f1"]) == {"dots", "flat", "stripes"}


def test_a_pretrained_encoder_loads_into_a_fusion_model_of_the_same_kind(encoder_file):
    _, path, state = encoder_file
    cfg = NetworkConfig(chip_px=16, image_width=16, features=32)
    net = FusionNet(cfg)
    load_into(net.image_encoder, cfg, path)
    for key, value in state["encoder"].items():
        torch.testing.assert_close(net.image_encoder.state_dict()[key], value)
    with pytest.raises(ModelError, match="image_width"):
        load_into(
            FusionNet(NetworkConfig(image_width=32, features=32)).image_encoder,
            NetworkConfig(image_width=32, features=32),
            path,
        )


def test_a_vit_pretrains_on_scenes_and_loads_into_smaller_chips(tmp_path):
    root = _scene_folder(tmp_path / "s", n=8)
    cfg = PretrainConfig(side=32, epochs=2, batch=16, image_encoder="vit", features=32)
    state = pretrain(load_scenes(root, 64), cfg)
    path = tmp_path / "vit.pt"
    save_encoder(path, state)
    small = NetworkConfig(image_encoder="vit", chip_px=16, features=32)
    net = FusionNet(small)
    load_into(net.image_encoder, small, path)  # 4 x 4 patches at 32 px, 2 x 2 at 16 px
    assert net.image_encoder.pos.shape == (1, 1 + 4, 32)
    torch.testing.assert_close(net.image_encoder.pos[:, 0], state["encoder"]["pos"][:, 0])


def test_a_subset_of_the_classes_is_scored_among_its_own_classes_only(encoder_file, tmp_path):
    root, path, _ = encoder_file
    subset = tmp_path / "held" / "two"
    subset.mkdir(parents=True)
    for name in ("dots", "flat"):
        (subset / name).symlink_to(root / name)
    result = evaluate_encoder(path, subset)
    assert set(result["per_class_f1"]) == {"dots", "flat"} and result["n"] == 48
    assert np.asarray(result["confusion"]).shape == (2, 2)  # stripes is never an answer
    (subset / "forest").mkdir()
    cv2.imwrite(str(subset / "forest" / "0.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InputFormatError, match=r"forest are not classes of the encoder's"):
        evaluate_encoder(path, subset)


def test_several_folders_pretrain_one_encoder_with_a_head_each(tmp_path):
    aid = _scene_folder(tmp_path / "aid", n=10)
    other = _scene_folder(tmp_path / "rsscn7", n=10, seed=1, names=("lines", "spots"))
    scenes = load_scene_sets([aid, other], 16)
    assert [(s.name, s.classes, s.offset) for s in scenes.spaces] == [
        ("aid", ("dots", "flat", "stripes"), 0),
        ("rsscn7", ("lines", "spots"), 3),
    ]
    cfg = PretrainConfig(side=8, epochs=1, batch=8, image_width=16, features=16)
    state = pretrain(scenes, cfg)
    assert state["spaces"] == [
        {"name": "aid", "classes": ["dots", "flat", "stripes"]},
        {"name": "rsscn7", "classes": ["lines", "spots"]},
    ]
    assert state["head"]["1.weight"].shape == (5, 16)
    assert set(state["test"]["per_class_f1"]) == {
        "aid/dots",
        "aid/flat",
        "aid/stripes",
        "rsscn7/lines",
        "rsscn7/spots",
    }
    # A data set's held-out scenes are the same alone or beside another set: the split a
    # real-pixel test city is built from does not move.
    paths, labels, _ = scene_listing(aid)
    alone = {str(p) for p, t in zip(paths, held_out(labels, 0.2), strict=True) if t}
    assert {p for p in state["test_scenes"] if "/aid/" in p} == alone
    path = tmp_path / "e.pt"
    save_encoder(path, state)
    assert evaluate_encoder(path, other)["n"] == 20  # the second head scores its own folder


def test_pretrain_image_s_defaults_are_the_recipe_s():
    # The command spells its defaults out (no torch import for --help); they must not drift.
    import typer

    from urbanfusion.workflows.cli import app

    params = {
        p.name: p.default for p in typer.main.get_command(app).commands["pretrain-image"].params
    }
    cfg = PretrainConfig()
    assert (params["epochs"], params["side"], params["chip_m"], params["scene_m"]) == (
        cfg.epochs,
        cfg.side,
        cfg.chip_m,
        cfg.scene_m,
    )
