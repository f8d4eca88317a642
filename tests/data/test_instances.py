"""Instances for Mask R-CNN: connected components of semantic masks, balloon / VIA polygons, COCO JSON (polygons,
both RLE kinds, crowd, non-contiguous ids), instance-id PNGs, and the one-line handling of bad input."""

import json
import warnings

import numpy as np
import pytest
import torch
from faster_coco_eval.core import mask as mask_utils
from PIL import Image

from segbench.data import DatasetInfo
from segbench.data.coco import CocoInstances, InstancePNG
from segbench.data.instances import InstanceView, instances_to_semantic, semantic_to_instances
from segbench.data.via import BalloonVIA, rasterize_polygon
from segbench.errors import SegbenchError

# ================================================================ connected components


def _mask() -> torch.Tensor:
    m = torch.zeros(12, 12, dtype=torch.int64)
    m[0:4, 0:4] = 1  # a 16-pixel square
    m[4:8, 4:8] = 1  # touches the first only at a corner
    m[9:12, 0:6] = 2  # 18 pixels of class 2
    m[10, 10] = 1  # 1 pixel: below min_area
    m[0:2, 8:12] = 255  # ignored
    return m


def test_components_four_connected_by_default():
    target = semantic_to_instances(_mask(), classes=[1, 2], min_area=4)
    assert target["labels"].tolist() == [1, 1, 2]  # the corner-touching squares stay apart, the pixel is dropped
    assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (3, 12, 12)
    assert target["masks"].flatten(1).sum(1).tolist() == [16, 16, 18]
    assert target["boxes"].tolist() == [[0, 0, 4, 4], [4, 4, 8, 8], [0, 9, 6, 12]]
    assert target["boxes"].dtype == torch.float32


def test_components_eight_connected_offset_and_empty():
    target = semantic_to_instances(_mask(), classes=[1], min_area=4, connectivity=8, label_offset=1)
    assert target["labels"].tolist() == [2] and target["masks"].sum() == 32
    empty = semantic_to_instances(torch.zeros(5, 7, dtype=torch.int64), classes=[1])
    assert empty["masks"].shape == (0, 5, 7) and empty["boxes"].shape == (0, 4)
    with pytest.raises(SegbenchError, match="label_offset"):
        semantic_to_instances(_mask(), classes=[0, 1])


class _Semantic(torch.utils.data.Dataset):
    def __init__(self, background):
        self.info = DatasetInfo(name="toy", num_classes=3, class_names=("a", "b", "c"), background_index=background)

    def __len__(self):
        return 2

    def __getitem__(self, i):
        m = _mask().clone()
        m[m == 255] = 0
        m[m == 0] = 0 if i == 0 else 2
        return torch.zeros(3, 12, 12, dtype=torch.uint8), m


def test_instance_view_protocols():
    with_bg = InstanceView(_Semantic(background=0), min_area=4)
    assert with_bg.num_labels == 3 and with_bg.fill == 0 and with_bg.label_to_class.tolist() == [0, 1, 2]
    assert with_bg[0][1]["labels"].tolist() == [1, 1, 2]
    no_bg = InstanceView(_Semantic(background=None), min_area=4)  # CamVid: every class is a thing, label = class + 1
    assert no_bg.num_labels == 4 and no_bg.label_names[0] == "background"
    image, target = no_bg[0]
    assert sorted(target["labels"].tolist()) == [1, 2, 2, 3]
    assert no_bg.fill == 2  # class 2 covers the most pixels of the (two) sampled masks
    assert no_bg.label_to_class.tolist() == [2, 0, 1, 2]
    assert InstanceView(_Semantic(background=None), fill=1).label_to_class[0] == 1


def test_instances_to_semantic_crowd_is_ignored():
    masks = torch.zeros(2, 4, 4, dtype=torch.uint8)
    masks[0, :2] = 1
    masks[1, 1:] = 1
    target = {"masks": masks, "labels": torch.tensor([1, 2]), "iscrowd": torch.tensor([0, 1])}
    sem = instances_to_semantic(target, 4, 4)
    assert sem[0].tolist() == [1] * 4 and sem[1:].unique().tolist() == [255]


