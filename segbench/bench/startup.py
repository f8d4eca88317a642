"""Start-up time of ``python app.py`` in a fresh process (the benchmarks of the app and of its demo pack)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_startup(leaderboard: Path, store: Path, *, timeout: float = 120.0) -> float:
    """Seconds from ``python app.py`` to the page answering HTTP 200 (a fresh process, no preloading)."""
    port = free_port()
    env = {**os.environ, "SEGBENCH_LEADERBOARD": str(leaderboard), "SEGBENCH_STORE": str(store),
           "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "SEGBENCH_APP_PRELOAD": "0"}
    app = Path(__file__).resolve().parents[2] / "app.py"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(app)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
                    if response.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"app.py did not answer within {timeout} s")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a heavily loaded machine: do not lose the measurement over it
            proc.kill()
            proc.wait()
