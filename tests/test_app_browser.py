"""End to end in headless Chromium (Debian's ``chromium`` driven by Playwright through ``executable_path``):
open the app, upload an image and its ground truth, press Compare, see the mask panels; open the leaderboard,
filter by a dataset, see the rows change; open About. Screenshots go to the test's temporary folder (and to
$SEGBENCH_SCREENSHOTS when set).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segbench.app.config import AppConfig
from segbench.app.state import AppState
from segbench.bench.app import browse, find_chromium

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

pytestmark = pytest.mark.browser
CHROMIUM = find_chromium()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium at /usr/bin/chromium or on PATH (apt-get install chromium); "
                    "Playwright's own browser download is not used")
def test_upload_compare_and_filter_in_chromium(tmp_path):
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    import app
    from test_app import make_fixture

    leaderboard, store = make_fixture(tmp_path / "fixture")
    image = tmp_path / "upload.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(image)
    ground_truth = tmp_path / "truth.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 6, (48, 64), dtype=np.uint8)).save(ground_truth)
    state = AppState.load(AppConfig(leaderboard=leaderboard, store=store), workdir=tmp_path / "work")
    demo = app.build_app(state)
    try:
        _, url, _ = app.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
        out = Path(os.environ.get("SEGBENCH_SCREENSHOTS") or tmp_path / "screenshots")
        seen = browse(url, image=image, ground_truth=ground_truth, dataset="camvid", out_dir=out, chromium=CHROMIUM)
    finally:
        demo.close()
    # default selection: the best model of each family (one U-Net here); the masks also show the ground truth
    assert seen["overlays"] == 1 and seen["masks"] == 2
    assert seen["rows_before"] == "4 of 4 records" and seen["rows_after"] == "1 of 4 records"
    assert "deeplabv3" in seen["table_text"] and "unet_small" not in seen["table_text"]
    assert seen["details_id"] and seen["details_id"] in seen["table_text"]  # the selected row's details
    for name in ("compare.png", "leaderboard.png", "about.png"):
        assert (out / name).stat().st_size > 10_000
