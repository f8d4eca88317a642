"""The vectorised mask paste against torchvision's per-instance paste (``paste_masks_in_image``)."""

import pytest
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image

from segbench.models.maskpaste import paste_masks


def _random_boxes(n: int, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
    """xyxy boxes that overlap the image but often stick out of it (torchvision's paste needs some overlap)."""
    x0 = torch.rand(n, generator=gen) * (width + 10) - 15
    y0 = torch.rand(n, generator=gen) * (height + 10) - 15
    w = torch.rand(n, generator=gen) * width * 0.8 + 2
    h = torch.rand(n, generator=gen) * height * 0.8 + 2
    boxes = torch.stack([x0, y0, x0 + w, y0 + h], dim=1)
    boxes[:, 2] = torch.maximum(boxes[:, 2], torch.tensor(2.0))  # keep an overlap with the image
    boxes[:, 3] = torch.maximum(boxes[:, 3], torch.tensor(2.0))
    boxes[:, 0] = torch.minimum(boxes[:, 0], torch.tensor(width - 3.0))
    boxes[:, 1] = torch.minimum(boxes[:, 1], torch.tensor(height - 3.0))
    return boxes


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.flatten(1), b.flatten(1)
    inter, union = (a & b).sum(1).float(), (a | b).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


@pytest.mark.parametrize("height,width,m", [(37, 53, 28), (64, 48, 14), (20, 20, 28)])
def test_paste_matches_torchvision(height, width, m):
    gen = torch.Generator().manual_seed(height * width)
    n = 40
    # Sharp masks (as trained ones): probabilities rarely sit within float noise of 0.5.
    masks = torch.sigmoid(8 * torch.randn(n, 1, m, m, generator=gen))
    boxes = _random_boxes(n, height, width, gen)
    boxes[:4] = torch.tensor([[-30.0, -20.0, 10.0, 8.0], [width - 6.0, height - 5.0, width + 40.0, height + 30.0],
                              [-5.0, 3.0, width + 5.0, height - 2.0], [3.3, 4.7, 3.9, 5.2]])  # fmt: skip
    ours = paste_masks(masks, boxes, height, width)
    stock = paste_masks_in_image(masks, boxes, (height, width))
    assert ours.shape == stock.shape == (n, 1, height, width)
    assert ours.dtype == torch.float32
    assert (ours - stock).abs().max() < 1e-4  # float rounding (lambda computed with/without FMA)
    # Binary masks agree wherever the stock probability is not within that rounding of the threshold ...
    clear = (stock - 0.5).abs() > 1e-4
    assert torch.equal((ours >= 0.5)[clear], (stock >= 0.5)[clear])
    # ... so per-instance IoU is ~1 (a single pixel at exactly 0.5 can flip in a small mask).
    iou = _iou(ours >= 0.5, stock >= 0.5)
    assert iou.min() >= 0.98 and iou.mean() >= 0.999


def test_paste_empty_and_threshold():
    assert paste_masks(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), 10, 12).shape == (0, 1, 10, 12)
    masks = torch.ones(2, 1, 28, 28)
    boxes = torch.tensor([[2.0, 2.0, 8.0, 6.0], [0.0, 0.0, 11.0, 9.0]])
    binary = paste_masks(masks, boxes, 10, 12, threshold=0.5)
    assert binary.dtype == torch.bool and binary.shape == (2, 1, 10, 12)
    assert torch.equal(binary, paste_masks(masks, boxes, 10, 12) >= 0.5)
    assert not binary[0, 0, 0].any() and binary[0, 0, 4, 5]  # outside / inside the first box


def test_paste_under_bf16_autocast():
    """Regression: evaluation runs Mask R-CNN under bf16 autocast; pasting must still work (in fp32)."""
    import torch

    from segbench.models.maskpaste import paste_masks

    masks = torch.rand(3, 1, 28, 28).to(torch.bfloat16)
    boxes = torch.tensor([[2.0, 3.0, 20.0, 30.0], [-5.0, -5.0, 10.0, 10.0], [30.0, 30.0, 60.0, 50.0]])
    reference = paste_masks(masks.float(), boxes, 40, 50)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        probs = paste_masks(masks, boxes, 40, 50)
        binary = paste_masks(masks, boxes, 40, 50, threshold=0.5)
    assert probs.dtype == torch.float32 and torch.allclose(probs, reference)
    assert binary.dtype == torch.bool and binary.shape == (3, 1, 40, 50)
