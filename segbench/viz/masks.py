"""Colours and pictures shared by the CLI and the app: palettes, colour masks, overlays.

Masks are int64 [H,W] class maps; images are uint8 [C,H,W] (C = 1 or 3). Pixels equal to the ignore value
(255) are drawn black.
"""

from __future__ import annotations

import colorsys
import html

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..models.families import FAMILIES

IGNORE_COLOUR = (0, 0, 0)


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Distinct colours: black-ish background first, then hues spread by the golden ratio."""
    colours = [(40, 40, 40)]
    for i in range(1, num_classes):
        h = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.75, 0.95)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours[:num_classes]


def _lut(palette: list[tuple[int, int, int]] | tuple, ignore_index: int = 255) -> Tensor:
    lut = torch.zeros(256, 3, dtype=torch.uint8)
    lut[: len(palette)] = torch.tensor([list(c) for c in palette], dtype=torch.uint8)
    if 0 <= ignore_index < 256 and ignore_index >= len(palette):
        lut[ignore_index] = torch.tensor(IGNORE_COLOUR, dtype=torch.uint8)
    return lut


def colorize(mask: Tensor, palette, ignore_index: int = 255) -> Tensor:
    """int [H,W] class map -> uint8 [3,H,W] colour image (one table lookup, no loops)."""
    index = mask.to("cpu", torch.int64).clamp(0, 255)
    return _lut(palette, ignore_index)[index].permute(2, 0, 1).contiguous()


def to_rgb(image: Tensor) -> Tensor:
    """uint8 [1|3|4,H,W] -> uint8 [3,H,W]."""
    if image.shape[0] == 1:
        return image.expand(3, -1, -1).contiguous()
    return image[:3]


def overlay(image: Tensor, mask: Tensor, palette, *, alpha: float = 0.5, ignore_index: int = 255) -> Tensor:
    """Blend the colour mask over the image: uint8 [3,H,W]. ``alpha`` = mask opacity in [0, 1]."""
    rgb = to_rgb(image).float()
    colour = colorize(mask, palette, ignore_index).float()
    return (rgb * (1 - alpha) + colour * alpha).round().clamp(0, 255).to(torch.uint8)


def disagreement(masks: list[Tensor]) -> Tensor:
    """bool [H,W]: pixels where not all masks give the same class."""
    stack = torch.stack([m.to(torch.int64) for m in masks])
    return (stack != stack[0]).any(dim=0)


def palette_png(mask: Tensor, palette, ignore_index: int = 255) -> Image.Image:
    """An indexed ('P' mode) PNG whose pixel values are the class indices and whose palette is ``palette``."""
    array = mask.to("cpu", torch.uint8).numpy()
    img = Image.fromarray(array)  # mode L; putpalette turns it into P keeping the values
    flat = np.zeros((256, 3), dtype=np.uint8)
    flat[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    img.putpalette(flat.reshape(-1).tolist())
    return img


def to_pil(image: Tensor) -> Image.Image:
    """uint8 [C,H,W] -> PIL image."""
    array = image.to("cpu").permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)


# ---------------------------------------------------------------------------------------------------------------------
# Panels for comparing models (the app's Compare tab; also usable from scripts)
# ---------------------------------------------------------------------------------------------------------------------

DISAGREE_COLOUR = (255, 0, 90)


def side_by_side(images: list[Tensor], *, gap: int = 4, fill: int = 255) -> Tensor:
    """uint8 [C,H,W] images (C 1/3/4, any sizes) -> one uint8 [3,H_max,sum(W)+gaps] row, tops aligned."""
    rgb = [to_rgb(im) for im in images]
    height = max(im.shape[1] for im in rgb)
    width = sum(im.shape[2] for im in rgb) + gap * (len(rgb) - 1)
    canvas = torch.full((3, height, width), fill, dtype=torch.uint8)
    x = 0
    for im in rgb:
        canvas[:, : im.shape[1], x : x + im.shape[2]] = im
        x += im.shape[2] + gap
    return canvas


def disagreement_overlay(image: Tensor, masks: list[Tensor], *, colour=DISAGREE_COLOUR) -> tuple[Tensor, float]:
    """Where the class maps ``masks`` (int [H,W] each) differ: the image dimmed to grey with those pixels in
    ``colour``. Returns (uint8 [3,H,W], fraction of pixels that disagree)."""
    differ = disagreement(masks)
    grey = to_rgb(image).float().mean(dim=0, keepdim=True)
    base = (grey * 0.45 + 255 * 0.35).expand(3, -1, -1)  # faded, so the highlighted pixels stand out
    marked = torch.tensor(colour, dtype=torch.float32).view(3, 1, 1).expand_as(base)
    out = torch.where(differ, marked, base).round().clamp(0, 255).to(torch.uint8)
    return out, float(differ.float().mean())


def _plain(column):
    """A column of record text for a plotly label, which renders some HTML: shown as typed."""
    return column.fillna("?").astype(str).map(html.escape)


def legend_html(class_names: list[str], palette, *, present: set[int] | None = None) -> str:
    """An HTML legend: one colour swatch and name per class; classes not in ``present`` are faded."""
    items = []
    for i, name in enumerate(class_names):
        r, g, b = palette[i] if i < len(palette) else (128, 128, 128)
        faded = present is not None and i not in present
        style = "opacity:0.35;" if faded else ""
        items.append(
            f'<span style="display:inline-flex;align-items:center;margin:2px 12px 2px 0;{style}">'
            f'<span style="width:14px;height:14px;border-radius:3px;border:1px solid #8884;margin-right:6px;'
            f'background:rgb({r},{g},{b})"></span>{i}&nbsp;{_escape(name)}</span>'
        )
    return '<div style="display:flex;flex-wrap:wrap;font-size:0.9em">' + "".join(items) + "</div>"


def _escape(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---------------------------------------------------------------------------------------------------------------------
# Plotly figures for the leaderboard (plotly is imported lazily: the CLI does not need it)
# ---------------------------------------------------------------------------------------------------------------------


def pareto_front(cost, value) -> np.ndarray:
    """bool [N]: points no other point beats (lower-or-equal cost and strictly higher value, or equal value at
    strictly lower cost). NaN cost or value is never on the front."""
    cost, value = np.asarray(cost, dtype=float), np.asarray(value, dtype=float)
    on_front = np.zeros(len(cost), dtype=bool)
    valid = np.flatnonzero(np.isfinite(cost) & np.isfinite(value))
    best = -np.inf
    # Cheapest first; among equal cost the best value first, so a later point joins only by beating every cheaper one.
    for i in valid[np.lexsort((-value[valid], cost[valid]))]:
        if value[i] > best:
            on_front[i] = True
            best = value[i]
    return on_front


def _empty_figure(message: str):
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, font={"size": 14}, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(template="plotly_white", height=320, xaxis={"visible": False}, yaxis={"visible": False})
    return fig


def _error_bars(group) -> dict | None:
    """Plotly ``error_y`` (in mIoU %) from a frame's ``miou_ci_low``/``miou_ci_high``; None when no row has a CI."""
    if "miou_ci_low" not in group or "miou_ci_high" not in group:
        return None
    low, high, miou = (group[c].astype(float).to_numpy() for c in ("miou_ci_low", "miou_ci_high", "miou"))
    if not (np.isfinite(low) & np.isfinite(high)).any():
        return None
    # rows without a CI draw no bar (0 length); plotly cannot skip single points
    plus = np.where(np.isfinite(high), (high - miou) * 100, 0.0).clip(min=0)
    minus = np.where(np.isfinite(low), (miou - low) * 100, 0.0).clip(min=0)
    return {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus, "thickness": 1.2, "width": 3}


