"""Shared fixtures: tiny configs so every test runs in seconds on 2 CPU cores, and nothing downloads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
torch.set_num_threads(min(2, torch.get_num_threads()))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

TINY = {
    "model": "unet_small",
    "model_args": {"base_channels": 4, "depth": 2},
    "dataset": "synthetic",
    "dataset_args": {"size": 32, "num_images": 8},
    "epochs": 1,
    "batch_size": 4,
    "crop_size": 32,
    "latency_runs": 1,
}


@pytest.fixture
def tiny_config() -> dict:
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the real datasets (camvid, isbi2012, balloon) in {SHARED_DATA} "
                    "(README: Datasets and protocol)")
    return SHARED_DATA