# ================================================================ VIA / balloon


def test_rasterize_polygon_pixel_centres():
    square = rasterize_polygon(np.array([0, 3, 3, 0.0]), np.array([0, 0, 3, 3.0]), 6, 6)
    assert square.sum() == 9 and square[:3, :3].all()  # area 9 = polygon area: half-open edges
    shifted = rasterize_polygon(np.array([0.6, 3.4, 3.4, 0.6]), np.array([0.6, 0.6, 3.4, 3.4]), 6, 6)
    assert shifted[1:4, 1:4].all() and shifted.sum() == 9  # centres 1, 2, 3 are inside
    outside = rasterize_polygon(np.array([-5, 2.5, 2.5, -5]), np.array([-5, -5, 9, 9.0]), 4, 4)
    assert outside[:, :3].all() and not outside[:, 3].any()


def test_balloon_real_counts(shared_data):
    train = BalloonVIA(shared_data / "balloon", "train")
    val = BalloonVIA(shared_data / "balloon", "val")
    assert (len(train), train.num_instances) == (61, 255)
    assert (len(val), val.num_instances) == (13, 50)
    image, target = val[0]
    assert image.dtype == torch.uint8 and image.shape[0] == 3
    assert len(target["labels"]) == len(val.images[0].polygons) and (target["labels"] == 1).all()
    assert target["masks"].shape[-2:] == image.shape[-2:] and target["masks"].dtype == torch.uint8
    assert val.info.class_names == ("background", "balloon") and val.num_labels == 2


def _png(path, size=(24, 20), value=128, mode="RGB"):
    Image.new(mode, size, value if mode != "RGB" else (value, value, value)).save(path)


