"""Ctrl-C (SIGINT) during training leaves a resumable checkpoint and no record, half-written or whole; a SIGKILL
loses at most the epoch in flight; ``--resume`` then completes the run. Real processes, a tiny config, bounded time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segbench.train.checkpoints import read_resume_state

pytestmark = pytest.mark.slow  # each test trains in a child process and signals it (make quick leaves them out)

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 40  # ~0.2 s an epoch on 2 quiet cores: a signal after the first checkpoint lands mid-run
CONFIG = f"""model: unet_small
model_args: {{base_channels: 4, depth: 2}}
dataset: synthetic
dataset_args: {{size: 64, num_images: 64}}
epochs: {EPOCHS}
batch_size: 4
crop_size: 64
latency_runs: 1
device: cpu
"""


def _train(tmp_path: Path, *extra: str) -> subprocess.Popen:
    (tmp_path / "c.yaml").write_text(CONFIG)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "segbench", "train", str(tmp_path / "c.yaml"), "--store",
                             str(tmp_path / "store"), "--leaderboard", str(tmp_path / "lb"), "--no-progress", *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)


def _default_sigint() -> None:
    """A shell's background job inherits SIGINT ignored, and Python then keeps it ignored: give the child the
    default disposition, so that it gets KeyboardInterrupt as a user's Ctrl-C would give it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _checkpoint_dir(tmp_path: Path, proc: subprocess.Popen, timeout: float = 240) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list((tmp_path / "store" / "checkpoints").glob("synthetic/*/last.pt"))
        if found:
            return found[0].parent
        if proc.poll() is not None:
            pytest.fail(f"training ended before its first checkpoint: {proc.communicate()[1][-400:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("no checkpoint within the time limit")


def _records(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "lb" / "records"
    return sorted(folder.rglob("*")) if folder.exists() else []


def _resume_completes(tmp_path: Path) -> None:
    proc = _train(tmp_path, "--resume")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-400:]
    records = [p for p in _records(tmp_path) if p.suffix == ".json"]
    assert len(records) == 1 and not [p for p in _records(tmp_path) if p.name.startswith(".")]
    record = json.loads(records[0].read_text())
    assert record["training"]["epochs"] == EPOCHS and not record["training"]["capped"]


def test_sigint_leaves_a_resumable_checkpoint_and_no_record(tmp_path):
    proc = _train(tmp_path)
    checkpoints = _checkpoint_dir(tmp_path, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err
    assert _records(tmp_path) == []  # no record, whole or half
    state = read_resume_state(checkpoints, epochs=EPOCHS)
    assert 1 <= state["result"]["epochs_done"] < EPOCHS and not state["finished"]
    assert [p.name for p in checkpoints.iterdir()] == ["last.pt"]  # no temporary checkpoint left
    _resume_completes(tmp_path)


def test_sigkill_then_resume_completes_the_run(tmp_path):
    proc = _train(tmp_path)
    checkpoints = _checkpoint_dir(tmp_path, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL and _records(tmp_path) == []
    read_resume_state(checkpoints, epochs=EPOCHS)  # loads: the kill never leaves half a checkpoint
    _resume_completes(tmp_path)
