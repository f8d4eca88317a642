"""How a semantic model is run over an image: whole, overlap-tile, sliding window, test-time augmentation.

``forward_full`` is what the engine calls for semantic models in training. For ordinary models it is
``model(x)``. For "valid" networks (``model.valid_margin > 0``, whose output is smaller than their input) it
mirror-pads the image by the margin so that the output covers every input pixel, optionally in tiles
(Ronneberger et al. 2015, Fig. 2 and Sec. 2: "the missing context is extrapolated by mirroring the input image").
Tiles start on a grid of ``model.size_multiple`` (= 2**depth) pixels, so every tile sees the same max-pool grid
as a one-tile run: the stitched logits equal the untiled ones (up to float summation order) -- no seams.

``infer`` is what evaluation, ``segbench predict`` and the app call; an :class:`Evaluation` says how:

- ``whole``: one ``forward_full`` over the image.
- ``slide`` (MMSegmentation's ``slide_inference``): ``crop``-sized windows every ``stride`` pixels, the last
  window of a row/column flush to the border; each window's logits are added into a float32 canvas and a count
  map divides the sum, so overlapping windows are averaged in logit space. A side shorter than the crop is
  covered by one window of the image's own length (the model runs on it as in whole mode; nothing is padded,
  so no padding value leaks into the logits). Memory: the image, one window batch and the canvas [B,K,H,W].
- TTA (``scales``, ``flip``): the image is resized by each scale (and mirrored left-right), run whole or slide
  at that size, the logits resized (bilinear) to the output size and un-flipped; the views' *softmax
  probabilities* are averaged, as MMSegmentation does (``SegTTAModel.merge_preds``). ``infer`` then returns
  log(mean probability): its argmax is the TTA prediction and its softmax the averaged probabilities. One
  view (scales [1.0], no flip) returns that view's logits unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SegbenchError
from .blocks import mirror_pad


# ---------------------------------------------------------------- whole image (and overlap-tile)

def forward_full(
    model: nn.Module, x: Tensor, *, tile: int | None = None, tiles_per_batch: int = 16
) -> dict[str, Tensor]:
    """Logits covering the whole input: x float32 [B,C,H,W] (normalised) -> {"out": [B,K,H,W], ...}.

    ``tile=None``: one window (the image mirror-padded to the next valid input size). ``tile=T``: output tiles of
    about T x T (rounded down to a multiple of ``model.size_multiple``, at least one multiple), each predicted
    from its own (T' + 2 * margin)-pixel window; windows are unfolded into the batch dimension and run
    ``tiles_per_batch`` at a time, which bounds memory for large images. Differentiable (used for training);
    BatchNorm in train mode sees per-chunk statistics, so tiled and untiled training steps differ slightly.
    """
    margin = getattr(model, "valid_margin", 0)
    if not margin:
        return model(x)
    if tile is None:
        return _one_window(model, x, margin)
    if not isinstance(tile, int) or tile < 1 or tiles_per_batch < 1:
        raise SegbenchError(f"forward_full: tile={tile!r}, tiles_per_batch={tiles_per_batch!r}; use integers >= 1")
    return _overlap_tile(model, x, margin, tile, tiles_per_batch)


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, *, tile: int | None = None) -> Tensor:
    """Logits float [B,K,H,W] for x float32 [B,C,H,W] (normalised), without gradients.

    The caller chooses train/eval mode (call ``model.eval()`` first for inference).
    """
    return forward_full(model, x, tile=tile)["out"]


def _one_window(model: nn.Module, x: Tensor, margin: int) -> dict[str, Tensor]:
    height, width = x.shape[-2:]
    in_h, in_w = model.valid_input_size(height), model.valid_input_size(width)
    # Output pixel i sits at input pixel i + margin, so a margin on top/left aligns output and image.
    padded = mirror_pad(x, (margin, in_w - width - margin, margin, in_h - height - margin))
    return {key: value[..., :height, :width] for key, value in model(padded).items()}


def _overlap_tile(model: nn.Module, x: Tensor, margin: int, tile: int, tiles_per_batch: int) -> dict[str, Tensor]:
    batch, channels, height, width = x.shape
    grid = getattr(model, "size_multiple", 1)
    step = max(tile // grid, 1) * grid  # kept output per tile; a multiple of 2**depth keeps the pool grid aligned
    out_tile = model.valid_input_size(step) - 2 * margin  # smallest valid output >= step (the rest is cropped)
    window = out_tile + 2 * margin
    rows, cols = -(-height // step), -(-width // step)
    pad_h = (rows - 1) * step + window - height - margin
    pad_w = (cols - 1) * step + window - width - margin
    padded = mirror_pad(x, (margin, pad_w, margin, pad_h))
    # [B,C,rows,cols,window,window] views -> one batch of B*rows*cols windows (row-major per image).
    windows = padded.unfold(2, window, step).unfold(3, window, step)
    windows = windows.permute(0, 2, 3, 1, 4, 5).reshape(-1, channels, window, window)

    parts: dict[str, list[Tensor]] = {}
    for chunk in windows.split(tiles_per_batch):
        for key, value in model(chunk).items():
            parts.setdefault(key, []).append(value[..., :step, :step])
    stitched = {}
    for key, values in parts.items():
        tiles = torch.cat(values)  # [B*rows*cols, K, step, step]
        k = tiles.shape[1]
        tiles = tiles.reshape(batch, rows, cols, k, step, step).permute(0, 3, 1, 4, 2, 5)
        stitched[key] = tiles.reshape(batch, k, rows * step, cols * step)[..., :height, :width]
    return stitched


# ---------------------------------------------------------------- evaluation settings

MODES = ("whole", "slide")


@dataclass(frozen=True)
class Evaluation:
    """How ``infer`` runs a model. Values are checked on construction (SegbenchError naming the config key);
    :func:`evaluation_settings` builds one from config-style values (lists from YAML/JSON).

    ``crop`` / ``stride``: (height, width) in pixels of the (scaled) input, slide mode only, 0 < stride <= crop.
    ``scales``: input resize factors > 0 (1.0 = as given); ``flip``: also run the left-right mirror image.
    """

    mode: str = "whole"
    crop: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SegbenchError(f"eval_mode={self.mode!r} is not one of {', '.join(MODES)}")
        if self.mode == "slide" and (self.crop is None or self.stride is None):
            raise SegbenchError("eval_mode=slide needs eval_crop and eval_stride, e.g. eval_crop=[512, 1024] "
                                "eval_stride=[341, 683]")
        if self.mode == "whole" and (self.crop is not None or self.stride is not None):
            raise SegbenchError("eval_crop/eval_stride apply to sliding windows; set eval_mode=slide or remove them")
        if self.crop is not None and min(self.crop) < 1:
            raise SegbenchError(f"eval_crop must be [height, width] with both > 0, got {list(self.crop)}")
        if self.stride is not None and not all(0 < s <= c for s, c in zip(self.stride, self.crop)):
            raise SegbenchError(f"eval_stride must satisfy 0 < stride <= eval_crop ({list(self.crop)}) on both "
                                f"sides, got {list(self.stride)}")
        if not self.scales or not all(0 < s < math.inf for s in self.scales):
            raise SegbenchError(f"eval_scales must be a non-empty list of numbers > 0 like [0.75, 1.0, 1.25], "
                                f"got {list(self.scales)}")

    @property
    def views(self) -> int:
        """Forward passes (or window sweeps) per image: scales x (2 with flip)."""
        return len(self.scales) * (2 if self.flip else 1)

    def to_dict(self) -> dict[str, Any]:
        """The record's / weights' ``evaluation`` entry: {mode, crop, stride, scales, flip} (JSON values)."""
        return {"mode": self.mode, "crop": list(self.crop) if self.crop else None,
                "stride": list(self.stride) if self.stride else None, "scales": list(self.scales), "flip": self.flip}

    def describe(self) -> str:
        """One line for people: 'whole image', 'sliding 512x1024 windows, stride 341x683; scales 0.5, 1; flip'."""
        text = "whole image" if self.mode == "whole" else (
            f"sliding {self.crop[0]}x{self.crop[1]} windows, stride {self.stride[0]}x{self.stride[1]}")
        if self.scales != (1.0,):
            text += "; scales " + ", ".join(f"{s:g}" for s in self.scales)
        return text + ("; flip" if self.flip else "")


WHOLE = Evaluation()


def evaluation_settings(*, mode: str = "whole", crop: Any = None, stride: Any = None, scales: Any = None,
                        flip: Any = False) -> Evaluation:
    """A validated :class:`Evaluation` from config-style values; ``scales=None`` means [1.0]. Wrong types or
    values raise SegbenchError naming the config key (``eval_crop``...) and the fix, one line each."""
    scales = [1.0] if scales is None else scales
    if (not isinstance(scales, (list, tuple))
            or any(isinstance(s, bool) or not isinstance(s, (int, float)) for s in scales)):
        raise SegbenchError(f"eval_scales must be a non-empty list of numbers > 0 like [0.75, 1.0, 1.25], "
                            f"got {scales!r}")
    if not isinstance(flip, bool):
        raise SegbenchError(f"eval_flip must be true or false, got {flip!r}")
    return Evaluation(mode, _pair(crop, "eval_crop"), _pair(stride, "eval_stride"),
                      tuple(float(s) for s in scales), flip)


def _pair(value: Any, key: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) for v in value)):
        raise SegbenchError(f"{key} must be [height, width] (two integers), got {value!r}")
    return int(value[0]), int(value[1])


def evaluation_from(entry: dict[str, Any] | None) -> Evaluation:
    """The :class:`Evaluation` of a weights' meta / record ``evaluation`` entry; None (older weights): whole."""
    if entry is None:
        return WHOLE
    return evaluation_settings(mode=entry.get("mode", "whole"), crop=entry.get("crop"), stride=entry.get("stride"),
                               scales=entry.get("scales"), flip=entry.get("flip", False))


# ---------------------------------------------------------------- sliding window

def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """First pixel of each window along one side of ``size`` pixels (MMSegmentation's grid): every ``stride``
    pixels, the last one moved back so it ends at the border; one window at 0 when ``size <= crop``."""
    count = max(size - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride + crop, size) - crop, 0) for i in range(count)]


