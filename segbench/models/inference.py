"""Whole-image inference for every semantic model, including the paper U-Net's overlap-tile strategy.

``forward_full`` is what the engine calls for semantic models in training and evaluation. For ordinary models it
is ``model(x)``. For "valid" networks (``model.valid_margin > 0``, whose output is smaller than their input) it
mirror-pads the image by the margin so that the output covers every input pixel, optionally in tiles
(Ronneberger et al. 2015, Fig. 2 and Sec. 2: "the missing context is extrapolated by mirroring the input image").

Tiles start on a grid of ``model.size_multiple`` (= 2**depth) pixels, so every tile sees the same max-pool grid
as a one-tile run: the stitched logits equal the untiled ones (up to float summation order) -- no seams.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import SegbenchError
from .blocks import mirror_pad


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
