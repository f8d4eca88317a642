"""Bootstrap over images for mIoU: a percentile CI, a paired test between two models, and shared ranks.

The unit of resampling is the image (Efron & Tibshirani 1993, ch. 13: the percentile interval). Inputs are the
per-image intersection and union pixel counts ``[N, K]`` that ``ConfusionMatrix(per_image=True)`` keeps, so a
resample's mIoU is computed exactly as the dataset-level one (sum counts over the drawn images, then IoU per
class, then the mean over classes with a non-empty union). Every function is re-exported by ``segbench.evaluation.metrics``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from segbench.records.columns import CI_METHOD
from segbench.errors import SegbenchError

__all__ = ["CI_METHOD", "bootstrap_miou_ci", "paired_bootstrap", "tie_groups"]


def _per_image(intersection, union, what: str) -> tuple[Tensor, Tensor]:
    """Both arrays as float64 CPU tensors ``[N, K]`` (float64 sums of int64 pixel counts stay exact below 2^53)."""
    inter = torch.as_tensor(intersection).detach().to("cpu", torch.float64)
    uni = torch.as_tensor(union).detach().to("cpu", torch.float64)
    if inter.dim() != 2 or inter.shape != uni.shape:
        raise SegbenchError(
            f"{what}: intersection {list(inter.shape)} and union {list(uni.shape)} must both be [N images, K classes]; "
            "pass ConfusionMatrix(per_image=True).compute()['per_image']"
        )
    if bool((inter < 0).any()) or bool((inter > uni).any()):
        raise SegbenchError(f"{what}: per-image counts must satisfy 0 <= intersection <= union; pass pixel counts")
    return inter, uni


def _resample_weights(n: int, resamples: int, seed: int) -> Tensor:
    """Multinomial counts ``[R, N]`` float64: row r says how often each image is drawn in resample r (sums to N)."""
    if resamples < 1:
        raise SegbenchError(f"bootstrap: resamples={resamples} must be >= 1 (1000 is the usual choice)")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    draws = torch.randint(0, n, (resamples, n), generator=gen)
    weights = torch.zeros(resamples, n, dtype=torch.float64)
    return weights.scatter_add_(1, draws, torch.ones(resamples, n, dtype=torch.float64))


def _miou_rows(inter: Tensor, union: Tensor) -> Tensor:
    """mIoU of each row of summed counts ``[R, K]`` -> ``[R]``: mean over classes with a non-empty union (the
    ``ConfusionMatrix`` policy), NaN when every union is empty."""
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.nan)
    return iou.nanmean(dim=1)


def _percentiles(values: Tensor, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise SegbenchError(f"bootstrap: level={level} must lie in (0, 1), e.g. 0.95")
    tail = (1 - level) / 2
    low, high = torch.nanquantile(values, torch.tensor([tail, 1 - tail], dtype=values.dtype)).tolist()
    return low, high


def bootstrap_miou_ci(
    intersection, union, *, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the dataset-level mIoU, resampling images with replacement.

    ``intersection``, ``union``: per-image pixel counts ``[N, K]`` (int64 tensors, arrays or nested lists), as
    ``ConfusionMatrix(per_image=True)`` keeps them. A resample's mIoU is the mean over classes with a non-empty
    union in that resample of ``sum_i I / sum_i U`` (one matrix per resample, as ``compute()``). All resamples
    at once: a multinomial counts matrix ``[R, N]`` times ``[N, K]``. Deterministic for a given ``seed``.
    Returns ``(low, high)``; ``(nan, nan)`` for fewer than 2 images.
    """
    inter, uni = _per_image(intersection, union, "bootstrap_miou_ci")
    if inter.shape[0] < 2:
        return math.nan, math.nan
    weights = _resample_weights(inter.shape[0], resamples, seed)
    return _percentiles(_miou_rows(weights @ inter, weights @ uni), level)


