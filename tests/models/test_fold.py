"""Folding BatchNorm into convolutions for inference (models.fold, used by the predict path's fast mode): the
folded model gives the unfolded one's outputs, every conv -> BN pair of every family goes, the caller's model is
never touched, and a model in training mode is refused."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from segbench.errors import SegbenchError
from segbench.models import build_model
from segbench.models.fold import fold_batchnorm, has_batchnorm
from segbench.inference.predict import Predictor
from segbench.evaluation.speed import predict_meta

NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)
# model -> BatchNorms left on purpose (DeepLab's image pooling runs on a 1 x 1 map).
SEMANTIC = {"unet_small": 0, "unet_lite0": 0, "fcn8s_lite0": 0, "fcn_resnet50": 0, "deeplabv3plus_mobilenet": 1,
            "deeplabv3": 1}


def _random_statistics(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so a wrong fold shows (fresh BN is the identity)."""
    generator = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, NORMS):
            n = m.running_mean.numel()
            m.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)
    return model.eval()


def _norms(model: nn.Module) -> int:
    return sum(isinstance(m, NORMS) for m in model.modules())


@pytest.mark.parametrize("name", sorted(SEMANTIC))
def test_folded_semantic_models_give_the_same_logits(name):
    torch.manual_seed(0)
    model = _random_statistics(build_model(name, num_classes=3))
    folded = copy.deepcopy(model)
    count = fold_batchnorm(folded)
    assert count == _norms(model) - SEMANTIC[name] > 0
    assert _norms(folded) == SEMANTIC[name]
    x = torch.randn(1, 3, 67, 91)
    with torch.no_grad():
        expected, got = model(x)["out"], folded(x)["out"]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


@pytest.mark.parametrize("options", [{}, {"backbone_weights": "imagenet"}, {"backbone": "efficientnet_lite0_fpn_p2"}])
def test_folded_maskrcnn_lite0_gives_the_same_detections(options):
    """Scratch (BatchNorm2d) and pretrained (FrozenBatchNorm2d) encoders are folded alike."""
    torch.manual_seed(0)
    model = _random_statistics(build_model("maskrcnn_lite0", num_classes=3, min_size=96, max_size=128, **options))
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded) == 48 and not has_batchnorm(folded)
    image = torch.randn(3, 80, 112)
    with torch.no_grad():
        features = model.backbone(image[None])
        torch.testing.assert_close(folded.backbone(image[None]), features, rtol=1e-4, atol=1e-4)
        expected, got = model([image])[0], folded([image])[0]
    torch.testing.assert_close(got["boxes"], expected["boxes"], rtol=1e-3, atol=1e-2)


def test_maskrcnn_small_resnet_blocks_and_stem_are_folded():
    model = _random_statistics(build_model("maskrcnn_small", num_classes=3))
    assert fold_batchnorm(copy.deepcopy(model)) == _norms(model) == 20


def test_predictor_folds_a_copy_and_leaves_the_callers_model_alone():
    torch.manual_seed(0)
    model = _random_statistics(build_model("unet_lite0", num_classes=3))
    keys = set(model.state_dict())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    predictor = Predictor.from_model(model, predict_meta(model, in_channels=3))
    assert predictor.folded_batchnorm == _norms(model) == 58 and not has_batchnorm(predictor.model)
    assert set(model.state_dict()) == keys
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.training is False  # eval() as before: the predict path never trains
    plain = Predictor.from_model(model, predict_meta(model, in_channels=3), fast=False)
    assert plain.folded_batchnorm == 0 and plain.model is model


def test_a_model_in_training_mode_is_refused():
    with pytest.raises(SegbenchError, match="training mode; call model.eval\\(\\) first"):
        fold_batchnorm(build_model("unet_small", num_classes=2).train())


def test_a_model_without_batchnorm_is_left_as_it_is():
    model = build_model("fcn8s_small", num_classes=2).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert not has_batchnorm(model) and fold_batchnorm(model) == 0
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_a_sequential_with_its_own_forward_is_not_folded():
    """Neighbours in a Sequential subclass that overrides forward may not be conv -> BN in the data flow."""

    class Shifted(nn.Sequential):
        def forward(self, x):
            return self[1](self[0](x) + 1.0)  # something between the conv and the BN: folding would be wrong

    model = _random_statistics(nn.Sequential(Shifted(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))).eval()
    assert fold_batchnorm(model) == 0 and _norms(model) == 1
