"""The four families on EfficientNet-Lite0 (unet_lite0, fcn8s_lite0, deeplabv3plus_lite0, maskrcnn_lite0): ImageNet
weights reach the encoder, the normalisation they need is declared, parameter groups split encoder from the rest,
FCN-8s up-sampling is aligned, Mask R-CNN trains and predicts. Shapes/backward at odd sizes: test_all_models.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segbench.errors import SegbenchError
from segbench.models import build_model
from segbench.models.efficientnet import LITE_MEAN, LITE_STD
from segbench.models.fcn import _crop, _upsample
from segbench.models.pretrained import EFFICIENTNET_LITE0, input_normalisation, pretrained_weights

NAMES = ["unet_lite0", "fcn8s_lite0", "deeplabv3plus_lite0", "maskrcnn_lite0"]
# Encoder parameters: Lite0 stem..stage7 (2,958,848); FCN-8s also keeps the 1280-channel head conv as its "fc7";
# Mask R-CNN freezes the pretrained encoder's BatchNorm (FrozenBatchNorm2d holds buffers, not parameters).
ENCODER = {"unet_lite0": 2_958_848, "fcn8s_lite0": 3_371_008, "deeplabv3plus_lite0": 2_958_848,
           "maskrcnn_lite0": 2_919_392}  # fmt: skip
SMALL = {"maskrcnn_lite0": {"min_size": 96, "max_size": 128}}


@pytest.fixture(scope="module")
def wheel_state() -> dict[str, torch.Tensor]:
    return torch.load(EFFICIENTNET_LITE0.path(), map_location="cpu", weights_only=True)


def _build(name: str, **options: object) -> torch.nn.Module:
    return build_model(name, num_classes=3, **SMALL.get(name, {}), **options)


@pytest.mark.parametrize("name", NAMES)
def test_imagenet_weights_reach_the_encoder_and_declare_normalisation_and_source(name, wheel_state):
    model = _build(name, backbone_weights="imagenet")
    state = model.state_dict()
    # _blocks.5 is the first block of stage4 (stages hold 1, 2, 2, 3, ... blocks).
    (key,) = [k for k in state if k.endswith("stage4.0.depthwise.conv.weight")]
    assert torch.equal(state[key], wheel_state["_blocks.5._depthwise_conv.weight"])
    assert input_normalisation(model) == (LITE_MEAN, LITE_STD)
    assert pretrained_weights(model) == EFFICIENTNET_LITE0.info()  # source + sha256 for the record
    scratch = _build(name)
    assert input_normalisation(scratch) is None and pretrained_weights(scratch) is None


@pytest.mark.parametrize("name", NAMES)
def test_param_groups_split_every_trainable_parameter_once(name, wheel_state):
    model = _build(name, backbone_weights="imagenet")
    groups = model.param_groups()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in groups["encoder"]} | {id(p) for p in groups["decoder"]} == {id(p) for p in trainable}
    assert not {id(p) for p in groups["encoder"]} & {id(p) for p in groups["decoder"]}
    assert sum(p.numel() for p in groups["encoder"]) == ENCODER[name]


def test_maskrcnn_lite0_freezes_pretrained_batchnorm_only(wheel_state):
    def norms(model):  # stem 1 + stage1 2 + 15 blocks x 3 = 48 BatchNorms
        kinds = [type(m).__name__ for m in model.backbone.body.modules()]
        return kinds.count("BatchNorm2d"), kinds.count("FrozenBatchNorm2d")

    assert norms(_build("maskrcnn_lite0", backbone_weights="imagenet")) == (0, 48)
    assert norms(_build("maskrcnn_lite0")) == (48, 0)  # from scratch BatchNorm must learn


def test_fcn8s_lite0_upsampling_is_aligned_bilinear():
    """Learned 2x up-sampling starts as exactly 2x bilinear interpolation (align_corners=False) away from the
    border, so skips from SAME-padded stages add up pixel to pixel without Caffe's crop offsets."""
    layer = _upsample(3, 2)
    x = torch.randn(1, 3, 6, 7)
    with torch.no_grad():
        ours = _crop(layer(x), 1, (12, 14))
    reference = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(ours[..., 1:-1, 1:-1], reference[..., 1:-1, 1:-1])


