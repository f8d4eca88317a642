"""Inference on single images: shared by ``segbench predict`` and the app.

``Predictor(weights)`` loads a model once (safetensors + model.json) and maps any image to a class map at
the image's own size: channels are adapted to the model (grey <-> RGB, alpha dropped), the image is
normalised on the device, resized to the model's evaluation size if it has one, run as the weights were
evaluated (``meta.evaluation``: whole image or sliding window, with their test-time scales and flip; see
``models.inference``), and the logits are resized back. Instance models (Mask R-CNN) also return their instances.

``fast`` (default): BatchNorm is folded into the convolution before it (``models.fold``; the same outputs up to
float rounding, 1.1-1.8x faster on a CPU), semantic models run in channels_last, and in bf16 where the hardware
runs it natively. A model handed to ``Predictor.from_model`` is folded in a copy: the caller's keeps its BatchNorm.

Large images: with ``slide_above=N`` (the app uses 2048) a model evaluated whole-image runs inputs whose longer
side exceeds N in sliding windows (``LARGE_WINDOW`` with ``LARGE_STRIDE``), so memory grows with the logit canvas
only, not with the activations of one huge forward pass; nothing is downscaled.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config.settings import EvalSettings
from ..data import DatasetInfo
from ..data.io import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, read_image, to_channels
from ..data.transforms import normalize
from ..device import autocast, cpu_bf16_supported, resolve_device
from ..errors import SegbenchError
from ..evaluation.metrics import to_semantic
from ..files import atomic_write, atomic_write_text, write_errors
from ..models.fold import fold_batchnorm, folded_copy
from ..models.inference import Evaluation, evaluation_from, infer
from ..weights.meta import WeightsMeta
from ..weights.store import LocalStore, load_model

MAX_PIXELS = DEFAULT_MAX_PIXELS  # refuse decompression bombs above ~8000 x 8000 (data.io reads the header first)
BACKENDS = ("torch", "onnx")
# Windows for large images of whole-image models (slide_above): 1 MP each, a quarter overlapping on each side.
LARGE_WINDOW, LARGE_STRIDE = (1024, 1024), (768, 768)


def load_image(source: str | Path | bytes, *, max_pixels: int | None = None) -> Tensor:
    """Decode an image file (or its bytes) to uint8 [C,H,W] with C in {1, 3}: ``data.io.read_image``, the reader
    datasets and the app use too (EXIF orientation applied, 16-bit scaled by its bit depth, alpha dropped, size
    checked from the header before decoding). A missing, corrupt, empty or over-large file raises SegbenchError."""
    return read_image(source, limit=max_pixels)


def adapt_channels(image: Tensor, in_channels: int) -> Tensor:
    """uint8 [C,H,W] -> uint8 [in_channels,H,W]: alpha dropped, grey repeated to RGB, RGB to grey by ITU-R 601 luma."""
    return to_channels(image[:3] if image.shape[0] == 4 else image, in_channels)


@dataclass
class Prediction:
    mask: Tensor  # int64 [H,W] class indices at the input's size
    probs: Tensor | None  # float32 [K,H,W] softmax probabilities (semantic models)
    instances: dict[str, Tensor] | None  # boxes [N,4], labels [N], scores [N], masks bool [N,H,W] (instance models)
    latency_ms: float


class Predictor:
    """A loaded model ready for single images (see module docstring).

    The path is three steps, also used one by one by ``speed.measure_latency`` so that its figures are this path:
    ``prepare`` (host uint8 image -> normalised device tensor at the evaluation size), ``forward`` (the model alone)
    and ``__call__`` (all of it, plus resize back / argmax or to_semantic, and the copy back to the host).
    Evaluation (``engine.evaluate``) runs the same steps on whole batches: ``Predictor.for_scoring``,
    ``prepare_batch``, ``scores`` / ``detect`` and ``class_map``.
    Precision: bf16 autocast on GPUs; on CPUs that run bf16 natively only for semantic models (Mask R-CNN's
    detection ops stay fp32 there, as in evaluation); fp32 otherwise or with ``fast=False``. Semantic models run in
    channels_last unless ``fast=False`` (on CUDA their inputs always do). The ONNX backend is always fp32, NCHW.
    """

    def __init__(self, weights: str | Path, *, store: LocalStore | None = None, device: str = "cpu",
                 fast: bool = True, backend: str = "torch", slide_above: int | None = None) -> None:
        """``backend``: "torch" (eager PyTorch) or "onnx" (ONNX Runtime on the CPU, semantic models only; the
        weights' ``model.onnx`` is exported on first use, see ``segbench.inference.onnx_runtime``)."""
        if backend not in BACKENDS:
            raise SegbenchError(f"backend '{backend}' is unknown; use one of: {', '.join(BACKENDS)}")
        if backend == "onnx":
            from .onnx_runtime import load_onnx_model

            model, meta = load_onnx_model(weights, store=store)
            self._setup(model, meta, torch.device("cpu"), fast, slide_above, owned=True)
            return
        device_ = resolve_device(device)
        model, meta = load_model(weights, store=store, map_location=str(device_))
        self._setup(model, meta, device_, fast, slide_above, owned=True)

    @classmethod
    def from_model(cls, model: torch.nn.Module, meta: WeightsMeta, *, device: torch.device | str = "cpu",
                   fast: bool = True, slide_above: int | None = None) -> Predictor:
        """Wrap a model already in memory; ``meta`` holds what model.json holds (task, in_channels, mean, std,
        num_classes, eval_size, eval_tile, evaluation; instance models: semantic_classes, score_threshold,
        label_to_class, fill). With ``fast``, a model with BatchNorm is copied and the copy folded; a semantic
        model is put in channels_last (the copy, or the model itself when it has no BatchNorm)."""
        predictor = cls.__new__(cls)
        predictor._setup(model, meta, torch.device(device), fast, slide_above, owned=False)
        return predictor

    @classmethod
    def for_scoring(cls, model: torch.nn.Module, *, info: DatasetInfo, device: torch.device,
                    settings: EvalSettings) -> Predictor:
        """The predictor evaluation scores with: ``model`` as it is (not folded, its memory format untouched, not
        moved), inputs normalised with ``info``'s mean/std and put in channels_last when ``settings.channels_last``,
        bf16 autocast on CUDA under ``settings.amp`` and fp32 on CPUs (scores are not taken in CPU bf16)."""
        predictor = cls.__new__(cls)
        predictor.device, predictor.model, predictor.backend = device, model, "torch"
        predictor.task = getattr(model, "task", "semantic")
        predictor.evaluation, predictor.slide_above = settings.evaluation, None
        predictor.mean, predictor.std, predictor.in_channels = info.mean, info.std, info.in_channels
        predictor.eval_size, predictor.tile = settings.eval_size, settings.tile
        predictor.channels_last = settings.channels_last and predictor.task == "semantic"
        predictor.cpu_bf16 = False
        predictor.precision = "bf16" if settings.amp and device.type == "cuda" else "fp32"
        predictor.num_classes, predictor.score_threshold = info.num_classes, settings.score_threshold
        predictor.label_to_class = settings.label_to_class
        predictor.fill = (info.background_index or 0) if settings.fill is None else settings.fill
        return predictor

    def _setup(self, model: torch.nn.Module, meta: WeightsMeta, device: torch.device, fast: bool,
               slide_above: int | None, *, owned: bool) -> None:
        self.device, self.meta = device, meta
        self.evaluation = evaluation_from(meta.evaluation)  # whole for weights saved before it was recorded
        self.slide_above = slide_above
        self.task = meta.task
        # An ONNX Runtime session runs its own float32 graph: no autocast, no memory-format change.
        self.backend = "onnx" if hasattr(model, "session") else "torch"
        fast = fast and self.backend == "torch"
        model.eval()
        self.folded_batchnorm = 0
        if fast and owned:
            self.folded_batchnorm = fold_batchnorm(model)
        elif fast:  # the caller's model may be trained or saved again
            model, self.folded_batchnorm = folded_copy(model)
        self.model = model.to(device)
        semantic = self.task == "semantic"
        # bf16 where the hardware runs it natively (GPU, AVX512-BF16/AMX CPU); fp32 otherwise.
        self.cpu_bf16 = fast and semantic and device.type == "cpu" and cpu_bf16_supported()
        self.precision = "bf16" if fast and (device.type == "cuda" or self.cpu_bf16) else "fp32"
        # channels_last: oneDNN's convolutions run NHWC natively (1.2-1.6x faster in fp32 on this project's CPU).
        self.channels_last = fast and semantic
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.in_channels = meta.in_channels
        self.class_names = list(meta.class_names)
        self.palette = [tuple(c) for c in meta.palette]
        self.num_classes = meta.semantic_classes
        l2c = meta.label_to_class
        self.label_to_class = torch.tensor(l2c, dtype=torch.int64) if l2c is not None else None
        self.mean, self.std = meta.mean, meta.std
        self.eval_size, self.tile = meta.eval_size, meta.eval_tile
        self.score_threshold = float(meta.score_threshold)
        self.fill = 0 if meta.fill is None else int(meta.fill)

    def prepare(self, image: Tensor) -> Tensor:
        """uint8 [C,H,W] host image -> float32 [1,in_channels,h,w] on the device, normalised with the training
        mean/std; semantic models: resized to ``meta.eval_size`` when set (instance models resize inside)."""
        return self.prepare_batch(adapt_channels(image, self.in_channels)[None])

    def prepare_batch(self, images: Tensor) -> Tensor:
        """uint8 [B,C,H,W] host images (channels already the model's) -> normalised float32 on the device; semantic
        models: resized to the evaluation size when set, in channels_last when the predictor runs in it."""
        x = normalize(images.to(self.device, non_blocking=True), self.mean, self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        eval_size = self.eval_size
        if self.task == "semantic" and eval_size is not None and tuple(x.shape[-2:]) != tuple(eval_size):
            x = F.interpolate(x, size=tuple(eval_size), mode="bilinear", align_corners=False, antialias=True)
        if self.task == "semantic" and (self.channels_last or self.device.type == "cuda"):
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def evaluation_for(self, size: tuple[int, int]) -> Evaluation:
        """How a prepared input of ``size`` (H, W) runs: the weights' evaluation; for a whole-image model with
        ``slide_above`` set and a longer side above it, ``LARGE_WINDOW`` windows (same scales and flip)."""
        if self.evaluation.mode == "whole" and self.slide_above is not None and max(size) > self.slide_above:
            return dataclasses.replace(self.evaluation, mode="slide", crop=LARGE_WINDOW, stride=LARGE_STRIDE)
        return self.evaluation

    def forward(self, x: Tensor, *, out_size: tuple[int, int] | None = None) -> Any:
        """The model on a prepared input, as :meth:`evaluation_for` says: semantic float32 scores [1,K,H,W] at
        ``out_size`` (default the input's size; logits, or log mean probabilities with test-time augmentation),
        or Mask R-CNN's prediction dict for the one image (masks [N,1,H,W] probabilities at the image's size)."""
        if self.task == "instance":
            return self.detect([x[0]])[0]
        return self.scores(x, out_size=out_size)

    def scores(self, x: Tensor, *, out_size: tuple[int, int] | None = None) -> Tensor:
        """Semantic float32 class scores [B,K,out_H,out_W] of prepared inputs ``x`` [B,C,H,W] (see :meth:`forward`)."""
        with autocast(self.device, self.precision == "bf16", cpu_bf16=self.cpu_bf16):
            return infer(self.model, x, self.evaluation_for(tuple(x.shape[-2:])), out_size=out_size, tile=self.tile)

    def detect(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Mask R-CNN's prediction dicts for prepared images (float32 [C,H,W] each), run as one batch."""
        with autocast(self.device, self.precision == "bf16", cpu_bf16=self.cpu_bf16):
            return self.model(images)

    def class_map(self, pred: dict[str, Tensor], size: tuple[int, int]) -> Tensor:
        """int64 [H,W] class map of one instance prediction (``metrics.to_semantic``: the highest-scoring mask
        above the score threshold wins, ``fill`` elsewhere)."""
        pred = {k: v.float() if v.is_floating_point() else v for k, v in pred.items()}
        return to_semantic(pred, self.num_classes, *size, score_threshold=self.score_threshold,
                           label_to_class=self.label_to_class, fill=self.fill)

    @torch.inference_mode()
    def __call__(self, image: Tensor, *, with_probs: bool = False) -> Prediction:
        t0 = time.perf_counter()
        h, w = image.shape[-2:]
        out = self.forward(self.prepare(image), out_size=(h, w))
        if self.task == "instance":
            pred = {k: v.float() if v.is_floating_point() else v for k, v in out.items()}
            mask = self.class_map(pred, (h, w))
            keep = pred["scores"] >= self.score_threshold
            instances = {"boxes": pred["boxes"][keep].cpu(), "labels": pred["labels"][keep].cpu(),
                         "scores": pred["scores"][keep].cpu(), "masks": (pred["masks"][keep, 0] > 0.5).cpu()}
            return Prediction(mask.cpu(), None, instances, (time.perf_counter() - t0) * 1000)
        logits = out.float()
        if tuple(logits.shape[-2:]) != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        mask = logits.argmax(1)[0].cpu()
        probs = torch.softmax(logits, 1)[0].cpu() if with_probs else None
        return Prediction(mask, probs, None, (time.perf_counter() - t0) * 1000)


def list_images(path: str | Path) -> list[Path]:
    """The image files of a folder (sorted; hidden files such as macOS ``._x.png`` skipped) or the single file given."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SegbenchError(f"{path}: no such file or folder; give an image or a folder of images")
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SegbenchError(f"{path}: folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def output_names(files: list[Path]) -> dict[Path, str]:
    """The prefix of each input's outputs (``<prefix>_mask.png`` ...): its stem, or its whole file name when
    another input shares the stem (``x.png`` and ``x.jpg`` -> ``x.png_mask.png``, ``x.jpg_mask.png``), so no
    result overwrites another. Compared case-insensitively (macOS and Windows file systems). A clash that
    remains (``x.png`` beside ``x.png.jpg``) is refused with one line naming the files."""
    stems: dict[str, int] = {}
    for f in files:
        stems[f.stem.casefold()] = stems.get(f.stem.casefold(), 0) + 1
    names = {f: f.name if stems[f.stem.casefold()] > 1 else f.stem for f in files}
    seen: dict[str, Path] = {}
    for f, name in names.items():
        if name.casefold() in seen:
            raise SegbenchError(f"{f}: its results would overwrite those of {seen[name.casefold()].name} (both named "
                                f"'{name}_mask.png'); rename one of them")
        seen[name.casefold()] = f
    return names


def predict_files(predictor: Predictor, files: list[Path], out: Path, *, probs: bool = False, alpha: float = 0.5,
                  log=print, err=None) -> int:
    """Predict every file into ``out`` (mask, overlay; instance models also ids and COCO JSON; ``probs``: float16
    probabilities). An image that cannot be read or run is reported in one line on ``err`` and skipped; a full
    disk or an unwritable ``out`` stops with SegbenchError. Every output is written atomically. Returns the
    number of images that failed."""
    import sys

    err = err or (lambda line: print(line, file=sys.stderr))
    names = output_names(files)
    with write_errors(out):
        out.mkdir(parents=True, exist_ok=True)
    log(f"{describe(predictor.meta)}: {len(files)} image(s) -> {out}")
    failed = 0
    for path in files:
        try:
            image = load_image(path)
            pred = predictor(image, with_probs=probs)
        except SegbenchError as exc:
            failed += 1
            err(f"error: {exc}")
            continue
        _write_outputs(predictor, image, pred, out, names[path], alpha=alpha)
        log(f"  {path.name}: {pred.latency_ms:.1f} ms")
    if failed:
        err(f"error: {failed} of {len(files)} image(s) failed (listed above); the others' results are in {out}")
    return failed


def _save_png(image, path: Path) -> None:
    atomic_write(path, lambda f: image.save(f, format="PNG"))


def _write_outputs(predictor: Predictor, image: Tensor, pred: Prediction, out: Path, name: str, *,
                   alpha: float) -> None:
    import json

    import numpy as np
    from PIL import Image

    from ..viz import masks as viz

    _save_png(viz.palette_png(pred.mask, predictor.palette), out / f"{name}_mask.png")
    if predictor.task == "instance":
        from ..evaluation.coco import coco_results_json
        from ..viz.instances import draw_instances, instance_id_map

        labels = predictor.meta.label_names or ["background", *predictor.class_names]
        shown = draw_instances(viz.to_rgb(image), pred.instances, labels, predictor.palette)
        _save_png(viz.to_pil(shown), out / f"{name}_overlay.png")
        ids = instance_id_map(pred.instances, 0.0)
        _save_png(Image.fromarray(ids.numpy().astype(np.uint16)), out / f"{name}_instances.png")
        results = coco_results_json([pred.instances], [0])
        atomic_write_text(out / f"{name}_coco.json", json.dumps(results) + "\n")
    else:
        shown = viz.overlay(image, pred.mask, predictor.palette, alpha=alpha)
        _save_png(viz.to_pil(shown), out / f"{name}_overlay.png")
    if pred.probs is not None:
        probs = pred.probs.numpy().astype(np.float16)
        atomic_write(out / f"{name}_probs.npy", lambda f: np.save(f, probs))


def describe(meta: WeightsMeta) -> str:
    return f"{meta.display_name} ({meta.model}) trained on {meta.dataset}"
