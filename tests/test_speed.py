"""speed: GMACs in the torchvision/fvcore convention (aux head apart), instance models on real images with their
detection count, forward and end-to-end latency through the predict path, input guards."""

from __future__ import annotations

import pytest
import torch
import torchvision

from segbench.errors import SegbenchError
from segbench.models import build_model
from segbench.inference.predict import Predictor
from segbench.evaluation.speed import (END_TO_END_SCOPE, FOLDED, FORWARD_SCOPE, MACS_CONVENTION, Timing, count_gmacs,
                            first_images, measure_efficiency, measure_latency, predict_meta)

TINY_MASKRCNN = {"min_size": 64, "max_size": 64, "proposals": 20, "detections_per_img": 5, "fpn_channels": 32}


def _images(shapes: list[tuple[int, int, int]], seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8) for shape in shapes]


# ---------------------------------------------------------------- GMACs: the published figures

def test_resnet50_gmacs_match_torchvision_table():
    """torchvision lists ResNet-50 at 224 x 224 as 4.09 "GFLOPS": multiply-adds, not FlopCounterMode's 2 per MAC."""
    with torch.device("meta"):
        model = torchvision.models.resnet50()
    macs = count_gmacs(model, in_channels=3, size=(224, 224), device="meta")
    assert round(macs["gmacs"], 2) == 4.09 and macs["gmacs_aux"] is None


@pytest.mark.parametrize("build", [
    lambda: torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None, aux_loss=True),
    lambda: build_model("fcn_resnet50", num_classes=21, aux=True),
], ids=["torchvision", "segbench"])
def test_fcn_resnet50_gmacs_without_and_with_aux_head(build):
    """torchvision's table: fcn_resnet50 at 520 x 520 = 152.7 with its aux head; 142.7 is the inference cost."""
    with torch.device("meta"):
        model = build()
    macs = count_gmacs(model, in_channels=3, size=520, device="meta")
    assert round(macs["gmacs"], 1) == 142.7 and round(macs["gmacs_aux"], 1) == 152.7


def test_no_aux_head_gives_no_aux_figure():
    with torch.device("meta"):
        model = build_model("fcn_resnet50", num_classes=21)
    macs = count_gmacs(model, in_channels=3, size=520, device="meta")
    assert round(macs["gmacs"], 1) == 142.7 and macs["gmacs_aux"] is None


def test_counting_the_aux_head_leaves_batchnorm_statistics_and_eval_mode_alone():
    torch.manual_seed(0)
    model = build_model("fcn_resnet50", num_classes=3, aux=True, width=0.125).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    macs = count_gmacs(model, in_channels=3, size=32)
    assert macs["gmacs_aux"] > macs["gmacs"] > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m.training for m in model.modules())


# ---------------------------------------------------------------- instance models: real images

