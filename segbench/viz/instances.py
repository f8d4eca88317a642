"""Pictures of instance predictions: coloured masks, boxes and "class score" captions; an instance-id map.

Both take a Mask R-CNN eval output ``pred = {"boxes" [N,4] xyxy, "labels" int64 [N], "scores" [N],
"masks" float [N,1,H,W] probabilities}`` (any device) and keep detections with ``score >= score_threshold``.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

__all__ = ["draw_instances", "instance_id_map", "instance_colors"]


def instance_colors(n: int) -> list[tuple[int, int, int]]:
    """``n`` well-separated RGB colours (golden-ratio hue steps), the same for the same index every time."""
    return [
        tuple(int(255 * c) for c in colorsys.hsv_to_rgb((0.13 + i * 0.618034) % 1.0, 0.75, 0.95))
        for i in range(n)
    ]


def _kept(pred: dict[str, Tensor], score_threshold: float) -> tuple[Tensor, ...]:
    scores = pred["scores"].detach().float().cpu()
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[scores[order] >= score_threshold]
    masks = pred["masks"].detach().cpu()[order]
    return pred["boxes"].detach().cpu()[order], pred["labels"].detach().cpu()[order], scores[order], masks, order


def instance_id_map(pred: dict[str, Tensor], score_threshold: float = 0.5, mask_threshold: float = 0.5) -> Tensor:
    """int32 [H,W]: 0 where no kept detection covers the pixel, else 1 + the detection's index in ``pred``;
    where masks overlap the highest-scoring detection wins."""
    _, _, _, masks, order = _kept(pred, score_threshold)
    h, w = pred["masks"].shape[-2:]
    if len(order) == 0:
        return torch.zeros((h, w), dtype=torch.int32)
    on = masks[:, 0] >= mask_threshold  # [K,H,W], sorted by score
    first = on.to(torch.uint8).argmax(0)  # the best-scoring mask covering each pixel
    return torch.where(on.any(0), order[first] + 1, 0).to(torch.int32)


def draw_instances(
    image: Tensor,
    pred: dict[str, Tensor],
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]] | None = None,
    *,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    alpha: float = 0.5,
) -> Tensor:
    """uint8 [C,H,W] (C = 1 or 3) -> uint8 [3,H,W] with each kept instance's mask in its own colour, its box
    outlined in its class's ``palette`` colour (or the instance colour) and captioned ``"<class> <score>"``.

    ``class_names[label]`` names a label (background first, as the model's labels).
    """
    image = image.detach().cpu()
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    boxes, labels, scores, masks, _ = _kept(pred, score_threshold)
    if len(labels) == 0:
        return image.clone()
    colors = instance_colors(len(labels))
    out = draw_segmentation_masks(image, masks[:, 0] >= mask_threshold, alpha=alpha, colors=colors)
    names = [class_names[v] if 0 <= v < len(class_names) else str(v) for v in labels.tolist()]
    box_colors = [tuple(palette[v]) if palette is not None and v < len(palette) else c
                  for v, c in zip(labels.tolist(), colors)]  # fmt: skip
    captions = [f"{n} {s:.2f}" for n, s in zip(names, scores.tolist())]
    return draw_bounding_boxes(out, boxes, labels=captions, colors=box_colors, width=2)
