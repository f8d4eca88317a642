"""The Compare tab: run the chosen models on one image, score them against an optional ground truth, draw the
panels (overlays, colour masks, disagreement, instances); and the tab's event handlers.

Images are ``uint8 [C,H,W]`` tensors and masks ``int64 [H,W]`` until the last step, where panels become
``uint8 [H,W,3]`` numpy arrays for Gradio. Each handler takes the ``AppState`` first and the components' values
after it, and returns the components' new values: a test calls it directly.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..errors import SegbenchError
from ..evaluation.metrics import ConfusionMatrix
from ..viz import masks as viz
from .catalog import ModelEntry, PredictorCache, default_selection, model_choices, pick_models
from .config import MAX_MODELS, dataset_label, one_line
from .uploads import check_image_header, read_ground_truth, read_upload, upload_path

if TYPE_CHECKING:  # the handlers take the running app's state; state.py imports this module
    from .state import AppState


@dataclass
class ModelResult:
    entry: ModelEntry
    mask: Tensor  # int64 [H,W] at the image size
    instances: dict[str, Tensor] | None  # Mask R-CNN: boxes, labels (semantic classes), scores, masks bool [N,H,W]
    latency_ms: float
    metrics: dict[str, Any] | None  # ConfusionMatrix.compute() against the ground truth
    eval_size: tuple[int, int] | None  # [H, W] the model runs at (None: the image's own size)
    evaluation: str = ""  # how it ran over the image (Evaluation.describe(): whole image, sliding windows, TTA)


@dataclass
class Comparison:
    image: Tensor  # uint8 [C,H,W]
    results: list[ModelResult]
    class_names: list[str]
    palette: list[tuple[int, int, int]]
    ignore_index: int
    ground_truth: Tensor | None
    notices: list[str]
    seconds: float  # wall time of the whole comparison (loading included)

    def compact(self) -> Comparison:
        """A copy for keeping in a user's session (redrawing at another opacity): class maps as uint8 (8x smaller;
        classes and the ignore value fit in 0..255), no ground truth."""
        results = [dataclasses.replace(r, mask=r.mask.to(torch.uint8)) for r in self.results]
        return dataclasses.replace(self, results=results, ground_truth=None)


def compare(image: Tensor, entries: list[ModelEntry], cache: PredictorCache, *,
            ground_truth: tuple[str | Path, str] | None = None, notices: list[str] | None = None) -> Comparison:
    """Run ``entries`` on ``image`` (uint8 [C,H,W]); each predictor resizes to its evaluation size, runs as its
    weights were evaluated (large images of whole-image models in sliding windows, never downscaled) and returns
    the mask at the image's size. ``ground_truth`` = (path, display name) of an optional mask, scored per model with
    ``ConfusionMatrix`` (PA, mPA, mIoU under the protocol's ignore/absent policy)."""
    t0 = time.perf_counter()
    if not entries:
        raise SegbenchError("no model selected; pick up to four models of this domain")
    if len(entries) > MAX_MODELS:
        raise SegbenchError(f"{len(entries)} models selected; pick at most {MAX_MODELS}")
    notices = list(notices or [])
    loaded, failures = [], []
    for entry in entries:  # a broken model is reported and skipped; the others still run
        try:
            loaded.append((entry, cache.get(entry)))
        except SegbenchError as exc:
            failures.append(str(exc))
    if not loaded:
        raise SegbenchError(failures[0] if len(failures) == 1 else
                            "no selected model could be loaded: " + " | ".join(failures))
    notices += [f"Skipped: {f}" for f in failures]
    notices += license_notices([entry for entry, _ in loaded])
    first = loaded[0][1]
    num_classes = first.num_classes
    class_names = list(first.class_names) or [str(i) for i in range(num_classes)]
    palette = [tuple(c) for c in first.palette] or viz.default_palette(num_classes)
    ignore_index = first.meta.ignore_index
    gt = None
    if ground_truth is not None:
        gt, gt_notices = read_ground_truth(ground_truth[0], name=ground_truth[1], size=tuple(image.shape[-2:]),
                                           num_classes=num_classes, ignore_index=ignore_index, palette=palette)
        notices += gt_notices
    results, slid = [], []
    for entry, predictor in loaded:
        try:
            prediction = predictor(image)
        except SegbenchError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory on a huge image: a message, not a traceback
            raise SegbenchError(f"{entry.name}: failed on this image ({one_line(exc)}); try a smaller image or "
                                "another model") from None
        instances = prediction.instances
        if instances is not None and predictor.label_to_class is not None and len(instances["labels"]):
            instances = {**instances, "labels": predictor.label_to_class[instances["labels"]]}
        metrics = None
        if gt is not None:
            cm = ConfusionMatrix(predictor.num_classes, ignore_index=predictor.meta.ignore_index)
            cm.update(prediction.mask, gt)
            metrics = cm.compute()
        eval_size = predictor.meta.eval_size
        how = ""
        if predictor.task == "semantic":
            evaluation = predictor.evaluation_for(tuple(eval_size or image.shape[-2:]))
            how = evaluation.describe()
            if evaluation != predictor.evaluation:
                slid.append(entry.name)
        results.append(ModelResult(entry, prediction.mask, instances, prediction.latency_ms, metrics, eval_size, how))
    if slid:
        h, w = image.shape[-2:]
        notices.append(f"The image is {w}x{h}: {', '.join(slid)} ran over it in sliding windows at full resolution "
                       "(one pass would need too much memory).")
    return Comparison(image, results, class_names, palette, ignore_index, gt, notices, time.perf_counter() - t0)


def license_notices(entries: list[ModelEntry]) -> list[str]:
    """One line per distinct licence of the demo-pack models among ``entries`` (their training data's terms and the
    pretrained encoder's), so nobody reuses the weights or their outputs against those terms."""
    licences = dict.fromkeys(e.license for e in entries if e.source == "demo" and e.license)
    return [f"Demo weights (fp16, from the repository's demo pack): {text}." for text in licences]


def _hwc(image: Tensor) -> np.ndarray:
    """uint8 [C,H,W] -> numpy [H,W,3] for Gradio."""
    return viz.to_rgb(image).permute(1, 2, 0).numpy()


def _caption(result: ModelResult) -> str:
    text = f"{result.entry.name} · {result.latency_ms:.0f} ms"
    if result.metrics is not None:
        text += f" · mIoU {100 * result.metrics['miou']:.1f}%"
    return text


def overlay_panels(cmp: Comparison, alpha: float) -> list[tuple[np.ndarray, str]]:
    """One (overlay, caption) per model: the class map blended over the image at opacity ``alpha``."""
    return [(_hwc(viz.overlay(cmp.image, r.mask, cmp.palette, alpha=alpha, ignore_index=cmp.ignore_index)), _caption(r))
            for r in cmp.results]


def mask_panels(cmp: Comparison) -> list[tuple[np.ndarray, str]]:
    """One raw colour mask per model, then the ground truth when given."""
    panels = [(_hwc(viz.colorize(r.mask, cmp.palette, cmp.ignore_index)), _caption(r)) for r in cmp.results]
    if cmp.ground_truth is not None:
        panels.append((_hwc(viz.colorize(cmp.ground_truth, cmp.palette, cmp.ignore_index)), "ground truth"))
    return panels


def instance_panels(cmp: Comparison, alpha: float) -> list[tuple[np.ndarray, str]]:
    """One panel per instance model: each instance its own colour, with its box, class and score."""
    from ..viz.instances import draw_instances

    panels = []
    for r in cmp.results:
        if r.instances is not None:
            # The predictor already kept detections above the model's threshold; masks bool [N,H,W] -> [N,1,H,W].
            pred = {**r.instances, "masks": r.instances["masks"][:, None].float()}
            drawn = draw_instances(cmp.image, pred, cmp.class_names, cmp.palette, score_threshold=0.0, alpha=alpha)
            panels.append((_hwc(drawn), f"{r.entry.name} · {len(r.instances['scores'])} instances"))
    return panels


def disagreement_panel(cmp: Comparison) -> tuple[np.ndarray | None, str]:
    """(image with disagreeing pixels marked, sentence) — None when fewer than two models ran."""
    if len(cmp.results) < 2:
        return None, "Pick two or more models to see where they disagree."
    picture, fraction = viz.disagreement_overlay(cmp.image, [r.mask for r in cmp.results])
    return _hwc(picture), f"The {len(cmp.results)} models disagree on **{100 * fraction:.1f}%** of the pixels (marked)."


def legend(cmp: Comparison) -> str:
    present = set(torch.cat([r.mask.unique() for r in cmp.results]).tolist())
    if cmp.ground_truth is not None:
        present |= set(cmp.ground_truth.unique().tolist())
    return viz.legend_html(cmp.class_names, cmp.palette, present=present)


# The latency the Compare tab measures: what a user waits for, so end to end (see predict.Predictor).
HERE_LATENCY = "End-to-end here (ms)"
HERE_LATENCY_SCOPE = ("resize to the model's evaluation size + normalise + forward (all windows and test-time views, "
                      "as 'Runs at' says) + argmax/paste + resize back, on this machine, batch 1; decoding the upload "
                      "excluded")


def results_table(cmp: Comparison) -> pd.DataFrame:
    """One row per model: end-to-end latency here; PA / mPA / mIoU on the uploaded ground truth (blank without one);
    the record's mIoU on its own split and on test (blank where the record has no test score)."""
    rows = []
    for r in cmp.results:
        m = r.metrics or {}
        rows.append({
            "Model": r.entry.name,
            "mIoU %": _round_pct(m.get("miou")), "PA %": _round_pct(m.get("pixel_accuracy")),
            "mPA %": _round_pct(m.get("mean_pixel_accuracy")),
            HERE_LATENCY: round(r.latency_ms, 1),
            "Runs at": ("x".join(map(str, r.eval_size)) if r.eval_size else "image size")
                       + (f", {r.evaluation}" if r.evaluation and r.evaluation != "whole image" else ""),
            "Classes found": int(r.mask.unique().numel()),
            f"Record mIoU % ({r.entry.split})": _round_pct(r.entry.miou),
            "Record mIoU % (test)": _round_pct(r.entry.test_miou),
            "Family": r.entry.family, "Backbone": r.entry.variant,
            "Weights": f"demo pack · {r.entry.license}" if r.entry.source == "demo" else r.entry.source,
        })
    return pd.DataFrame(rows)


def _round_pct(value: Any) -> float | None:
    return None if value is None or value != value else round(100 * float(value), 2)


def machine_line() -> str:
    from ..device import cpu_name

    return f"Latency measured on this machine: {cpu_name()}, {torch.get_num_threads()} PyTorch threads, batch 1."


# ================================================================ handlers (Compare tab)

OPEN_HINT = "Upload an image (or click an example), pick a domain and models, then press **Compare**."


def status_markdown(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def gallery(panels: list, *, max_columns: int) -> dict:
    """One row of panels; the height follows the column count so square panels fill it (Gradio cannot size a
    gallery to its content without leaving a gap)."""
    columns = min(max(len(panels), 2), max_columns)
    return gr.update(value=panels, columns=columns, height={2: 440, 3: 320, 4: 260, 5: 220}[columns])


def domain_choices(state: AppState) -> list[tuple[str, str]]:
    """(label, dataset) pairs of the domains that have models."""
    return [(dataset_label(d), d) for d in state.domains]


def model_picker(state: AppState, domain: str | None) -> tuple[list[tuple[str, str]], list[str]]:
    """(choices, default selection) of the model dropdown for ``domain``."""
    entries = state.models.get(domain, []) if domain else []
    return model_choices(entries), default_selection(entries)


def on_domain(state: AppState, domain: str | None) -> dict:
    """Domain changed: its models, with the best of each family selected."""
    choices, value = model_picker(state, domain)
    return gr.update(choices=choices, value=value)


def on_upload(state: AppState, payload: Any) -> tuple[np.ndarray | None, str]:
    """An image was uploaded: (preview [H,W] or [H,W,3] uint8, status). A bad file gives a status line and a
    warning toast, never an exception."""
    upload = upload_path(payload)
    if upload is None:
        return None, ""
    try:
        image, notices = read_upload(upload[0], name=upload[1], cfg=state.cfg)
    except SegbenchError as exc:
        gr.Warning(str(exc))
        return None, f"**Not loaded.** {exc}"
    c, h, w = image.shape
    notices.insert(0, f"{upload[1]}: {w}x{h}, {'grey' if c == 1 else 'colour'}. Press **Compare**.")
    preview = image.permute(1, 2, 0).numpy()
    return (preview[..., 0] if c == 1 else preview), status_markdown(notices)


def on_ground_truth(state: AppState, payload: Any) -> str:
    """A ground-truth mask was uploaded (or cleared): one line saying the app has it (its header is checked now; its
    values when Compare runs), '' when cleared."""
    upload = upload_path(payload)
    if upload is None:
        return ""
    try:
        width, height = check_image_header(upload[0], name=upload[1], max_pixels=state.cfg.max_pixels)
    except SegbenchError as exc:
        return f"**Not usable.** {exc}"
    return f"Ground truth **{upload[1]}** ({width}x{height}) received: Compare scores each model on it."


def on_compare(state: AppState, image_payload: Any, domain: str | None, keys: list[str] | None, alpha: float,
               gt_payload: Any) -> tuple:
    """Run the chosen models: (overlays, masks, disagreement picture, its sentence, legend, results table,
    instances, status, the comparison kept in the session, the models that ran, the results column). Bad input
    raises gr.Error with one line."""
    upload = upload_path(image_payload)
    if upload is None:
        raise gr.Error("Upload an image or click an example first.")
    try:
        entries = pick_models(state.models, domain, keys)
        image, notices = read_upload(upload[0], name=upload[1], cfg=state.cfg)
        cmp = compare(image, entries, state.cache, ground_truth=upload_path(gt_payload), notices=notices)
    except SegbenchError as exc:
        raise gr.Error(str(exc)) from None
    picture, sentence = disagreement_panel(cmp)
    instances = instance_panels(cmp, alpha)
    n = len(cmp.results)
    status = [f"Compared {n} model{'s' * (n > 1)} in {cmp.seconds:.2f} s. {machine_line()}",
              f"{HERE_LATENCY}: {HERE_LATENCY_SCOPE}.", *cmp.notices]
    return (
        gallery(overlay_panels(cmp, alpha), max_columns=4), gallery(mask_panels(cmp), max_columns=5),
        picture, sentence, legend(cmp), results_table(cmp),
        gr.update(value=instances, visible=bool(instances), columns=max(1, len(instances))),
        status_markdown(status), cmp.compact(), gr.update(value=[r.entry.key for r in cmp.results]),
        gr.update(visible=True),
    )


def on_alpha(state: AppState, alpha: float, cmp: Comparison | None) -> tuple:
    """Opacity changed: redraw the overlays and instances from the session's comparison (no model runs)."""
    if cmp is None:
        return gr.skip(), gr.skip()
    instances = instance_panels(cmp, alpha)
    return overlay_panels(cmp, alpha), gr.update(value=instances, visible=bool(instances))


def on_rescan(state: AppState) -> tuple:
    """Look for weights again: (no-weights notice, compare area, domain dropdown, model dropdown)."""
    state.rescan()
    domain = state.domains[0] if state.domains else None
    choices, value = model_picker(state, domain)
    return (gr.update(visible=not state.domains), gr.update(visible=bool(state.domains)),
            gr.update(choices=domain_choices(state), value=domain), gr.update(choices=choices, value=value))
