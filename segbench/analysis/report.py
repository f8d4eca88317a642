"""The `segbench models` report: parameters, GFLOPs, output stride and receptive fields side by side.

Semantic models are built on the meta device, so the report costs no memory or compute: FLOPs come from
``FlopCounterMode`` and the theoretical receptive field from walking the network's own layers
(``analysis.receptive_field``). ``--erf`` runs real backward passes (``analysis.effective_receptive_field``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..models import build_model, model_task
from .receptive_field import effective_receptive_field, erf_radius, receptive_field, save_heatmap
from ..speed import count_gflops, count_params


def _build(name: str, num_classes: int, in_channels: int, options: dict[str, Any], device: str) -> torch.nn.Module:
    with torch.device(device):
        return build_model(name, num_classes=num_classes, in_channels=in_channels, **options)


def model_report(names: list[str], *, size: int = 512, num_classes: int = 21, in_channels: int = 3,
                 options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per model: params, GFLOPs at size x size, output stride, theoretical receptive field (px)."""
    rows = []
    for name in names:
        opts = dict(options or {})
        instance = model_task(name) == "instance"
        model = _build(name, num_classes, in_channels, opts, "cpu" if instance else "meta").eval()
        row: dict[str, Any] = {"model": name, "family": model.family, "variant": model.variant,
                               "params": count_params(model), "params_m": count_params(model) / 1e6,
                               "output_stride": getattr(model, "output_stride", None)}
        device = "cpu" if instance else "meta"
        row["gflops"] = count_gflops(model, in_channels=in_channels, size=(size, size), device=device)
        row["receptive_field"] = row["rf_at_size"] = row["global_pooling"] = None
        if not instance:
            rf = receptive_field(model, input_size=(in_channels, size, size))
            # Unbounded-input RF (global pooling paths excluded): comparable across models and sizes.
            row["receptive_field"] = rf["theoretical_receptive_field"] or rf["receptive_field"]
            row["rf_at_size"] = rf["receptive_field"]
            row["global_pooling"] = rf["global"]
        rows.append(row)
    return rows


def erf_report(name: str, *, size: int = 128, out: str | None = None, num_classes: int = 21, in_channels: int = 3,
               options: dict[str, Any] | None = None, samples: int = 8) -> dict[str, Any]:
    """Measure the effective receptive field of a randomly initialised ``name`` and save its heat map."""
    if model_task(name) == "instance":
        from ..errors import SegbenchError

        raise SegbenchError(f"--erf works on semantic models; '{name}' is an instance model")
    torch.manual_seed(0)
    model = _build(name, num_classes, in_channels, dict(options or {}), "cpu").eval()
    erf = effective_receptive_field(model, input_size=(in_channels, size, size), samples=samples)
    path = Path(out or f"erf_{name}.png")
    save_heatmap(erf, path)
    theory = receptive_field(model, input_size=(in_channels, size, size))
    return {"model": name, "input_size": size, "theoretical_rf": theory["receptive_field"],
            "erf_radius_95": erf_radius(erf, 0.95), "heatmap": str(path)}
