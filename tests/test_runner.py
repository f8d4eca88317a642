"""The runner: identity, budgets, checkpoint selection on a holdout slice of train, the test split, seeds, the
shared evaluation path of ``run`` and ``eval``, and the instance-model protocol (fill class, max_dets)."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from segbench.cli import main
from segbench.config.run import make_config
from segbench.errors import SegbenchError
from segbench.records.io import load_frame, load_records
from segbench.train.data import build_data, holdout_indices
from segbench.train.runner import run_one
from segbench.weights.store import LocalStore


def _write_split(root, split, n, *, size=24, value=None, seed=0):
    """``n`` random RGB images and 3-class masks under root/<split>/{images,masks}; ``value`` fills the masks."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "masks"):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / split / "images" / f"{i}.png")
        mask = np.full((size, size), value, np.uint8) if value is not None else rng.integers(0, 3, (size, size), dtype=np.uint8)
        Image.fromarray(mask).save(root / split / "masks" / f"{i}.png")


@pytest.fixture
def folder_data(tmp_path):
    """A tiny folder dataset with train (10), val (4) and test (3) splits."""
    root = tmp_path / "data"
    for split, n, seed in (("train", 10, 0), ("val", 4, 1), ("test", 3, 2)):
        _write_split(root, split, n, seed=seed)
    return root


def _folder_config(root, **over):
    return make_config({
        "model": "unet_small", "model_args": {"base_channels": 4, "depth": 2}, "dataset": "folder",
        "data_root": str(root), "dataset_args": {"num_classes": 3}, "epochs": 2, "batch_size": 4, "crop_size": 24,
        "latency_runs": 1, "device": "cpu", **over})


def test_holdout_slice_is_fixed_and_removed_from_training(folder_data):
    cfg = _folder_config(folder_data, select_on="holdout", holdout_images=3)
    assert holdout_indices(cfg, 10) == holdout_indices(cfg, 10) and len(holdout_indices(cfg, 10)) == 3
    other = _folder_config(folder_data, select_on="holdout", holdout_images=3, holdout_seed=5)
    assert holdout_indices(other, 10) != holdout_indices(cfg, 10)
    assert holdout_indices(_folder_config(folder_data), 10) == []  # select_on=final holds nothing out
    data = build_data(cfg, "semantic", need_train=True)
    assert len(data.train.dataset) == 7 and len(data.select.dataset) == 3
    train_files = {data.train.dataset.dataset.pairs[i][0].name for i in data.train.dataset.indices}
    held_files = {data.select.dataset.dataset.pairs[i][0].name for i in data.select.dataset.indices}
    assert not train_files & held_files and len(train_files | held_files) == 10


def test_run_selects_on_holdout_and_scores_the_test_split(tmp_path, folder_data):
    cfg = _folder_config(folder_data, select_on="holdout", holdout_fraction=0.2, recipe="the folder default, untuned")
    record = run_one(cfg, store=LocalStore(tmp_path / "store"), leaderboard=tmp_path / "board", progress=False,
                     log=lambda _: None)
    selection = record["selection"]
    assert selection["checkpoint"] == "holdout" and selection["holdout_images"] == 2 and selection["holdout_seed"] == 0
    assert 1 <= selection["selected_epoch"] <= 2 and len(selection["holdout_indices"]) == 2
    assert record["test_metrics"] is not None and 0.0 <= record["test_metrics"]["miou"] <= 1.0
    assert record["training"]["track"] == "steps" and record["training"]["capped"] is False
    assert record["training"]["budget"] == {"epochs": 2, "steps": 2 * 2}  # 8 images, batches of 4
    frame, problems = load_frame(tmp_path / "board")
    assert problems == [] and frame.loc[0, "test_miou"] == record["test_metrics"]["miou"]
    assert frame.loc[0, "selection"] == "holdout" and selection["recipe"] == "the folder default, untuned"
    assert (frame.loc[0, "split"], frame.loc[0, "miou"]) == ("test", record["test_metrics"]["miou"])
    assert frame.loc[0, "val_miou"] == record["metrics"]["miou"]


def test_a_test_split_that_cannot_be_read_stops_the_run_before_training(tmp_path, folder_data):
    """A half-copied test split (images without masks) is one line before any training, not a record that
    silently lacks its test scores; nothing is written."""
    import shutil

    shutil.rmtree(folder_data / "test" / "masks")
    cfg = _folder_config(folder_data)
    trained = []
    with pytest.raises(SegbenchError) as err:
        run_one(cfg, store=LocalStore(tmp_path / "store"), leaderboard=tmp_path / "board", progress=False,
                log=trained.append)
    message = str(err.value)
    assert "\n" not in message and "has a test split that cannot be read" in message and str(folder_data) in message
    assert not any("training on" in line for line in trained)
    assert not (tmp_path / "board").exists() and not (tmp_path / "store" / "weights").exists()


