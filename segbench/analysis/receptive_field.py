"""Receptive fields: the theoretical one (read off the network's own ops) and the effective one (Luo et al. 2016).

Theoretical RF -- method. One forward pass runs under a ``TorchFunctionMode`` that sees every torch op (inside
modules too) and keeps, for every tensor computed from the input and for each of its two spatial axes, the
interval [lo, hi] of input rows (columns) that each element can depend on. Ops map intervals exactly:

- conv / max-pool / avg-pool (kernel k, stride s, dilation d, padding p): element o reads positions
  o*s - p + t*d (t < k); padding positions add nothing;
- transposed conv: input i writes to i*s - p + t*d; adaptive pooling: PyTorch's bins; interpolate: the source
  taps of the mode (nearest 1, linear 2 unless the source position is a whole pixel, cubic 4);
- pad (constant / reflect / replicate / circular), slicing, index_select, cat along a spatial axis: the index map;
- everything else (element-wise ops, add, cat along channels, norms): the union over inputs, broadcasting
  size-1 axes -- a sum or concat of branches (skips, ASPP) therefore gets the widest path's interval, with the
  branches' offsets (crop-and-concat in U-Net) taken into account;
- a reduction of both spatial axes to 1x1 (adaptive pooling to 1, x.mean((2, 3))) marks the tensor "global": it
  depends on the whole input; its interval is left empty so the local RF of the other paths stays visible.

The RF of an output pixel is hi - lo + 1 on each axis. Unlike the textbook recursion r += (k-1)*d*jump (Araujo et
al. 2019, Distill), which is exact for conv/pool chains but assumes every path is centred on the same pixel,
the intervals are exact also where crops offset a skip or a stride-2 up-convolution meets a stride-2 pool: the
paper U-Net's RF is 204, where the recursion gives 200. An op that moves spatial data in a way not listed
(permute of H/W, reshape of H*W) falls back to "each element depends on the union of everything" and the result is
flagged ``exact=False``. The pass runs on the "meta" device (shapes only, no arithmetic) when the model allows it,
else on the model's device without gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor, nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from ..errors import SegbenchError
from ..models.inference import forward_full

# ----------------------------------------------------------------- theoretical receptive field
_EMPTY = 2**40  # lo of an empty interval is +_EMPTY, hi is -_EMPTY


@dataclass(frozen=True)
class _Span:
    """Dependency intervals of a tensor's elements along its last two dims: ``axes = ((lo_h, hi_h), (lo_w, hi_w))``
    with int64 [H] and [W] vectors of input coordinates; ``axes=None`` for tensors without spatial layout that
    only carry reduced (global) information."""

    axes: tuple[tuple[Tensor, Tensor], ...] | None
    is_global: bool = False
    exact: bool = True


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: object) -> object:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _pair(value: object) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _gather(lo: Tensor, hi: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
    """Interval of outputs that read input positions ``pos`` [n_out, taps]; positions outside the input add none."""
    valid = (pos >= 0) & (pos < lo.numel())
    pos = pos.clamp(0, lo.numel() - 1)
    return (torch.where(valid, lo[pos], _EMPTY).amin(1), torch.where(valid, hi[pos], -_EMPTY).amax(1))


def _window(lo: Tensor, hi: Tensor, n_out: int, k: int, s: int, p: int, d: int) -> tuple[Tensor, Tensor]:
    pos = torch.arange(n_out)[:, None] * s - p + torch.arange(k)[None, :] * d
    return _gather(lo, hi, pos)


def _transposed(lo: Tensor, hi: Tensor, n_out: int, k: int, s: int, p: int, d: int) -> tuple[Tensor, Tensor]:
    src = torch.arange(lo.numel())[:, None].expand(-1, k)
    dst = src * s - p + torch.arange(k)[None, :] * d
    valid = (dst >= 0) & (dst < n_out)
    dst, src = dst[valid], src[valid]
    new_lo = torch.full((n_out,), _EMPTY).scatter_reduce(0, dst, lo[src], "amin")
    new_hi = torch.full((n_out,), -_EMPTY).scatter_reduce(0, dst, hi[src], "amax")
    return new_lo, new_hi


def _adaptive(lo: Tensor, hi: Tensor, n_out: int) -> tuple[Tensor, Tensor]:
    n_in = lo.numel()
    o = torch.arange(n_out)
    start, end = o * n_in // n_out, -(-(o + 1) * n_in // n_out)  # PyTorch's bins
    pos = start[:, None] + torch.arange(int((end - start).max()))[None, :]
    return _gather(lo, hi, torch.where(pos < end[:, None], pos, -1))


def _resize(lo: Tensor, hi: Tensor, n_out: int, mode: str, align_corners: bool, scale: float | None):
    n_in = lo.numel()
    o = torch.arange(n_out, dtype=torch.float64)
    if mode in ("nearest", "nearest-exact"):
        ratio = scale if scale is not None else n_in / n_out
        src = ((o + 0.5) * ratio if mode == "nearest-exact" else o * ratio).floor().long().clamp(max=n_in - 1)
        return _gather(lo, hi, src[:, None])
    if align_corners:
        src = o * ((n_in - 1) / (n_out - 1)) if n_out > 1 else o * 0
    else:
        src = ((o + 0.5) * (scale if scale is not None else n_in / n_out) - 0.5).clamp(min=0)
    base = src.floor().long().clamp(max=n_in - 1)
    offsets = torch.arange(-1, 3) if mode == "bicubic" else torch.arange(2)
    pos = (base[:, None] + offsets[None, :]).clamp(0, n_in - 1)
    if mode != "bicubic":  # a linear tap with weight 0 (source on a whole pixel) is no dependency
        pos[:, 1] = torch.where(src > base, pos[:, 1], pos[:, 0])
    return _gather(lo, hi, pos)


def _pad_index(n_in: int, before: int, after: int, mode: str) -> Tensor:
    index = torch.arange(-before, n_in + after)
    if mode == "replicate":
        return index.clamp(0, n_in - 1)
    if mode == "circular":
        return index.remainder(n_in)
    if mode == "reflect":
        period = max(2 * (n_in - 1), 1)
        index = index.remainder(period)
        return torch.where(index < n_in, index, period - index) if n_in > 1 else index * 0
    return torch.where((index >= 0) & (index < n_in), index, -1)  # constant: padding reads nothing


def _spatial_axes(x: Tensor) -> tuple[int, int]:
    return x.dim() - 2, x.dim() - 1


def _slice_axes(x: Tensor, index: object) -> list[slice] | None:
    """Per spatial axis, the slice that ``x[index]`` applies, or None if the index is not plain slicing."""
    index = index if isinstance(index, tuple) else (index,)
    if any(not (isinstance(i, slice) or i is Ellipsis) for i in index) or sum(i is Ellipsis for i in index) > 1:
        return None
    if Ellipsis in index:
        at = index.index(Ellipsis)
        index = index[:at] + (slice(None),) * (x.dim() - len(index) + 1) + index[at + 1 :]
    index = index + (slice(None),) * (x.dim() - len(index))
    if len(index) != x.dim() or any((i.step or 1) < 0 for i in index[-2:]):
        return None
    return list(index[-2:])


def _map_axes(name: str, span: _Span, args: tuple, kwargs: dict, x: Tensor, out: Tensor) -> _Span | None:
    """Interval map of op ``name`` (data input ``x``, first output ``out``); None when no rule applies."""
    if span.axes is None or x.dim() < 3 or out.dim() != x.dim():
        return None
    n_out = out.shape[-2:]
    axes = span.axes
    if name in _CONV or name in _CONV_T:
        weight = _arg(args, kwargs, 1, "weight", None)
        kernel, stride = weight.shape[-2:], _pair(_arg(args, kwargs, 3, "stride", 1))
        dilation = _pair(_arg(args, kwargs, 5 if name in _CONV else 7, "dilation", 1))
        padding = _arg(args, kwargs, 4, "padding", 0)
        if padding == "valid":
            padding = 0
        if padding == "same":
            padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
        fn = _window if name in _CONV else _transposed
        axes = tuple(fn(lo, hi, n, k, s, p, d) for (lo, hi), n, k, s, p, d in
                     zip(axes, n_out, kernel, stride, _pair(padding), dilation))
    elif name in _POOL:
        kernel = _pair(_arg(args, kwargs, 1, "kernel_size", 1))
        stride = _arg(args, kwargs, 2, "stride", None)
        stride = kernel if stride is None or stride in ((), []) else _pair(stride)
        dilation = _pair(_arg(args, kwargs, 4, "dilation", 1) if "max" in name else 1)
        padding = _pair(_arg(args, kwargs, 3, "padding", 0))
        axes = tuple(_window(lo, hi, n, k, s, p, d) for (lo, hi), n, k, s, p, d in
                     zip(axes, n_out, kernel, stride, padding, dilation))
    elif name in _ADAPTIVE:
        if all(n == 1 for n in n_out) and any(n > 1 for n in x.shape[-2:]):
            return _Span(None, True, span.exact)  # global pooling
        axes = tuple(_adaptive(lo, hi, n) for (lo, hi), n in zip(axes, n_out))
    elif name in _RESIZE:
        default = "bilinear" if name == "upsample_bilinear" else "nearest"
        mode = _arg(args, kwargs, 3, "mode", default)
        align = bool(_arg(args, kwargs, 4, "align_corners", name == "upsample_bilinear"))
        factor = _arg(args, kwargs, 2, "scale_factor", None)
        recompute = _arg(args, kwargs, 5, "recompute_scale_factor", None)
        scales = (None, None) if factor is None or recompute else tuple(1 / f for f in _pair(factor))
        if mode == "area":
            axes = tuple(_adaptive(lo, hi, n) for (lo, hi), n in zip(axes, n_out))
        else:
            axes = tuple(_resize(lo, hi, n, mode, align, sc) for (lo, hi), n, sc in zip(axes, n_out, scales))
    elif name == "pad":
        pad = list(_arg(args, kwargs, 1, "pad", ())) + [0] * 4
        mode = _arg(args, kwargs, 2, "mode", "constant")
        befores_afters = ((pad[2], pad[3]), (pad[0], pad[1]))
        axes = tuple(_gather(lo, hi, _pad_index(lo.numel(), b, a, mode)[:, None])
                     for (lo, hi), (b, a) in zip(axes, befores_afters))
    elif name == "index_select":
        dim = _arg(args, kwargs, 1, "dim", 0) % x.dim()
        index = _arg(args, kwargs, 2, "index", None).long().cpu()
        axes = tuple((lo[index], hi[index]) if dim == a else (lo, hi)
                     for (lo, hi), a in zip(axes, _spatial_axes(x)))
    elif name == "__getitem__":
        slices = _slice_axes(x, args[1])
        if slices is None:
            return None
        axes = tuple((lo[sl], hi[sl]) for (lo, hi), sl in zip(axes, slices))
    else:
        return None
    return _Span(axes, span.is_global, span.exact)


def _union(spans: list[_Span], out: Tensor) -> _Span:
    """Each element depends on the union of the inputs' intervals at its position (size-1 axes broadcast).

    Inputs whose spatial axes cannot be matched to ``out``'s count as "everything" (inexact); a reduction of both
    spatial axes to one element makes the result global.
    """
    is_global = any(s.is_global for s in spans)
    exact = all(s.exact for s in spans)
    if out.dim() < 3:  # spatial layout gone (e.g. x.mean((2, 3)) without keepdim)
        return _Span(None, True, exact)
    n_out = out.shape[-2:]
    lo = [torch.full((n,), _EMPTY) for n in n_out]
    hi = [torch.full((n,), -_EMPTY) for n in n_out]
    for span in spans:
        if span.axes is None:
            continue
        n_in = tuple(a[0].numel() for a in span.axes)
        if all(n == 1 for n in n_out) and any(n > 1 for n in n_in):
            is_global = True  # a reduction over both spatial axes
            continue
        for a, (s_lo, s_hi) in enumerate(span.axes):
            if s_lo.numel() != n_out[a] and s_lo.numel() != 1:  # an unknown resize or a layout change
                s_lo, s_hi, exact = s_lo.min()[None], s_hi.max()[None], False
            lo[a] = torch.minimum(lo[a], s_lo)
            hi[a] = torch.maximum(hi[a], s_hi)
    return _Span(tuple(zip(lo, hi)), is_global, exact)


_CONV = {"conv2d"}
_CONV_T = {"conv_transpose2d"}
_POOL = {"max_pool2d", "max_pool2d_with_indices", "avg_pool2d"}
_ADAPTIVE = {"adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices"}
_RESIZE = {"interpolate", "upsample", "upsample_nearest", "upsample_bilinear"}


class _SpanMode(TorchFunctionMode):
    """Propagates a ``_Span`` from the model input to every tensor computed from it (keyed by tensor id; the
    tensors are kept alive during the pass so that ids are not reused)."""

    def __init__(self, x: Tensor) -> None:
        super().__init__()
        self.spans = {id(x): _Span(tuple((torch.arange(n), torch.arange(n)) for n in x.shape[-2:]))}
        self.alive: list[Tensor] = [x]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, Tensor) and id(t) in self.spans]
        outputs = [t for t in tree_flatten(result)[0] if isinstance(t, Tensor)]
        if not inputs or not outputs:
            return result
        name = getattr(func, "__name__", "")
        spans = [self.spans[id(t)] for t in inputs]
        span = None
        if name == "cat" and len({t.dim() for t in inputs}) == 1:
            span = _cat(spans, inputs[0], _arg(args, kwargs, 1, "dim", 0))
        elif len(inputs) == 1 and args and args[0] is inputs[0]:
            span = _map_axes(name, spans[0], args, kwargs, inputs[0], outputs[0])
        for out in outputs:
            self.spans[id(out)] = span or _union(spans, out)
            self.alive.append(out)
        return result


def _cat(spans: list[_Span], x: Tensor, dim: int) -> _Span | None:
    """Concatenation along a spatial axis appends the intervals; along other dims it is a union (None)."""
    dim %= x.dim()
    if dim not in _spatial_axes(x) or any(s.axes is None for s in spans):
        return None
    a = dim - (x.dim() - 2)
    axes = [list(ax) for ax in spans[0].axes]
    axes[a] = [torch.cat([s.axes[a][0] for s in spans]), torch.cat([s.axes[a][1] for s in spans])]
    return _Span(tuple(tuple(ax) for ax in axes), any(s.is_global for s in spans), all(s.exact for s in spans))


def receptive_field(model: nn.Module, input_size: tuple[int, int, int] = (3, 256, 256)) -> dict[str, int | bool | None]:
    """Theoretical receptive field of ``model``'s output pixels, by interval propagation (module docstring).

    ``input_size`` = (C, H, W) of the probe. Returns a dict:
    ``receptive_field`` (int): the widest span, in input pixels, that one output pixel of ``out`` depends on at this
    input size (max over pixels and both axes; capped by the input; the input side when some path pools globally);
    ``theoretical_receptive_field`` (int | None): the same on an unbounded input (border-free pixels of a probe
    enlarged on the meta device up to 8192 px; global paths excluded; None if it was not reached);
    ``effective_stride`` (int): input pixels per output pixel; ``global`` (bool): some path pools globally;
    ``covers_input`` (bool): some output pixel sees the whole H x W; ``exact`` (bool): no op was approximated.
    Valid U-Nets run through ``forward_full``, so their output covers the input as in training.
    """
    channels, height, width = input_size
    was_training = model.training
    model.eval()  # BatchNorm at batch size 1 / 1x1 only works in eval; the RF does not depend on the mode
    try:
        span, on_meta = _trace(model, channels, height, width)
        theoretical = _unbounded(model, channels, span, (height, width), on_meta)
    finally:
        model.train(was_training)
    lo_h, hi_h = span.axes[0] if span.axes is not None else (torch.zeros(1), torch.zeros(1) - 1)
    lo_w, hi_w = span.axes[1] if span.axes is not None else (torch.zeros(1), torch.zeros(1) - 1)
    widest = max(int((hi_h - lo_h + 1).clamp(min=0).max()), int((hi_w - lo_w + 1).clamp(min=0).max()))
    covers = span.is_global or (int((hi_h - lo_h + 1).max()) >= height and int((hi_w - lo_w + 1).max()) >= width)
    return {
        "receptive_field": max(height, width) if span.is_global else widest,
        "theoretical_receptive_field": theoretical,
        "effective_stride": max(1, round(height / lo_h.numel())),
        "global": span.is_global,
        "covers_input": bool(covers),
        "exact": span.exact,
    }


def _unbounded(model: nn.Module, channels: int, span: _Span, sizes: tuple[int, int], on_meta: bool) -> int | None:
    """Widest span among output pixels whose intervals touch no border of the probe, growing a square probe on
    the meta device until at least 32 such pixels per axis (every sub-pixel phase of strides up to 32) exist."""
    while span.axes is not None:
        inner = [(lo > 0) & (hi < n - 1) for (lo, hi), n in zip(span.axes, sizes)]
        last = not on_meta or max(sizes) >= 8192
        if all(m.any() for m in inner) and (last or all(int(m.sum()) >= min(32, m.numel()) for m in inner)):
            return max(int((hi - lo + 1)[m].max()) for (lo, hi), m in zip(span.axes, inner))
        if last:
            return None
        sizes = (2 * max(sizes),) * 2
        try:
            span, on_meta = _trace(model, channels, *sizes, meta_only=True)
        except (NotImplementedError, RuntimeError):
            return None
    return None


class _Full(nn.Module):
    """``forward_full`` as a module, so ``functional_call`` can swap in meta parameters for it too."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return forward_full(self.model, x)


