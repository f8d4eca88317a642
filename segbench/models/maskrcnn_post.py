"""Mask R-CNN's batched eval post-processing: torchvision's transform and RoI heads with their per-image Python
loops over detections replaced by tensor ops over the whole batch.

``BatchedTransform.postprocess`` rescales every box of the batch at once and pastes all masks of one output size
with ``maskpaste.paste_masks``; ``BatchedRoIHeads.postprocess_detections`` decodes, clips and filters every image's
boxes in one pass. Boxes, scores and labels are bit-identical to torchvision's stock path, masks equal up to float
rounding. Setting ``fast = False`` on either restores torchvision's own method.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import boxes as box_ops

from .maskpaste import paste_masks

__all__ = ["BatchedTransform", "BatchedRoIHeads"]


class BatchedTransform(GeneralizedRCNNTransform):
    """torchvision's resize/batch transform whose eval post-processing pastes all masks of a batch at once."""

    def __init__(self, *args, fast: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.fast = fast

    def postprocess(
        self,
        result: list[dict[str, Tensor]],
        image_shapes: list[tuple[int, int]],
        original_image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        if self.training or not self.fast or not result:
            return super().postprocess(result, image_shapes, original_image_sizes)
        counts = [len(r["boxes"]) for r in result]
        boxes = torch.cat([r["boxes"] for r in result])
        device = boxes.device
        # Same float32 ratios as torchvision's resize_boxes (new / old), one row per detection.
        new = torch.tensor(original_image_sizes, dtype=torch.float32, device=device)
        old = torch.tensor(image_shapes, dtype=torch.float32, device=device)
        ratio = (new / old).repeat_interleave(torch.tensor(counts, device=device), dim=0)  # [R,2] (h, w)
        boxes = boxes * ratio[:, [1, 0, 1, 0]]
        for r, b in zip(result, boxes.split(counts)):
            r["boxes"] = b
        if "masks" not in result[0]:
            return result
        # One paste per distinct output size (usually one for the whole batch).
        for size in dict.fromkeys(original_image_sizes):
            idx = [i for i, s in enumerate(original_image_sizes) if s == size]
            masks = torch.cat([result[i]["masks"] for i in idx])
            pasted = paste_masks(masks, torch.cat([result[i]["boxes"] for i in idx]), *size)
            for i, m in zip(idx, pasted.split([counts[i] for i in idx])):
                result[i]["masks"] = m
        return result


class BatchedRoIHeads(RoIHeads):
    """torchvision's RoIHeads whose detection post-processing filters all images in one pass.

    Decoding, clipping, background removal, the score threshold and the small-box filter run once over the
    batch; NMS then runs per image with torchvision's own ``batched_nms`` on exactly the inputs the stock code
    would give it, so boxes, scores and labels are bit-identical to the stock path.
    """

    fast: bool = True

    def postprocess_detections(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        if not self.fast:
            return super().postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        device = class_logits.device
        num_classes = class_logits.shape[-1]
        counts = torch.tensor([len(p) for p in proposals], device=device)
        boxes = self.box_coder.decode(box_regression, proposals)  # [R,K,4]
        scores = F.softmax(class_logits, -1)  # [R,K]
        image = torch.arange(len(proposals), device=device).repeat_interleave(counts)  # [R]
        hw = torch.tensor(image_shapes, dtype=boxes.dtype, device=device)[image]  # [R,2]
        x = torch.minimum(boxes[..., 0::2].clamp(min=0), hw[:, None, 1:2])  # clip_boxes_to_image, per row
        y = torch.minimum(boxes[..., 1::2].clamp(min=0), hw[:, None, 0:1])
        boxes = torch.stack((x, y), dim=-1).reshape(boxes.shape)
        labels = torch.arange(num_classes, device=device).expand_as(scores)
        image = image[:, None].expand_as(scores)
        # Drop the background column, one row per (proposal, class).
        boxes, scores = boxes[:, 1:].reshape(-1, 4), scores[:, 1:].reshape(-1)
        labels, image = labels[:, 1:].reshape(-1), image[:, 1:].reshape(-1)
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        keep = (scores > self.score_thresh) & (widths >= 1e-2) & (heights >= 1e-2)
        boxes, scores, labels, image = boxes[keep], scores[keep], labels[keep], image[keep]
        per_image = torch.bincount(image, minlength=len(proposals)).tolist()  # host sync, as the filter above
        out_boxes, out_scores, out_labels = [], [], []
        for b, s, c in zip(boxes.split(per_image), scores.split(per_image), labels.split(per_image)):
            keep = box_ops.batched_nms(b, s, c, self.nms_thresh)[: self.detections_per_img]
            out_boxes.append(b[keep])
            out_scores.append(s[keep])
            out_labels.append(c[keep])
        return out_boxes, out_scores, out_labels
