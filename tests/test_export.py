"""ONNX export: parity with eager PyTorch on a tiny model at several sizes (dynamic H/W), the ONNX Runtime predictor
backend, and the fallback/messages when onnxruntime is absent."""

from __future__ import annotations

import sys

import pytest
import torch

from segbench.app.catalog import ModelEntry, PredictorCache
from segbench.errors import SegbenchError
from segbench.inference.predict import Predictor
from segbench.weights.store import LocalStore

from test_demo import save_tiny


@pytest.fixture
def tiny_weights(tmp_path):
    entry = save_tiny(tmp_path / "store", "camvid", "ab" * 6)
    return LocalStore(tmp_path / "store").resolve(entry["uri"])


def test_export_parity_and_dynamic_axes(tiny_weights, tmp_path):
    from segbench.inference.export import export_onnx

    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    for i, (h, w) in enumerate([(48, 64), (37, 53)]):
        Image.fromarray(torch.randint(0, 256, (h, w, 3), dtype=torch.uint8).numpy()).save(images / f"{i}.png")
    result = export_onnx(tiny_weights, out=tmp_path / "m.onnx", images=images)
    assert (tmp_path / "m.onnx").is_file() and result["bytes"] > 0
    assert result["parity"]["equal"] >= 0.999 and result["parity"]["sizes"] == [(37, 53), (48, 64)]


def test_onnx_backend_matches_torch(tiny_weights):
    onnx = Predictor(tiny_weights, backend="onnx")  # exports model.onnx beside the weights on first use
    eager = Predictor(tiny_weights, fast=False)
    assert onnx.backend == "onnx" and onnx.precision == "fp32" and (tiny_weights / "model.onnx").is_file()
    image = torch.randint(0, 256, (3, 41, 67), dtype=torch.uint8)
    assert (onnx(image).mask == eager(image).mask).float().mean() >= 0.999


def test_without_onnxruntime(tiny_weights, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if it were not installed
    with pytest.raises(SegbenchError, match="pip install onnxruntime"):
        Predictor(tiny_weights, backend="onnx")
    entry = ModelEntry(key="camvid/x--1", dataset="camvid", name="x", run_id="1", family="unet", variant="",
                       task="semantic", miou=None, weights=str(tiny_weights))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert PredictorCache(backend="onnx").get(entry).backend == "torch"  # the app falls back to PyTorch


def test_without_onnx_export_says_so_and_writes_nothing(tiny_weights, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if onnx were not installed
    from segbench.inference.export import export_onnx

    with pytest.raises(SegbenchError, match="onnx is not installed, which ONNX export needs; run: pip install onnx"):
        export_onnx(tiny_weights, out=tmp_path / "m.onnx")
    with pytest.raises(SegbenchError, match="pip install onnx "):
        Predictor(tiny_weights, backend="onnx")
    assert not (tmp_path / "m.onnx").exists() and not (tiny_weights / "model.onnx").exists()
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".onnx"]  # no temporary graph left either


def test_without_onnxruntime_no_graph_is_exported(tiny_weights, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(SegbenchError, match="pip install onnxruntime"):
        Predictor(tiny_weights, backend="onnx")
    assert not (tiny_weights / "model.onnx").exists()  # checked before the export, not after it


def test_unknown_backend_one_line(tiny_weights):
    with pytest.raises(SegbenchError, match="backend 'tensorrt' is unknown; use one of: torch, onnx"):
        Predictor(tiny_weights, backend="tensorrt")
