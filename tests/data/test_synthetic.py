"""SyntheticShapes: determinism, split separation, dtypes, class coverage, instance/semantic agreement, speed."""

import time

import pytest
import torch

from segbench.data import DATASETS, DatasetInfo, build_dataset
from segbench.data.synthetic import CLASS_NAMES, SyntheticShapes, generate
from segbench.errors import SegbenchError


def test_registered_and_info():
    assert "synthetic" in DATASETS
    ds = build_dataset("synthetic", split="val", num_images=4, size=32)
    assert isinstance(ds.info, DatasetInfo)
    assert ds.info.num_classes == 6 and ds.info.class_names == CLASS_NAMES
    assert len(ds.info.palette) == 6 and len(ds.info.mean) == len(ds.info.std) == 3
    assert ds.info.background_index == 0 and ds.info.license == "generated (CC0)"


def test_same_seed_same_data_and_splits_differ():
    a = SyntheticShapes("train", num_images=6, size=48, seed=3)
    generate.cache_clear()  # force a second, independent generation
    b = SyntheticShapes("train", num_images=6, size=48, seed=3)
    for i in range(len(a)):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
    val = SyntheticShapes("val", num_images=6, size=48, seed=3)
    other_seed = SyntheticShapes("train", num_images=6, size=48, seed=4)
    assert not torch.equal(a[0][0], val[0][0])
    assert not torch.equal(a[0][0], other_seed[0][0])


def test_disjoint_seeds_between_splits():
    # train seed s and val seed t never share a generator seed: val(seed=0) != train(seed=k) for small k
    val = SyntheticShapes("val", num_images=2, size=32, seed=0)
    for seed in range(3):
        assert not torch.equal(val[0][0], SyntheticShapes("train", num_images=2, size=32, seed=seed)[0][0])


@pytest.mark.parametrize("in_channels", [1, 3])
def test_shapes_and_dtypes(in_channels):
    ds = SyntheticShapes("val", num_images=3, size=40, in_channels=in_channels)
    image, mask = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (in_channels, 40, 40)
    assert mask.dtype == torch.int64 and mask.shape == (40, 40)
    assert 0 <= int(mask.min()) and int(mask.max()) < 6
    assert ds.info.in_channels == in_channels and len(ds.info.mean) == in_channels
    assert len(ds) == 3


def test_all_classes_present():
    ds = SyntheticShapes("val")
    masks = torch.stack([ds[i][1] for i in range(len(ds))])
    counts = torch.bincount(masks.flatten(), minlength=6)
    assert (counts > 0).all(), counts
    # the thin and small classes really are thin and small
    assert counts[4] < counts[1] and counts[5] < counts[4]


def test_instances_match_semantic_mask():
    sem = SyntheticShapes("val", num_images=8, size=64, seed=1)
    inst = SyntheticShapes("val", num_images=8, size=64, seed=1, task="instance")
    for i in range(len(sem)):
        image, mask = sem[i]
        image_i, target = inst[i]
        assert torch.equal(image, image_i)
        masks, labels, boxes = target["masks"], target["labels"], target["boxes"]
        n = len(labels)
        assert masks.dtype == torch.uint8 and masks.shape == (n, 64, 64)
        assert labels.dtype == torch.int64 and boxes.dtype == torch.float32 and boxes.shape == (n, 4)
        assert (labels >= 1).all() and (labels <= 5).all()
        assert (masks.flatten(1).sum(1) > 0).all()  # no empty instances
        assert int(masks.sum(0).max()) <= 1  # instances do not overlap
        assert torch.equal((masks.long() * labels.view(-1, 1, 1)).sum(0), mask)
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()


def test_transform_is_applied():
    calls = []

    def transform(image, mask):
        calls.append(1)
        return image[:, :8, :8], mask[:8, :8]

    ds = SyntheticShapes("val", num_images=2, size=32, transform=transform)
    image, mask = ds[1]
    assert image.shape == (3, 8, 8) and mask.shape == (8, 8) and calls


def test_returned_tensors_do_not_alias_the_cache():
    ds = SyntheticShapes("val", num_images=2, size=32)
    image, _ = ds[0]
    image.zero_()
    assert ds[0][0].any()


def test_bad_arguments():
    with pytest.raises(SegbenchError, match="split"):
        SyntheticShapes("test")
    with pytest.raises(SegbenchError, match="in_channels"):
        SyntheticShapes("val", in_channels=2)
    with pytest.raises(SegbenchError, match="task"):
        build_dataset("synthetic", split="val", task="panoptic")


def test_default_set_size_and_speed():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        # a seed no other test uses, so the set is really generated, not taken from the cache
        train = SyntheticShapes("train", seed=12345)
        val = SyntheticShapes("val", seed=12345)
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    assert len(train) == 256 and len(val) == 64
    assert train[0][0].shape == (3, 96, 96)
    # budget: 2 s on a free core (about 0.4 s measured); the margin absorbs busy CI machines
    assert elapsed < 6.0, f"default sets took {elapsed:.2f}s"
