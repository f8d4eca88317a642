"""Device resolution and naming, autocast and bf16 support: no training code, so predict, speed, the app and
the runner can name a device without importing the training engine.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

import torch

from .errors import SegbenchError


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
