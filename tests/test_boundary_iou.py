"""Boundary IoU (Cheng et al., CVPR 2021): a hand-computed case and equality with the reference definition
(boundary-iou-api ``mask_to_boundary``, re-implemented with scipy: zero pad of 1, 3x3 erosion ``d`` times with
cv2's foreground border, mask minus eroded) on random masks."""

import math

import numpy as np
import pytest
import torch

from segbench.errors import SegbenchError
from segbench.evaluation.metrics import ConfusionMatrix, boundary_dilation, boundary_region

from scipy import ndimage  # noqa: E402


def _reference_boundary(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """boundary-iou-api's ``mask_to_boundary`` with scipy in place of cv2."""
    h, w = mask.shape
    dilation = max(1, int(round(dilation_ratio * np.sqrt(h**2 + w**2))))
    padded = np.pad(mask.astype(bool), 1, constant_values=False)  # cv2.copyMakeBorder(..., BORDER_CONSTANT, 0)
    # cv2.erode's default border value is "+inf": outside the padded image counts as foreground.
    eroded = ndimage.binary_erosion(padded, structure=np.ones((3, 3)), iterations=dilation, border_value=1)
    return mask.astype(bool) & ~eroded[1 : h + 1, 1 : w + 1]


def _reference_boundary_iou(preds, targets, num_classes, ignore_index=255, ratio=0.02):
    inter, union = np.zeros(num_classes), np.zeros(num_classes)
    for pred, target in zip(preds, targets):
        valid = target != ignore_index
        for c in range(num_classes):
            gt = _reference_boundary(target == c, ratio) & valid
            pr = _reference_boundary(pred == c, ratio) & valid
            inter[c] += (gt & pr).sum()
            union[c] += (gt | pr).sum()
    return [i / u if u else math.nan for i, u in zip(inter, union)]


def test_dilation_rule():
    assert boundary_dilation(8, 8, 0.02) == 1  # round(0.226) = 0 -> at least 1
    assert boundary_dilation(512, 512, 0.02) == 14  # round(14.48)
    assert boundary_dilation(360, 480, 0.02) == 12  # diagonal 600


def test_hand_computed_square():
    # 8x8 image (d = 1). Ground truth: the 4x4 square rows 2..5, cols 2..5; its boundary is the outer ring of
    # 16 - 4 = 12 pixels. Prediction: the square shifted right by one (cols 3..6), ring of 12 pixels. Both rings
    # share rows 2 and 5 at cols 3..5 (6 pixels); on rows 3..4 the GT ring is cols {2, 5} and the predicted one
    # cols {3, 6}: nothing shared. Boundary IoU of class 1 = 6 / (12 + 12 - 6).
    target = torch.zeros(1, 8, 8, dtype=torch.int64)
    target[0, 2:6, 2:6] = 1
    pred = torch.zeros(1, 8, 8, dtype=torch.int64)
    pred[0, 2:6, 3:7] = 1
    ring = boundary_region(target[0] == 1, 1)
    assert int(ring.sum()) == 12 and not ring[3:5, 3:5].any()

    cm = ConfusionMatrix(2, boundary=True)
    cm.update(pred, target)
    r = cm.compute()
    assert r["boundary_iou"][1] == pytest.approx(6 / 18)
    # Background: its boundary is its pixels next to the image edge (the zero pad) or next to the square.
    assert r["boundary_iou"][0] == pytest.approx(_reference_boundary_iou(pred.numpy(), target.numpy(), 2)[0])
    assert r["mean_boundary_iou"] == pytest.approx((r["boundary_iou"][0] + 6 / 18) / 2)
    assert r["boundary_dilation_ratio"] == 0.02
    assert r["miou"] == ConfusionMatrix.summary(cm.matrix)["miou"]  # the matrix is untouched by boundary=True


def test_mask_touching_the_border_is_boundary_there():
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[:, :5] = True  # left half: the image edge counts as a contour (the reference's zero pad)
    ring = boundary_region(mask, 2)
    assert torch.equal(ring, torch.from_numpy(_reference_boundary(mask.numpy(), 0.2 / math.sqrt(2))))
    assert ring[:, :2].all() and ring[:2, :5].all() and not ring[2:8, 2].any() and ring[:, 3:5].all()


@pytest.mark.parametrize("ratio", [0.02, 0.08])
def test_equals_reference_on_random_masks(ratio):
    gen = torch.Generator().manual_seed(0)
    # Blocky random maps (upsampled noise) so the masks have interiors, plus a band of ignored pixels.
    targets = torch.randint(0, 4, (3, 1, 9, 12), generator=gen).float()
    targets = torch.nn.functional.interpolate(targets, size=(45, 60), mode="nearest")[:, 0].long()
    targets[:, 20:23, 10:40] = 255
    preds = torch.where(torch.rand(3, 45, 60, generator=gen) < 0.1, torch.randint(0, 5, (3, 45, 60), generator=gen),
                        targets.clamp(max=4))  # fmt: skip
    preds[preds == 255] = 0
    preds[preds == 4] = 3
    cm = ConfusionMatrix(5, boundary=True, boundary_dilation_ratio=ratio)
    cm.update(preds[:2], targets[:2])
    cm.update(preds[2], targets[2])  # unbatched
    ours = cm.compute()["boundary_iou"]
    reference = _reference_boundary_iou(preds.numpy(), targets.numpy(), 5, ratio=ratio)
    assert math.isnan(ours[4]) and math.isnan(reference[4])  # class 4 nowhere: excluded, not 0 or 1
    assert ours == pytest.approx(reference, nan_ok=True, abs=1e-12)
    for mask in (targets[0] == 1, preds[1] == 2):
        d = boundary_dilation(45, 60, ratio)
        assert torch.equal(boundary_region(mask, d), torch.from_numpy(_reference_boundary(mask.numpy(), ratio)))


def test_chunked_classes_and_reset(monkeypatch):
    import segbench.evaluation.metrics as metrics

    target = torch.randint(0, 6, (2, 16, 16), generator=torch.Generator().manual_seed(1))
    pred = target.roll(1, dims=2)
    whole = ConfusionMatrix(6, boundary=True)
    whole.update(pred, target)
    monkeypatch.setattr(metrics, "_BOUNDARY_CHUNK", 2 * 16 * 16)  # one class per chunk
    chunked = ConfusionMatrix(6, boundary=True)
    chunked.update(pred, target)
    assert torch.equal(whole.boundary_counts, chunked.boundary_counts)
    chunked.reset()
    r = chunked.compute()
    assert chunked.boundary_counts.sum() == 0 and math.isnan(r["mean_boundary_iou"])
    with pytest.raises(SegbenchError, match="boundary_dilation_ratio"):
        ConfusionMatrix(2, boundary=True, boundary_dilation_ratio=2)


def test_bench_boundary_and_bootstrap_run_small():
    from segbench.analysis.baselines.metrics import bench_bootstrap, bench_boundary

    result = bench_boundary(updates=2, size=64, num_classes=4)
    assert result["matches_reference"] and result["dilation_px"] == 2
    assert result["update_with_boundary_s_per_image"] > 0
    timing = bench_bootstrap(images=20, num_classes=3, resamples=50)
    assert timing["ci_s"] > 0 and timing["paired_s"] > 0
