"""Joint image/target transforms (torchvision.transforms.v2, uint8 throughout), normalisation and collate functions.

A transform is called as ``transform(image, mask)`` for semantic samples or ``transform(image, target)`` for instance
samples and returns the same pair with plain tensors:

- ``image``: ``uint8 [C,H,W]``;
- ``mask``: ``int64 [H,W]``, class indices or the ignore value (255 unless the dataset says otherwise);
- ``target``: ``{"boxes": float32 [N,4] xyxy, "labels": int64 [N], "masks": uint8 [N,H,W], ...}``; instances whose
  mask became empty (cropped away) are dropped, and boxes are recomputed from the masks (``boxes_from_masks``).

Normalisation is not a transform: ``normalize`` runs once, on the device, on a uint8 batch (the engine calls it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..errors import SegbenchError

Target = Tensor | dict[str, Tensor]

# ================================================================ normalisation


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``uint8 [B,C,H,W]`` (or ``[C,H,W]``, any device) -> ``float32`` ``(x / 255 - mean) / std``; mean/std on 0..1."""
    channels = images.shape[-3]
    if len(mean) != channels or len(std) != channels:
        raise SegbenchError(
            f"normalize: images have {channels} channels but mean/std have {len(mean)}/{len(std)}; "
            "use the dataset's in_channels (or the mean/std the model was trained with)"
        )
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(-1, 1, 1)
    return (images.to(torch.float32) / 255.0 - mean_t) / std_t


# ================================================================ instance helpers


def boxes_from_masks(masks: Tensor) -> Tensor:
    """``masks [N,H,W]`` -> ``float32 [N,4]`` xyxy boxes covering each mask's pixels.

    ``x2``/``y2`` are the last column/row + 1 (pixel extents, as in COCO), so a 1-pixel-wide line still gets a box of
    positive width, which torchvision's Mask R-CNN requires. Empty masks give ``[0, 0, 0, 0]``.
    """
    if masks.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.float32, device=masks.device)
    masks = masks.bool()
    cols = masks.any(dim=1)  # [N,W]
    rows = masks.any(dim=2)  # [N,H]
    h, w = masks.shape[-2:]
    # argmax on int finds the first True; on the flipped axis it finds the last one.
    x1 = cols.to(torch.uint8).argmax(dim=1)
    x2 = w - cols.flip(1).to(torch.uint8).argmax(dim=1)
    y1 = rows.to(torch.uint8).argmax(dim=1)
    y2 = h - rows.flip(1).to(torch.uint8).argmax(dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).to(torch.float32)
    return boxes * cols.any(dim=1, keepdim=True)


def _wrap_instances(image: Tensor, target: dict[str, Tensor]) -> dict[str, Tensor]:
    masks = target["masks"]
    boxes = target["boxes"] if "boxes" in target else boxes_from_masks(masks)
    return {
        **target,
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=tuple(image.shape[-2:])),
        "masks": tv_tensors.Mask(masks),
    }


def _unwrap_instances(target: dict[str, Tensor]) -> dict[str, Tensor]:
    """Plain tensors again; drop instances whose mask is empty; boxes from the (transformed) masks."""
    masks = target["masks"].as_subclass(Tensor).to(torch.uint8)
    keep = (masks.flatten(1) != 0).any(dim=1)
    n = masks.shape[0]
    out = {}
    for key, value in target.items():
        if key in ("boxes", "masks"):
            continue
        # per-instance fields (labels, iscrowd, area, ...) follow the kept instances
        out[key] = value[keep] if isinstance(value, Tensor) and value.ndim >= 1 and value.shape[0] == n else value
    out["masks"] = masks[keep]
    out["boxes"] = boxes_from_masks(out["masks"])
    if "area" in out:
        out["area"] = out["masks"].flatten(1).sum(dim=1).to(torch.float32)
    return out


def _apply(pipeline: v2.Transform, image: Tensor, target: Target) -> tuple[Tensor, Target]:
    image = tv_tensors.Image(image)
    if isinstance(target, dict):
        image, target = pipeline(image, _wrap_instances(image, target))
        return image.as_subclass(Tensor), _unwrap_instances(target)
    image, mask = pipeline(image, tv_tensors.Mask(target))
    return image.as_subclass(Tensor), mask.as_subclass(Tensor)


# ================================================================ transforms


