"""Joint transforms keep uint8, pad masks with the ignore value, move image and target together."""

import pytest
import torch

from segbench.data.transforms import (
    EvalTransform,
    TrainTransform,
    boxes_from_masks,
    collate_instance,
    collate_semantic,
    normalize,
)
from segbench.errors import SegbenchError


def encoded_sample(h: int = 12, w: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """An image whose first channel is 10 * mask, so any geometric mismatch between the two shows."""
    torch.manual_seed(0)
    mask = torch.randint(0, 5, (h, w))
    image = torch.stack([mask * 10, mask * 10, torch.full((h, w), 7)]).to(torch.uint8)
    return image, mask


def test_train_transform_keeps_dtypes_and_size():
    image, mask = encoded_sample()
    out_image, out_mask = TrainTransform(crop_size=(8, 10))(image, mask)
    assert out_image.dtype == torch.uint8 and out_image.shape == (3, 8, 10)
    assert out_mask.dtype == torch.int64 and out_mask.shape == (8, 10)
    assert type(out_image) is torch.Tensor and type(out_mask) is torch.Tensor  # no tv_tensor subclasses leak out


def test_crop_padding_uses_ignore_value():
    image, mask = encoded_sample(6, 6)
    out_image, out_mask = TrainTransform(crop_size=10, scale=(1.0, 1.0), hflip=False, color_jitter=0)(image, mask)
    padded = out_mask == 255
    assert padded.sum() == 100 - 36
    assert (out_image[:, padded] == 0).all()  # the image is padded with 0
    assert torch.equal(out_mask[~padded].sort().values, mask.flatten().sort().values)
    _, other = TrainTransform(crop_size=10, scale=(1.0, 1.0), ignore_index=250)(image, mask)
    assert (other == 250).sum() == 64


def test_flip_moves_image_and_mask_together():
    image, mask = encoded_sample()
    transform = TrainTransform(crop_size=(12, 16), scale=(1.0, 1.0), hflip=True, color_jitter=0)
    flipped = 0
    for _ in range(20):
        out_image, out_mask = transform(image, mask)
        assert torch.equal(out_image[0].long(), out_mask * 10)
        flipped += torch.equal(out_mask, mask.flip(-1))
    assert 0 < flipped < 20


def test_scale_uses_nearest_for_masks():
    image, mask = encoded_sample()
    for _ in range(5):
        _, out_mask = TrainTransform(crop_size=(12, 16), scale=(0.5, 2.0))(image, mask)
        assert set(out_mask.unique().tolist()) <= set(mask.unique().tolist()) | {255}


def test_color_jitter_only_on_rgb():
    grey = torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8)
    mask = torch.zeros(8, 8, dtype=torch.int64)
    out, _ = TrainTransform(crop_size=8, scale=(1.0, 1.0), hflip=False, color_jitter=0.5)(grey, mask)
    assert torch.equal(out, grey)
    rgb = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    out, _ = TrainTransform(crop_size=8, scale=(1.0, 1.0), hflip=False, color_jitter=0.5)(rgb, mask)
    assert out.dtype == torch.uint8 and not torch.equal(out, rgb)


def test_eval_transform_resize():
    image, mask = encoded_sample()
    out_image, out_mask = EvalTransform(size=(6, 8))(image, mask)
    assert out_image.shape == (3, 6, 8) and out_image.dtype == torch.uint8
    assert out_mask.shape == (6, 8) and out_mask.dtype == torch.int64
    assert set(out_mask.unique().tolist()) <= set(mask.unique().tolist())
    same_image, same_mask = EvalTransform()(image, mask)
    assert same_image is image and same_mask is mask


def test_instance_targets_drop_empty_and_recompute_boxes():
    image = torch.zeros(3, 10, 10, dtype=torch.uint8)
    masks = torch.zeros(2, 10, 10, dtype=torch.uint8)
    masks[0, 0:3, 0:2] = 1  # top-left: survives a crop of the top-left corner
    masks[1, 8:10, 8:10] = 1  # bottom-right: cropped away
    target = {"boxes": boxes_from_masks(masks), "labels": torch.tensor([3, 4]), "masks": masks}
    transform = TrainTransform(crop_size=(10, 10), scale=(0.5, 0.5), hflip=False, color_jitter=0)
    out_image, out = transform(image, target)
    assert out_image.shape == (3, 10, 10)
    assert out["masks"].dtype == torch.uint8 and out["masks"].shape[1:] == (10, 10)
    assert len(out["labels"]) == len(out["masks"]) == len(out["boxes"]) == 2  # both survive a 0.5 scale + pad
    assert torch.equal(out["boxes"], boxes_from_masks(out["masks"]))
    crop = TrainTransform(crop_size=(4, 4), scale=(1.0, 1.0), hflip=False, color_jitter=0)
    for _ in range(10):
        _, out = crop(image, target)
        assert len(out["labels"]) <= 1  # no 4x4 window holds both objects: the other one is dropped
        assert out["masks"].flatten(1).any(1).all() and out["boxes"].dtype == torch.float32
        assert torch.equal(out["boxes"], boxes_from_masks(out["masks"]))
        assert set(out["labels"].tolist()) <= {3, 4}


def test_boxes_from_masks_thin_line():
    masks = torch.zeros(2, 6, 6, dtype=torch.uint8)
    masks[0, 1:5, 2] = 1  # a vertical 1-px line still gets a positive width
    assert boxes_from_masks(masks).tolist() == [[2.0, 1.0, 3.0, 5.0], [0.0, 0.0, 0.0, 0.0]]
    assert boxes_from_masks(masks[:0]).shape == (0, 4)


def test_normalize():
    images = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    out = normalize(images, (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    assert out.dtype == torch.float32 and out.shape == images.shape
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([2.0, 1.0, 0.5]))
    with pytest.raises(SegbenchError, match="channels"):
        normalize(images, (0.5,), (0.25,))


def test_collate():
    image, mask = encoded_sample()
    images, masks = collate_semantic([(image, mask), (image, mask)])
    assert images.shape == (2, 3, 12, 16) and images.dtype == torch.uint8
    assert masks.shape == (2, 12, 16) and masks.dtype == torch.int64
    with pytest.raises(SegbenchError, match="differ in size"):
        collate_semantic([(image, mask), (image[:, :4], mask[:4])])
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 12, 16)}
    images, targets = collate_instance([(image, target), (image[:, :4], target)])
    assert isinstance(images, list) and len(images) == 2 and targets[1] is target
