"""A training split held on the device as uint8 tensors, with batched augmentation there.

The host pipeline (``DataLoader`` + ``TrainTransform``) decodes and augments one sample at a time on the CPU; on a GPU
that caps training at a few hundred images/s however fast the model is. ``ResidentLoader`` decodes the split once,
keeps it on the device (``uint8 [N,C,H,W]`` images, ``uint8``/``int64 [N,H,W]`` masks) and builds every batch with a
gather and one ``grid_sample`` (``DeviceAugment``): the same protocol as ``TrainTransform`` (random scale, random crop
padded with 0 / the ignore value, horizontal flip, colour jitter) drawn per sample from a seeded CPU generator.

Differences from the host pipeline, by design: the resampling is bilinear without anti-aliasing (scales below 1 alias
slightly more than ``F.resize(antialias=True)``), and colour jitter applies brightness, contrast, saturation, hue in
this fixed order (torchvision shuffles the order), with hue as a rotation of the chroma plane in YIQ.
Semantic datasets whose images all share one size only; anything else stays on the host pipeline.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as tf
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..errors import SegbenchError
from .sharding import Shard, batch_count, check_feeds, rank_slice

# RGB <-> YIQ (NTSC); hue rotates the (I, Q) plane, luma Y is kept.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)
_GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


class NotResident(SegbenchError):
    """The split cannot be held on the device (sizes differ, too large, instance task, ...)."""


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


class DeviceAugment:
    """Batched random scale -> crop (padded) -> flip -> colour jitter on ``uint8 [B,C,H,W]`` images and their masks.

    Args:
        crop_size: output ``H, W`` (int for square), or None to keep the input size (then ``scale`` must be 1).
        scale: range of the per-sample resize factor; the crop window is placed uniformly inside the scaled image, or
            the scaled image uniformly inside the window when it is smaller (the rest padded: image 0, mask ignore).
        hflip: flip with probability 0.5 per sample.
        color_jitter: brightness/contrast/saturation factors in ``[1 - j, 1 + j]``, hue shift in ``[-j/4, j/4]`` turns
            (at most 0.5); 3-channel images only; 0 disables it.
        ignore_index: value of padded mask pixels.

    ``__call__(images, masks, generator)`` returns ``(uint8 [B,C,h,w], int64 [B,h,w])`` on the images' device.
    """

    def __init__(self, crop_size: int | Sequence[int] | None, scale: tuple[float, float] = (1.0, 1.0),
                 hflip: bool = True, color_jitter: float = 0.0, ignore_index: int = 255) -> None:
        self.crop_size = None if crop_size is None else _pair(crop_size)
        self.scale = (float(scale[0]), float(scale[1]))
        if self.crop_size is None and self.scale != (1.0, 1.0):
            raise NotResident("random scale without a crop size gives batches of different sizes; set crop_size")
        self.hflip = hflip
        self.color_jitter = float(color_jitter)
        self.ignore_index = ignore_index

    def __call__(self, images: Tensor, masks: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return self.apply(images, masks, self.draw(images.shape[0], generator))

    @staticmethod
    def draw(count: int, generator: torch.Generator) -> Tensor:
        """The random numbers of ``count`` samples, float32 [count, 8] in [0, 1) on the CPU."""
        return torch.rand(count, 8, generator=generator)

    def apply(self, images: Tensor, masks: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """Augment with the given draws ``u`` [B, 8] (one row per sample, from :meth:`draw`)."""
        _b, c, h, w = images.shape
        ch, cw = self.crop_size or (h, w)
        u = u.to(images.device, non_blocking=True)
        grid = self._grid(u, (h, w), (ch, cw))
        out = tf.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        # Masks: sample (label + 1) with nearest and zero padding, so 0 marks "outside the image" -> ignore.
        shifted = tf.grid_sample((masks.float() + 1)[:, None], grid, mode="nearest", padding_mode="zeros",
                                 align_corners=False)[:, 0]
        target = torch.where(shifted == 0, torch.full_like(shifted, self.ignore_index), shifted - 1).long()
        if self.color_jitter > 0 and c == 3:
            out = self._jitter(out, u[:, 4:8])
        return out.clamp_(0, 255).round_().to(torch.uint8), target

    def _grid(self, u: Tensor, size: tuple[int, int], crop: tuple[int, int]) -> Tensor:
        """``grid_sample`` grid ``[B,ch,cw,2]`` mapping each output pixel centre to its source position."""
        (h, w), (ch, cw) = size, crop
        lo, hi = self.scale
        factor = lo + (hi - lo) * u[:, 0]
        hs = (h * factor).round().clamp(min=1)  # scaled image size, as F.resize would round it
        ws = (w * factor).round().clamp(min=1)
        top = _offset(u[:, 1], hs, ch)
        left = _offset(u[:, 2], ws, cw)
        dev = u.device
        y = torch.arange(ch, device=dev, dtype=torch.float32)
        x = torch.arange(cw, device=dev, dtype=torch.float32)
        flip = (u[:, 3] < 0.5) if self.hflip else torch.zeros_like(u[:, 3], dtype=torch.bool)
        x = torch.where(flip[:, None], cw - 1 - x, x)  # [B,cw]
        # centre of output pixel -> position in the scaled image -> position in the source (pixel edges at integers)
        sy = (y[None] + top[:, None] + 0.5) * (h / hs)[:, None]
        sx = (x + left[:, None] + 0.5) * (w / ws)[:, None]
        gy = (sy * (2.0 / h) - 1.0)[:, :, None].expand(-1, ch, cw)
        gx = (sx * (2.0 / w) - 1.0)[:, None, :].expand(-1, ch, cw)
        return torch.stack([gx, gy], dim=-1)

    def _jitter(self, x: Tensor, u: Tensor) -> Tensor:
        """Per-sample brightness, contrast, saturation, hue on float ``[B,3,H,W]`` in 0..255 (``u``: ``[B,4]``)."""
        j = self.color_jitter
        f = 1.0 - j + 2.0 * j * u[:, :3]  # [B,3] factors
        grey_w = torch.tensor(_GREY, device=x.device).view(1, 3, 1, 1)
        x = (x * f[:, 0].view(-1, 1, 1, 1)).clamp_(0, 255)
        mean = (x * grey_w).sum(1, keepdim=True).mean(dim=(2, 3), keepdim=True)
        x = ((x - mean) * f[:, 1].view(-1, 1, 1, 1) + mean).clamp_(0, 255)
        grey = (x * grey_w).sum(1, keepdim=True)
        x = ((x - grey) * f[:, 2].view(-1, 1, 1, 1) + grey).clamp_(0, 255)
        hue = min(j / 4, 0.5)
        if hue > 0:
            angle = (2.0 * u[:, 3] - 1.0) * hue * 2.0 * math.pi  # [B] radians
            cos, sin = angle.cos(), angle.sin()
            rot = torch.zeros(x.shape[0], 3, 3, device=x.device)
            rot[:, 0, 0] = 1.0
            rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
            m = _YIQ_TO_RGB.to(x.device) @ rot @ _RGB_TO_YIQ.to(x.device)  # [B,3,3]
            x = torch.einsum("bij,bjhw->bihw", m, x)
        return x

    def __repr__(self) -> str:
        return (f"DeviceAugment(crop_size={self.crop_size}, scale={self.scale}, hflip={self.hflip}, "
                f"color_jitter={self.color_jitter}, ignore_index={self.ignore_index})")


def _offset(u: Tensor, scaled: Tensor, crop: int) -> Tensor:
    """Crop offset in the scaled image: uniform in [0, scaled - crop], or in [scaled - crop, 0] (padding)."""
    span = (scaled - crop).abs()
    step = torch.minimum((u * (span + 1)).floor(), span)
    return torch.where(scaled >= crop, step, -step)


@dataclass(frozen=True)
class Preload:
    """How a split is read onto the device, once: DataLoader ``num_workers`` and the ``max_bytes`` it may take there
    (None: no limit; over it, NotResident)."""

    num_workers: int = 0
    max_bytes: int | None = None


class ResidentLoader:
    """Batches of a semantic training split held on ``device``; iterate like a ``DataLoader``.

    Yields ``(uint8 [B,C,h,w], int64 [B,h,w])`` already on ``device`` (masks use the dataset's ignore value).
    ``generator`` (a CPU ``torch.Generator``) draws the order and the augmentation; the engine reseeds it each epoch,
    so a resumed run sees the same batches. ``dataset`` is the un-augmented split.

    Under DDP (``shard.world_size`` > 1) every rank holds the whole split and yields its slice of each global batch of
    ``batch_size`` (``data.sharding``), augmented with the draws the one-process run gives those images: the ranks
    together see exactly the one-process epoch.
    """

    def __init__(self, dataset: Dataset, *, batch_size: int, device: torch.device, augment: DeviceAugment | None,
                 seed: int = 0, drop_last: bool = True, preload: Preload = Preload(), shard: Shard = Shard()) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.device = device
        self.augment = augment
        self.drop_last = drop_last and len(dataset) > batch_size
        self.rank, self.world_size = shard.rank, shard.world_size
        check_feeds(len(dataset), batch_size, shard.world_size, self.drop_last)
        self.generator = torch.Generator().manual_seed(seed)
        self.images, self.masks = _load_all(dataset, device, preload.num_workers, preload.max_bytes)

    def __len__(self) -> int:
        return batch_count(self.images.shape[0], self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.randperm(self.images.shape[0], generator=self.generator)
        for i in range(len(self)):
            batch = order[i * self.batch_size:(i + 1) * self.batch_size]
            start, stop = rank_slice(len(batch), self.rank, self.world_size)
            index = batch[start:stop].to(self.device, non_blocking=True)
            images = self.images.index_select(0, index)
            masks = self.masks.index_select(0, index)
            if self.augment is not None:
                u = self.augment.draw(len(batch), self.generator)[start:stop]  # the whole batch's draws: ranks agree
                yield self.augment.apply(images, masks, u)
            else:
                yield images, masks.long()

    @property
    def nbytes(self) -> int:
        return self.images.nbytes + self.masks.nbytes


def _load_all(dataset: Dataset, device: torch.device, num_workers: int, max_bytes: int | None) -> tuple[Tensor, Tensor]:
    """Decode every sample once into ``uint8 [N,C,H,W]`` images and ``uint8 [N,H,W]`` masks (int64 when a label
    does not fit a byte) on ``device``."""
    n = len(dataset)
    if n == 0:
        raise SegbenchError("the training split is empty; check data_root")
    images = masks = None
    for i, (image, mask) in enumerate(DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers)):
        if isinstance(mask, dict):
            raise NotResident("instance targets stay on the host pipeline")
        if images is None:
            need = n * (image.numel() + mask.numel())
            if max_bytes is not None and need > max_bytes:
                raise NotResident(f"the training split needs {need / 2**30:.2f} GiB on {device.type}, "
                                  f"over the {max_bytes / 2**30:.2f} GiB allowed")
            images = torch.empty((n, *image.shape), dtype=torch.uint8, device=device)
            masks = torch.empty((n, *mask.shape), dtype=torch.uint8, device=device)
        elif image.shape != images.shape[1:]:
            raise NotResident(f"image {i} is {'x'.join(map(str, image.shape))}, image 0 is "
                              f"{'x'.join(map(str, images.shape[1:]))}: sizes differ")
        if masks.dtype == torch.uint8 and (int(mask.max()) > 255 or int(mask.min()) < 0):
            masks = masks.long()
        images[i].copy_(image, non_blocking=True)
        masks[i].copy_(mask, non_blocking=True)
    return images, masks


def resident_budget(device: torch.device) -> int:
    """Bytes a resident split may take: a quarter of the GPU's free memory, or of the machine's RAM."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free // 4
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30
