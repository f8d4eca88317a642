"""FCN family: exact-size output for any input, skips, bilinear init, parameter count, aux head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segbench.models import build_model
from segbench.models.fcn import BUILDERS, bilinear_kernel, fcn8s

# Tiny versions of every builder (2 shared CPU cores).
TINY = {
    "fcn32s": dict(width=0.125, fc_channels=32),
    "fcn16s": dict(width=0.125, fc_channels=32),
    "fcn8s": dict(width=0.125, fc_channels=32),
    "fcn8s_small": dict(),
    "fcn_resnet50": dict(width=0.125),
    "fcn_resnet101": dict(width=0.125),
    "fcn8s_lite0": dict(),  # one width (EfficientNet-Lite0)
}


def test_tiny_table_covers_every_builder():
    assert set(TINY) == set(BUILDERS)


@pytest.mark.parametrize("name", sorted(TINY))
def test_output_matches_input_size(name):
    model = BUILDERS[name](num_classes=5, **TINY[name]).eval()
    with torch.no_grad():
        for size in [(97, 131), (1, 1), (3, 17), (64, 64)]:
            out = model(torch.randn(1, 3, *size))
            assert set(out) == {"out"}
            assert out["out"].shape == (1, 5, *size) and out["out"].dtype == torch.float32


@pytest.mark.parametrize("name", sorted(TINY))
def test_grey_input_and_batch_one_train_step(name):
    torch.manual_seed(0)
    model = BUILDERS[name](num_classes=3, in_channels=1, **TINY[name]).train()
    x, target = torch.randn(1, 1, 33, 45), torch.randint(0, 3, (1, 33, 45))
    target[0, :2] = 255  # the ignore value
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = F.cross_entropy(model(x)["out"], target, ignore_index=255)
    loss.backward()
    assert torch.isfinite(loss)
    # (FCN-VGG's zero-initialised score layers pass no gradient to the backbone on this first step.)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head.parameters())
    optimizer.step()


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s"])
def test_attributes(name):
    model = BUILDERS[name](num_classes=4, **TINY[name])
    assert (model.task, model.family, model.variant) == ("semantic", "fcn", "vgg16-w0.125")
    assert model.output_stride == int(name[3:-1])


def test_fcn8s_parameter_count_is_the_papers():
    """FCN-8s on VGG16 for PASCAL VOC (21 classes) has ~134M parameters (reference Caffe net: 134.5M)."""
    with torch.device("meta"):
        model = fcn8s(num_classes=21)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - 134e6) / 134e6 < 0.01, count
    assert tuple(model.backbone.fc6.weight.shape) == (4096, 512, 7, 7)
    assert tuple(model.backbone.fc7.weight.shape) == (4096, 4096, 1, 1)


def test_skip_layers():
    m32, m16, m8 = (BUILDERS[n](num_classes=3, **TINY[n]) for n in ("fcn32s", "fcn16s", "fcn8s"))
    assert not hasattr(m32.head, "score_pool4")
    assert hasattr(m16.head, "score_pool4") and not hasattr(m16.head, "score_pool3")
    assert hasattr(m8.head, "score_pool4") and hasattr(m8.head, "score_pool3")
    assert [m.head.upscore.stride[0] for m in (m32, m16, m8)] == [32, 16, 8]


def test_upsampling_is_initialised_to_bilinear():
    model = BUILDERS["fcn8s"](num_classes=3, **TINY["fcn8s"])
    for layer, factor in [(model.head.upscore2, 2), (model.head.upscore_pool4, 2), (model.head.upscore, 8)]:
        assert layer.weight.requires_grad and layer.bias is None  # learned, no bias (Sec. 3.3)
        w = layer.weight.detach()
        assert w.shape == (3, 3, 2 * factor, 2 * factor)
        off_diagonal = w.clone()
        off_diagonal[range(3), range(3)] = 0
        assert off_diagonal.abs().sum() == 0
        # Bilinear interpolation keeps a constant map constant (away from the border).
        with torch.no_grad():
            y = layer(torch.ones(1, 3, 6, 6))
        inner = y[..., 2 * factor : -2 * factor, 2 * factor : -2 * factor]
        torch.testing.assert_close(inner, torch.ones_like(inner))
    k = bilinear_kernel(1, 4)[0, 0]
    torch.testing.assert_close(k[0], torch.tensor([0.0625, 0.1875, 0.1875, 0.0625]))


def test_score_layers_start_at_zero():
    """The class-score layers are zero-initialised (Sec. 4.3), so an untrained FCN predicts all-zero logits."""
    model = BUILDERS["fcn8s"](num_classes=3, **TINY["fcn8s"]).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 20, 24))["out"].abs().sum() == 0


def test_fcn_resnet_aux_head():
    model = BUILDERS["fcn_resnet50"](num_classes=4, aux=True, **TINY["fcn_resnet50"])
    assert model.variant == "resnet50-os8-w0.125" and model.output_stride == 8
    out = model.train()(torch.randn(1, 3, 41, 29))
    assert out["aux"].shape == out["out"].shape == (1, 4, 41, 29)
    with torch.no_grad():
        assert set(model.eval()(torch.randn(1, 3, 41, 29))) == {"out"}
    assert BUILDERS["fcn_resnet50"](num_classes=4, **TINY["fcn_resnet50"]).aux is None


def test_local_backbone_weights(tmp_path):
    source = BUILDERS["fcn8s"](num_classes=3, **TINY["fcn8s"])
    torch.save(source.backbone.state_dict(), tmp_path / "vgg.pth")
    model = BUILDERS["fcn8s"](num_classes=3, backbone_weights=str(tmp_path / "vgg.pth"), **TINY["fcn8s"])
    assert torch.equal(model.backbone.fc6.weight, source.backbone.fc6.weight)


def test_registry():
    model = build_model("fcn8s_small", num_classes=3)
    assert model.family == "fcn" and model.variant == "vgg16-w0.125"


def test_bf16_logits_are_resampled_in_float32_on_the_cpu():
    """The final bilinear up-sampling of bf16 scores (autocast on the predict path) runs in float32 on a CPU: the
    same values as resampling the float32 scores, returned as float32 (what argmax reads)."""
    from segbench.models.segmenter import resize, resize_logits

    scores = torch.randn(1, 11, 9, 13).to(torch.bfloat16)
    out = resize_logits(scores, (72, 104))
    assert out.dtype == torch.float32 and out.shape == (1, 11, 72, 104)
    torch.testing.assert_close(out, resize(scores.float(), (72, 104)), rtol=0, atol=0)
    assert resize_logits(scores.float(), (72, 104)).dtype == torch.float32
    model = build_model("fcn8s_lite0", num_classes=3).eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.randn(1, 3, 40, 56))["out"].dtype == torch.float32
