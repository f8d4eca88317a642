"""Fresh clone, out of the box, in headless Chromium: ``python app.py`` with an empty weights store (nothing trained
or downloaded for CamVid) offers the committed demo pack's CamVid models in Compare; uploading a CamVid frame and
its ground truth and pressing Compare shows four masks, and each model gets road and sky right where a street scene
has them: the majority class of the top band (sky, or buildings) and of the bottom band (road) equals the ground
truth's.

Needs the real pack (``python -m segbench demo-pack``): skipped with a reason while leaderboard/demo has no CamVid
model. The lead runs it after building the pack.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segbench.bench.app import CHROMIUM_ARGS, _until, find_chromium
from segbench.weights.demo import load_pack

REPO = Path(__file__).resolve().parents[1]
PACK = load_pack(REPO / "leaderboard" / "demo")
CAMVID_MODELS = [m for m in PACK.models if m["dataset"] == "camvid"]
CAMVID_EXAMPLES = [e for e in PACK.examples if e["dataset"] == "camvid"]
CHROMIUM = find_chromium()
BAND = 0.2  # top and bottom fifth of the frame

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(len(CAMVID_MODELS) < 4 or not CAMVID_EXAMPLES,
                       reason="leaderboard/demo has fewer than 4 CamVid models or no CamVid example; build the pack "
                              "with 'python -m segbench demo-pack' first"),
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium at /usr/bin/chromium or on PATH (apt-get install chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_app(tmp_path: Path) -> tuple[subprocess.Popen, str]:
    """``python app.py`` from the repository with an empty store (a fresh clone after 'make run' has synthetic
    weights at most: CamVid still comes from the pack)."""
    port = _free_port()
    env = {**os.environ, "SEGBENCH_STORE": str(tmp_path / "empty-store"), "GRADIO_SERVER_PORT": str(port),
           "GRADIO_SERVER_NAME": "127.0.0.1"}
    for key in ("SEGBENCH_LEADERBOARD", "SEGBENCH_DEMO", "SEGBENCH_HUB_RESULTS", "SEGBENCH_HUB_MODELS"):
        env.pop(key, None)
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    url, t0 = f"http://127.0.0.1:{port}/", time.perf_counter()
    while time.perf_counter() - t0 < 120:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise TimeoutError("app.py did not answer within 120 s")


def _classes(rgb: np.ndarray, palette: list[tuple[int, int, int]]) -> np.ndarray:
    """[H,W,3] colour mask -> [H,W] class index of the nearest palette colour."""
    colours = np.asarray(palette, dtype=np.int32)
    distance = ((rgb[:, :, None, :].astype(np.int32) - colours[None, None]) ** 2).sum(-1)
    return distance.argmin(-1)


def _majority(labels: np.ndarray, rows: slice, ignore: int | None = None) -> int:
    values = labels[rows].ravel()
    values = values[values != ignore] if ignore is not None else values
    return int(np.bincount(values).argmax())


def test_fresh_clone_compares_camvid_demo_models(tmp_path):
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    from playwright.sync_api import sync_playwright

    from segbench.app.config import dataset_label
    from segbench.data import dataset_info

    info = dataset_info("camvid")
    frame, truth = Path(CAMVID_EXAMPLES[0]["image"]), Path(CAMVID_EXAMPLES[0]["mask"])
    proc, url = _start_app(tmp_path)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            timeout = 240_000
            page.set_default_timeout(timeout)
            page.goto(url)
            page.locator("#sb-compare").wait_for()
            domain = page.get_by_label("Domain: the dataset the models were trained on")

            def choose_camvid():
                domain.click()
                page.get_by_role("option", name=dataset_label("camvid")).click()

            # CamVid's pack models in the model picker (every domain's pack models say '· demo': wait for CamVid's own)
            camvid_model = CAMVID_MODELS[0]["name"]
            _until(choose_camvid, page.locator("#sb-models").get_by_text(f"{camvid_model} (").first, timeout)
            status = page.locator("#sb-status")
            _until(lambda: page.locator("#sb-image input[type=file]").set_input_files(str(frame)),
                   status.get_by_text(f"{frame.name}: "), timeout)
            _until(lambda: page.locator("#sb-gt").is_visible() or page.get_by_text("Ground-truth mask (optional)").click(),
                   page.locator("#sb-gt"), timeout)
            _until(lambda: page.locator("#sb-gt input[type=file]").set_input_files(str(truth)),
                   page.locator("#sb-gt-status").get_by_text(truth.name), timeout)
            page.locator("#sb-compare").click()
            status.get_by_text("Compared 4 models").wait_for()
            page.screenshot(path=str(tmp_path / "demo-compare.png"), full_page=True)
            masks = page.locator("#sb-masks img")
            assert masks.count() == 5  # four models and the ground truth
            sources = [masks.nth(i).get_attribute("src") for i in range(4)]
            pictures = [np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB"))
                        for src in sources]
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    gt = np.asarray(Image.open(truth))
    h = gt.shape[0]
    top, bottom = slice(0, int(BAND * h)), slice(h - int(BAND * h), h)
    expected = (_majority(gt, top, info.ignore_index), _majority(gt, bottom, info.ignore_index))
    assert info.class_names[expected[1]] == "Road"  # the example frames are street scenes: road at the bottom
    for picture in pictures:
        labels = _classes(np.asarray(Image.fromarray(picture).resize(gt.shape[::-1], Image.NEAREST)), info.palette)
        found = (_majority(labels, top), _majority(labels, bottom))
        assert found == expected, f"top/bottom majority {[info.class_names[c] for c in found]}, ground truth " \
                                  f"{[info.class_names[c] for c in expected]}"
