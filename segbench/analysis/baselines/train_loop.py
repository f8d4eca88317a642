"""Training throughput: segbench's loop (engine.train) vs a minimal plain-PyTorch loop, same model/data/batch."""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ...data import DatasetInfo
from ...data.transforms import collate_semantic, normalize
from ...device import device_name
from ...evaluation.speed import count_gmacs
from ...models import build_model
from ...train.engine import Loaders, TrainSettings, make_optimizer, make_scheduler, train
from ...train.losses import build_loss

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16 tensor-core peaks


def _peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def bench_train_loop(model_name: str, *, device: str = "cpu", size: int = 128, batch: int = 4, steps: int = 10,
                     num_classes: int = 6) -> dict[str, Any]:
    dev = torch.device(device)
    torch.manual_seed(0)
    n = batch * steps
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)
    masks = torch.randint(0, num_classes, (n, size, size), dtype=torch.int64)
    info = DatasetInfo(name="bench", num_classes=num_classes, class_names=tuple(f"c{i}" for i in range(num_classes)),
                       ignore_index=255, in_channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                       palette=tuple((i, i, i) for i in range(num_classes)), background_index=0, license="", citation="")
    pairs = list(zip(images, masks))
    loader = DataLoader(pairs, batch_size=batch, shuffle=False, collate_fn=collate_semantic)
    amp = dev.type == "cuda"

    def fresh():
        torch.manual_seed(0)
        return build_model(model_name, num_classes=num_classes).to(dev)

    # --- plain loop: the least a user would write
    model = fresh()
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def plain_epoch() -> float:
        model.train()
        t0 = time.perf_counter()
        for x, y in loader:
            x = normalize(x.to(dev), info.mean, info.std)
            if dev.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(dev)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                out = model(x)["out"]
            loss = F.cross_entropy(out.float(), y, ignore_index=255)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter() - t0

    plain_epoch()  # warm-up
    plain_s = min(plain_epoch() for _ in range(2))

    # --- segbench's loop (no validation, no checkpoints: the same work)
    model = fresh()
    optimizer = make_optimizer(model, "sgd", lr=1e-3, momentum=0.9, weight_decay=0.0)
    scheduler = make_scheduler(optimizer, "poly", total_steps=steps * 3, warmup_steps=0)
    loss_fn = build_loss("ce", num_classes=num_classes).to(dev)
    settings = TrainSettings(device=dev, info=info, epochs=1, amp=amp, progress=False)
    kwargs = dict(loss_fn=loss_fn, optimizer=optimizer, scheduler=scheduler, settings=settings, log=lambda s: None)
    train(model, Loaders(loader), **kwargs)  # warm-up
    ours_s = min(train(model, Loaders(loader), **kwargs).seconds for _ in range(2))

    gmacs = count_gmacs(model, in_channels=3, size=(size, size), device=dev)["gmacs"]
    flops = 3 * 2 * gmacs * 1e9 * n  # fwd + 2x bwd; 1 MAC = 2 FLOPs, as the peak is counted
    result = {
        "model": model_name, "device": device_name(dev), "size": size, "batch": batch, "steps": steps,
        "gmacs": gmacs, "plain_images_per_s": n / plain_s, "ours_images_per_s": n / ours_s, "ratio": plain_s / ours_s,
    }
    peak = _peak(dev)
    if peak:
        result["ours_mfu"] = flops / ours_s / (peak * 1e12)
        result["plain_mfu"] = flops / plain_s / (peak * 1e12)
    return result
