"""DeepLab v1/v2/v3/v3+: exact-size output, batch size 1 with image pooling, ASPP variants, output stride."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segbench.errors import SegbenchError
from segbench.models import build_model
from segbench.models.deeplab import ASPP, BUILDERS, ASPPSum, PooledBatchNorm, deeplabv3, deeplabv3plus

# Tiny versions of every builder and backbone (2 shared CPU cores).
TINY = {
    "deeplabv1": dict(width=0.125),
    "deeplabv2": dict(width=0.125),
    "deeplabv2-resnet50": dict(width=0.125, backbone="resnet50"),
    "deeplabv3": dict(width=0.125),
    "deeplabv3-resnet101-os8": dict(width=0.125, backbone="resnet101", output_stride=8),
    "deeplabv3-os32": dict(width=0.125, output_stride=32),
    "deeplabv3plus": dict(width=0.125),
    "deeplabv3plus-os8": dict(width=0.125, output_stride=8),
    "deeplabv3plus-mobilenet-os32": dict(width=0.25, backbone="mobilenet_v3_large", output_stride=32),
    "deeplabv3plus_mobilenet": dict(width=0.25),
    "deeplabv3plus_lite0": dict(),  # one width (EfficientNet-Lite0, 3M parameters)
}


def _build(case: str, **kwargs):
    return BUILDERS[case.split("-")[0]](**TINY[case], **kwargs)


def test_tiny_table_covers_every_builder():
    assert {case.split("-")[0] for case in TINY} == set(BUILDERS)


@pytest.mark.parametrize("case", sorted(TINY))
def test_output_matches_input_size(case):
    model = _build(case, num_classes=5).eval()
    assert (model.task, model.family) == ("semantic", "deeplab")
    with torch.no_grad():
        for size in [(97, 131), (1, 1), (3, 17), (64, 64)]:
            out = model(torch.randn(1, 3, *size))
            assert set(out) == {"out"} and out["out"].shape == (1, 5, *size)


@pytest.mark.parametrize("case", sorted(TINY))
def test_grey_input_and_batch_one_train_step(case):
    torch.manual_seed(0)
    model = _build(case, num_classes=3, in_channels=1).train()
    x, target = torch.randn(1, 1, 45, 37), torch.randint(0, 3, (1, 45, 37))
    loss = F.cross_entropy(model(x)["out"], target, ignore_index=255)
    loss.backward()
    assert torch.isfinite(loss)
    first_conv = next(p for p in model.backbone.parameters())
    assert first_conv.shape[1] == 1 and first_conv.grad is not None


def test_image_pooling_trains_at_batch_size_one():
    """BN over a [1,C,1,1] batch: running statistics stand in; the affine parameters still get gradients."""
    model = deeplabv3(num_classes=3, width=0.125).train()
    bn = model.aspp.branches[-1].bn
    assert isinstance(bn, PooledBatchNorm)
    before = bn.running_mean.clone()
    model(torch.randn(1, 3, 40, 40))["out"].sum().backward()
    assert torch.equal(bn.running_mean, before) and bn.weight.grad is not None
    model(torch.randn(2, 3, 40, 40))  # batch statistics again for B > 1
    assert not torch.equal(bn.running_mean, before)


@pytest.mark.parametrize("name", ["deeplabv2", "deeplabv3", "deeplabv3plus", "deeplabv3plus_mobilenet"])
def test_aux_head(name):
    case = name
    model = _build(case, num_classes=4, aux=True)
    out = model.train()(torch.randn(2, 3, 35, 51))
    assert out["aux"].shape == out["out"].shape == (2, 4, 35, 51)
    with torch.no_grad():
        assert set(model.eval()(torch.randn(1, 3, 35, 51))) == {"out"}
    with pytest.raises(SegbenchError, match="no option 'aux_weight'"):  # the run's config owns the weight
        _build(case, num_classes=4, aux=True, aux_weight=0.25)
    assert _build(case, num_classes=4).aux is None


@pytest.mark.parametrize("builder", [deeplabv3, deeplabv3plus])
def test_output_stride_changes_no_parameter(builder):
    counts, variants = set(), []
    for output_stride in (8, 16, 32):
        model = builder(num_classes=21, width=0.125, output_stride=output_stride)
        counts.add(sum(p.numel() for p in model.parameters()))
        variants.append(model.variant)
        assert model.output_stride == output_stride
    assert len(counts) == 1
    assert variants == [f"resnet50-os{s}-w0.125" for s in (8, 16, 32)]


@pytest.mark.parametrize(("output_stride", "rates"), [(16, (6, 12, 18)), (8, (12, 24, 36)), (32, (3, 6, 9))])
def test_aspp_rates_follow_output_stride(output_stride, rates):
    with torch.device("meta"):
        model = deeplabv3(num_classes=21, output_stride=output_stride)
    aspp = model.aspp
    assert isinstance(aspp, ASPP) and aspp.rates == rates
    # 1x1, three 3x3 at the rates, image pooling; concatenated (5 x 256) and projected to 256 with BN.
    assert [b[0].dilation[0] for b in aspp.branches[1:4]] == list(rates)
    assert aspp.branches[0][0].kernel_size == (1, 1) and len(aspp.branches) == 5
    assert aspp.project[0][0].in_channels == 5 * 256 and aspp.project[0][0].out_channels == 256
    assert isinstance(aspp.project[0][1], torch.nn.BatchNorm2d)


def test_deeplabv2_aspp_sums_four_classifiers():
    model = build_model("deeplabv2", num_classes=4, width=0.125).eval()
    aspp = model.aspp
    assert isinstance(aspp, ASPPSum) and aspp.rates == (6, 12, 18, 24)
    assert model.output_stride == 8 and model.variant == "resnet101-os8-w0.125"
    x = torch.randn(1, aspp.branches[0].in_channels, 9, 7)
    with torch.no_grad():
        expected = sum(F.conv2d(x, c.weight, c.bias, padding=r, dilation=r) for c, r in zip(aspp.branches, aspp.rates))
        torch.testing.assert_close(aspp(x), expected)
    assert all(c.out_channels == 4 for c in aspp.branches)  # each branch is a classifier


def test_deeplabv1_largefov():
    with torch.device("meta"):
        model = build_model("deeplabv1", num_classes=21)
    fc6 = model.backbone.fc6
    assert (fc6.kernel_size, fc6.dilation, fc6.out_channels) == ((3, 3), (12, 12), 1024)
    pools = [m for m in model.backbone.features if isinstance(m, torch.nn.MaxPool2d)]
    assert [p.stride for p in pools] == [2, 2, 2, 1, 1]
    assert model.output_stride == 8 and model.variant == "vgg16-largefov"
    assert {m.dilation[0] for m in model.backbone.features[24:30] if isinstance(m, torch.nn.Conv2d)} == {2}


def test_deeplabv3plus_decoder():
    with torch.device("meta"):
        model = deeplabv3plus(num_classes=21)
    assert model.decoder.reduce[0].in_channels == 256 and model.decoder.reduce[0].out_channels == 48
    assert model.decoder.fuse[0][0].in_channels == 256 + 48 and len(model.decoder.fuse) == 2
    assert model.decoder.fuse[0][0].kernel_size == (3, 3)
    light = build_model("deeplabv3plus_mobilenet", num_classes=21, width=0.25)
    assert light.variant == "mobilenet_v3_large-os16-w0.25" and light.output_stride == 16


def test_bad_options():
    with pytest.raises(SegbenchError, match="did you mean 'resnet101'"):
        deeplabv3(num_classes=3, backbone="resnet10l", width=0.125)
    with pytest.raises(SegbenchError, match="mobilenet_v3_large supports 16 or 32"):
        deeplabv3plus(num_classes=3, backbone="mobilenet_v3_large", output_stride=8)
    with pytest.raises(SegbenchError, match="output_stride=4"):
        deeplabv3(num_classes=3, output_stride=4, width=0.125)
    with pytest.raises(SegbenchError, match="valid: resnet50, resnet101$"):
        build_model("deeplabv2", num_classes=3, backbone="mobilenet_v3_large")


def test_local_backbone_weights(tmp_path):
    source = deeplabv3(num_classes=3, width=0.125)
    torch.save(source.state_dict(), tmp_path / "model.pth")  # a whole model: keys carry "backbone."
    model = deeplabv3(num_classes=3, width=0.125, backbone_weights=str(tmp_path / "model.pth"))
    assert torch.equal(model.backbone.layer4[2].conv2.weight, source.backbone.layer4[2].conv2.weight)
    with pytest.raises(SegbenchError, match="not found"):
        deeplabv3(num_classes=3, width=0.125, backbone_weights=str(tmp_path / "missing.pth"))
