"""Label conversions round-trip bit for bit: VOC palette <-> index PNGs, Cityscapes train ids <-> label ids,
instance-id PNGs <-> COCO JSON, and VIA polygons -> COCO polygons."""

import json

import numpy as np
import pytest
from PIL import Image

from dataset_layouts import make_cityscapes, make_voc
from segbench.cli import main
from segbench.data import build_dataset
from segbench.errors import SegbenchError


def _pixels(path):
    img = Image.open(path)
    return img.mode, np.array(img), img.getpalette()


def test_voc_palette_index_round_trip(tmp_path):
    base = make_voc(tmp_path / "voc")
    src = base / "SegmentationClass"
    assert main(["data", "convert", "voc-palette-to-index", str(src), str(tmp_path / "index")]) == 0
    assert main(["data", "convert", "index-to-voc-palette", str(tmp_path / "index"), str(tmp_path / "back")]) == 0
    for path in src.glob("*.png"):
        mode, index, _ = _pixels(tmp_path / "index" / path.name)
        assert mode == "L" and np.array_equal(index, np.array(Image.open(path)))
        assert _pixels(tmp_path / "back" / path.name)[0] == "P"
        back, orig = _pixels(tmp_path / "back" / path.name), _pixels(path)
        assert np.array_equal(back[1], orig[1]) and back[2][: 3 * 256] == orig[2][: 3 * 256]
    with pytest.raises(SegbenchError, match="not a palette PNG"):
        from segbench.data.convert import voc_palette_to_index
        voc_palette_to_index(next((tmp_path / "index").glob("*.png")), tmp_path / "x.png")


def test_cityscapes_train_ids_round_trip(tmp_path):
    root = make_cityscapes(tmp_path / "cs")
    src = root / "gtFine" / "train"
    assert main(["data", "convert", "cityscapes-trainids", str(src), str(tmp_path / "train")]) == 0
    ds = build_dataset("cityscapes", split="train", root=str(root))
    for _, mask_path in ds.pairs:
        rel = mask_path.relative_to(src)
        train = np.array(Image.open(tmp_path / "train" / rel.parent / rel.name.replace("_labelIds", "_labelTrainIds")))
        assert np.array_equal(train, ds.map_mask(__import__("segbench.data.io", fromlist=["x"]).read_mask(mask_path),
                                                  mask_path).numpy())
    main(["data", "convert", "cityscapes-labelids", str(tmp_path / "train"), str(tmp_path / "ids")])
    main(["data", "convert", "cityscapes-trainids", str(tmp_path / "ids"), str(tmp_path / "train2")])
    for path in (tmp_path / "train").rglob("*_labelTrainIds.png"):
        again = tmp_path / "train2" / path.relative_to(tmp_path / "train")
        assert np.array_equal(np.array(Image.open(path)), np.array(Image.open(again)))


def test_instance_png_coco_round_trip(tmp_path):
    root = tmp_path / "png"
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(root / "images" / f"{i}.jpg")
        ids = np.zeros((20, 30), np.uint8)
        labels = np.zeros((20, 30), np.uint8)
        ids[2:8, 3:12], labels[2:8, 3:12] = 4, 2  # object id 4 (ids need not be contiguous), label 2
        ids[10:18, 15:29], labels[10:18, 15:29] = 7, 1
        ids[12, 1], labels[12, 1] = 9, 2  # a single pixel
        for sub, arr in (("instances", ids), ("labels", labels)):
            (root / sub).mkdir(exist_ok=True)
            Image.fromarray(arr).save(root / sub / f"{i}.png")
    (root / "categories.json").write_text(json.dumps([{"id": 3, "name": "cat"}, {"id": 17, "name": "dog"}]))
    assert main(["data", "convert", "png-to-coco", str(root), str(tmp_path / "coco.json")]) == 0
    coco = json.loads((tmp_path / "coco.json").read_text())
    assert len(coco["annotations"]) == 9 and {a["category_id"] for a in coco["annotations"]} == {3, 17}
    assert main(["data", "convert", "coco-to-png", str(tmp_path / "coco.json"), str(tmp_path / "back")]) == 0
    for sub in ("instances", "labels"):
        for path in (root / sub).glob("*.png"):
            assert np.array_equal(np.array(Image.open(path)), np.array(Image.open(tmp_path / "back" / sub / path.name)))
    # the COCO file is readable by the coco dataset, masks identical to the PNG's
    (tmp_path / "c" / "annotations").mkdir(parents=True)
    (tmp_path / "c" / "annotations" / "instances_train.json").write_text((tmp_path / "coco.json").read_text())
    (tmp_path / "c" / "train").symlink_to(root / "images")
    _, target = build_dataset("coco", split="train", root=str(tmp_path / "c"), task="instance")[0]
    ids = np.array(Image.open(root / "instances" / "0.png"))
    assert [int(m.sum()) for m in target["masks"]] == [int((ids == k).sum()) for k in (4, 7, 9)]


def test_via_to_coco_keeps_vertices(tmp_path):
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "a.jpg")
    via = {"a.jpg1": {"filename": "a.jpg", "size": 1, "regions": [
        {"shape_attributes": {"name": "polygon", "all_points_x": [3, 30, 28.5, 4], "all_points_y": [2, 3, 35, 30]}},
        {"shape_attributes": {"name": "polygon", "all_points_x": [40, 48, 44], "all_points_y": [5, 5, 12]}}]}}
    (tmp_path / "via.json").write_text(json.dumps(via))
    assert main(["data", "convert", "via-to-coco", str(tmp_path / "via.json"), str(tmp_path / "coco.json")]) == 0
    coco = json.loads((tmp_path / "coco.json").read_text())
    for ann, region in zip(coco["annotations"], via["a.jpg1"]["regions"]):
        flat = ann["segmentation"][0]
        assert flat[0::2] == region["shape_attributes"]["all_points_x"]
        assert flat[1::2] == region["shape_attributes"]["all_points_y"]
    assert coco["annotations"][1]["area"] == 28.0 and coco["annotations"][1]["bbox"] == [40, 5, 8, 7]
    assert coco["images"][0] == {"id": 1, "file_name": "a.jpg", "height": 40, "width": 50}


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_png_to_coco_without_instance_pngs_is_one_line_and_writes_nothing(tmp_path, make, capsys):
    src = tmp_path / "src"
    if make == "empty":
        (src / "instances").mkdir(parents=True)
    assert main(["data", "convert", "png-to-coco", str(src), str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(src) in err and "instances/<stem>.png" in err
    assert not (tmp_path / "out.json").exists()