def test_final_checkpoint_by_default_and_safety_cap_marks_the_record(tmp_path, folder_data):
    (folder_data / "test").rename(folder_data / "unused")  # no test split: test_metrics is null
    cfg = _folder_config(folder_data, max_train_seconds=1e-6)
    record = run_one(cfg, store=LocalStore(tmp_path / "store"), leaderboard=tmp_path / "board", progress=False,
                     log=lambda _: None)
    assert record["selection"]["checkpoint"] == "final" and record["selection"]["holdout_images"] is None
    assert record["test_metrics"] is None
    assert record["training"]["capped"] is True and record["training"]["track"] == "steps"
    assert record["training"]["steps"] < record["training"]["budget"]["steps"]


def test_eval_command_matches_the_run(tmp_path, tiny_config, capsys):
    """``eval`` and ``run`` share one evaluation function: identical metrics on the same weights and split."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config))
    store = tmp_path / "store"
    assert main(["train", str(cfg), "--leaderboard", str(tmp_path / "b"), "--store", str(store), "--no-progress"]) == 0
    record = load_records(tmp_path / "b")[0][0]
    out = tmp_path / "m.json"
    assert main(["eval", record["weights"]["uri"], "--store", str(store), "--dataset-arg", "size=32",
                 "--dataset-arg", "num_images=8", "--batch-size", "4", "--json", str(out), "--no-progress"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["miou"] == record["metrics"]["miou"]
    assert metrics["pixel_accuracy"] == record["metrics"]["pixel_accuracy"]
    assert [None if v is None else v for v in metrics["iou"]] == list(record["metrics"]["iou"].values())
    assert metrics.get("miou_ci") == record["metrics"]["miou_ci"]


def test_resume_without_checkpoint_is_one_line(tmp_path, tiny_config, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config))
    assert main(["train", str(cfg), "--resume", "--leaderboard", str(tmp_path / "b"), "--store", str(tmp_path / "s"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --resume: no checkpoint") and "\n" not in err
    assert not (tmp_path / "b").exists()  # nothing trained from scratch


def test_seeds_give_one_record_each_sharing_a_group(tmp_path, tiny_config, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({"common": {**tiny_config, "seed": 3}, "runs": [{}, {"name": "twin"}]}))
    assert main(["run", str(suite), "--seeds", "2", "--leaderboard", str(tmp_path / "b"), "--store",
                 str(tmp_path / "s"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    records = load_records(tmp_path / "b")[0]
    assert len(records) == 4 and len({r["id"] for r in records}) == 4  # two names -> two records per seed
    groups = {}
    for r in records:
        groups.setdefault(r["group"], set()).add((r["model"], r["seed"]))
    assert sorted(map(sorted, groups.values())) == [[("twin", 3), ("twin", 4)], [("unet_small", 3), ("unet_small", 4)]]
    assert "mIoU over seeds" in out and "+-" in out and "2 seeds: 3, 4" in out


def test_camvid_instance_fill_comes_from_the_train_split(tmp_path):
    """Uncovered pixels take the most frequent *train* class; the scored split must not choose it."""
    root = tmp_path / "camvid"
    rng = np.random.default_rng(0)
    for split, value in (("train", 3), ("val", 0)):  # train is all Road, val is all Sky
        for folder in (split, f"{split}annot"):
            (root / folder).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / split / f"{i}.png")
            Image.fromarray(np.full((16, 16), value, np.uint8)).save(root / f"{split}annot" / f"{i}.png")
    cfg = make_config({"model": "maskrcnn_small", "dataset": "camvid", "data_root": str(root), "device": "cpu"})
    data = build_data(cfg, "instance", need_train=False)
    assert data.fill == 3 and int(data.label_to_class[0]) == 3


def test_instance_record_states_max_dets_and_latency_images(tmp_path):
    cfg = make_config({
        "model": "maskrcnn_small", "model_args": {"min_size": 64, "max_size": 64, "fpn_channels": 32,
                                                  "detections_per_img": 20},
        "dataset": "synthetic", "dataset_args": {"size": 48, "num_images": 4}, "epochs": 1, "batch_size": 2,
        "latency_runs": 1, "lr": 0.0005, "hflip": False, "device": "cpu"})
    record = run_one(cfg, store=LocalStore(tmp_path / "s"), leaderboard=tmp_path / "b", progress=False,
                     log=lambda _: None)
    assert record["metrics"]["max_dets"] == [1, 10, 20]
    assert record["efficiency"]["latency"]["inputs"] == "val images [0..3] (4)"
