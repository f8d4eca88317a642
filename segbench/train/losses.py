"""Segmentation losses and the class / pixel weights the papers use.

Every loss maps ``(logits [B, K, H, W], target int64 [B, H, W], weight_map float [B, H, W] | None) -> scalar``
and computes in fp32 whatever the autocast state (bf16 logits are cast up),.
Target pixels equal to ``ignore_index`` (default 255) contribute nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor, nn

from segbench.errors import SegbenchError, nearest

__all__ = ["LOSSES", "build_loss", "median_frequency_weights", "unet_weight_map"]


# ---------------------------------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------------------------------


class _Loss(nn.Module):
    """Shared state: ignore value and optional per-class weights (float32 [K], a buffer so it follows ``.to``)."""

    def __init__(self, *, num_classes: int, ignore_index: int = 255, class_weights: Tensor | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", class_weights, persistent=False)


class CrossEntropyLoss(_Loss):
    """Pixel-wise cross-entropy, mean over non-ignored pixels.

    With ``class_weights`` w_c and an optional per-pixel ``weight_map`` w(x) (U-Net paper, eq. 1), the loss is
    ``sum_x w_c(x) w(x) CE(x) / sum_x w_c(x) w(x)`` over non-ignored pixels x; without a weight map this is exactly
    ``F.cross_entropy(..., weight=class_weights, ignore_index=ignore_index)``. A batch with no valid pixel gives 0
    (not NaN), so an all-ignore crop cannot poison training.
    """

    def forward(self, logits: Tensor, target: Tensor, weight_map: Tensor | None = None) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits = logits.float()
            per_pixel = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="none")
            valid = target != self.ignore_index
            weight = valid.float()
            if self.class_weights is not None:
                weight = weight * self.class_weights.to(logits.device)[torch.where(valid, target, 0)]
            if weight_map is not None:
                weight = weight * weight_map.float()
            return (per_pixel * weight).sum() / weight.sum().clamp_min(torch.finfo(torch.float32).tiny)


class DiceLoss(_Loss):
    """Soft multiclass Dice loss, 1 - mean over classes present in the batch's target of the soft Dice.

    Per class c over all non-ignored pixels of the batch: ``dice_c = 2 sum(p_c g_c) / (sum p_c + sum g_c)`` with
    p = softmax(logits), g = one-hot target. Classes absent from the target are left out of the mean (their Dice
    is undefined); ``class_weights`` weight the mean. ``weight_map`` is accepted and ignored (it is a CE term).
    """

    eps = 1e-6  # only guards 0/0; no smoothing in the numerator, so a perfect prediction gives ~0

    def forward(self, logits: Tensor, target: Tensor, weight_map: Tensor | None = None) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            valid = (target != self.ignore_index).unsqueeze(1).float()  # [B, 1, H, W]
            probs = logits.float().softmax(dim=1) * valid
            onehot = F.one_hot(torch.where(valid[:, 0].bool(), target, 0), self.num_classes)
            onehot = onehot.permute(0, 3, 1, 2).float() * valid  # [B, K, H, W]
            dims = (0, 2, 3)
            intersection = (probs * onehot).sum(dims)
            support = onehot.sum(dims)
            dice = 2 * intersection / (probs.sum(dims) + support + self.eps)
            present = (support > 0).float()
            if self.class_weights is not None:
                present = present * self.class_weights.to(logits.device)
            return ((1 - dice) * present).sum() / present.sum().clamp_min(torch.finfo(torch.float32).tiny)


class CEDiceLoss(_Loss):
    """``CE + dice_weight * Dice``; the weight map applies to the CE term only."""

    def __init__(self, *, dice_weight: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dice_weight = dice_weight
        self.ce = CrossEntropyLoss(**kwargs)
        self.dice = DiceLoss(**kwargs)

    def forward(self, logits: Tensor, target: Tensor, weight_map: Tensor | None = None) -> Tensor:
        return self.ce(logits, target, weight_map) + self.dice_weight * self.dice(logits, target)


LOSSES: dict[str, Callable[..., nn.Module]] = {"ce": CrossEntropyLoss, "dice": DiceLoss, "ce+dice": CEDiceLoss}


def build_loss(
    name: str = "ce",
    *,
    num_classes: int,
    ignore_index: int = 255,
    class_weights: Sequence[float] | Tensor | None = None,
    dice_weight: float = 1.0,
) -> nn.Module:
    """Build a loss by name ("ce", "dice", "ce+dice"); unknown names raise ``SegbenchError`` listing the valid ones.

    ``class_weights``: float [K] per-class weights (e.g. ``median_frequency_weights``); ``dice_weight`` scales the
    Dice term of "ce+dice". The module is called as ``loss(logits [B,K,H,W], target int64 [B,H,W], weight_map=None)``.
    """
    if name not in LOSSES:
        raise SegbenchError(f"loss '{name}': unknown loss{nearest(name, LOSSES)}; choose one of {', '.join(LOSSES)}")
    weights = None
    if class_weights is not None:
        weights = torch.as_tensor(class_weights, dtype=torch.float32).flatten()
        if weights.numel() != num_classes:
            raise SegbenchError(
                f"loss '{name}': class_weights has {weights.numel()} values but num_classes={num_classes}; "
                "give one weight per class"
            )
    kwargs = {"num_classes": num_classes, "ignore_index": ignore_index, "class_weights": weights}
    if name == "ce+dice":
        kwargs["dice_weight"] = dice_weight
    return LOSSES[name](**kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------------------------------


def median_frequency_weights(masks: Iterable[Tensor], num_classes: int, ignore_index: int = 255) -> Tensor:
    """Median-frequency class weights (Eigen & Fergus 2015, Sec. 4.1), float32 [K].

    ``masks``: int class maps ``[H, W]`` or batches ``[B, H, W]`` (each ``[H, W]`` is one image), values in
    ``[0, K)`` or ``ignore_index``. ``freq_c`` = pixels of class c / total (non-ignored) pixels of the images where
    c appears; ``w_c = median(freq) / freq_c``, the median (mean of the two middle values for an even count) taken
    over the classes seen. Classes never seen get weight 0.
    """
    k = num_classes
    class_pixels = torch.zeros(k, dtype=torch.float64)
    image_pixels = torch.zeros(k, dtype=torch.float64)  # sum of image sizes over images where c appears
    for mask in masks:
        mask = torch.as_tensor(mask).detach().cpu().long()
        images = mask.reshape(-1, mask.shape[-2] * mask.shape[-1])  # [N, H*W]
        valid = images != ignore_index
        bad = valid & ((images < 0) | (images >= k))
        if bad.any():
            raise SegbenchError(
                f"median_frequency_weights: mask values {images[bad].unique()[:10].tolist()} are outside [0, {k}) "
                f"and not ignore_index={ignore_index}; check num_classes and the ignore value"
            )
        # One bincount for the whole batch: bin = image * K + class, ignored pixels dropped.
        n = images.shape[0]
        bins = (torch.arange(n).view(n, 1) * k + images)[valid]
        counts = torch.bincount(bins, minlength=n * k).view(n, k).double()  # [N, K]
        class_pixels += counts.sum(0)
        image_pixels += ((counts > 0) * valid.sum(1, keepdim=True)).sum(0)

    seen = class_pixels > 0
    weights = torch.zeros(k, dtype=torch.float64)
    if seen.any():
        freq = class_pixels[seen] / image_pixels[seen]
        weights[seen] = freq.quantile(0.5) / freq  # torch.median would return the lower middle value
    return weights.float()


def unet_weight_map(instances: Tensor, w0: float = 10.0, sigma: float = 5.0, class_balance: bool = True) -> Tensor:
    """U-Net pixel weight map (Ronneberger et al. 2015, Sec. 3, eq. 2), float32 [H, W].

    ``instances``: int instance-id map ``[H, W]`` (0 = background, each cell a distinct positive id), or a stack of
    binary instance masks ``[N, H, W]``. On background pixels
    ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))``, with d1, d2 the distances to the nearest and
    second-nearest cell; on cell pixels ``w(x) = w_c(x)``. The paper uses w0 = 10, sigma ~ 5 pixels.
    ``w_c`` balances background vs cell pixels of this image (each class gets the same total weight:
    ``w_c = n_pixels / (n_classes_present * n_c)``); with ``class_balance=False`` it is 1. With fewer than two cells
    there is no border to separate and ``w = w_c``.
    """
    if instances.dim() == 3:  # stack of binary masks -> id map (a later mask wins where masks overlap)
        ids = torch.arange(1, instances.shape[0] + 1, device=instances.device).view(-1, 1, 1)
        if instances.shape[0] == 0:
            instances = instances.new_zeros(instances.shape[1:], dtype=torch.int64)
        else:
            instances = ((instances > 0) * ids).amax(dim=0)
    if instances.dim() != 2:
        raise SegbenchError(
            f"unet_weight_map: expected an instance-id map [H,W] or masks [N,H,W], got {list(instances.shape)}; "
            "pass one image's instances"
        )
    labels = instances.detach().cpu().numpy()
    foreground = labels > 0

    w = np.ones(labels.shape, dtype=np.float64)
    if class_balance:
        n_fg = int(foreground.sum())
        n_bg = foreground.size - n_fg
        present = (n_fg > 0) + (n_bg > 0)
        if n_fg:
            w[foreground] = foreground.size / (present * n_fg)
        if n_bg:
            w[~foreground] = foreground.size / (present * n_bg)

    cell_ids = np.unique(labels[foreground])
    if len(cell_ids) >= 2:
        # Running nearest / second-nearest distance: one EDT per cell (distance of every pixel to that cell),
        # keeping memory at O(H*W) instead of stacking N distance maps.
        d1 = np.full(labels.shape, np.inf)
        d2 = np.full(labels.shape, np.inf)
        for cell in cell_ids:
            d = ndimage.distance_transform_edt(labels != cell)
            d2 = np.minimum(d2, np.maximum(d1, d))
            d1 = np.minimum(d1, d)
        border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
        w = w + np.where(foreground, 0.0, border)
    return torch.from_numpy(w).float()
