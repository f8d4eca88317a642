"""Bad input gives one-line SegbenchErrors that name the file; good folders load. Files are written with PIL."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segbench.data import build_dataset, default_root, folder
from segbench.data.camvid import CamVid
from segbench.data.isbi import ISBI2012
from segbench.errors import SegbenchError


def _folder(root, **options):
    """``ImageMaskFolder`` through the folder builder (split "all": root/images and root/masks)."""
    return folder.build(split="all", root=root, **options)


def write_image(path: Path, h: int = 8, w: int = 10, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 3 if mode == "RGB" else None
    shape = (h, w, channels) if channels else (h, w)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def write_mask(path: Path, values: np.ndarray, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8), mode).save(path)
    return path


def binary(h: int = 8, w: int = 10, high: int = 1) -> np.ndarray:
    values = np.zeros((h, w), dtype=np.uint8)
    values[2:5, 3:7] = high
    return values


def make_folder(root: Path, stems=("a", "b"), **mask_kwargs) -> Path:
    for stem in stems:
        write_image(root / "images" / f"{stem}.png")
        write_mask(root / "masks" / f"{stem}.png", mask_kwargs.get("values", binary()))
    return root


def raises_naming(path: Path | str, fn, *args, **kwargs) -> str:
    with pytest.raises(SegbenchError) as err:
        fn(*args, **kwargs)
    message = str(err.value)
    assert str(path) in message, message
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------- good input


def test_good_folder_loads(tmp_path):
    ds = _folder(make_folder(tmp_path), num_classes=2)
    image, mask = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 8, 10)
    assert mask.dtype == torch.int64 and mask.shape == (8, 10) and set(mask.unique().tolist()) == {0, 1}
    assert len(ds) == 2 and ds.info.num_classes == 2 and len(ds.info.palette) == 2


def test_palette_mask_reads_indices(tmp_path):
    write_image(tmp_path / "images" / "a.png")
    values = binary(high=2)
    mask = Image.fromarray(values, "P")
    mask.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    (tmp_path / "masks").mkdir()
    mask.save(tmp_path / "masks" / "a.png")
    _, loaded = _folder(tmp_path, num_classes=3)[0]
    assert torch.equal(loaded, torch.from_numpy(values).long())


def test_one_bit_mask_reads_0_1(tmp_path):
    write_image(tmp_path / "images" / "a.png")
    (tmp_path / "masks").mkdir()
    Image.fromarray(binary().astype(bool)).save(tmp_path / "masks" / "a.png")  # mode "1"
    _, mask = _folder(tmp_path, num_classes=2)[0]
    assert torch.equal(mask, torch.from_numpy(binary()).long())


def test_value_map_and_grey(tmp_path):
    write_image(tmp_path / "images" / "a.png", mode="L")
    write_mask(tmp_path / "masks" / "a.png", binary(high=255))
    image, mask = _folder(tmp_path, num_classes=2, in_channels=1, value_map={255: 1})[0]
    assert image.shape == (1, 8, 10) and set(mask.unique().tolist()) == {0, 1}


def test_split_folders_and_build_dataset(tmp_path):
    make_folder(tmp_path / "train")
    ds = build_dataset("folder", split="train", root=str(tmp_path), num_classes=2, class_names=["bg", "fg"])
    assert len(ds) == 2 and ds.info.class_names == ("bg", "fg")
    raises_naming(tmp_path / "val", build_dataset, "folder", split="val", root=str(tmp_path), num_classes=2)


# ---------------------------------------------------------------- one test per bad input


def test_missing_root(tmp_path):
    message = raises_naming(tmp_path / "nowhere", _folder, tmp_path / "nowhere", num_classes=2)
    assert "--data-root" in message and "SEGBENCH_DATA" in message


def test_missing_root_without_default(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGBENCH_DATA", str(tmp_path))  # an empty data folder: no default root
    with pytest.raises(SegbenchError, match="isbi2012: no data folder .*--data-root .*SEGBENCH_DATA"):
        build_dataset("isbi2012", split="train")


def test_default_root_follows_env(tmp_path, monkeypatch):
    (tmp_path / "camvid").mkdir()
    monkeypatch.setenv("SEGBENCH_DATA", str(tmp_path))
    assert default_root("camvid") == str(tmp_path / "camvid")
    assert default_root("isbi2012") is None


def test_empty_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    raises_naming(tmp_path / "images", _folder, tmp_path, num_classes=2)


def test_image_without_mask(tmp_path):
    make_folder(tmp_path)
    lonely = write_image(tmp_path / "images" / "c.jpg")
    raises_naming(lonely, _folder, tmp_path, num_classes=2)


def test_mask_without_image(tmp_path):
    make_folder(tmp_path)
    orphan = write_mask(tmp_path / "masks" / "zzz.png", binary())
    raises_naming(orphan, _folder, tmp_path, num_classes=2)


@pytest.mark.parametrize("damage", ["truncated", "not_an_image", "empty"])
def test_corrupt_image(tmp_path, damage):
    make_folder(tmp_path, stems=("a",))
    path = tmp_path / "images" / "a.png"
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "not_an_image": b"hello, world", "empty": b""}[damage])
    ds = _folder(tmp_path, num_classes=2)  # construction only checks names
    message = raises_naming(path, ds.__getitem__, 0)
    assert "corrupt" in message


def test_corrupt_mask(tmp_path):
    make_folder(tmp_path, stems=("a",))
    path = tmp_path / "masks" / "a.png"
    path.write_bytes(path.read_bytes()[:40])
    raises_naming(path, _folder(tmp_path, num_classes=2).__getitem__, 0)


def test_mask_size_differs(tmp_path):
    write_image(tmp_path / "images" / "a.png", h=8, w=10)
    path = write_mask(tmp_path / "masks" / "a.png", binary(h=8, w=12))
    message = raises_naming(path, _folder(tmp_path, num_classes=2).__getitem__, 0)
    assert "12x8" in message and "10x8" in message


def test_mask_values_out_of_range(tmp_path):
    make_folder(tmp_path, stems=("a",), values=binary(high=7))
    path = tmp_path / "masks" / "a.png"
    message = raises_naming(path, _folder(tmp_path, num_classes=3).__getitem__, 0)
    assert "7" in message and "0..2" in message


def test_mask_values_0_255_not_ignored(tmp_path):
    # 255 is not the ignore value here, so {0, 255} is out of range: the hint names the binary mapping
    make_folder(tmp_path, stems=("a",), values=binary(high=255))
    path = tmp_path / "masks" / "a.png"
    message = raises_naming(path, _folder(tmp_path, num_classes=2, ignore_index=254).__getitem__, 0)
    assert "{0, 255}" in message and "value_map {255: 1}" in message


def test_mask_values_0_255_with_default_ignore(tmp_path):
    # the classic trap: a binary {0, 255} mask where 255 is also the default ignore value
    make_folder(tmp_path, stems=("a",), values=binary(high=255))
    path = tmp_path / "masks" / "a.png"
    message = raises_naming(path, _folder(tmp_path, num_classes=2).__getitem__, 0)
    assert "value_map {255: 1}" in message
    # an explicit value_map says 255 really is ignore
    _, mask = _folder(tmp_path, num_classes=2, value_map={255: 255})[0]
    assert set(mask.unique().tolist()) == {0, 255}


def test_rgb_mask(tmp_path):
    write_image(tmp_path / "images" / "a.png")
    path = write_image(tmp_path / "masks" / "a.png")  # a colour image where indices are expected
    message = raises_naming(path, _folder(tmp_path, num_classes=2).__getitem__, 0)
    assert "RGB" in message and "index" in message


def test_isbi_bad_label_value(tmp_path):
    for i in range(3):
        write_image(tmp_path / "train" / "image" / f"{i}.png", mode="L")
        write_mask(tmp_path / "train" / "label" / f"{i}.png", binary(high=255))
    bad = write_mask(tmp_path / "train" / "label" / "1.png", binary(high=128))
    ds = ISBI2012(tmp_path, "all", val_slices=(2,))
    assert [p.stem for p, _ in ds.pairs] == ["0", "1", "2"]
    assert set(ds[0][1].unique().tolist()) == {0, 1}
    raises_naming(bad, ds.__getitem__, 1)
    raises_naming("isbi2012", ISBI2012, tmp_path, "val", val_slices=(29,))  # slice not present


def test_camvid_unmatched_and_bad_values(tmp_path):
    write_image(tmp_path / "val" / "a.jpg")
    write_mask(tmp_path / "valannot" / "a.png", binary(high=11))
    _, mask = CamVid(tmp_path, "val")[0]
    assert set(mask.unique().tolist()) == {0, 255}  # 11 (Unlabelled) -> ignore
    bad = write_mask(tmp_path / "valannot" / "a.png", binary(high=40))
    raises_naming(bad, CamVid(tmp_path, "val").__getitem__, 0)
    lonely = write_image(tmp_path / "val" / "b.jpg")
    raises_naming(lonely, CamVid, tmp_path, "val")
    raises_naming(tmp_path / "train", CamVid, tmp_path, "train")


def test_unknown_dataset_and_option():
    with pytest.raises(SegbenchError, match="did you mean 'camvid'.*valid datasets: .*synthetic"):
        build_dataset("camvd", split="train")
    with pytest.raises(SegbenchError, match="did you mean 'num_images'"):
        build_dataset("synthetic", split="val", num_image=4)


def test_folder_requires_num_classes(tmp_path):
    with pytest.raises(SegbenchError, match="num_classes"):
        build_dataset("folder", split="all", root=str(make_folder(tmp_path)))


def test_instance_task_wraps_in_instance_view(tmp_path):
    ds = build_dataset("folder", split="all", root=str(make_folder(tmp_path)), num_classes=2, task="instance")
    assert type(ds).__name__ == "InstanceView"
    image, target = ds[0]
    assert image.dtype == torch.uint8 and {"boxes", "labels", "masks"} <= set(target)
