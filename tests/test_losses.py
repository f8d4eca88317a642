"""Losses against F.cross_entropy and hand-computed values; median-frequency and U-Net weight maps."""

import math

import pytest
import torch
import torch.nn.functional as F

from segbench.errors import SegbenchError
from segbench.train.losses import build_loss, median_frequency_weights, unet_weight_map


def _batch(k: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, k, 8, 8, generator=gen)
    target = torch.randint(0, k, (2, 8, 8), generator=gen)
    target[:, :2] = 255
    return logits, target


# ---------------------------------------------------------------------------------------------------------------------
# Cross-entropy
# ---------------------------------------------------------------------------------------------------------------------


def test_ce_hand_computed_with_ignore():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # [1, 2, 1, 2]
    target = torch.tensor([[[0, 255]]])
    loss = build_loss("ce", num_classes=2)(logits, target)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2.0)))  # only the first pixel counts


def test_ce_equals_f_cross_entropy_with_and_without_class_weights():
    logits, target = _batch()
    assert torch.allclose(build_loss(num_classes=3)(logits, target), F.cross_entropy(logits, target, ignore_index=255))
    weights = torch.tensor([0.5, 2.0, 1.0])
    ours = build_loss("ce", num_classes=3, class_weights=weights)(logits, target)
    assert torch.allclose(ours, F.cross_entropy(logits, target, weight=weights, ignore_index=255))


def test_ce_weight_map_is_a_weighted_mean_over_valid_pixels():
    logits, target = _batch()
    weight_map = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(1)) + 0.5
    per_pixel = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    valid = target != 255
    expected = (per_pixel * weight_map)[valid].sum() / weight_map[valid].sum()
    assert torch.allclose(build_loss(num_classes=3)(logits, target, weight_map), expected)
    assert torch.allclose(build_loss(num_classes=3)(logits, target, torch.ones(2, 8, 8)), per_pixel[valid].mean())


def test_all_ignored_batch_gives_zero_not_nan():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), 255)
    for name in ("ce", "dice", "ce+dice"):
        loss = build_loss(name, num_classes=3)(logits, target)
        assert loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(logits.grad).all()


def test_bf16_logits_give_fp32_loss():
    logits, target = _batch()
    for name in ("ce", "dice", "ce+dice"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = build_loss(name, num_classes=3)(logits.bfloat16(), target)
        assert loss.dtype == torch.float32


# ---------------------------------------------------------------------------------------------------------------------
# Dice
# ---------------------------------------------------------------------------------------------------------------------


def test_dice_perfect_prediction_is_zero_and_wrong_is_one():
    target = torch.tensor([[[0, 1], [2, 255]]])
    perfect = F.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 100  # softmax ~ one-hot
    dice = build_loss("dice", num_classes=4)  # class 3 is absent from the target and so left out
    absent = torch.full((1, 1, 2, 2), -100.0)
    assert dice(torch.cat([perfect, absent], 1), target).item() < 1e-5
    wrong = torch.cat([perfect.roll(1, dims=1), absent], 1)
    assert dice(wrong, target).item() == pytest.approx(1.0, abs=1e-5)


def test_dice_hand_computed():
    # Two pixels, K=2, uniform probabilities: per class dice = 2*0.5 / (0.5+0.5 + 1) = 0.5.
    target = torch.tensor([[[0, 1]]])
    loss = build_loss("dice", num_classes=2)(torch.zeros(1, 2, 1, 2), target)
    assert loss.item() == pytest.approx(0.5, abs=1e-5)


def test_ce_plus_dice_is_the_sum():
    logits, target = _batch()
    total = build_loss("ce+dice", num_classes=3, dice_weight=0.5)(logits, target)
    ce = build_loss("ce", num_classes=3)(logits, target)
    dice = build_loss("dice", num_classes=3)(logits, target)
    assert torch.allclose(total, ce + 0.5 * dice)


def test_unknown_loss_and_bad_weights_raise():
    with pytest.raises(SegbenchError, match="did you mean 'dice'"):
        build_loss("dise", num_classes=3)
    with pytest.raises(SegbenchError, match="one weight per class"):
        build_loss("ce", num_classes=3, class_weights=[1.0, 2.0])


# ---------------------------------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------------------------------


def test_median_frequency_weights_hand_computed():
    # Image A (4 px): class 0 x3, class 1 x1. Image B (4 px, one ignored): class 0 x1, class 2 x2.
    # freq_0 = 4/7 (in both, 4 + 3 valid px), freq_1 = 1/4, freq_2 = 2/3; median = 4/7; class 3 never seen.
    masks = [torch.tensor([[0, 0], [0, 1]]), torch.tensor([[[0, 2], [2, 255]]])]
    weights = median_frequency_weights(masks, num_classes=4)
    assert weights.dtype == torch.float32
    assert weights.tolist() == pytest.approx([1.0, (4 / 7) / (1 / 4), (4 / 7) / (2 / 3), 0.0])


def test_median_frequency_weights_rejects_bad_values():
    with pytest.raises(SegbenchError, match="outside"):
        median_frequency_weights([torch.tensor([[0, 7]])], num_classes=3)


def test_unet_weight_map_high_between_touching_cells():
    instances = torch.zeros(64, 64, dtype=torch.int64)
    instances[10:30, 10:30] = 1
    instances[10:30, 32:52] = 2  # a two-pixel gap at columns 30-31
    w = unet_weight_map(instances, w0=10.0, sigma=5.0)
    assert w.shape == (64, 64) and w.dtype == torch.float32

    n_fg = int((instances > 0).sum())
    w_bg = 64 * 64 / (2 * (64 * 64 - n_fg))
    w_fg = 64 * 64 / (2 * n_fg)
    gap = w[20, 30].item()  # d1 = 1, d2 = 2 -> w_bg + 10 exp(-9/50)
    assert gap == pytest.approx(w_bg + 10 * math.exp(-9 / 50), rel=1e-5)
    assert gap > 8 * w_bg
    assert w[60, 60].item() == pytest.approx(w_bg, abs=1e-3)  # far from both cells
    assert w[20, 20].item() == pytest.approx(w_fg)  # inside a cell: class weight only

    plain = unet_weight_map(instances, class_balance=False)
    assert plain[60, 60].item() == pytest.approx(1.0, abs=1e-3)


def test_unet_weight_map_single_cell_and_mask_stack():
    masks = torch.zeros(1, 8, 8, dtype=torch.uint8)
    masks[0, 2:4, 2:4] = 1
    w = unet_weight_map(masks, class_balance=False)
    assert torch.equal(w, torch.ones(8, 8))  # one cell: no border term