def scatter_figure(frame, *, x: str, x_title: str, title: str, pareto: bool = False, log_x: bool = True):
    """mIoU (%) against column ``x`` of a leaderboard frame (records.load_records columns), one marker colour per
    dataset and split ("camvid (test)"), one symbol per hardware class, the mIoU 95% CI (``miou_ci_low``/``high``) as error bars. With
    ``pareto``, the front (highest mIoU for the cost, per dataset and latency device) is drawn as a line and its
    points ringed."""
    import plotly.graph_objects as go

    data = frame[frame["miou"].notna() & frame[x].notna()]
    if data.empty:
        return _empty_figure("no records with both values")
    hardware = data["hardware_class"].fillna("?").astype(str) if "hardware_class" in data else None
    kinds = sorted(set(hardware)) if hardware is not None else []
    symbols = {h: ("circle", "diamond", "square", "cross")[i % 4] for i, h in enumerate(kinds)}
    fig = go.Figure()
    series = data["dataset"].astype(str) + " (" + data["split"].fillna("?").astype(str) + ")"
    for dataset, group in data.groupby(series, sort=True):
        hw = hardware[group.index] if hardware is not None else None
        hover = (
            _plain(group["model"]) + " (" + _plain(group["variant"]) + ")<br>" + _plain(group["family"])
            + "<br>device: " + _plain(group["latency_device"])
            + ("<br>hardware: " + hw if hw is not None else "")
        )
        fig.add_trace(go.Scatter(
            x=group[x], y=group["miou"] * 100, mode="markers", name=dataset, text=hover,
            error_y=_error_bars(group),
            hovertemplate="%{text}<br>" + x_title + ": %{x:.3g}<br>mIoU: %{y:.2f}%<extra>" + dataset + "</extra>",
            marker={"size": 10, "opacity": 0.85, "line": {"width": 0.5, "color": "white"},
                    "symbol": [symbols[h] for h in hw] if hw is not None else "circle"},
        ))
        if pareto:
            for device, sub in group.groupby(group["latency_device"].fillna("?")):
                front = sub[pareto_front(sub[x].to_numpy(), sub["miou"].to_numpy())].sort_values(x)
                fig.add_trace(go.Scatter(
                    x=front[x], y=front["miou"] * 100, mode="lines+markers", showlegend=False, hoverinfo="skip",
                    line={"dash": "dot", "width": 1.5, "color": "#444"},
                    marker={"size": 16, "symbol": "circle-open", "color": "#444", "line": {"width": 2}},
                ))
    fig.update_layout(
        template="plotly_white", title=title, height=420, legend_title_text="dataset (split)",
        xaxis_title=x_title + (" (log scale)" if log_x else ""), yaxis_title="mIoU (%), bars: 95% CI",
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    if log_x:
        fig.update_xaxes(type="log")
    return fig


def class_iou_heatmap(records: list[dict], dataset: str):
    """Per-class IoU (%) of every record of ``dataset``: rows = models (best mIoU on top), columns = classes.
    Absent classes (NaN, stored as null) are blank cells."""
    import plotly.graph_objects as go

    rows = [r for r in records if r.get("dataset") == dataset and isinstance(r["metrics"].get("iou"), dict)]
    if not rows:
        return _empty_figure(f"no per-class IoU for '{dataset}'")
    rows.sort(key=lambda r: r["metrics"].get("miou") or 0.0)  # plotly draws the first row at the bottom
    classes = list(rows[-1].get("class_names") or rows[-1]["metrics"]["iou"])
    labels = [html.escape(f"{r['model']} ({r['variant']}) #{r['id'][:6]}") for r in rows]
    z = [[_percent(r["metrics"]["iou"].get(c)) for c in classes] for r in rows]
    fig = go.Figure(go.Heatmap(
        z=z, x=classes, y=labels, colorscale="Viridis", zmin=0, zmax=100, colorbar={"title": "IoU %"},
        text=[[("" if v is None else f"{v:.0f}") for v in row] for row in z],
        texttemplate="%{text}" if len(rows) * len(classes) <= 400 else None,
        hovertemplate="%{y}<br>%{x}: %{z:.1f}%<extra></extra>",
    ))
    fig.update_layout(
        template="plotly_white", title=f"Per-class IoU on {dataset}", height=max(320, 120 + 26 * len(rows)),
        margin={"l": 20, "r": 20, "t": 50, "b": 60}, yaxis={"automargin": True},
    )
    return fig


def _percent(value) -> float | None:
    return None if value is None or value != value else 100.0 * float(value)


def training_curve_figure(history: list[dict]):
    """Loss (left axis) and validation mIoU (%, right axis) per epoch from a record's ``training.history``."""
    import plotly.graph_objects as go

    history = [h for h in history or [] if isinstance(h, dict) and "epoch" in h]
    if not history:
        return _empty_figure("no training history in this record")
    epochs = [h["epoch"] for h in history]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=epochs, y=[h.get("loss") for h in history], name="training loss", mode="lines+markers"))
    # val_miou: monitoring only (never selects); select_miou: the holdout slice of train; miou: schema-1 records.
    for key, label in (("val_miou", "val mIoU % (monitor)"), ("select_miou", "holdout mIoU % (selects)"),
                       ("miou", "val mIoU % (schema 1)")):
        values = [_percent(h.get(key)) for h in history]
        if any(v is not None for v in values):
            fig.add_trace(go.Scatter(x=epochs, y=values, name=label, mode="lines+markers", yaxis="y2", connectgaps=True))
    fig.update_layout(
        template="plotly_white", title="Training curve", height=320, xaxis_title="epoch",
        yaxis={"title": "loss"}, yaxis2={"title": "mIoU %", "overlaying": "y", "side": "right", "rangemode": "tozero"},
        margin={"l": 60, "r": 60, "t": 50, "b": 50}, legend={"orientation": "h", "y": -0.25},
    )
    return fig



