"""predict.Predictor: a model in memory predicts as the same weights loaded from disk; its three steps compose to
the whole call; the precision it reports is the one it runs in."""

from __future__ import annotations

import torch

from segbench.models import build_model
from segbench.inference.predict import Predictor
from segbench.weights.store import save_weights
from segbench.weights.meta import WeightsMeta

META = WeightsMeta.from_dict({
    "model": "unet_small", "model_args": {"in_channels": 1, "base_channels": 4, "depth": 2}, "num_classes": 3,
    "in_channels": 1, "mean": [0.5], "std": [0.25], "palette": [[0, 0, 0]] * 3, "task": "semantic",
    "eval_size": [16, 16]})


def test_from_model_predicts_as_the_saved_weights(tmp_path):
    torch.manual_seed(0)
    model = build_model("unet_small", num_classes=3, **META.model_args).eval()
    save_weights(model, META, tmp_path)
    image = torch.randint(0, 256, (1, 20, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    loaded = Predictor(tmp_path, fast=False)(image, with_probs=True)
    memory = Predictor.from_model(model, META, fast=False)(image, with_probs=True)
    assert loaded.mask.shape == (20, 28) and torch.equal(loaded.mask, memory.mask)
    assert torch.allclose(loaded.probs, memory.probs)


def test_steps_compose_to_the_call():
    torch.manual_seed(0)
    model = build_model("unet_small", num_classes=3, **META.model_args)
    predictor = Predictor.from_model(model, META, fast=False)
    image = torch.randint(0, 256, (1, 20, 28), dtype=torch.uint8)
    with torch.inference_mode():
        x = predictor.prepare(image)
        logits = predictor.forward(x)
    assert x.shape == (1, 1, 16, 16) and x.dtype == torch.float32  # resized to the eval size, normalised
    back = torch.nn.functional.interpolate(logits, size=(20, 28), mode="bilinear", align_corners=False)
    assert torch.equal(back.argmax(1)[0], predictor(image).mask)


def test_instance_models_report_the_precision_they_run_in():
    """Mask R-CNN runs fp32 on a CPU even where the CPU has native bf16 (only semantic models use it there)."""
    torch.manual_seed(0)
    model = build_model("maskrcnn_small", num_classes=2, in_channels=1, min_size=32, max_size=32, proposals=10,
                        detections_per_img=3, fpn_channels=16)
    meta = WeightsMeta(task="instance", in_channels=1, mean=(0.5,), std=(0.25,), num_classes=2)
    predictor = Predictor.from_model(model, meta, fast=True)
    assert predictor.precision == "fp32" and not predictor.channels_last
    pred = predictor(torch.randint(0, 256, (1, 24, 40), dtype=torch.uint8))
    assert pred.mask.shape == (24, 40) and pred.mask.dtype == torch.int64
    assert pred.instances["masks"].shape[-2:] == (24, 40)


def test_keep_freed_memory_applies_on_glibc_and_is_a_no_op_elsewhere(monkeypatch):
    """The app and `segbench predict` raise glibc's mmap/trim thresholds so activations are reused, not
    page-faulted in on every call; without glibc (macOS, Windows, musl) nothing happens and nothing fails."""
    import ctypes
    import sys

    from segbench.device import keep_freed_memory

    if sys.platform.startswith("linux"):
        assert keep_freed_memory() is True
        assert keep_freed_memory() is True  # idempotent
    monkeypatch.setattr(sys, "platform", "darwin")
    assert keep_freed_memory() is False
    monkeypatch.setattr(sys, "platform", "linux")

    def no_libc(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert keep_freed_memory() is False
