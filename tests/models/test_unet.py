"""U-Net: the paper's sizes and parameter count, padded variants at odd sizes, overlap-tile inference, bad options."""

import pytest
import torch
import torch.nn.functional as F

from segbench.errors import SegbenchError
from segbench.models import build_model
from segbench.models.blocks import mirror_pad
from segbench.models.inference import forward_full, predict
from segbench.models.unet import UNet, unet, unet_same, unet_small

# Paper net (Fig. 1) with one grey input channel and two classes, counted by hand:
# encoder 640+36,928 | 73,856+147,584 | 295,168+590,080 | 1,180,160+2,359,808; bottleneck 4,719,616+9,438,208;
# decoder (up-conv + two convs) 2,097,664+4,719,104+2,359,808 | 524,544+1,179,904+590,080 |
# 131,200+295,040+147,584 | 32,832+73,792+36,928; head 130.
PAPER_PARAMS = 31_030_658


def test_paper_net_sizes_and_parameter_count():
    # Meta device: shapes and parameter counts without allocating or computing anything.
    with torch.device("meta"):
        model = unet(num_classes=2, in_channels=1)
        out = model(torch.empty(1, 1, 572, 572))["out"]
    assert out.shape == (1, 2, 388, 388)  # paper Fig. 1
    params = sum(p.numel() for p in model.parameters())
    assert params == PAPER_PARAMS
    assert abs(params - 31.0e6) / 31.0e6 < 0.005
    assert model.valid_margin == 92
    assert model.output_size(572) == 388
    assert model.valid_input_size(388) == 572
    assert (model.task, model.family, model.output_stride, model.variant) == ("semantic", "unet", 1, "valid-64")


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_valid_size_arithmetic(depth):
    model = unet(num_classes=2, base_channels=1, depth=depth)
    valid = [size for size in range(1, 300) if model._output_size(size) is not None]
    assert valid and all(model.output_size(s) == s - 2 * model.valid_margin for s in valid)
    assert all(b - a == 2**depth for a, b in zip(valid, valid[1:]))  # valid inputs are spaced by 2**depth
    for out in range(1, 60):  # the smallest valid input reaching `out`
        size = model.valid_input_size(out)
        assert size in valid and model.output_size(size) >= out
        assert all(model.output_size(s) < out for s in valid if s < size)
    with pytest.raises(SegbenchError, match="not valid"):
        model.output_size(valid[0] + 1)


def test_valid_forward_small_width_and_bad_size():
    model = unet(num_classes=3, base_channels=4, depth=2).eval()
    size = model.valid_input_size(10)
    out = model(torch.randn(2, 3, size, size + 4))["out"]
    assert out.shape == (2, 3, model.output_size(size), model.output_size(size + 4))
    with pytest.raises(SegbenchError, match="forward_full"):
        model(torch.randn(1, 3, size + 1, size))


@pytest.mark.parametrize("builder", [unet_small, unet_same])
def test_same_padding_any_size(builder):
    model = builder(num_classes=5, base_channels=4)
    for shape in [(2, 3, 97, 131), (1, 3, 1, 1), (1, 3, 16, 17)]:
        out = model(torch.randn(shape))["out"]  # train mode, batch size 1 included
        assert out.shape == (shape[0], 5, *shape[2:])
        assert torch.isfinite(out).all()
    assert model.variant.startswith("same-4") and model.variant.endswith("-bn")
    assert not hasattr(model, "valid_margin")


def test_grey_input():
    model = unet_small(num_classes=2, in_channels=1).eval()
    assert model(torch.randn(1, 1, 33, 47))["out"].shape == (1, 2, 33, 47)
    with pytest.raises(SegbenchError, match="in_channels"):
        model(torch.randn(1, 3, 33, 47))


def test_forward_full_covers_input_and_tiles_without_seams():
    torch.manual_seed(0)
    model = unet(num_classes=3, base_channels=4, depth=3).eval()  # no BatchNorm: tiles are independent
    x = torch.randn(2, 3, 61, 90)
    with torch.no_grad():
        whole = forward_full(model, x)["out"]
        assert whole.shape == (2, 3, 61, 90)
        for tile in (8, 20, 33, 200):
            tiled = forward_full(model, x, tile=tile, tiles_per_batch=5)["out"]
            assert tiled.shape == whole.shape
            torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)
    assert torch.equal(predict(model, x), whole)


def test_forward_full_tiny_image_and_gradients():
    model = unet(num_classes=2, base_channels=2, depth=2)
    x = torch.randn(1, 3, 5, 3, requires_grad=True)  # far smaller than the 20-pixel margin: repeated mirroring
    out = forward_full(model, x, tile=4)["out"]
    assert out.shape == (1, 2, 5, 3)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert model.head.weight.grad is not None


def test_forward_full_is_identity_for_same_models():
    model = unet_small(num_classes=2).eval()
    x = torch.randn(1, 3, 24, 40)
    with torch.no_grad():
        assert torch.equal(forward_full(model, x)["out"], model(x)["out"])


def test_mirror_pad_matches_reflect_and_extends_it():
    x = torch.randn(1, 2, 6, 7)
    assert torch.equal(mirror_pad(x, (3, 6, 5, 1)), F.pad(x, (3, 6, 5, 1), mode="reflect"))
    row = mirror_pad(torch.arange(3.0).view(1, 1, 1, 3), (5, 6, 0, 0)).flatten().tolist()
    assert row == [1, 0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1, 0]  # ... 1 0 1 2 1 [0 1 2] 1 0 1 2 1 0: period 4
    assert mirror_pad(torch.ones(1, 1, 1, 1), (2, 2, 3, 3)).shape == (1, 1, 7, 5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"padding": "vaild"}, "did you mean 'valid'"),
        ({"depth": 0}, "depth"),
        ({"base_channels": 0}, "base_channels"),
        ({"dropout": 1.5}, "dropout"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_options(kwargs, match):
    options = {"num_classes": 2, **kwargs}
    with pytest.raises(SegbenchError, match=match) as info:
        unet(**options)
    assert "\n" not in str(info.value)


def test_registry_and_dropout():
    model = build_model("unet_small", num_classes=4, dropout=0.5)
    assert isinstance(model, UNet) and model.variant == "same-16-d3-bn"
    assert isinstance(model.bottleneck[-1], torch.nn.Dropout)
    with pytest.raises(SegbenchError, match="base_channels"):
        build_model("unet", num_classes=2, base_chanels=8)
