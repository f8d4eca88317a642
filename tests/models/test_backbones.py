"""Backbones: torchvision-compatible names, output strides, multi-grid, offline weight loading."""

from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from segbench.errors import SegbenchError
from segbench.models.backbones import (
    MobileNetV3Backbone,
    ResNetBackbone,
    VGG16Backbone,
    load_backbone_weights,
)

TINY = {
    "resnet50": lambda **kw: ResNetBackbone(50, width=0.125, **kw),
    "mobilenet_v3_large": lambda **kw: MobileNetV3Backbone(width=0.25, **kw),
    "vgg16": lambda **kw: VGG16Backbone(width=0.125, **kw),
}


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


# --- names and shapes equal torchvision's, so ImageNet state dicts load ------------------------------------------


@pytest.mark.parametrize("depth", [50, 101])
def test_resnet_matches_torchvision_state_dict(depth):
    with torch.device("meta"):
        ours = ResNetBackbone(depth, output_stride=8, multi_grid=(1, 2, 4))
        theirs = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    expected = {k: v for k, v in _shapes(theirs).items() if not k.startswith("fc.")}
    assert _shapes(ours) == expected


def test_mobilenet_matches_torchvision_state_dict():
    with torch.device("meta"):
        ours = MobileNetV3Backbone(output_stride=16)
        theirs = torchvision.models.mobilenet_v3_large(weights=None)
    expected = {k: v for k, v in _shapes(theirs).items() if k.startswith("features.")}
    assert _shapes(ours) == expected


@pytest.mark.parametrize("style", ["fcn", "largefov"])
def test_vgg_converts_torchvision_classifier_to_fc6_fc7(style):
    with torch.device("meta"):
        ours = VGG16Backbone(style=style)
        state = torchvision.models.vgg16(weights=None).state_dict()
    converted = ours.convert_state(state)
    assert {k: tuple(converted[k].shape) for k in ours.state_dict()} == _shapes(ours)