def paired_bootstrap(
    inter_a, union_a, inter_b, union_b, *, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Paired bootstrap of the mIoU difference A - B for two models scored on the same N images (same order).

    Each resample draws one set of image indices and scores both models on it, so image difficulty cancels.
    Returns ``{"diff": mIoU(A) - mIoU(B) on all images, "low", "high": percentile CI of the difference at
    ``level``, "p_value": two-sided bootstrap p-value of "no difference", 2 * min(P(d* <= 0), P(d* >= 0)) with
    the (count + 1) / (R + 1) correction, capped at 1}``. Fewer than 2 images: low, high and p_value are NaN.
    """
    ia, ua = _per_image(inter_a, union_a, "paired_bootstrap (model A)")
    ib, ub = _per_image(inter_b, union_b, "paired_bootstrap (model B)")
    if ia.shape != ib.shape:
        raise SegbenchError(
            f"paired_bootstrap: model A has per-image counts {list(ia.shape)}, model B {list(ib.shape)}; "
            "compare two models scored on the same images of the same dataset"
        )
    diff = float(_miou_rows(ia.sum(0, keepdim=True), ua.sum(0, keepdim=True))
                 - _miou_rows(ib.sum(0, keepdim=True), ub.sum(0, keepdim=True)))  # fmt: skip
    if ia.shape[0] < 2:
        return {"diff": diff, "low": math.nan, "high": math.nan, "p_value": math.nan}
    weights = _resample_weights(ia.shape[0], resamples, seed)
    diffs = _miou_rows(weights @ ia, weights @ ua) - _miou_rows(weights @ ib, weights @ ub)
    low, high = _percentiles(diffs, level)
    valid = diffs[~diffs.isnan()]
    tail = min(int((valid <= 0).sum()), int((valid >= 0).sum()))
    p_value = min(1.0, 2 * (tail + 1) / (len(valid) + 1))
    return {"diff": diff, "low": low, "high": high, "p_value": p_value}


def tie_groups(rows, *, resamples: int = 1000, level: float = 0.95, seed: int = 0) -> list[int]:
    """Shared ranks (1-based, competition style: 1, 1, 3) for rows sorted by mIoU, best first.

    Each row is a mapping with ``miou`` and ``per_image`` (``{"intersection": [N,K], "union": [N,K]}``, a record's
    metrics dict) or with ``intersection``/``union`` at the top level. A row whose paired bootstrap against the row
    above cannot separate them (the ``level`` CI of the difference includes 0) shares that row's rank; ties chain
    (A~B, B~C gives A, B and C one rank even if A and C differ). A row without per-image data (or on a different
    image set from the row above) cannot be tested and gets its own rank.
    """
    rows = list(rows)
    mious = [float(row["miou"]) for row in rows]
    if any(a < b for a, b in zip(mious, mious[1:])):
        raise SegbenchError(f"tie_groups: rows must be sorted by mIoU, best first; got {mious}")
    counts = [_row_counts(row) for row in rows]
    ranks: list[int] = []
    for i, current in enumerate(counts):
        above = counts[i - 1] if i else None
        tied = (
            above is not None and current is not None and above[0].shape == current[0].shape
            and _ci_includes_zero(*above, *current, resamples=resamples, level=level, seed=seed)
        )  # fmt: skip
        ranks.append(ranks[-1] if tied else i + 1)
    return ranks


def _row_counts(row) -> tuple[Tensor, Tensor] | None:
    data = row.get("per_image", row) if "intersection" not in row else row
    if not data or data.get("intersection") is None or data.get("union") is None:
        return None
    return _per_image(data["intersection"], data["union"], "tie_groups")


def _ci_includes_zero(ia, ua, ib, ub, **kwargs) -> bool:
    result = paired_bootstrap(ia, ua, ib, ub, **kwargs)
    if math.isnan(result["low"]):  # too few images to separate anything
        return True
    return result["low"] <= 0 <= result["high"]