@torch.no_grad()
def slide_logits(model: nn.Module, x: Tensor, *, crop: tuple[int, int], stride: tuple[int, int],
                 tile: int | None = None) -> Tensor:
    """Logits float32 [B,K,H,W] for x float [B,C,H,W] (normalised): overlapping windows averaged in logit space.

    Windows are min(crop, side) pixels, ``window_starts`` apart; each runs through :func:`forward_full` (so a
    valid U-Net is mirror-padded / tiled inside it, ``tile``) for the whole batch at once, and its logits are
    summed into the canvas; a count map [1,1,H,W] divides the sum. Holds one window batch and the canvas.
    """
    height, width = x.shape[-2:]
    win_h, win_w = min(crop[0], height), min(crop[1], width)
    canvas: Tensor | None = None
    count = torch.zeros(1, 1, height, width, dtype=torch.float32, device=x.device)
    for top in window_starts(height, crop[0], stride[0]):
        for left in window_starts(width, crop[1], stride[1]):
            out = forward_full(model, x[..., top:top + win_h, left:left + win_w], tile=tile)["out"]
            if canvas is None:  # K is known after the first window
                canvas = torch.zeros(x.shape[0], out.shape[1], height, width, dtype=torch.float32, device=x.device)
            canvas[..., top:top + win_h, left:left + win_w] += out.float()
            count[..., top:top + win_h, left:left + win_w] += 1
    return canvas.div_(count)