# --- output stride and dilation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_resnet_output_stride(output_stride):
    net = ResNetBackbone(50, width=0.125, output_stride=output_stride).eval()
    with torch.no_grad():
        f = net(torch.randn(1, 3, 64, 64))
    assert f["low"].shape[-2:] == (16, 16)
    assert f["out"].shape[-2:] == (64 // output_stride,) * 2
    assert f["out"].shape[1] == net.channels["out"] and f["aux"].shape[1] == net.channels["aux"]


@pytest.mark.parametrize(
    ("output_stride", "multi_grid", "expected"),
    [(16, (1, 2, 4), (2, 4, 8)), (8, (1, 2, 4), (4, 8, 16)), (8, None, (2, 4, 4)), (32, (1, 2, 4), (1, 1, 1))],
)
def test_resnet_layer4_dilations(output_stride, multi_grid, expected):
    with torch.device("meta"):
        net = ResNetBackbone(50, output_stride=output_stride, multi_grid=multi_grid)
    assert tuple(block.conv2.dilation[0] for block in net.layer4) == expected
    assert net.layer4[0].conv2.stride[0] == (2 if output_stride == 32 else 1)


def test_resnet_multi_grid_length_error():
    with pytest.raises(SegbenchError, match="layer4 has 3 blocks"):
        ResNetBackbone(50, width=0.125, output_stride=16, multi_grid=(1, 2))


@pytest.mark.parametrize("output_stride", [16, 32])
def test_mobilenet_strides(output_stride):
    net = MobileNetV3Backbone(width=0.25, output_stride=output_stride).eval()
    with torch.no_grad():
        f = net(torch.randn(1, 3, 64, 64))
    assert f["low"].shape[-2:] == (16, 16) and f["aux"].shape[-2:] == (4, 4)
    assert f["out"].shape[-2:] == (64 // output_stride,) * 2
    assert [f[k].shape[1] for k in ("low", "aux", "out")] == [net.channels[k] for k in ("low", "aux", "out")]


def test_mobilenet_rejects_output_stride_8():
    with pytest.raises(SegbenchError, match="mobilenet_v3_large supports 16 or 32"):
        MobileNetV3Backbone(width=0.25, output_stride=8)


# --- weights from local files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_local_state_dict(tmp_path, name, suffix):
    source = TINY[name]()
    path = tmp_path / f"backbone{suffix}"
    if suffix == ".pth":
        torch.save(source.state_dict(), path)
    else:
        save_file(source.state_dict(), str(path))
    target = TINY[name]()
    load_backbone_weights(target, str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_load_strips_backbone_prefix_and_ignores_extra_keys(tmp_path):
    source = TINY["resnet50"]()
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    state["head.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "model.pth")
    target = TINY["resnet50"]()
    load_backbone_weights(target, tmp_path / "model.pth")
    assert torch.equal(target.conv1.weight, source.conv1.weight)


@pytest.mark.parametrize("in_channels", [1, 4])
def test_load_adapts_rgb_first_conv(tmp_path, in_channels):
    source = TINY["resnet50"]()
    torch.save(source.state_dict(), tmp_path / "rgb.pth")
    target = TINY["resnet50"](in_channels=in_channels)
    load_backbone_weights(target, str(tmp_path / "rgb.pth"))
    rgb = source.conv1.weight
    if in_channels == 1:  # a grey image (R=G=B) gives the RGB filters' response
        torch.testing.assert_close(target.conv1.weight, rgb.sum(1, keepdim=True))
    else:
        torch.testing.assert_close(target.conv1.weight[:, :3], rgb * 3 / in_channels)
    assert torch.equal(target.layer1[0].conv1.weight, source.layer1[0].conv1.weight)


def test_missing_file_error(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(SegbenchError, match="backbone weights file not found") as err:
        load_backbone_weights(TINY["resnet50"](), str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_corrupt_file_error(tmp_path):
    path = tmp_path / "bad.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(SegbenchError, match="cannot read backbone weights"):
        load_backbone_weights(TINY["resnet50"](), str(path))


def test_mismatched_keys_error(tmp_path):
    torch.save(ResNetBackbone(50, width=0.25).state_dict(), tmp_path / "wide.pth")
    with pytest.raises(SegbenchError, match="keys do not match the resnet50 backbone") as err:
        load_backbone_weights(TINY["resnet50"](), str(tmp_path / "wide.pth"))
    assert "another shape" in str(err.value) and "\n" not in str(err.value)
    torch.save(TINY["vgg16"]().state_dict(), tmp_path / "vgg.pth")
    with pytest.raises(SegbenchError, match="missing"):
        load_backbone_weights(TINY["resnet50"](), str(tmp_path / "vgg.pth"))


# --- torchvision weights, offline only -------------------------------------------------------------------------------


def test_imagenet_not_offline_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(SegbenchError, match="is not available offline: put the file at") as err:
        load_backbone_weights(TINY["resnet50"](), "imagenet")
    message = str(err.value)
    assert message.startswith("ResNet50_Weights.IMAGENET1K_V2") and str(tmp_path / "checkpoints") in message
    assert "backbone_weights=PATH" in message


def test_unknown_torchvision_weights_error():
    with pytest.raises(SegbenchError, match="unknown torchvision weights"):
        load_backbone_weights(TINY["resnet50"](), "ResNet50_Weights.NOPE")


def test_imagenet_from_hub_cache(tmp_path, monkeypatch):
    """A file already in the hub cache loads through the weights API (no download is attempted)."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    weights = torchvision.models.get_weight("MobileNet_V3_Large_Weights.DEFAULT")
    (tmp_path / "checkpoints").mkdir()
    reference = torchvision.models.mobilenet_v3_large(weights=None)
    torch.save(reference.state_dict(), tmp_path / "checkpoints" / weights.url.rsplit("/", 1)[-1])
    net = MobileNetV3Backbone(output_stride=16)
    load_backbone_weights(net, "imagenet")
    assert torch.equal(net.features[5].block[0][0].weight, reference.features[5].block[0][0].weight)