class RandomScale(v2.Transform):
    """Resize by a factor drawn uniformly from ``scale`` (same factor for H and W); masks use nearest."""

    def __init__(self, scale: tuple[float, float]) -> None:
        super().__init__()
        self.scale = (float(scale[0]), float(scale[1]))

    def make_params(self, flat_inputs: list) -> dict:
        h, w = v2.query_size(flat_inputs)
        factor = torch.empty(()).uniform_(*self.scale).item()
        return {"size": [max(1, round(h * factor)), max(1, round(w * factor))]}

    def transform(self, inpt, params: dict):
        # v2 dispatches on the tv_tensor type: bilinear for Image, nearest for Mask, rescaled BoundingBoxes.
        return self._call_kernel(F.resize, inpt, params["size"], antialias=True)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


class TrainTransform:
    """Random scale -> random crop to ``crop_size`` (padded) -> horizontal flip -> colour jitter (RGB only).

    Args:
        crop_size: output ``H, W`` (int for square), or None for no crop (sizes then vary with the scale). Smaller
            images are padded: image with 0, semantic mask with ``ignore_index`` (so padding never counts as a
            class), instance masks with 0.
        scale: range of the random resize factor (1.0 = original size).
        hflip: flip image and target together with probability 0.5.
        color_jitter: brightness/contrast/saturation strength (hue gets a quarter of it); applied to 3-channel images
            only, 0 disables it.
        ignore_index: the value padded into semantic masks.
    """

    def __init__(
        self,
        crop_size: int | Sequence[int] | None,
        scale: tuple[float, float] = (0.5, 2.0),
        hflip: bool = True,
        color_jitter: float = 0.2,
        ignore_index: int = 255,
    ) -> None:
        self.crop_size = None if crop_size is None else _pair(crop_size)
        self.scale = scale
        self.hflip = hflip
        self.color_jitter = color_jitter
        self.ignore_index = ignore_index
        self._semantic = self._geometry(mask_fill=ignore_index)
        self._instance = self._geometry(mask_fill=0)
        self._jitter = (
            v2.ColorJitter(color_jitter, color_jitter, color_jitter, min(color_jitter / 4, 0.5))
            if color_jitter > 0
            else None
        )

    def _geometry(self, *, mask_fill: int) -> v2.Compose:
        fill = {tv_tensors.Image: 0, tv_tensors.Mask: mask_fill}
        steps: list[v2.Transform] = []
        if tuple(self.scale) != (1.0, 1.0):
            steps.append(RandomScale(self.scale))
        if self.crop_size is not None:
            steps.append(v2.RandomCrop(self.crop_size, pad_if_needed=True, fill=fill))
        if self.hflip:
            steps.append(v2.RandomHorizontalFlip(0.5))
        return v2.Compose(steps or [v2.Identity()])

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        pipeline = self._instance if isinstance(target, dict) else self._semantic
        image, target = _apply(pipeline, image, target)
        if self._jitter is not None and image.shape[0] == 3:
            image = self._jitter(tv_tensors.Image(image)).as_subclass(Tensor)
        return image, target

    def __repr__(self) -> str:
        return (
            f"TrainTransform(crop_size={self.crop_size}, scale={self.scale}, hflip={self.hflip}, "
            f"color_jitter={self.color_jitter}, ignore_index={self.ignore_index})"
        )


class EvalTransform:
    """Deterministic: resize to ``size = (H, W)`` (bilinear image, nearest masks), or nothing when ``size`` is None."""

    def __init__(self, size: int | Sequence[int] | None = None) -> None:
        self.size = None if size is None else _pair(size)
        self._resize = None if self.size is None else v2.Resize(list(self.size), antialias=True)

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        if self._resize is None:
            return image, target
        return _apply(self._resize, image, target)

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size})"


# ================================================================ collate


def collate_semantic(batch: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """``[(uint8 [C,H,W], int64 [H,W]), ...]`` -> ``(uint8 [B,C,H,W], int64 [B,H,W])``; sizes must match."""
    images, masks = zip(*batch)
    sizes = {tuple(image.shape) for image in images}
    if len(sizes) > 1:
        raise SegbenchError(
            f"batch: images differ in size ({', '.join('x'.join(map(str, s)) for s in sorted(sizes)[:3])}); "
            "set a crop size / eval size so they match, or use batch_size 1"
        )
    return torch.stack(images), torch.stack(masks)


def collate_instance(batch: Sequence[tuple[Tensor, dict[str, Tensor]]]) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """``[(uint8 [C,H,W], target), ...]`` -> ``(list of images, list of targets)``; sizes may differ."""
    images, targets = zip(*batch)
    return list(images), list(targets)
