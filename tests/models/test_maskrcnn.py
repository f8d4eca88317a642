"""Mask R-CNN family: builders, the training contract on tiny synthetic instances, the fast post-processing
against torchvision's stock path, bad targets, local weights, and the benchmark's report."""

import warnings

import pytest
import torch
from safetensors.torch import save_file

from segbench.errors import SegbenchError
from segbench.models import MODELS, build_model
from segbench.models.maskrcnn import maskrcnn_small


def _instances(n_images: int, size: int = 48, seed: int = 0) -> tuple[list, list]:
    """Images with 1-3 bright rectangles each (label 1) or discs (label 2) on a dark background."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, targets = [], []
    for _ in range(n_images):
        image = torch.rand(3, size, size, generator=gen) * 0.2
        masks, labels = [], []
        for _ in range(int(torch.randint(1, 4, (1,), generator=gen))):
            cx, cy = torch.randint(10, size - 10, (2,), generator=gen).tolist()
            r = int(torch.randint(4, 9, (1,), generator=gen))
            label = int(torch.randint(1, 3, (1,), generator=gen))
            if label == 1:
                m = ((xx - cx).abs() <= r) & ((yy - cy).abs() <= r)
            else:
                m = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
            for prev in masks:
                m &= ~prev.bool()
            image[:, m] = 0.9 if label == 1 else 0.6
            masks.append(m.to(torch.uint8))
            labels.append(label)
        masks = torch.stack(masks)
        boxes = torch.stack([_box(mask) for mask in masks])
        images.append(image)
        targets.append({"boxes": boxes, "labels": torch.tensor(labels), "masks": masks})
    return images, targets


def _box(mask: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


def _tiny(**kwargs):
    return maskrcnn_small(num_classes=3, min_size=48, max_size=64, **kwargs)


def test_registered_and_attributes():
    assert {"maskrcnn", "maskrcnn_small"} <= set(MODELS)
    model = build_model("maskrcnn_small", num_classes=3)
    assert (model.task, model.family, model.variant) == ("instance", "maskrcnn", "resnet18_fpn")
    assert model.transform.image_mean == [0.0, 0.0, 0.0] and model.transform.image_std == [1.0, 1.0, 1.0]
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 3


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"backbone": "resnet50fpn"}, "did you mean 'resnet50_fpn'"),
        ({"mask_resolution": 27}, "even"),
        ({"anchor_sizes": [8, 16]}, "give 5"),
        ({"num_classes": 1}, "background"),
        ({"weights": "/nonexistent/model.safetensors"}, "not found"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(SegbenchError, match=match):
        maskrcnn_small(**{"num_classes": 3, **kwargs})


def test_trains_with_falling_loss():
    torch.manual_seed(0)
    images, targets = _instances(2)
    model = _tiny()
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    history = []
    for _ in range(6):
        losses = model(images, targets)
        assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"} <= set(losses)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert all(torch.isfinite(torch.tensor(history)))
    assert sum(history[-2:]) / 2 < history[0]


def test_zero_objects_and_bad_targets_do_not_stop_training():
    torch.manual_seed(0)
    images, targets = _instances(2)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
             "masks": torch.zeros(0, 48, 48, dtype=torch.uint8)}  # fmt: skip
    bad = dict(targets[1])
    n = len(bad["labels"])
    # add a zero-area box, an empty mask and a crowd region: all are dropped before the loss
    extra_boxes = torch.tensor([[5.0, 5.0, 5.0, 9.0], [1.0, 1.0, 9.0, 9.0], [0.0, 0.0, 48.0, 48.0]])
    bad["boxes"] = torch.cat([bad["boxes"], extra_boxes])
    bad["labels"] = torch.cat([bad["labels"], torch.tensor([1, 1, 2])])
    extra = torch.zeros(3, 48, 48, dtype=torch.uint8)
    extra[0, 5:9, 5] = 1
    extra[2] = 1
    bad["masks"] = torch.cat([bad["masks"], extra])
    bad["iscrowd"] = torch.tensor([0] * n + [0, 0, 1])
    model = _tiny()
    model.train()
    losses = model(images, [empty, bad])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_eval_contract_and_fast_equals_stock():
    torch.manual_seed(0)
    model = _tiny(score_threshold=0.0)
    model.eval()
    images = [torch.randn(3, 48, 64), torch.randn(3, 40, 40)]  # different sizes: two pastes
    with torch.no_grad():
        fast = model(images)
        model.fast_paste = False
        stock = model(images)
    for f, s, image in zip(fast, stock, images):
        assert f["masks"].shape == (len(f["boxes"]), 1, *image.shape[-2:]) and len(f["boxes"]) > 0
        assert f["masks"].dtype == torch.float32 and 0 <= f["masks"].min() and f["masks"].max() <= 1
        assert torch.equal(f["boxes"], s["boxes"])
        assert torch.equal(f["scores"], s["scores"])
        assert torch.equal(f["labels"], s["labels"])
        assert (f["masks"] - s["masks"]).abs().max() < 1e-4
    assert (torch.diff(fast[0]["scores"]) <= 0).all()


def test_grey_input_and_adapted_backbone_weights(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(0)
    rgb = resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.safetensors"
    save_file(rgb, str(path))
    model = _tiny(in_channels=1, backbone_weights=str(path))
    conv1 = model.backbone.body.conv1.weight
    assert conv1.shape[1] == 1
    assert torch.allclose(conv1, rgb["conv1.weight"].sum(1, keepdim=True))
    assert not model.backbone.body.layer1[0].conv1.weight.requires_grad  # 3 trainable stages when pretrained
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(1, 40, 56)])
    assert out[0]["masks"].shape[-2:] == (40, 56)


def test_full_weights_fine_tune_to_other_classes(tmp_path):
    torch.manual_seed(0)
    source = _tiny()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    with pytest.warns(UserWarning, match="start fresh"):
        target = maskrcnn_small(num_classes=5, min_size=48, max_size=64, weights=str(path))
    assert torch.equal(target.backbone.body.conv1.weight, source.backbone.body.conv1.weight)
    assert target.roi_heads.box_predictor.cls_score.out_features == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = _tiny(weights=str(path))  # same classes: everything loads, no warning
    assert torch.equal(same.roi_heads.mask_predictor.mask_fcn_logits.weight,
                       source.roi_heads.mask_predictor.mask_fcn_logits.weight)  # fmt: skip
    with pytest.raises(SegbenchError, match="does not fit"):
        maskrcnn_small(num_classes=3, backbone="resnet50_fpn", min_size=48, weights=str(path))


def test_bench_postprocess_reports_agreement():
    from segbench.analysis.baselines.maskrcnn import bench_postprocess

    report = bench_postprocess(size=64, batch=1, detections=10, iters=1, backbone="resnet18_fpn")
    assert report["detections_per_image"] == 10
    assert report["boxes_identical"] and report["scores_identical"] and report["labels_identical"]
    assert report["mask_iou_min"] >= 0.99
    for key in ("postprocess", "paste", "paste_bool", "inference"):
        assert report[key]["speedup"] > 0
