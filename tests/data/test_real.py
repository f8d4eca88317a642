"""ISBI 2012 and CamVid from the shared data folder (skipped when it is not there)."""


import numpy as np
import pytest
import torch
from PIL import Image

from segbench.data import build_dataset, default_root
from segbench.data.camvid import CamVid
from segbench.data.isbi import ISBI2012
from segbench.errors import SegbenchError

ISBI = default_root("isbi2012")
CAMVID = default_root("camvid")
needs_isbi = pytest.mark.skipif(ISBI is None, reason="needs the isbi2012 data in $SEGBENCH_DATA/isbi2012 or "
                               "../shared/data/isbi2012 (README: Datasets and protocol)")
needs_camvid = pytest.mark.skipif(CAMVID is None, reason="needs the camvid data in $SEGBENCH_DATA/camvid or "
                                 "../shared/data/camvid (README: Datasets and protocol)")


@needs_isbi
def test_isbi_counts_and_split():
    train = build_dataset("isbi2012", split="train")
    val = build_dataset("isbi2012", split="val")
    assert (len(train), len(val), len(ISBI2012(ISBI, "all"))) == (25, 5, 30)
    assert [p.stem for p, _ in val.pairs] == ["25", "26", "27", "28", "29"]
    assert [p.stem for p, _ in train.pairs] == [str(i) for i in range(25)]  # numeric, not string, order
    assert len(ISBI2012(ISBI, "val", val_slices=(0, 1))) == 2


@needs_isbi
def test_isbi_classes_mapped():
    ds = build_dataset("isbi2012", split="val")
    image, mask = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (1, 512, 512)
    assert mask.dtype == torch.int64 and mask.shape == (512, 512)
    assert set(mask.unique().tolist()) == {0, 1}
    raw = torch.from_numpy(np.array(Image.open(ds.pairs[0][1])))
    assert torch.equal(mask == 1, raw == 255)  # 255 (cell) -> 1, 0 (membrane) -> 0
    assert 0.5 < mask.float().mean() < 0.95  # cells are most of the pixels (78% over the stack)
    assert ds.info.class_names == ("membrane", "cell") and ds.info.in_channels == 1


@needs_camvid
def test_camvid_counts():
    assert len(build_dataset("camvid", split="train")) == 367
    assert len(build_dataset("camvid", split="val")) == 101


@needs_camvid
def test_camvid_ignore_applied():
    ds = build_dataset("camvid", split="val")
    assert ds.info.num_classes == 11 and ds.info.class_names[0] == "Sky" and ds.info.class_names[10] == "Bicyclist"
    image, mask = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 360, 480)
    assert mask.dtype == torch.int64 and mask.shape == (360, 480)
    raw = torch.from_numpy(np.array(Image.open(ds.pairs[0][1]))).long()
    assert (raw == 11).any(), "pick a sample with Unlabelled pixels"
    assert torch.equal(mask == 255, raw == 11)
    assert torch.equal(mask[raw != 11], raw[raw != 11])
    assert int(mask[mask != 255].max()) <= 10


def test_camvid_missing_test_split_names_folder(tmp_path):
    # its own CamVid layout without test/ (the shared copy has one since 2026-12-07)
    root = tmp_path / "camvid"
    for folder in ("train", "trainannot", "val", "valannot"):
        (root / folder).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3) if "annot" not in folder else (8, 8), np.uint8)).save(root / folder / "a.png")
    with pytest.raises(SegbenchError) as err:
        CamVid(str(root), "test")
    assert str(root / "test") in str(err.value) and "\n" not in str(err.value)
