"""The one semantic model class: ``backbone`` -> (``aspp``) -> (``decoder``) -> ``head`` -> bilinear up-sampling.

FCN-ResNet and DeepLab v1/v2/v3/v3+ are all this model with other parts (torchvision's ``_SimpleSegmentationModel``
plus DeepLab's context module and v3+ decoder). Also here: the parts both families share (the FCN head, which is
every ResNet model's auxiliary head too) and the variant naming rule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .pretrained import split_param_groups

__all__ = ["Segmenter", "FCNHead", "resize", "resize_logits", "variant_name"]


def resize(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Bilinear resampling of logits/features [B,C,h,w] -> [B,C,*size] (align_corners=False, as torchvision)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def resize_logits(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """:func:`resize` for the final class scores; bf16/fp16 scores on a CPU are resampled in float32, which is
    2.5x faster there (11 x 64 x 64 -> 512 x 512: 1.9 vs 4.6 ms on the project's CPU) and what argmax reads anyway."""
    if x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16):
        x = x.float()
    return resize(x, size)


def variant_name(name: str, width: float) -> str:
    """``name`` plus a width tag when the channels are scaled (e.g. "resnet50-os8-w0.125")."""
    return name if width == 1.0 else f"{name}-w{width:g}"


class FCNHead(nn.Sequential):
    """3x3 conv to in/4 channels (at least 8), BN, ReLU, dropout 0.1, 1x1 class scores (torchvision's FCNHead);
    also the auxiliary head of every ResNet/MobileNet model. [B,C,h,w] -> [B,K,h,w]."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        inter = max(8, in_channels // 4)
        super().__init__(
            nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
            nn.Conv2d(inter, num_classes, 1),
        )


class Segmenter(nn.Module):
    """A semantic segmentation model made of named parts.

    Parts:
        backbone: float [B,C,H,W] -> dict of features with "out" (deepest), and "aux" / "low" where used.
        head: features [B,c,h,w] (of "out", after ``aspp``/``decoder``) -> logits [B,K,h,w].
        aux: optional head on features["aux"] (layer3 or the stride-16 features); run in training mode only.
        decoder: optional ``decoder(y, features["low"]) -> y`` (DeepLab v3+'s stride-4 decoder).
        aspp: optional context module on features["out"] (DeepLab's ASPP).

    Contract: ``forward(x: float32 [B,C,H,W], normalised) -> {"out": float32 logits [B,K,H,W]}`` at the input size
    for any H, W >= 1, plus ``"aux"`` logits of the same shape in training mode when ``aux`` is set (the engine
    weighs its loss by the run's ``aux_weight``). Labels use the dataset's ignore value, not the model.

    Attributes: ``task = "semantic"``, ``family`` ("fcn", "deeplab"), ``variant`` (e.g. "resnet50-os16"),
    ``output_stride`` (input size / size of the backbone's "out").
    """

    task = "semantic"

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        aux: nn.Module | None = None,
        decoder: nn.Module | None = None,
        *,
        aspp: nn.Module | None = None,
        family: str,
        variant: str,
        output_stride: int,
    ) -> None:
        super().__init__()
        self.family, self.variant, self.output_stride = family, variant, output_stride
        # Registered in this order so state_dict keys and their order are those of the earlier FCN and DeepLab
        # classes: saved weights load unchanged.
        self.backbone = backbone
        self.aspp = aspp
        self.decoder = decoder
        self.head = head
        self.aux = aux

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """{"encoder": backbone parameters, "decoder": ASPP, decoder and heads} (for an encoder LR multiplier)."""
        return split_param_groups(self, self.backbone)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.backbone(x)
        y = features["out"]
        if self.aspp is not None:
            y = self.aspp(y)
        if self.decoder is not None:
            y = self.decoder(y, features["low"])
        result = {"out": resize_logits(self.head(y), x.shape[-2:])}
        if self.aux is not None and self.training:
            result["aux"] = resize_logits(self.aux(features["aux"]), x.shape[-2:])
        return result