def test_via_bad_input_warns_one_line_each(tmp_path):
    for name in ("a.png", "b.png"):
        _png(tmp_path / name)
    regions_a = [  # VIA 2 style: a list
        {"shape_attributes": {"name": "polygon", "all_points_x": [2, 10, 10, 2], "all_points_y": [2, 2, 8, 8]}},
        {"shape_attributes": {"name": "polygon", "all_points_x": [1, 5], "all_points_y": [1, 5]}},
        {"shape_attributes": {"name": "circle", "cx": 5, "cy": 5, "r": 3}},
        {"shape_attributes": {"name": "polygon", "all_points_x": [1, 4, 7], "all_points_y": [1, 1, 1]}},
        {"shape_attributes": {"name": "polygon", "all_points_x": [15, 40, 40], "all_points_y": [10, 10, 30]}},
    ]
    regions_b = {"0": {"shape_attributes": {"name": "rect", "x": 3, "y": 4, "width": 5, "height": 6}}}
    data = {
        "a.png1": {"filename": "a.png", "size": 1, "regions": regions_a},
        "b.png1": {"filename": "b.png", "size": 1, "regions": regions_b},
        "c.png1": {"filename": "c.png", "size": 1, "regions": []},
    }
    (tmp_path / "train").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / name).rename(tmp_path / "train" / name)
    (tmp_path / "train" / "via_region_data.json").write_text(json.dumps(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = BalloonVIA(tmp_path, "train")
    messages = [str(w.message) for w in caught]
    assert any("region 1: polygon with 2 point(s)" in m for m in messages)
    assert any("region 2: unsupported shape 'circle'" in m for m in messages)
    assert any("region 3: zero-area polygon" in m for m in messages)
    assert any("region 4: vertices outside" in m for m in messages)
    assert any("1 listed image(s) missing" in m and "c.png" in m for m in messages)
    assert all("\n" not in m for m in messages)
    assert len(ds) == 2 and ds.num_instances == 3
    _, target = ds[0]
    assert target["masks"].shape == (2, 20, 24) and target["masks"][0].sum() == 8 * 6
    _, target_b = ds[1]
    assert target_b["boxes"].tolist() == [[3.0, 4.0, 8.0, 10.0]]
    semantic = BalloonVIA(tmp_path, "train", task="semantic")
    _, mask = semantic[1]
    assert mask.dtype == torch.int64 and mask.sum() == 30


def test_via_unreadable_files_are_errors(tmp_path):
    (tmp_path / "val").mkdir()
    with pytest.raises(SegbenchError, match="VIA annotation file not found"):
        BalloonVIA(tmp_path, "val")
    (tmp_path / "val" / "via_region_data.json").write_text("{not json")
    with pytest.raises(SegbenchError, match="not valid JSON"):
        BalloonVIA(tmp_path, "val")
    (tmp_path / "val" / "via_region_data.json").write_text(json.dumps({"k": {"filename": "x.jpg", "regions": {}}}))
    with pytest.raises(SegbenchError, match="none of the 1 listed images"):
        BalloonVIA(tmp_path, "val")


# ================================================================ COCO JSON


def _coco_fixture(tmp_path):
    (tmp_path / "val").mkdir()
    (tmp_path / "annotations").mkdir()
    for name in ("1.png", "2.png", "3.png"):
        _png(tmp_path / "val" / name, size=(16, 12))
    square = np.zeros((12, 16), dtype=np.uint8)
    square[2:6, 3:9] = 1
    compressed = mask_utils.encode(np.asfortranarray(square))
    crowd = np.zeros((12, 16), dtype=np.uint8)
    crowd[7:12, 0:16] = 1
    # uncompressed RLE: column-major run lengths starting with zeros
    flat = crowd.flatten(order="F")
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], change])).tolist()
    data = {
        "images": [
            {"id": 10, "file_name": "1.png", "height": 12, "width": 16},
            {"id": 20, "file_name": "2.png", "height": 12, "width": 16},
            {"id": 30, "file_name": "3.png", "height": 12, "width": 16},
            {"id": 40, "file_name": "missing.png", "height": 12, "width": 16},
        ],
        "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 12, "name": "cow"}],
        "annotations": [
            # two-part polygon, category 7 -> label 2
            {"id": 1, "image_id": 10, "category_id": 7, "iscrowd": 0, "area": 20.0, "bbox": [1, 1, 12, 9],
             "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5], [9, 6, 13, 6, 13, 10, 9, 10], [1, 1, 2, 2]]},
            {"id": 2, "image_id": 10, "category_id": 12, "iscrowd": 1,
             "segmentation": {"size": [12, 16], "counts": counts}},
            {"id": 3, "image_id": 20, "category_id": 3, "iscrowd": 0,
             "segmentation": {"size": [12, 16], "counts": compressed["counts"].decode()}},
            {"id": 4, "image_id": 20, "category_id": 99, "segmentation": [[1, 1, 5, 1, 5, 5]]},
            {"id": 5, "image_id": 20, "category_id": 3, "bbox": [2, 2, 0, 4], "segmentation": [[1, 1, 5, 1, 5, 5]]},
            {"id": 6, "image_id": 20, "category_id": 3, "segmentation": [[1, 1, 4, 4]]},
            {"id": 7, "image_id": 77, "category_id": 3, "segmentation": [[1, 1, 5, 1, 5, 5]]},
            {"id": 8, "image_id": 20, "category_id": 3, "segmentation": {"size": [10, 10], "counts": [100]}},
            {"id": 9, "image_id": 40, "category_id": 3, "segmentation": [[1, 1, 5, 1, 5, 5]]},
        ],
    }  # fmt: skip
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(data))
    return square, crowd