# Config keys that may differ between the points of one label-efficiency curve (the subset, and what follows from it).
_CURVE_FREE_KEYS = ("train_fraction", "train_fraction_seed", "epochs", "name", "seed", "max_train_seconds",
                    "latency_runs", "num_workers")


def label_efficiency_series(records: list[dict], dataset: str) -> list[dict]:
    """Curves of mIoU against ``training.labelled_images`` on ``dataset``: one per training recipe (the config
    apart from the subset, its epochs, name and seed), i.e. per model and pretrained/scratch; only recipes with
    at least two distinct numbers of labelled images. Each: ``{"label", "family", "pretrained", "points":
    [(images, mean mIoU, runs)]}``, points sorted by images, seeds averaged."""
    import json

    curves: dict[str, dict] = {}
    for r in records:
        labelled = (r.get("training") or {}).get("labelled_images")
        miou = (r.get("metrics") or {}).get("miou")
        if r.get("dataset") != dataset or not isinstance(labelled, int) or miou is None:
            continue
        config = {k: v for k, v in (r.get("config") or {}).items() if k not in _CURVE_FREE_KEYS}
        key = json.dumps([config, r.get("hardware_class")], sort_keys=True, default=str)
        curve = curves.setdefault(key, {"family": r.get("family", "?"), "pretrained": bool(r.get("pretrained")),
                                        "model": config.get("model", r.get("model")), "by_images": {}})
        curve["by_images"].setdefault(labelled, []).append(float(miou))
    series = []
    for curve in curves.values():
        if len(curve["by_images"]) < 2:
            continue
        points = [(n, float(np.mean(v)), len(v)) for n, v in sorted(curve["by_images"].items())]
        label = f"{curve['model']} ({'pretrained' if curve['pretrained'] else 'scratch'})"
        series.append({"label": label, "family": curve["family"], "pretrained": curve["pretrained"], "points": points})
    seen: dict[str, int] = {}
    for s in sorted(series, key=lambda s: (s["label"], s["points"][-1][0])):
        seen[s["label"]] = seen.get(s["label"], 0) + 1
        if seen[s["label"]] > 1:  # same model, another recipe: keep both, told apart
            s["label"] += f" #{seen[s['label']]}"
    return sorted(series, key=lambda s: (s["family"], not s["pretrained"], s["label"]))


