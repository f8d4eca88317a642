"""The `segbench models` report: parameters, GMACs, output stride and receptive fields side by side.

Semantic models are built on the meta device, so the report costs no memory or compute: GMACs come from
``speed.count_gmacs`` (torchvision/fvcore convention: 1 multiply-add = 1 MAC) and the theoretical receptive field
from walking the network's own layers (``analysis.receptive_field``). Models with an optional auxiliary head are
built with it, so both ``gmacs`` (without, what inference costs) and ``gmacs_aux`` (with, what torchvision's
tables list) are shown; ``params`` likewise excludes it and ``params_aux`` includes it. Mask R-CNN runs for real
on one noise image with random weights: its figures depend on the detections that produces (``mean_detections``);
records measure it on real validation images. ``--erf`` runs real backward passes
(``analysis.effective_receptive_field``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..evaluation.speed import MACS_CONVENTION, aux_head, count_gmacs, count_params
from ..models import build_model, model_options, model_task
from .receptive_field import effective_receptive_field, erf_radius, receptive_field, save_heatmap

# (key, header, format) of the `segbench models` table; the header of size-dependent columns takes the size.
COLUMNS = [("model", "model", ""), ("family", "family", ""), ("variant", "variant", ""),
           ("params_m", "params(M)", ".2f"), ("gmacs", "GMACs@{size}", ".1f"), ("gmacs_aux", "+aux", ".1f"),
           ("output_stride", "OS", ""), ("receptive_field", "RF(px)", ""), ("rf_at_size", "RF@{size}", ""),
           ("global_pooling", "global", ""), ("mean_detections", "dets", ".0f")]


def _build(name: str, num_classes: int, in_channels: int, options: dict[str, Any], device: str) -> torch.nn.Module:
    with torch.device(device):
        return build_model(name, num_classes=num_classes, in_channels=in_channels, **options)


def model_report(names: list[str], *, size: int = 512, num_classes: int = 21, in_channels: int = 3,
                 options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per model: params (without / with aux head), GMACs at size x size (without / with aux head, see
    ``speed``), output stride, theoretical receptive field (px) unbounded and at this size."""
    rows = []
    for name in names:
        opts = dict(options or {})
        if "aux" in model_options(name):
            opts.setdefault("aux", True)  # count the head once; gmacs/params leave it out, *_aux put it in
        instance = model_task(name) == "instance"
        device = "cpu" if instance else "meta"
        model = _build(name, num_classes, in_channels, opts, device).eval()
        head = aux_head(model)
        params = count_params(model)
        without_aux = params - (count_params(head[1]) if head else 0)
        macs = count_gmacs(model, in_channels=in_channels, size=(size, size), device=device)
        row: dict[str, Any] = {"model": name, "family": model.family, "variant": model.variant,
                               "params": without_aux, "params_m": without_aux / 1e6,
                               "params_aux": params if head else None,
                               "gmacs": round(macs["gmacs"], 4),
                               "gmacs_aux": round(macs["gmacs_aux"], 4) if macs["gmacs_aux"] is not None else None,
                               "macs_convention": MACS_CONVENTION, "macs_input": [in_channels, size, size],
                               "output_stride": getattr(model, "output_stride", None)}
        row["receptive_field"] = row["rf_at_size"] = row["global_pooling"] = None
        if instance:
            row["mean_detections"] = macs["mean_detections"]
        else:
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