def test_coco_json_kinds_ids_and_bad_input(tmp_path):
    square, crowd = _coco_fixture(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = CocoInstances(tmp_path, "val")
    messages = [str(w.message) for w in caught]
    expected = [
        "annotation 1 part 2: polygon with 2 points",
        "annotation 4: unknown category_id 99",
        "annotation 5: zero-area box",
        "annotation 6 part 0: polygon with 2 points",
        "annotation 6: no usable polygon",
        "annotation 8: RLE size [10, 10] differs",
        "1 listed image(s) missing",
        "1 annotation(s) refer to image ids not in 'images'",
    ]
    for text in expected:
        assert any(text in m for m in messages), text
    assert len(ds) == 3  # the missing image is skipped
    assert ds.label_to_category == [0, 3, 7, 12]
    assert ds.info.class_names == ("background", "dog", "cat", "cow")

    _, t1 = ds[0]
    assert t1["labels"].tolist() == [2, 3] and t1["iscrowd"].tolist() == [0, 1]
    assert t1["image_id"].item() == 10
    expected_poly = mask_utils.decode(
        mask_utils.merge(mask_utils.frPyObjects([[1, 1, 5, 1, 5, 5, 1, 5], [9, 6, 13, 6, 13, 10, 9, 10]], 12, 16))
    )
    assert torch.equal(t1["masks"][0], torch.from_numpy(expected_poly))  # both parts, COCO's rasteriser
    assert t1["masks"][0, :, 8:].any() and t1["masks"][0, :, :6].any()
    assert torch.equal(t1["masks"][1], torch.from_numpy(crowd))  # uncompressed RLE
    assert t1["area"][0] == 20.0 and t1["area"][1] == crowd.sum()

    _, t2 = ds[1]
    assert t2["labels"].tolist() == [1] and torch.equal(t2["masks"][0], torch.from_numpy(square))  # compressed RLE
    assert t2["boxes"].tolist() == [[3.0, 2.0, 9.0, 6.0]]

    image, t3 = ds[2]  # an image without objects
    assert t3["masks"].shape == (0, 12, 16) and t3["labels"].numel() == 0 and image.shape == (3, 12, 16)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, sem = CocoInstances(tmp_path, "val", task="semantic")[0]
    assert sem[8, 2] == 255 and sem[2, 2] == 2  # crowd -> ignore


def test_coco_errors(tmp_path):
    with pytest.raises(SegbenchError, match="annotation file not found"):
        CocoInstances(tmp_path, "val")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps({"images": []}))
    with pytest.raises(SegbenchError, match="not a COCO instance file"):
        CocoInstances(tmp_path, "val")


# ================================================================ instance-id PNGs


def test_instance_png_majority_class_and_divisor(tmp_path):
    base = tmp_path / "train"
    for sub in ("images", "instances", "labels"):
        (base / sub).mkdir(parents=True)
    _png(base / "images" / "a.png", size=(8, 6))
    ids = np.zeros((6, 8), dtype=np.uint16)
    ids[0:3, 0:3] = 5
    ids[3:6, 4:8] = 300
    Image.fromarray(ids).save(base / "instances" / "a.png")
    labels = np.zeros((6, 8), dtype=np.uint8)
    labels[0:3, 0:3] = 2
    labels[0, 0] = 1  # minority vote
    labels[3:6, 4:8] = 1
    Image.fromarray(labels).save(base / "labels" / "a.png")
    ds = InstancePNG(tmp_path, "train", class_names=("background", "car", "person"))
    _, target = ds[0]
    assert target["labels"].tolist() == [2, 1]
    assert target["masks"].flatten(1).sum(1).tolist() == [9, 12]
    assert target["boxes"].tolist() == [[0.0, 0.0, 3.0, 3.0], [4.0, 3.0, 8.0, 6.0]]
    (base / "labels" / "a.png").unlink()
    (base / "labels").rmdir()
    cityscapes = InstancePNG(tmp_path, "train", class_names=("background", "a", "b", "c"), id_divisor=100)
    _, target = cityscapes[0]
    assert target["labels"].tolist() == [3]  # 300 // 100; 5 < 100 is not an instance


# ================================================================ semantic-only real sets


def test_real_semantic_sets_as_instances(shared_data):
    from segbench.data import build_dataset

    isbi = build_dataset("isbi2012", split="val", root=str(shared_data / "isbi2012"), task="instance")
    image, target = isbi[0]
    assert isinstance(isbi, InstanceView) and isbi.num_labels == 2
    assert len(target["labels"]) > 20 and (target["labels"] == 1).all()  # many cells, one class
    assert target["masks"].shape[-2:] == image.shape[-2:] and target["masks"].sum(0).max() == 1
    camvid = build_dataset("camvid", split="val", root=str(shared_data / "camvid"), task="instance")
    _, target = camvid[0]
    assert camvid.num_labels == 12 and camvid.label_names[1] == "Sky"
    labels = target["labels"]
    assert labels.min() >= 1 and labels.max() <= 11
    assert (target["masks"].flatten(1).sum(1) >= 16).all()