def _tiny_maskrcnn(in_channels: int = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("maskrcnn_small", num_classes=2, in_channels=in_channels, **TINY_MASKRCNN).eval()


def test_instance_gmacs_are_the_mean_over_the_given_images():
    model = _tiny_maskrcnn()
    a, b = _images([(1, 48, 64), (1, 64, 40)])
    both = count_gmacs(model, in_channels=1, size=64, images=[a, b])
    one, two = (count_gmacs(model, in_channels=1, size=64, images=[img]) for img in (a, b))
    assert both["gmacs"] == pytest.approx((one["gmacs"] + two["gmacs"]) / 2)
    assert both["mean_detections"] == pytest.approx((one["mean_detections"] + two["mean_detections"]) / 2)
    assert both["gmacs_aux"] is None


def test_instance_efficiency_is_measured_on_the_images_with_their_detections():
    model = _tiny_maskrcnn()
    images = _images([(1, 48, 64), (1, 48, 64)])
    eff = measure_efficiency(model, in_channels=1, size=(48, 64), timing=Timing(runs=1), images=images)
    with torch.no_grad():
        from segbench.data.transforms import normalize

        detections = [len(model([normalize(img, [0.5], [0.25])])[0]["boxes"]) for img in images]
    lat = eff["latency"]
    assert lat["inputs"] == "val images [0..1] (2)"
    assert lat["mean_detections"] == pytest.approx(sum(detections) / 2)
    assert lat["precision"] == "fp32"  # detection ops stay fp32 on the CPU, as in evaluation
    assert eff["gmacs"] == pytest.approx(count_gmacs(model, in_channels=1, size=64, images=images)["gmacs"], rel=1e-3)
    assert eff["macs_input"] == [1, 48, 64] and lat["image_size"] == [48, 64]
    assert eff["receptive_field"] is None and eff["gmacs_aux"] is None


def test_instance_efficiency_refuses_noise():
    with pytest.raises(SegbenchError, match="real images") as err:
        measure_efficiency(_tiny_maskrcnn(), in_channels=1, size=64, timing=Timing(runs=1))
    assert "\n" not in str(err.value)


def test_first_images_are_the_first_items_in_order():
    items = [(img, {"i": i}) for i, img in enumerate(_images([(3, 8, 8)] * 6))]
    images, label = first_images(items, 4)
    assert label == "val images [0..3] (4)" and all(torch.equal(a, b[0]) for a, b in zip(images, items))
    assert first_images(items[:2], 4)[1] == "val images [0..1] (2)"
    with pytest.raises(SegbenchError, match="empty"):
        first_images([], 4)


# ---------------------------------------------------------------- semantic models, the record block

def test_semantic_efficiency_block_has_the_schema_2_keys():
    torch.manual_seed(0)
    model = build_model("unet_small", num_classes=3, in_channels=1, base_channels=4, depth=2)
    eff = measure_efficiency(model, in_channels=1, size=(32, 48), timing=Timing(runs=2))
    assert set(eff) == {"params", "gmacs", "gmacs_aux", "macs_convention", "macs_input", "receptive_field",
                        "output_stride", "latency"}
    assert eff["macs_convention"] == MACS_CONVENTION and eff["macs_input"] == [1, 32, 48]
    assert eff["gmacs"] > 0 and eff["gmacs_aux"] is None and eff["receptive_field"] > 1
    lat = eff["latency"]
    assert set(lat) == {"device", "batch_size", "image_size", "precision", "forward_ms", "forward_ms_std",
                        "end_to_end_ms", "end_to_end_ms_std", "forward_scope", "end_to_end_scope", "inputs",
                        "mean_detections", "batchnorm_folded"}
    # unet_small's BatchNorms (2 per block) are folded in the fast path, and the scope says so
    assert lat["batchnorm_folded"] == 2 * 5 and lat["forward_scope"] == FORWARD_SCOPE + FOLDED
    assert lat["end_to_end_scope"] == END_TO_END_SCOPE
    assert lat["inputs"] == "random" and lat["mean_detections"] is None and lat["image_size"] == [32, 48]
    assert lat["forward_ms"] > 0 and lat["end_to_end_ms"] > 0 and lat["forward_ms_std"] >= 0
    # the fast path runs a folded channels_last copy; the caller's model is as it was
    assert all(p.is_contiguous() for p in model.parameters())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 2 * 5


def test_precision_is_fp32_without_amp():
    model = build_model("unet_small", num_classes=2, in_channels=1, base_channels=4, depth=2)
    timing = Timing(runs=1, warmup=0, amp=False)
    assert measure_latency(model, in_channels=1, size=16, timing=timing)["precision"] == "fp32"


def test_end_to_end_runs_the_predict_path_on_host_uint8_images(monkeypatch):
    """Each timed or warm-up pass calls Predictor once per image, from the uint8 host image at its own size;
    the semantic forward sees the normalised device tensor already resized to the eval size."""
    calls, forwards = [], []
    original_call, original_forward = Predictor.__call__, Predictor.forward

    def spy_call(self, image, **kwargs):
        calls.append((image.dtype, image.device.type, tuple(image.shape)))
        return original_call(self, image, **kwargs)

    def spy_forward(self, x, **kwargs):
        forwards.append((x.dtype, tuple(x.shape)))
        return original_forward(self, x, **kwargs)

    monkeypatch.setattr(Predictor, "__call__", spy_call)
    monkeypatch.setattr(Predictor, "forward", spy_forward)
    model = build_model("unet_small", num_classes=2, in_channels=1, base_channels=4, depth=2)
    images = _images([(1, 40, 24), (1, 20, 30)])
    measure_latency(model, in_channels=1, size=(16, 16), timing=Timing(runs=2, warmup=1), images=images,
                    meta=predict_meta(model, in_channels=1, eval_size=(16, 16)))
    assert calls == [(torch.uint8, "cpu", (1, 40, 24)), (torch.uint8, "cpu", (1, 20, 30))] * 3
    assert set(forwards) == {(torch.float32, (1, 1, 16, 16))} and len(forwards) == 2 * len(calls)


@pytest.mark.parametrize("kwargs, message", [
    ({"runs": 0}, "runs=0"),
    ({"runs": 2.5}, "runs=2.5"),
    ({"size": 0}, "size=0"),
    ({"size": (0, 5)}, "size=(0, 5)"),
    ({"size": (8, 8, 8)}, "size=(8, 8, 8)"),
])
def test_bad_runs_or_size_is_one_line(kwargs, message):
    model = build_model("unet_small", num_classes=2, in_channels=1, base_channels=4, depth=2)
    args = {"in_channels": 1, "size": kwargs.get("size", 16), "timing": Timing(runs=kwargs.get("runs", 1), amp=False)}
    with pytest.raises(SegbenchError) as err:
        measure_efficiency(model, **args)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_empty_image_list_is_refused():
    model = build_model("unet_small", num_classes=2, in_channels=1, base_channels=4, depth=2)
    with pytest.raises(SegbenchError, match="images is empty"):
        measure_latency(model, in_channels=1, size=16, timing=Timing(runs=1), images=[])
