"""Receptive fields against hand-computed stacks; the effective receptive field and its heat map."""

import pytest
import torch
from PIL import Image
from torch import nn

from segbench.analysis.receptive_field import effective_receptive_field, erf_radius, receptive_field, save_heatmap
from segbench.models.unet import unet


def conv(k: int = 3, stride: int = 1, dilation: int = 1, c_in: int = 3, c_out: int = 3) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, stride=stride, dilation=dilation, padding=dilation * (k // 2))


class TwoPaths(nn.Module):
    """A 1x1 path plus a 5x5 path: the sum sees what the wider path sees."""

    def __init__(self) -> None:
        super().__init__()
        self.narrow, self.wide = conv(1), conv(5)

    def forward(self, x):
        return {"out": self.narrow(x) + self.wide(x)}


class GlobalContext(nn.Module):
    """A 3x3 path concatenated with an image-pooling branch (as in DeepLabv3's ASPP)."""

    def __init__(self) -> None:
        super().__init__()
        self.local, self.pool = conv(3), nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        y = self.local(x)
        context = nn.functional.interpolate(self.pool(y), size=y.shape[-2:], mode="bilinear")
        return torch.cat([y, context], dim=1)


@pytest.mark.parametrize(
    "layers, rf, stride",
    [
        ([conv(), conv(), conv()], 7, 1),  # 1 + 2 + 2 + 2
        ([conv(dilation=2)], 5, 1),  # 1 + (3-1)*2
        ([conv(), conv(stride=2), conv()], 9, 2),  # 1 + 2 + 2, then +2 at jump 2
        ([conv(), nn.MaxPool2d(2), conv()], 8, 2),  # 3, +1 (2x2 pool), +2*2
        ([conv(7, stride=2), nn.MaxPool2d(3, 2, padding=1)], 11, 4),  # ResNet stem: 7, +2*2
        ([conv(k=2, stride=2), nn.ConvTranspose2d(3, 3, 2, stride=2)], 2, 1),  # 2x2 down then up: one 2x2 block
        ([conv(), nn.Upsample(scale_factor=2, mode="nearest"), conv()], 4, 1),  # 3, then 2 fine px = 1 input px
    ],
)
def test_hand_computed_stacks(layers, rf, stride):
    result = receptive_field(nn.Sequential(*layers), input_size=(3, 64, 64))
    assert (result["receptive_field"], result["theoretical_receptive_field"]) == (rf, rf)
    assert result["effective_stride"] == stride
    assert result["exact"] and not result["global"] and not result["covers_input"]


def test_branches_take_the_widest_path():
    assert receptive_field(TwoPaths(), input_size=(3, 32, 32))["receptive_field"] == 5


def test_dilation_grows_the_field_with_the_same_parameters():
    plain = nn.Sequential(conv(), conv(), conv())
    dilated = nn.Sequential(conv(dilation=1), conv(dilation=2), conv(dilation=4))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(plain) == count(dilated)
    assert receptive_field(plain)["receptive_field"] == 7
    assert receptive_field(dilated)["receptive_field"] == 1 + 2 + 4 + 8


def test_global_pooling_and_capping():
    result = receptive_field(GlobalContext(), input_size=(3, 40, 50))
    assert result["global"] and result["covers_input"]
    assert result["receptive_field"] == 50 and result["theoretical_receptive_field"] == 3
    deep = nn.Sequential(*[conv() for _ in range(20)])  # RF 41 on a 32-pixel probe: capped there
    capped = receptive_field(deep, input_size=(3, 32, 32))
    assert capped["receptive_field"] == 32 and capped["covers_input"]
    assert capped["theoretical_receptive_field"] == 41


def test_paper_unet_field_with_crops_and_up_convolutions():
    # Interval propagation finds 204 px (see the gradient check below); the centred recursion r += (k-1)*jump,
    # blind to the crop offsets and up-convolution phases, would say 200.
    with torch.device("meta"):
        model = unet(num_classes=2)
    result = receptive_field(model, input_size=(3, 256, 256))
    assert result["receptive_field"] == result["theoretical_receptive_field"] == 204
    assert result["exact"] and result["effective_stride"] == 1


def test_unet_field_matches_the_gradient_support():
    # Linearise a 1-channel U-Net (ReLU -> identity, max -> average pooling) so that every dependency has a
    # non-zero gradient, then measure the widest input span feeding one output pixel over all 16 pool phases.
    torch.manual_seed(0)
    model = unet(num_classes=1, in_channels=1, base_channels=1).double()
    expected = receptive_field(model, input_size=(1, 256, 256))["theoretical_receptive_field"]
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Identity())
    model.pool = nn.AvgPool2d(2)
    x = torch.randn(1, 1, 252, 252, dtype=torch.float64, requires_grad=True)
    out = model(x)["out"]
    widest = 0
    for col in range(16):
        (grad,) = torch.autograd.grad(out[0, 0, 30, col], x, retain_graph=True)
        cols = grad[0, 0].abs().sum(0).nonzero().flatten()
        widest = max(widest, int(cols.max() - cols.min()) + 1)
    assert widest == expected == 204


def test_receptive_field_restores_training_mode():
    model = nn.Sequential(conv(), nn.BatchNorm2d(3)).train()
    receptive_field(model)
    assert model.training


def test_erf_is_zero_outside_the_theoretical_field(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(conv(c_out=4), nn.ReLU(), conv(c_in=4, c_out=4), nn.ReLU(), conv(c_in=4, c_out=2))
    model.train()
    erf = effective_receptive_field(model, input_size=(3, 33, 33), samples=4)
    assert erf.shape == (33, 33) and erf.dtype == torch.float32
    assert erf.max() == 1.0 and erf[16, 16] > 0
    inside = torch.zeros(33, 33, dtype=torch.bool)
    inside[16 - 3 : 16 + 4, 16 - 3 : 16 + 4] = True  # RF 7 around the centre pixel
    assert (erf[~inside] == 0).all() and erf[inside].sum() > 0
    assert 0 < erf_radius(erf) <= 3 * 2**0.5
    assert model.training  # restored

    path = save_heatmap(erf, tmp_path / "maps" / "erf.png")
    image = Image.open(path)
    assert image.size == (33, 33) and image.mode == "RGB"


def test_erf_radius_of_known_maps():
    point = torch.zeros(9, 9)
    point[4, 4] = 1.0
    assert erf_radius(point) == 0.0
    assert erf_radius(torch.zeros(5, 5)) == 0.0
    ring = torch.zeros(9, 9)
    ring[4, 4], ring[4, 7] = 1.0, 1.0
    assert erf_radius(ring, 0.9) == 3.0
