"""Vectorised mask pasting: all of a batch's M x M mask probabilities resampled into the image at once.

torchvision's ``paste_masks_in_image`` loops over instances in Python: per instance it reads the box back to
the host (``int(box[2] - box[0] + 1)``, a device sync on GPU), bilinearly resizes the mask to the box, allocates a
full-image zero mask, copies the box region in, and finally stacks the N images. This module computes the same
numbers with a handful of batched tensor ops and no host round trip:

    out[n] = Wy[n] @ P[n] @ Wx[n]^T

where ``P[n]`` is the mask padded by one zero pixel on each side (as torchvision does, so edges fade out), and
``Wy`` [N,H,S] / ``Wx`` [N,W,S] are the bilinear interpolation matrices (two non-zeros per row) that map the padded
mask onto the integer pixel grid of the expanded box; rows and columns outside the box are zero, so no separate
crop / zero-fill / copy is needed. The matrices reproduce ``F.interpolate(mode="bilinear",
align_corners=False)`` on torchvision's integer box exactly (same source-index rule, same clamping), so the result
equals the stock paste up to float rounding (tested; per-instance mask IoU 1.0 on random boxes, including boxes that
are partly outside the image).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["paste_masks", "expand_boxes"]


def expand_boxes(boxes: Tensor, scale: float) -> Tensor:
    """Scale xyxy boxes about their centres; float [N,4] -> float [N,4] (same ops as torchvision, same rounding)."""
    w_half = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    h_half = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    x_c = (boxes[:, 2] + boxes[:, 0]) * 0.5
    y_c = (boxes[:, 3] + boxes[:, 1]) * 0.5
    return torch.stack((x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half), dim=1)


def _interp_matrix(lo: Tensor, hi: Tensor, size: int, src: int, dtype: torch.dtype) -> Tensor:
    """Bilinear weights [N,size,src] mapping ``src`` source samples onto pixels ``lo..hi`` (inclusive) of a
    ``size``-long image axis; zero rows outside the box.

    Follows ATen's ``upsample_bilinear2d`` (align_corners=False): the box spans ``out = max(hi - lo + 1, 1)``
    pixels, pixel ``j`` of the box samples ``max((j + 0.5) * src / out - 0.5, 0)``.
    """
    pos = torch.arange(size, device=lo.device)
    j = pos[None, :] - lo[:, None]  # int64 [N,size]: position inside the box
    out_len = (hi - lo + 1).clamp(min=1)
    ratio = src / out_len.to(torch.float32)  # float32 like ATen's opmath for float inputs
    real = (ratio[:, None] * (j.to(torch.float32) + 0.5) - 0.5).clamp(min=0)
    i0 = real.to(torch.int64)  # real >= 0, so truncation is floor
    lam1 = (real - i0).clamp(0, 1)
    i0 = i0.clamp(max=src - 1)
    i1 = (i0 + 1).clamp(max=src - 1)
    inside = ((j >= 0) & (pos[None, :] <= hi[:, None])).to(torch.float32)
    weights = torch.zeros(lo.shape[0], size, src, device=lo.device, dtype=torch.float32)
    # scatter_add: when i0 == i1 (last source sample) both weights land on the same column, as in ATen.
    weights.scatter_add_(2, i0[..., None], ((1 - lam1) * inside)[..., None])
    weights.scatter_add_(2, i1[..., None], (lam1 * inside)[..., None])
    return weights.to(dtype)


def _empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """An uninitialised output tensor. On CPU a large one is allocated by NumPy, which asks the kernel for
    transparent huge pages (``madvise(MADV_HUGEPAGE)`` for arrays >= 4 MiB); PyTorch's CPU allocator does not
    (unless ``THP_MEM_ALLOC_ENABLE=1``), and first-touch page faults on 4 KiB pages then cost more than the
    resampling itself (100 masks of 512 x 512 = 100 MiB: ~60 ms of faults vs ~25 ms of arithmetic on one core)."""
    if device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    np_dtype = {torch.float32: np.float32, torch.float64: np.float64, torch.bool: np.bool_}[dtype]
    return torch.from_numpy(np.empty(shape, dtype=np_dtype))


def paste_masks(
    masks: Tensor,
    boxes: Tensor,
    height: int,
    width: int,
    *,
    padding: int = 1,
    threshold: float | None = None,
) -> Tensor:
    """Paste per-box mask probabilities into full images, all instances at once.

    Args:
        masks: float [N,1,M,M] mask probabilities in box coordinates (Mask R-CNN's 28 x 28 output).
        boxes: float [N,4] xyxy boxes in the output image's pixel coordinates (may lie partly outside it).
        height, width: output size.
        padding: zero pixels added around each mask before resampling (torchvision uses 1, so masks fade to 0 at
            the box edge; the box is enlarged by (M + 2 * padding) / M to keep the mask's scale).
        threshold: if given, return ``bool`` masks ``prob >= threshold`` instead of probabilities (fused: the
            float image is thresholded in place, no second buffer).

    Returns:
        float [N,1,height,width] probabilities (0 outside each box), or bool of that shape when ``threshold`` is
        set; dtype of ``masks`` for float.
    """
    # Under autocast (bf16 inference) bmm would run in bf16 and clash with the fp32 output buffers: paste in fp32.
    with torch.autocast(masks.device.type, enabled=False):
        return _paste(masks.float(), boxes, height, width, padding, threshold)


def _paste(masks: Tensor, boxes: Tensor, height: int, width: int, padding: int, threshold: float | None) -> Tensor:
    n, m = masks.shape[0], masks.shape[-1]
    if n == 0:
        empty = masks.new_zeros((0, 1, height, width))
        return empty.bool() if threshold is not None else empty
    padded = F.pad(masks[:, 0], (padding,) * 4)  # [N,S,S], S = M + 2 * padding
    src_h, src_w = padded.shape[-2:]
    # torchvision truncates the expanded box to integers and pastes on that grid: do the same so results match.
    ibox = expand_boxes(boxes.to(torch.float32), float(m + 2 * padding) / m).to(torch.int64)
    dtype = masks.dtype if masks.dtype in (torch.float32, torch.float64) else torch.float32
    wy = _interp_matrix(ibox[:, 1], ibox[:, 3], height, src_h, dtype)  # [N,H,S]
    wx = _interp_matrix(ibox[:, 0], ibox[:, 2], width, src_w, dtype)  # [N,W,S]
    # (S x S) @ (S x W) first: the small product, then one [H,S] @ [S,W] product per instance.
    rows = torch.bmm(padded.to(dtype), wx.transpose(1, 2))  # [N,S,W]
    if threshold is None:
        out = torch.bmm(wy, rows, out=_empty((n, height, width), dtype, masks.device))
        return out[:, None].to(masks.dtype)
    # Fused threshold: resample a chunk of instances into one reused float buffer, compare into the bool output;
    # the full float result never exists (on GPU one chunk holds everything).
    out = _empty((n, height, width), torch.bool, masks.device)
    chunk = n if masks.device.type != "cpu" else max(1, min(n, (8 << 20) // (4 * height * width)))
    buf = _empty((chunk, height, width), dtype, masks.device)
    for i in range(0, n, chunk):
        j = min(i + chunk, n)
        torch.bmm(wy[i:j], rows[i:j], out=buf[: j - i])
        torch.ge(buf[: j - i], threshold, out=out[i:j])
    return out[:, None]