def _trace(model: nn.Module, channels: int, height: int, width: int, meta_only: bool = False) -> tuple[_Span, bool]:
    """The ``_Span`` of ``model``'s "out" for a [1, channels, height, width] input, and whether it ran on meta."""
    full = _Full(model)
    dtype = _param_dtype(model)

    def run(x: Tensor, params: dict[str, Tensor] | None) -> _Span:
        mode = _SpanMode(x)
        with torch.no_grad(), mode:
            out = full(x) if params is None else functional_call(full, params, (x,))
        out = out["out"] if isinstance(out, dict) else out
        if id(out) not in mode.spans:
            raise SegbenchError(f"receptive_field: {type(model).__name__}'s output does not derive from its input")
        return mode.spans[id(out)]

    # Shapes only: parameters, buffers and input on the meta device (no memory, no arithmetic).
    meta = {k: torch.empty_like(v, device="meta") for k, v in (*full.named_parameters(), *full.named_buffers())}
    try:
        return run(torch.empty(1, channels, height, width, device="meta", dtype=dtype), meta), True
    except (NotImplementedError, RuntimeError):  # an op without a meta kernel, or data-dependent control flow
        if meta_only:
            raise
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        return run(torch.zeros(1, channels, height, width, device=device, dtype=dtype), None), False


