"""Cityscapes in its package layout: the labels.py table (label ids -> 19 train ids), instanceIds for Mask R-CNN
(crowd regions), gtCoarse, refusals, and 1-epoch runs of a semantic and an instance model."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from dataset_layouts import make_cityscapes
from segbench.config.run import make_config
from segbench.data import build_dataset, dataset_info
from segbench.data.cityscapes import LABELS, TABLE
from segbench.errors import SegbenchError
from segbench.train.runner import run_one
from segbench.weights.store import LocalStore


@pytest.fixture
def cityscapes(tmp_path):
    return make_cityscapes(tmp_path / "cityscapes")


def test_table_is_cityscapes_scripts_mapping():
    info = dataset_info("cityscapes")
    assert len(LABELS) == 35 and info.num_classes == 19 and info.class_names[:3] == ("road", "sidewalk", "building")
    assert info.class_names[-1] == "bicycle" and info.palette[0] == (128, 64, 128) and info.palette[18] == (119, 11, 32)
    lut = TABLE.lut
    assert [int(lut[i]) for i in (7, 8, 11, 23, 24, 26, 33)] == [0, 1, 2, 10, 11, 13, 18]
    assert all(int(lut[i]) == 255 for i in (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30))
    assert sorted(int(v) for v in lut[:34] if v != 255) == list(range(19))
    assert [lab.name for lab in LABELS if lab.has_instances and lab.train_id != 255] == [
        "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
    assert "non-commercial" in info.license and "registration" in info.license


def test_label_ids_map_to_train_ids(cityscapes):
    ds = build_dataset("cityscapes", split="train", root=str(cityscapes))
    assert len(ds) == 4 and len(build_dataset("cityscapes", split="val", root=str(cityscapes.parent))) == 2
    _, mask = ds[0]
    raw = np.array(Image.open(ds.pairs[0][1]))
    assert torch.equal(mask, TABLE.lut[torch.from_numpy(raw.astype(np.int64))])
    assert set(mask.unique().tolist()) == {0, 10, 11, 13, 255}
    assert bool((mask[0:2] == 255).all()) and bool((mask[-2:, :8] == 255).all())  # unlabeled, parking


def test_refusals_and_wrong_layout(cityscapes, tmp_path):
    with pytest.raises(SegbenchError, match="withheld"):
        build_dataset("cityscapes", split="test", root=str(cityscapes))
    with pytest.raises(SegbenchError, match=r"missing leftImg8bit/ .*expected leftImg8bit/\{train,val\}/<city>"):
        build_dataset("cityscapes", split="train", root=str(tmp_path / "empty"))
    shutil.rmtree(cityscapes / "gtFine" / "val")
    with pytest.raises(SegbenchError, match=r"missing gtFine/val/"):
        build_dataset("cityscapes", split="val", root=str(cityscapes))
    path = sorted((cityscapes / "gtFine" / "train").rglob("*_labelIds.png"))[0]
    Image.fromarray(np.full((32, 48), 40, np.uint8)).save(path)
    with pytest.raises(SegbenchError, match=rf"{path.name}: cityscapes label values \{{40\}}"):
        build_dataset("cityscapes", split="train", root=str(cityscapes))[0]


def test_coarse_mode_reads_gt_coarse(cityscapes):
    for path in (cityscapes / "gtFine" / "train").rglob("*_gtFine_labelIds.png"):
        out = cityscapes / "gtCoarse" / "train" / path.parent.name / path.name.replace("gtFine", "gtCoarse")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, out)
    ds = build_dataset("cityscapes", split="train", root=str(cityscapes), mode="coarse")
    assert len(ds) == 4 and all("gtCoarse" in str(m) for _, m in ds.pairs)
    with pytest.raises(SegbenchError, match="gtFine only"):
        build_dataset("cityscapes", split="train", root=str(cityscapes), mode="coarse", task="instance")


def test_instances_from_instance_ids(cityscapes):
    ds = build_dataset("cityscapes", split="train", root=str(cityscapes), task="instance")
    assert ds.num_labels == 9 and ds.label_names[1] == "person" and ds.fill == 0
    assert ds.label_to_class.tolist() == [0, 11, 12, 13, 14, 15, 16, 17, 18]
    _, target = ds[0]
    # the fixture: a person (24001->24000+0), a car (26001) and a car crowd region (id 26 < 1000)
    assert sorted(zip(target["labels"].tolist(), target["iscrowd"].tolist())) == [(1, 0), (3, 0), (3, 1)]
    assert target["masks"].shape == (3, 32, 48) and int(target["masks"].sum()) == 3 * 144


def _run(tmp_path, **cfg):
    base = {"epochs": 1, "batch_size": 2, "latency_runs": 1, "device": "cpu", "limit_images": 4}
    return run_one(make_config({**base, **cfg}), store=LocalStore(tmp_path / "store"), leaderboard=tmp_path / "lb",
                   progress=False, log=lambda _: None)


def test_semantic_and_instance_runs(cityscapes, tmp_path):
    record = _run(tmp_path, model="fcn8s_small", dataset="cityscapes", data_root=str(cityscapes), crop_size=32)
    assert record["num_classes"] == 19 and record["class_names"][0] == "road"
    assert len(record["metrics"]["iou"]) == 19 and 0.0 <= record["metrics"]["miou"] <= 1.0
    record = _run(tmp_path, model="maskrcnn_small", dataset="cityscapes", data_root=str(cityscapes), lr=0.0005,
                  model_args={"min_size": 32, "max_size": 48, "fpn_channels": 16})
    assert record["metrics"]["mask_ap"] is not None and record["metrics"]["iou"].keys() == set(dataset_info(
        "cityscapes").class_names)