@pytest.mark.parametrize("backbone", ["efficientnet_lite0_fpn", "efficientnet_lite0_fpn_p2"])
def test_maskrcnn_lite0_trains_and_predicts_at_an_odd_size(backbone):
    torch.manual_seed(0)
    model = _build("maskrcnn_lite0", backbone=backbone).train()
    masks = torch.zeros(1, 71, 93, dtype=torch.uint8)
    masks[0, 20:50, 30:70] = 1
    target = {"boxes": torch.tensor([[30.0, 20.0, 70.0, 50.0]]), "labels": torch.tensor([1]), "masks": masks}
    losses = model([torch.randn(3, 71, 93)], [target])
    assert set(losses) >= {"loss_classifier", "loss_mask", "loss_objectness"}
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    with torch.no_grad():
        (result,) = model.eval()([torch.randn(3, 71, 93)])
    assert result["masks"].shape[-2:] == (71, 93) and result["boxes"].shape[1] == 4


def test_maskrcnn_lite0_p2_adds_the_stride_4_level(wheel_state):
    """backbone=efficientnet_lite0_fpn_p2 taps stage2 (stride 4, 24 channels) as P2: five levels, the first four
    read by RoIAlign, default anchors 4x each level's stride; ImageNet weights still reach stage2."""
    model = _build("maskrcnn_lite0", backbone="efficientnet_lite0_fpn_p2", backbone_weights="imagenet")
    body = model.backbone.body
    assert body.return_layers == {"stage2": "0", "stage3": "1", "stage5": "2", "stage7": "3"}
    features = model.backbone(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in features.values()] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    assert model.rpn.anchor_generator.sizes == ((16,), (32,), (64,), (128,), (256,))
    assert model.roi_heads.box_roi_pool.featmap_names == ["0", "1", "2", "3"]
    assert torch.equal(body.stage2[0].depthwise.conv.weight, wheel_state["_blocks.1._depthwise_conv.weight"])
    custom = _build("maskrcnn_lite0", backbone="efficientnet_lite0_fpn_p2", anchor_sizes=(8, 16, 32, 64, 128))
    assert custom.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,), (128,))


def test_bad_lite0_options_are_one_line():
    with pytest.raises(SegbenchError, match="trainable_layers applies to ResNet backbones"):
        build_model("maskrcnn_lite0", num_classes=3, trainable_layers=3)
    with pytest.raises(SegbenchError, match="give 4 \\(one per FPN level P3..P6\\)"):
        build_model("maskrcnn_lite0", num_classes=3, anchor_sizes=(32, 64, 128, 256, 512))
    with pytest.raises(SegbenchError, match="give 5 \\(one per FPN level P2..P6\\) for backbone"):
        build_model("maskrcnn_lite0", num_classes=3, backbone="efficientnet_lite0_fpn_p2", anchor_sizes=(32, 64))
    with pytest.raises(SegbenchError, match="did you mean 'efficientnet_lite0_fpn_p2'"):
        build_model("maskrcnn_lite0", num_classes=3, backbone="efficientnet_lite0_fpn_p3")
    with pytest.raises(SegbenchError, match="use 'imagenet'"):
        build_model("maskrcnn_lite0", num_classes=3, backbone_weights="/nowhere/resnet18.pth")
    with pytest.raises(SegbenchError, match="decoder_channels=.*give 5 positive widths"):
        build_model("unet_lite0", num_classes=3, decoder_channels=(64, 32))
    with pytest.raises(SegbenchError, match="use 'imagenet' .* or None"):
        build_model("deeplabv3plus_lite0", num_classes=3, backbone_weights="imagenet21k")
    with pytest.raises(SegbenchError, match="no option 'width'"):
        build_model("fcn8s_lite0", num_classes=3, width=0.5)  # Lite0 has one width


def test_light_head_options_set_the_widths_the_cpu_suites_use():
    """aspp_channels narrows DeepLab v3+'s ASPP and decoder; box_head_size the Mask R-CNN box head's two FC layers
    (and the predictor reading them); the defaults stay the papers' 256 and 1024."""

    def count(model: torch.nn.Module) -> int:
        return sum(p.numel() for p in model.parameters())

    wide, narrow = _build("deeplabv3plus_lite0"), _build("deeplabv3plus_lite0", aspp_channels=128)
    assert narrow.aspp.project[0][0].out_channels == 128 and wide.aspp.project[0][0].out_channels == 256
    assert narrow.head.in_channels == 128 and count(wide) - count(narrow) > 2_000_000
    assert narrow(torch.randn(1, 3, 65, 47))["out"].shape == (1, 3, 65, 47)
    box = _build("maskrcnn_lite0", fpn_channels=64, box_head_size=128)
    assert box.roi_heads.box_head.fc6.out_features == 128 and box.roi_heads.box_head.fc6.in_features == 64 * 49
    assert box.roi_heads.box_predictor.cls_score.in_features == 128
    assert _build("maskrcnn_lite0").roi_heads.box_head.fc7.out_features == 1024
    with pytest.raises(SegbenchError, match="box_head_size=4; give an integer >= 8"):
        _build("maskrcnn_lite0", box_head_size=4)
