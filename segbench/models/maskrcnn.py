"""Mask R-CNN (He et al. 2017, "Mask R-CNN") on torchvision's detection engine.

Parts (torchvision ``GeneralizedRCNN``): ``transform`` (resize to ``min_size``/``max_size``, pad to a batch),
``backbone`` (ResNet + FPN, Lin et al. 2017), ``rpn`` (region proposals), ``roi_heads`` (box and mask heads).

Contract (torchvision ``MaskRCNN``):
  * train: ``model(images: list[float [C,H,W]], targets: list[dict]) -> dict[str, Tensor]`` of losses; targets are
    segbench instance targets ``{"boxes": float [N,4] xyxy, "labels": int64 [N] (>= 1), "masks": uint8 [N,H,W]}``
    (optional ``"iscrowd"`` int64 [N]); crowd regions and degenerate instances (empty mask, zero-area box, e.g. cut
    away by a crop) are dropped before the loss, so a bad sample never stops training.
  * eval: ``model(images) -> list[{"boxes": float [N,4], "labels": int64 [N], "scores": float [N],
    "masks": float [N,1,H,W] probabilities}]`` at each input image's own size, sorted by score.
  * images arrive already normalised by the engine (``segbench.data.transforms.normalize``), so the internal
    transform's mean/std are 0/1: nothing is normalised twice.
  * ``num_classes`` includes torchvision's background class 0.

``fast_paste=True`` (default) replaces torchvision's per-instance Python loop that pastes each 28 x 28 mask into the
image (``paste_masks_in_image``) by one batched resampling of all masks of the batch (``maskpaste.paste_masks``) and
batches the box post-processing (decode, clip, score filter) over images. Outputs equal the stock path (boxes,
scores and labels bit-identical; masks up to float rounding); ``model.fast_paste = False`` restores the stock path.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet18, resnet50
from torchvision.models.detection import MaskRCNN as _TVMaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, RPNHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign, boxes as box_ops
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from ..errors import SegbenchError, nearest
from ..instance_viz import draw_instances, instance_id_map  # re-exported: the predict CLI imports them from here
from .maskpaste import paste_masks

__all__ = ["MaskRCNN", "maskrcnn", "maskrcnn_small", "BUILDERS", "BACKBONES", "draw_instances", "instance_id_map"]

BACKBONES = ("resnet50_fpn", "resnet50_fpn_v2", "resnet18_fpn")

# ================================================================ batched post-processing


class _BatchedTransform(GeneralizedRCNNTransform):
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


class _BatchedRoIHeads(RoIHeads):
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


# ================================================================ model


class MaskRCNN(_TVMaskRCNN):
    """torchvision ``MaskRCNN`` with segbench attributes, target sanitising and the batched post-processing.

    Attributes: ``task = "instance"``, ``family = "maskrcnn"``, ``variant`` (backbone name), ``fast_paste``.
    """

    task = "instance"
    family = "maskrcnn"

    def __init__(self, backbone: nn.Module, *, variant: str, fast_paste: bool = True, **kwargs):
        super().__init__(backbone, None, **kwargs)  # the predictors come in kwargs, sized for the classes
        self.variant = variant
        stock_t, stock_h = self.transform, self.roi_heads
        self.transform = _BatchedTransform(
            stock_t.min_size,
            stock_t.max_size,
            stock_t.image_mean,
            stock_t.image_std,
            size_divisible=stock_t.size_divisible,
            fixed_size=stock_t.fixed_size,
        )
        # Same submodules and settings; only the post-processing method differs.
        self.roi_heads = _BatchedRoIHeads(
            stock_h.box_roi_pool,
            stock_h.box_head,
            stock_h.box_predictor,
            fg_iou_thresh=stock_h.proposal_matcher.high_threshold,
            bg_iou_thresh=stock_h.proposal_matcher.low_threshold,
            batch_size_per_image=stock_h.fg_bg_sampler.batch_size_per_image,
            positive_fraction=stock_h.fg_bg_sampler.positive_fraction,
            bbox_reg_weights=stock_h.box_coder.weights,
            score_thresh=stock_h.score_thresh,
            nms_thresh=stock_h.nms_thresh,
            detections_per_img=stock_h.detections_per_img,
            mask_roi_pool=stock_h.mask_roi_pool,
            mask_head=stock_h.mask_head,
            mask_predictor=stock_h.mask_predictor,
        )
        self.fast_paste = fast_paste

    @property
    def fast_paste(self) -> bool:
        return self.transform.fast

    @fast_paste.setter
    def fast_paste(self, value: bool) -> None:
        self.transform.fast = bool(value)
        self.roi_heads.fast = bool(value)

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        if self.training and targets is not None:
            targets = [_clean_target(t) for t in targets]
        return super().forward(images, targets)


def _clean_target(target: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop crowd regions and instances with an empty mask or a zero-area box (torchvision would assert on them)."""
    boxes = target["boxes"].to(torch.float32).reshape(-1, 4)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if "masks" in target and target["masks"].numel():
        keep &= target["masks"].flatten(1).bool().any(1)
    if "iscrowd" in target:
        keep &= target["iscrowd"] == 0
    out = {"boxes": boxes[keep], "labels": target["labels"].to(torch.int64)[keep]}
    if "masks" in target:
        out["masks"] = target["masks"][keep].to(torch.uint8)
    return out