def _param_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


# ----------------------------------------------------------------- effective receptive field
def effective_receptive_field(
    model: nn.Module, *, input_size: tuple[int, int, int] = (3, 128, 128), samples: int = 8, seed: int = 0
) -> Tensor:
    """Effective receptive field (Luo et al. 2016, "Understanding the effective receptive field in deep CNNs",
    Sec. 2): |d (sum over classes of the centre output pixel's logits) / d input|, summed over input channels and
    averaged over ``samples`` N(0, 1) inputs (the normalised-image distribution), in eval mode (train mode is
    restored). Returns float32 [H, W] on the CPU, normalised to max 1 (all zeros if the gradient is zero).
    Parameter gradients are not touched.
    """
    channels, height, width = input_size
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, channels, height, width, generator=generator).to(device, _param_dtype(model))
    x.requires_grad_(True)
    was_training = model.training
    model.eval()
    try:
        out = forward_full(model, x)
    finally:
        model.train(was_training)
    logits = out["out"] if isinstance(out, dict) else out
    # Samples are independent in eval mode, so one backward of the batch sum gives every per-sample gradient.
    (grad,) = torch.autograd.grad(logits[:, :, height // 2, width // 2].sum(), x)
    erf = grad.abs().sum(1).mean(0).float().cpu()
    peak = erf.max()
    return erf / peak if peak > 0 else erf


def erf_radius(erf: Tensor, fraction: float = 0.95) -> float:
    """Radius (pixels) of the smallest disc around the centre pixel (H//2, W//2) that holds ``fraction`` of the
    ERF's total mass; erf: float [H, W] >= 0. 0.0 for an all-zero map."""
    height, width = erf.shape
    rows = torch.arange(height, dtype=torch.float32)[:, None] - height // 2
    cols = torch.arange(width, dtype=torch.float32)[None, :] - width // 2
    distance, order = (rows**2 + cols**2).sqrt().flatten().sort()
    mass = erf.flatten().float()[order].cumsum(0)
    if mass[-1] <= 0:
        return 0.0
    index = int(torch.searchsorted(mass, fraction * mass[-1]))
    return float(distance[min(index, distance.numel() - 1)])


# Anchors of a perceptually ordered dark-blue -> teal -> yellow map (close to matplotlib's "viridis").
_COLOURS = torch.tensor(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=torch.float32
)


def save_heatmap(erf: Tensor, path: str | Path) -> Path:
    """Write ``erf`` (float [H, W], scaled by its max) as an RGB PNG with a viridis-like colour map; returns the
    path (parent folders are created)."""
    if erf.dim() != 2:
        raise SegbenchError(f"save_heatmap: expected a [H, W] map, got shape {list(erf.shape)}; pass one ERF map")
    values = erf.detach().float().cpu()
    values = values / values.max() if values.max() > 0 else values
    position = values.clamp(0, 1) * (len(_COLOURS) - 1)
    low = position.floor().long().clamp(max=len(_COLOURS) - 2)
    weight = (position - low)[..., None]
    rgb = _COLOURS[low] * (1 - weight) + _COLOURS[low + 1] * weight
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb.round().to(torch.uint8).numpy()).save(path)
    return path
