"""PASCAL VOC 2012 in its devkit layout: roots, splits, palette PNGs, the 255 border, SBD augmentation, instances
from SegmentationObject, and a 1-epoch run of a semantic and an instance model (fixtures written here)."""

import numpy as np
import pytest
import torch
from PIL import Image

from dataset_layouts import make_voc, palette_png
from segbench.config.run import make_config
from segbench.data import build_dataset, dataset_info
from segbench.errors import SegbenchError
from segbench.train.runner import run_one
from segbench.weights.store import LocalStore


@pytest.fixture
def voc(tmp_path):
    return make_voc(tmp_path / "data", n_train=4, n_val=2, aug=3)


def test_info_classes_and_palette():
    info = dataset_info("voc")
    assert info.num_classes == 21 and info.class_names[0] == "background" and info.class_names[15] == "person"
    assert info.palette[1] == (128, 0, 0) and info.palette[15] == (192, 128, 128) and info.palette[20] == (0, 64, 128)
    assert info.ignore_index == 255 and "research use" in info.license and info.hub_license is None


def test_any_of_the_three_roots_reads_the_same_split(voc):
    lengths = {len(build_dataset("voc", split="train", root=str(r))) for r in (voc, voc.parent, voc.parent.parent)}
    assert lengths == {4}
    assert len(build_dataset("voc", split="val", root=str(voc))) == 2
    assert len(build_dataset("voc", split="trainval", root=str(voc))) == 6


def test_palette_masks_give_class_indices_and_the_border_is_ignored(voc):
    ds = build_dataset("voc", split="train", root=str(voc))
    image, mask = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 48) and mask.dtype == torch.int64
    stored = np.array(Image.open(voc / "SegmentationClass" / f"{ds.pairs[0][0].stem}.png"))
    assert torch.equal(mask, torch.from_numpy(stored.astype(np.int64)))  # indices unchanged, 255 stays ignore
    assert set(mask.unique().tolist()) <= set(range(21)) | {255} and 255 in mask.unique().tolist()


def test_sbd_augmentation_is_explicit(voc, tmp_path):
    aug = build_dataset("voc", split="train", root=str(voc), augmented=True)
    assert len(aug) == 7 and all(m.parent.name == "SegmentationClassAug" for _, m in aug.pairs)
    assert all(m.parent.name == "SegmentationClass" for _, m in build_dataset("voc", split="val", root=str(voc),
                                                                               augmented=True).pairs)
    plain = make_voc(tmp_path / "plain")
    with pytest.raises(SegbenchError, match=r"missing SegmentationClassAug .*augmented: false"):
        build_dataset("voc", split="train", root=str(plain), augmented=True)
    with pytest.raises(SegbenchError, match="no instance masks"):
        build_dataset("voc", split="train", root=str(voc), task="instance", augmented=True)


def test_deeplab_style_split_lines_are_read(voc):
    lines = [f"/JPEGImages/{p.stem}.jpg /SegmentationClassAug/{p.stem}.png" for p, _ in
             build_dataset("voc", split="train", root=str(voc), augmented=True).pairs]
    (voc / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("\n".join(lines) + "\n")
    assert len(build_dataset("voc", split="train", root=str(voc), augmented=True)) == 7


def test_wrong_layout_names_the_missing_folder_and_the_tree(tmp_path, voc):
    with pytest.raises(SegbenchError, match=r"missing JPEGImages/ .*expected VOCdevkit/VOC2012/\{JPEGImages, Segm"):
        build_dataset("voc", split="train", root=str(tmp_path / "nothing"))
    with pytest.raises(SegbenchError, match="labels are not public"):
        build_dataset("voc", split="test", root=str(voc))
    first = sorted((voc / "SegmentationClass").glob("2007_*.png"))[0]
    first.unlink()
    with pytest.raises(SegbenchError, match=rf"{first.stem}.jpg: voc: this file has no mask \(1 such files\)"):
        build_dataset("voc", split="train", root=str(voc))


def test_values_outside_the_table_name_the_file(voc):
    path = sorted((voc / "SegmentationClass").glob("2008_*.png"))[0]
    palette_png(np.full((32, 48), 30, np.uint8), path)
    ds = build_dataset("voc", split="val", root=str(voc))
    with pytest.raises(SegbenchError, match=rf"{path.name}: voc label values \{{30\}} are not valid"):
        ds[0]


def test_instances_from_segmentation_object(voc):
    ds = build_dataset("voc", split="train", root=str(voc), task="instance")
    assert len(ds) == 4 and ds.num_labels == 21 and ds.fill == 0 and ds.label_names[15] == "person"
    image, target = ds[0]
    _, mask = build_dataset("voc", split="train", root=str(voc))[0]
    assert target["masks"].shape == (2, 32, 48) and target["masks"].dtype == torch.uint8
    for m, label in zip(target["masks"].bool(), target["labels"]):
        assert set(mask[m].unique().tolist()) == {int(label)}  # class from SegmentationClass, border excluded
    assert int(target["masks"].sum()) == int(((mask > 0) & (mask != 255)).sum())
    assert torch.equal(target["boxes"][:, 2:] - target["boxes"][:, :2], torch.full((2, 2), 12.0))


def _run(tmp_path, **cfg):
    base = {"epochs": 1, "batch_size": 2, "latency_runs": 1, "device": "cpu", "limit_images": 4, "crop_size": 32}
    return run_one(make_config({**base, **cfg}), store=LocalStore(tmp_path / "store"), leaderboard=tmp_path / "lb",
                   progress=False, log=lambda _: None)


def test_semantic_and_instance_runs(voc, tmp_path):
    record = _run(tmp_path, model="unet_small", model_args={"base_channels": 4, "depth": 2}, dataset="voc",
                  data_root=str(voc), dataset_args={"augmented": True})
    assert record["num_classes"] == 21 and record["dataset"] == "voc" and len(record["class_names"]) == 21
    assert record["test_metrics"] is None and 0.0 <= record["metrics"]["miou"] <= 1.0
    record = _run(tmp_path, model="maskrcnn_small", dataset="voc", data_root=str(voc), crop_size=None,
                  model_args={"min_size": 32, "max_size": 48, "fpn_channels": 16}, lr=0.0005)
    assert record["num_classes"] == 21 and record["metrics"]["mask_ap"] is not None