# ================================================================ backbone


def _adapt_first_conv(weight: Tensor, in_channels: int) -> Tensor:
    """RGB conv1 weights [64,3,k,k] -> [64,C,k,k]: grey sums the RGB filters; C > 3 repeats them scaled by 3/C,
    so a constant image gives the same response (the usual adaptation, e.g. timm ``adapt_input_conv``)."""
    if in_channels == 3:
        return weight
    if in_channels == 1:
        return weight.sum(1, keepdim=True)
    reps = -(-in_channels // 3)
    return weight.repeat(1, reps, 1, 1)[:, :in_channels] * (3 / in_channels)


def _load_file(path: str | Path, what: str) -> dict[str, Tensor]:
    """State dict from safetensors or a torch file (never unpickled: weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise SegbenchError(f"{path}: {what} file not found; give the path of a local .safetensors or .pth file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad file for the user
        raise SegbenchError(f"{path}: cannot read {what} ({type(exc).__name__}); pass a state-dict file") from None
    for key in ("model", "state_dict"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise SegbenchError(f"{path}: {what} is not a state dict; save model.state_dict()")
    return state


def _fpn_backbone(
    depth: int,
    *,
    in_channels: int,
    trainable_layers: int,
    frozen_bn: bool,
    fpn_norm: type[nn.Module] | None,
    fpn_channels: int,
    backbone_weights: str | None,
) -> BackboneWithFPN:
    """ResNet-``depth`` + FPN (Lin et al. 2017, Fig. 3) on C2..C5 with a max-pooled P6, as torchvision builds it."""
    norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
    body = (resnet50 if depth == 50 else resnet18)(weights=None, norm_layer=norm)
    if backbone_weights is not None:
        state = _load_file(backbone_weights, "backbone weights")
        state = {k.removeprefix("backbone.body."): v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = body.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise SegbenchError(
                f"{backbone_weights}: not a ResNet-{depth} state dict (missing {missing[:3]}, unexpected "
                f"{unexpected[:3]}); pass torchvision resnet{depth} ImageNet weights"
            )
    if in_channels != 3:
        old = body.conv1
        body.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if backbone_weights is not None:
            with torch.no_grad():
                body.conv1.weight.copy_(_adapt_first_conv(old.weight, in_channels))
    layers = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        layers.append("bn1")
    for name, p in body.named_parameters():
        p.requires_grad_(any(name.startswith(layer) for layer in layers))
    c2 = body.inplanes // 8  # channels of layer1's output
    return BackboneWithFPN(
        body,
        {f"layer{k}": str(k - 1) for k in (1, 2, 3, 4)},
        [c2, c2 * 2, c2 * 4, c2 * 8],
        fpn_channels,
        extra_blocks=LastLevelMaxPool(),
        norm_layer=fpn_norm,
    )


# ================================================================ builders


def _check(num_classes: int, in_channels: int, backbone: str, mask_resolution: int, anchor_sizes) -> None:
    if num_classes < 2:
        raise SegbenchError(
            f"maskrcnn: num_classes={num_classes} but it counts background too; use at least 2 (background + 1)"
        )
    if in_channels < 1:
        raise SegbenchError(f"maskrcnn: in_channels={in_channels}; use 1 (grey), 3 (RGB) or more")
    if backbone not in BACKBONES:
        raise SegbenchError(
            f"maskrcnn: unknown backbone '{backbone}'{nearest(backbone, BACKBONES)}; "
            f"choose one of {', '.join(BACKBONES)}"
        )
    if mask_resolution < 2 or mask_resolution % 2:
        raise SegbenchError(
            f"maskrcnn: mask_resolution={mask_resolution}; use an even number (the mask head upsamples 2x), e.g. 28"
        )
    if anchor_sizes is not None and len(anchor_sizes) != 5:
        raise SegbenchError(
            f"maskrcnn: anchor_sizes has {len(anchor_sizes)} values; give 5 (one per FPN level P2..P6), e.g. "
            "[32, 64, 128, 256, 512]"
        )


def maskrcnn(
    *,
    num_classes: int,
    in_channels: int = 3,
    backbone: str = "resnet50_fpn",
    min_size: int = 800,
    max_size: int = 1333,
    anchor_sizes: Sequence[int] | None = None,
    rpn_batch_size_per_image: int = 256,
    box_batch_size_per_image: int = 512,
    proposals: int = 1000,
    detections_per_img: int = 100,
    score_threshold: float = 0.05,
    mask_resolution: int = 28,
    fpn_channels: int = 256,
    trainable_layers: int | None = None,
    weights: str | None = None,
    backbone_weights: str | None = None,
    fast_paste: bool = True,
) -> MaskRCNN:
    """Mask R-CNN with a ResNet-FPN backbone; ``num_classes`` includes background (label 0).

    Args:
        backbone: "resnet50_fpn" (He et al. 2017; torchvision v1), "resnet50_fpn_v2" (Li et al. 2021 "Benchmarking
            detection transfer learning with ViTs": BN in FPN/heads, 4-conv box head, 2-conv RPN head) or
            "resnet18_fpn" (light, for CPU runs).
        min_size, max_size: images are resized so the short side is ``min_size`` unless the long side would exceed
            ``max_size`` (torchvision's rule; the paper uses 800 / 1333).
        anchor_sizes: one anchor size (pixels) per FPN level P2..P6; default (32, 64, 128, 256, 512), aspect
            ratios 0.5/1/2 (paper Sec. 3 / FPN Sec. 4.1).
        rpn_batch_size_per_image: anchors sampled per image for the RPN loss (256, 1:1 positive:negative).
        box_batch_size_per_image: RoIs sampled per image for the box/mask losses (512, 25% positive).
        proposals: RPN proposals kept after NMS at test time (training keeps twice as many, as torchvision).
        detections_per_img, score_threshold: the final detections (paper: 100, 0.05).
        mask_resolution: side of the predicted mask (paper: 28, from a 14 x 14 RoIAlign upsampled 2x).
        fpn_channels: FPN and mask-head width (256 in the paper).
        trainable_layers: ResNet stages trained (0-5); default 5 from scratch, 3 with pretrained weights.
        weights: local file with a full Mask R-CNN state dict (e.g. torchvision's COCO checkpoint); predictor
            layers whose shape does not fit ``num_classes`` are skipped (reported), to fine-tune.
        backbone_weights: local file with ImageNet ResNet weights (torchvision layout); conv1 is adapted when
            ``in_channels != 3``.
        fast_paste: batched mask pasting and box post-processing (same results as torchvision, faster).
    """
    _check(num_classes, in_channels, backbone, mask_resolution, anchor_sizes)
    pretrained = weights is not None or backbone_weights is not None
    if trainable_layers is None:
        trainable_layers = 3 if pretrained else 5
    if not 0 <= trainable_layers <= 5:
        raise SegbenchError(f"maskrcnn: trainable_layers={trainable_layers}; use 0..5 (ResNet stages to train)")
    v2 = backbone == "resnet50_fpn_v2"
    body = _fpn_backbone(
        18 if backbone == "resnet18_fpn" else 50,
        in_channels=in_channels,
        trainable_layers=trainable_layers,
        # torchvision freezes BN only for its v1 pretrained models; from scratch BN must learn.
        frozen_bn=pretrained and not v2,
        fpn_norm=nn.BatchNorm2d if v2 else None,
        fpn_channels=fpn_channels,
        backbone_weights=backbone_weights,
    )
    sizes = tuple((int(s),) for s in (anchor_sizes or (32, 64, 128, 256, 512)))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    head_norm = nn.BatchNorm2d if v2 else None
    extra: dict = {}
    if v2:
        extra["rpn_head"] = RPNHead(fpn_channels, anchors.num_anchors_per_location()[0], conv_depth=2)
        extra["box_head"] = FastRCNNConvFCHead((fpn_channels, 7, 7), [256] * 4, [1024], norm_layer=head_norm)
    model = MaskRCNN(
        body,
        variant=backbone,
        fast_paste=fast_paste,
        min_size=min_size,
        max_size=max_size,
        image_mean=[0.0] * in_channels,  # the engine has normalised already
        image_std=[1.0] * in_channels,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=2 * proposals,
        rpn_pre_nms_top_n_test=proposals,
        rpn_post_nms_top_n_train=2 * proposals,
        rpn_post_nms_top_n_test=proposals,
        rpn_batch_size_per_image=rpn_batch_size_per_image,
        box_batch_size_per_image=box_batch_size_per_image,
        box_detections_per_img=detections_per_img,
        box_score_thresh=score_threshold,
        mask_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=mask_resolution // 2, sampling_ratio=2),
        mask_head=MaskRCNNHeads(fpn_channels, [fpn_channels] * 4, 1, norm_layer=head_norm),
        box_predictor=FastRCNNPredictor(1024, num_classes),  # 1024: both box heads' representation size
        mask_predictor=MaskRCNNPredictor(fpn_channels, fpn_channels, num_classes),
        **extra,
    )
    _init_predictors(model)
    if weights is not None:
        _load_full(model, weights)
    return model


def _init_predictors(model: MaskRCNN) -> None:
    """Small initial predictions, as detectron2 initialises them (fast_rcnn.py, mask_head.py): torchvision's
    default kaiming init of the 1x1 mask predictor gives mask logits of +-20 on untrained features (BCE ~16) and
    from-scratch training diverges."""
    heads = model.roi_heads
    for layer, std in (
        (heads.box_predictor.cls_score, 0.01),
        (heads.box_predictor.bbox_pred, 0.001),
        (heads.mask_predictor.mask_fcn_logits, 0.001),
    ):
        nn.init.normal_(layer.weight, std=std)
        nn.init.zeros_(layer.bias)


def _load_full(model: nn.Module, path: str) -> None:
    """Load a full Mask R-CNN state dict; class-specific predictor layers of another shape are skipped."""
    state = _load_file(path, "weights")
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    per_class = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits")
    skipped = [k for k in wrong if k.startswith(per_class)]
    bad = [k for k in wrong if k not in skipped]
    state = {k: v for k, v in state.items() if k not in wrong}
    missing = [k for k in own if k not in state and k not in skipped and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own and not k.endswith("num_batches_tracked")]
    if missing or unexpected or bad:
        raise SegbenchError(
            f"{path}: does not fit this Mask R-CNN (missing {missing[:2]}, unexpected {unexpected[:2]}, "
            f"wrong shape {bad[:2]}); check backbone=, fpn_channels= and that the file is a Mask R-CNN state dict"
        )
    model.load_state_dict(state, strict=False)
    if skipped:
        warnings.warn(
            f"{path}: {len(skipped)} predictor tensors have another number of classes and start fresh "
            f"({', '.join(sorted({k.rsplit('.', 1)[0] for k in skipped}))})",
            stacklevel=3,
        )


def maskrcnn_small(
    *,
    num_classes: int,
    in_channels: int = 3,
    backbone: str = "resnet18_fpn",
    min_size: int = 128,
    max_size: int = 160,
    anchor_sizes: Sequence[int] | None = (8, 16, 32, 64, 128),
    rpn_batch_size_per_image: int = 128,
    box_batch_size_per_image: int = 128,
    proposals: int = 200,
    detections_per_img: int = 50,
    score_threshold: float = 0.05,
    mask_resolution: int = 28,
    fpn_channels: int = 128,
    trainable_layers: int | None = None,
    weights: str | None = None,
    backbone_weights: str | None = None,
    fast_paste: bool = True,
) -> MaskRCNN:
    """A light Mask R-CNN for CPU runs and tests: ResNet-18-FPN (128 channels), small images (short side 128),
    anchors 8..128 px, 200 proposals, all layers trainable. Options as :func:`maskrcnn`."""
    return maskrcnn(
        num_classes=num_classes,
        in_channels=in_channels,
        backbone=backbone,
        min_size=min_size,
        max_size=max_size,
        anchor_sizes=anchor_sizes,
        rpn_batch_size_per_image=rpn_batch_size_per_image,
        box_batch_size_per_image=box_batch_size_per_image,
        proposals=proposals,
        detections_per_img=detections_per_img,
        score_threshold=score_threshold,
        mask_resolution=mask_resolution,
        fpn_channels=fpn_channels,
        trainable_layers=trainable_layers,
        weights=weights,
        backbone_weights=backbone_weights,
        fast_paste=fast_paste,
    )


BUILDERS = {"maskrcnn": maskrcnn, "maskrcnn_small": maskrcnn_small}
