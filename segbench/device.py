"""Device resolution and naming, autocast and bf16 support: no training code, so predict, speed, the app and
the runner can name a device without importing the training engine.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

import torch

from .errors import SegbenchError


# glibc mallopt parameters (malloc.h) and the values keep_freed_memory sets: blocks up to 1 GiB come from the heap,
# and the heap is given back to the OS only above 2 GiB of free space at its top.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_BELOW, _TRIM_ABOVE = 1 << 30, 1 << 31


def keep_freed_memory() -> bool:
    """Keep freed activation buffers in the process (glibc ``mallopt``) for a long-lived CPU inference server.

    Every forward pass allocates and frees the same large activations. glibc serves blocks above its mmap threshold
    with fresh pages and unmaps them on free, so each call page-faults its activations in again (``torch.profiler``
    charges it to the first op that writes them, e.g. ``fill_`` of a padding). Raising the mmap and trim thresholds
    keeps those blocks in the heap for the next call: the FCN-8s Lite0 predict path on a 512 x 512 image went from
    29-30 to 20-22 ms on the project's 2-core CPU. The price: the process keeps its peak heap. The app and
    ``segbench predict`` call it; records are timed without it. Linux with glibc only; returns whether it applied.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_BELOW)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_ABOVE))
    except (OSError, AttributeError):  # musl (no mallopt) or no libc.so.6
        return False


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SegbenchError(f"device '{name}' asked for but no CUDA GPU is visible; use device=auto or device=cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise SegbenchError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None


def device_name(device: torch.device) -> str:
    """A human-readable device name for records: the GPU's name or the CPU model with its core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({os.cpu_count()} cores)"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "cpu"


def cpu_bf16_supported() -> bool:
    """True where oneDNN runs bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 on the CPU is slower than fp32."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(device: torch.device, enabled: bool, *, cpu_bf16: bool = False):
    """bf16 autocast on CUDA; on the CPU only when asked (inference paths) and natively supported.

    Training and the metrics of evaluation on the CPU stay fp32.
    """
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if enabled and cpu_bf16 and device.type == "cpu" and cpu_bf16_supported():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def uses_channels_last(model: torch.nn.Module, channels_last: bool) -> bool:
    """Whether training keeps ``model`` and its batches in channels_last: semantic models when the config asks, on
    every device (measured on the project's 2-core CPU, fp32 train steps: 1.35-1.8x faster than NCHW). Instance
    models stay NCHW (torchvision's detection transform re-batches the images)."""
    return channels_last and getattr(model, "task", "semantic") == "semantic"