def label_efficiency_figure(records: list[dict], dataset: str):
    """mIoU (%) against the number of labelled training images (log2 axis) on ``dataset``: per family, pretrained
    (solid) vs scratch (dashed), from records that state ``training.labelled_images`` (see
    :func:`label_efficiency_series`)."""
    import plotly.graph_objects as go

    series = label_efficiency_series(records, dataset)
    if not series:
        return _empty_figure(f"no label-efficiency runs on '{dataset}' (suite cpu-camvid-label-efficiency)")
    fig = go.Figure()
    for s in series:
        images, miou, runs = zip(*s["points"])
        colour = FAMILIES[s["family"]].colour if s["family"] in FAMILIES else "#7f7f7f"
        fig.add_trace(go.Scatter(
            x=images, y=[100 * m for m in miou], mode="lines+markers", name=s["label"],
            text=[f"{n} run{'s' * (n > 1)}" for n in runs],
            line={"color": colour, "dash": "solid" if s["pretrained"] else "dash"},
            marker={"symbol": "circle" if s["pretrained"] else "circle-open", "size": 9},
            hovertemplate="%{x} labelled images<br>mIoU %{y:.1f}% (%{text})<extra>" + s["label"] + "</extra>",
        ))
    fig.update_layout(
        template="plotly_white", title=f"mIoU vs labelled images on {dataset}: pretrained (solid) vs scratch (dashed)",
        height=420, xaxis_title="labelled training images (log scale)", yaxis_title="mIoU (%) on the reported split",
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    ticks = sorted({n for s in series for n, _, _ in s["points"]})
    fig.update_xaxes(type="log", tickvals=ticks)  # the subset sizes themselves: 1/8, 1/4, 1/2, all
    return fig
