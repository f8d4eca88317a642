"""The ONNX Runtime side of ONNX export: the graph writer and the model the predictor runs
(``predict.Predictor(..., backend="onnx")``); ``export.export_onnx`` adds the parity check on top.

The exported graph is the model's whole-image forward: input ``image`` float32 [1,C,H,W] (normalised as
model.json says), output ``logits`` float32 [1,K,H,W] at the input size, with H and W dynamic axes. Tiling
(``eval_tile``), resizing and argmax stay in Python, shared with the PyTorch path. The TorchScript-based exporter
(``dynamo=False``) is used: it needs only torch and ``onnx`` and exports these models in about a second, where the
dynamo exporter also needs onnxscript and takes far longer on a CPU. A graph carries the sha256 of the weights it
was exported from (``WEIGHTS_KEY``): a graph from other weights is never run.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import SegbenchError
from ..models.blocks import center_crop, mirror_pad
from ..weights.meta import WeightsMeta
from ..weights.store import WEIGHTS_FILE, LocalStore, load_model, sha256_file

ONNX_FILE = "model.onnx"
WEIGHTS_KEY = "segbench.weights_sha256"  # graph metadata: the sha256 of the safetensors file it was exported from
EXPORT_SIZE = 256  # traced at a multiple of every U-Net's 2**depth (and >= twice it): no padding branch in the graph


def require_onnxruntime():
    """The onnxruntime module, or SegbenchError with the pip command."""
    try:
        import onnxruntime
    except ImportError:
        raise SegbenchError("onnxruntime is not installed; run: pip install onnxruntime "
                            "(or pip install 'segbench[onnx]')") from None
    return onnxruntime


def require_onnx():
    """The onnx module (the exporter writes its protobuf), or SegbenchError with the pip command."""
    try:
        import onnx
    except ImportError:
        raise SegbenchError("onnx is not installed, which ONNX export needs; run: pip install onnx "
                            "(or pip install 'segbench[onnx]')") from None
    return onnx


class _Logits(nn.Module):
    """The model's ``{"out": logits}`` dict as one tensor, which ONNX outputs need."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)["out"]


class OnnxModel(nn.Module):
    """An ONNX Runtime session behind the semantic-model interface: ``forward(x float32 [B,C,H,W]) -> {"out":
    float32 logits [B,K,H,W]}`` on the CPU. Carries the PyTorch model's ``valid_margin``/``size_multiple`` so
    ``forward_full`` pads and tiles it the same way. Threads: PyTorch's count (one pool each would oversubscribe).

    ``pad_multiple``: the "same"-padded U-Net mirror-pads its input to a multiple of 2**depth with Python
    arithmetic, which the tracer bakes in at the export size; so that padding (and the crop back) happens here,
    outside the graph, exactly as ``UNet._fit_input`` does it, and the graph only ever sees padded sizes."""

    def __init__(self, path: str | Path, *, valid_margin: int = 0, size_multiple: int = 1,
                 pad_multiple: int = 1) -> None:
        super().__init__()
        ort = require_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.path = str(path)
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.valid_margin, self.size_multiple, self.pad_multiple = valid_margin, size_multiple, pad_multiple
        self.task = "semantic"

    @classmethod
    def like(cls, path: str | Path, model: nn.Module) -> OnnxModel:
        """The session of ``path`` with the size rules of ``model`` (the PyTorch model it was exported from)."""
        same = getattr(model, "padding", None) == "same"
        return cls(path, valid_margin=getattr(model, "valid_margin", 0), size_multiple=getattr(model, "size_multiple", 1),
                   pad_multiple=getattr(model, "size_multiple", 1) if same else 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        height, width = x.shape[-2:]
        step = self.pad_multiple
        pad_h = max(-(-height // step) * step, 2 * step) - height if step > 1 else 0
        pad_w = max(-(-width // step) * step, 2 * step) - width if step > 1 else 0
        if pad_h or pad_w:
            x = mirror_pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        outs = [self.session.run(None, {"image": x[i:i + 1].float().contiguous().numpy()})[0] for i in range(len(x))]
        logits = torch.cat([torch.from_numpy(o) for o in outs])
        return {"out": center_crop(logits, height, width)}


def load_onnx_model(weights: str | Path, *, store: LocalStore | None = None) -> tuple[OnnxModel, WeightsMeta]:
    """(OnnxModel, meta) for a semantic model's weights, exporting ``model.onnx`` first when it is missing (to
    ``default_onnx_path``; no parity check here: ``export_onnx`` is tested for it)."""
    require_onnxruntime()  # before any export: without the runtime the graph would be written for nothing
    model, meta = load_model(weights, store=store)
    if meta.task != "semantic":
        raise SegbenchError(f"{weights}: {meta.model} is an instance model; the ONNX backend runs semantic models")
    folder = (store or LocalStore()).resolve(weights)
    path = default_onnx_path(folder)
    if not path.is_file() or graph_weights_sha256(path) != sha256_file(folder / WEIGHTS_FILE):
        # missing, or another run's graph lying beside these weights: never run it, export these weights
        require_onnx()
        write_graph(model, meta, weights, out=path, store=store)
    return OnnxModel.like(path, model), meta


def graph_weights_sha256(path: str | Path) -> str | None:
    """The weights sha256 an ONNX file was exported from (its ``segbench.weights_sha256`` metadata), or None for a
    graph without it (exported elsewhere or before the tie) or one that cannot be read."""
    ort = require_onnxruntime()
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - a corrupt or foreign file is simply not these weights' graph
        return None
    return session.get_modelmeta().custom_metadata_map.get(WEIGHTS_KEY)


def default_onnx_path(weights_dir: Path) -> Path:
    """Where the app looks for (and caches) a model's ONNX file: beside the weights when that folder is writable
    or already holds one, else ``<store>/onnx/<first 16 hex of the weights' sha256>.onnx``."""
    beside = weights_dir / ONNX_FILE
    if beside.is_file() or os.access(weights_dir, os.W_OK):
        return beside
    return LocalStore().root / "onnx" / f"{sha256_file(weights_dir / WEIGHTS_FILE)[:16]}.onnx"


def write_graph(model: nn.Module, meta: WeightsMeta, weights: str | Path, *, out: str | Path | None = None,
                store: LocalStore | None = None, opset: int = 17) -> tuple[Path, float]:
    """Trace ``model`` (float32, eval) to an ONNX file with dynamic H/W, written atomically to ``out`` (default
    ``default_onnx_path``) with the sha256 of the weights it came from in its metadata. Returns (path, seconds)."""
    folder = (store or LocalStore()).resolve(weights)
    target = Path(out) if out else default_onnx_path(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    in_channels = meta.in_channels
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".onnx")
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
            torch.onnx.export(_Logits(model.float().eval()), (torch.zeros(1, in_channels, EXPORT_SIZE, EXPORT_SIZE),), tmp,
                              input_names=["image"], output_names=["logits"], opset_version=opset,
                              dynamic_axes={"image": {2: "height", 3: "width"}, "logits": {2: "height", 3: "width"}},
                              dynamo=False)
        graph = require_onnx().load(tmp)
        entry = graph.metadata_props.add()
        entry.key, entry.value = WEIGHTS_KEY, sha256_file(folder / WEIGHTS_FILE)
        require_onnx().save(graph, tmp)
        os.replace(tmp, target)
    except Exception as exc:  # noqa: BLE001 - an operator ONNX lacks must be one line naming the model
        Path(tmp).unlink(missing_ok=True)
        raise SegbenchError(f"{weights}: ONNX export of {meta.model} failed ({str(exc).splitlines()[0]})") from None
    return target, time.perf_counter() - t0
