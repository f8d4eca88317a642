"""Efficiency columns: parameters, FLOPs, latency, measured on the current device.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass at the evaluation
size (a multiply-add counts as 2 FLOPs; GFLOPs = 1e9 FLOPs). Latency is the median wall time of
``runs`` forward passes at batch size 1 after warm-up, through the same path as ``segbench predict``.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .models.inference import forward_full


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _dummy_input(model: nn.Module, in_channels: int, size: tuple[int, int], device: torch.device):
    x = torch.rand(1, in_channels, *size, device=device)
    return [x[0]] if getattr(model, "task", "semantic") == "instance" else x


def _run(model: nn.Module, x: Any, tile: int | None = None) -> Any:
    if getattr(model, "task", "semantic") == "instance":
        return model(x)
    return forward_full(model, x, tile=tile)


@torch.no_grad()
def count_gflops(model: nn.Module, *, in_channels: int, size: tuple[int, int], device: torch.device | str = "cpu",
                 tile: int | None = None) -> float:
    """GFLOPs of one forward pass on a 1 x C x H x W input (eval mode)."""
    model.eval()
    x = _dummy_input(model, in_channels, size, torch.device(device))
    counter = FlopCounterMode(display=False)
    with counter:
        _run(model, x, tile)
    return counter.get_total_flops() / 1e9


@torch.no_grad()
def measure_latency(model: nn.Module, *, in_channels: int, size: tuple[int, int], device: torch.device | str = "cpu",
                    runs: int = 10, warmup: int = 2, amp: bool = True, tile: int | None = None) -> dict[str, Any]:
    """Median and standard deviation (ms) of ``runs`` batch-1 forward passes after ``warmup`` passes, in the
    precision the predict path uses on this device (bf16 on GPUs and bf16-native CPUs, else fp32)."""
    from .device import autocast, cpu_bf16_supported

    device = torch.device(device)
    model.eval()
    x = _dummy_input(model, in_channels, size, device)
    semantic = getattr(model, "task", "semantic") == "semantic"
    bf16 = amp and (device.type == "cuda" or (semantic and cpu_bf16_supported()))
    if bf16 and semantic:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(warmup + runs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with autocast(device, bf16, cpu_bf16=semantic):
            _run(model, x, tile)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
    if bf16 and semantic:
        model.to(memory_format=torch.contiguous_format)
    return {"ms": statistics.median(times), "ms_std": statistics.pstdev(times) if len(times) > 1 else 0.0,
            "precision": "bf16" if bf16 else "fp32"}