# ---------------------------------------------------------------- test-time augmentation

@torch.no_grad()
def infer(model: nn.Module, x: Tensor, evaluation: Evaluation = WHOLE, *, out_size: tuple[int, int] | None = None,
          tile: int | None = None) -> Tensor:
    """Class scores float32 [B,K,out_H,out_W] for x float [B,C,H,W] (normalised), as ``evaluation`` says.

    One view: that view's logits, resized (bilinear) to ``out_size`` (default: the input size). Several views
    (scales / flip): log of the views' mean softmax probabilities (module docstring). The caller chooses eval
    mode and autocast; the canvas and the average are float32 either way.
    """
    out_size = tuple(out_size or x.shape[-2:])
    views = [(scale, flip) for scale in evaluation.scales for flip in ((False, True) if evaluation.flip else (False,))]
    if len(views) == 1:
        return _view(model, x, evaluation, *views[0], out_size=out_size, tile=tile)
    total = None
    for scale, flip in views:
        probs = torch.softmax(_view(model, x, evaluation, scale, flip, out_size=out_size, tile=tile), dim=1)
        total = probs if total is None else total.add_(probs)
    # The floor keeps log finite (bilinear resizing of -inf would give NaN); argmax and softmax are unchanged.
    return total.div_(len(views)).clamp_min_(torch.finfo(torch.float32).tiny).log_()


def _view(model: nn.Module, x: Tensor, evaluation: Evaluation, scale: float, flip: bool, *,
          out_size: tuple[int, int], tile: int | None) -> Tensor:
    """Logits float32 [B,K,out_H,out_W] of one view: x resized by ``scale`` (and mirrored), run, mapped back."""
    size = (max(1, round(x.shape[-2] * scale)), max(1, round(x.shape[-1] * scale)))
    if size != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    if flip:
        x = x.flip(-1)
    logits = _resized(_one_view(model, x, evaluation, tile), out_size)
    return logits.flip(-1) if flip else logits


def _one_view(model: nn.Module, x: Tensor, evaluation: Evaluation, tile: int | None) -> Tensor:
    if evaluation.mode == "slide":
        return slide_logits(model, x, crop=evaluation.crop, stride=evaluation.stride, tile=tile)
    return forward_full(model, x, tile=tile)["out"].float()


def _resized(logits: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
