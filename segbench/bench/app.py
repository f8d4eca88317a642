"""Measure the app against its targets on this machine (issue #5): start-up with 1,000 records, leaderboard filter
latency, and a warm comparison of four models on a 512x512 upload. Also drives the app in headless Chromium
(the end-to-end test and the README screenshots use the same steps).

    python -m segbench.bench.app [--store DIR] [--records 1000] [--json out.json]
    python -m segbench.bench.app --screenshots leaderboard/screenshots   # the app as configured by the environment
    python -m segbench.bench.app --demo [--pack leaderboard/demo]        # out of the box, quiet and busy (app_demo)

Without ``--store`` a temporary store is filled with one randomly initialised model of each family (the CPU
suite's models: unet_small, fcn8s_small, deeplabv3plus_mobilenet, maskrcnn_small) on the synthetic domain, so
the timing does not need trained weights (speed does not depend on the weights' values). Records are generated.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as app.py sets it (before torch loads OpenMP)

import torch  # noqa: E402

from .fixtures import bench_record, save_random_model, write_bench_store, write_fake_leaderboard  # noqa: E402,F401
from .startup import free_port, measure_startup  # noqa: E402,F401

TARGETS = {"startup_s": 10.0, "filter_s": 0.5, "filter_http_s": 0.5, "compare_s": 3.0, "compare_http_s": 3.0}


# ================================================================ headless Chromium

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def find_chromium() -> str | None:
    """Debian's chromium ($SEGBENCH_CHROMIUM, else on PATH); None when absent (Playwright's own is never fetched)."""
    for candidate in (os.environ.get("SEGBENCH_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def browse(url: str, *, image: str | Path, dataset: str | None, out_dir: str | Path, chromium: str | None = None,
           ground_truth: str | Path | None = None, timeout_s: float = 240.0) -> dict[str, Any]:
    """Drive the app like a person: upload ``image`` (and ``ground_truth``), press Compare, wait for the mask panels;
    open the leaderboard, filter it by ``dataset`` (unless None), wait for the rows to change, select the first row
    for its details; open About. Saves compare.png, leaderboard.png and about.png in ``out_dir``.

    Every step waits for the app to say it is done (a status line the server wrote, a count, a chip), never for a
    fixed time; an action whose acknowledgement does not come (a click or an upload lost while a busy machine was
    still rendering the page) is repeated, up to three times. Returns what was seen (panel counts, row counts
    before/after, seconds to the panels)."""
    from playwright.sync_api import sync_playwright

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timeout = timeout_s * 1000
    seen: dict[str, Any] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium or find_chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.set_default_timeout(timeout)
            page.goto(url, timeout=timeout)
            page.locator("#sb-compare").wait_for()
            status = page.locator("#sb-status")
            _until(lambda: page.locator("#sb-image input[type=file]").set_input_files(str(image)),
                   status.get_by_text(f"{Path(image).name}: "), timeout)
            if ground_truth is not None:
                gt = page.locator("#sb-gt")
                _until(lambda: gt.is_visible() or page.get_by_text("Ground-truth mask (optional)").click(),
                       gt, timeout)  # the accordion is open
                _until(lambda: page.locator("#sb-gt input[type=file]").set_input_files(str(ground_truth)),
                       page.locator("#sb-gt-status").get_by_text(Path(ground_truth).name), timeout)
            t0 = time.perf_counter()
            page.locator("#sb-compare").click()
            status.get_by_text("Compared").wait_for()
            page.locator("#sb-overlays img").first.wait_for()
            seen["compare_s"] = time.perf_counter() - t0
            seen["overlays"] = page.locator("#sb-overlays img").count()
            seen["masks"] = page.locator("#sb-masks img").count()
            _settle(page, timeout)
            page.screenshot(path=str(out / "compare.png"), full_page=True)
            seen.update(_browse_leaderboard(page, dataset, timeout))
            _settle(page, timeout)
            page.screenshot(path=str(out / "leaderboard.png"), full_page=True)

            _until(lambda: page.get_by_role("tab", name="About").click(), page.get_by_text("Datasets and splits"),
                   timeout)
            page.screenshot(path=str(out / "about.png"), full_page=True)
        finally:
            browser.close()
    return seen


def _browse_leaderboard(page, dataset: str | None, timeout: float) -> dict[str, Any]:
    """Open the Leaderboard tab, filter by ``dataset``, select the first row: what the table said."""
    seen: dict[str, Any] = {}
    count = page.locator("#sb-count")
    _until(lambda: page.get_by_role("tab", name="Leaderboard").click(), count, timeout)
    settled = "([el, text]) => /^\\d+ of \\d+ records/.test(el.innerText.trim()) && el.innerText.trim() !== text"
    page.wait_for_function(settled, arg=[count.element_handle(), ""])
    seen["rows_before"] = count.inner_text().strip()
    if dataset is not None:
        def choose():
            page.locator("#sb-filter-dataset input").click()
            page.keyboard.type(dataset)
            page.keyboard.press("Enter")
            page.keyboard.press("Escape")

        # the chosen dataset shows as a token in the dropdown once Gradio has it
        _until(choose, page.locator("#sb-filter-dataset .token").get_by_text(dataset), timeout)
        # settled on a new "<n> of <m> records" (while the filter runs Gradio adds a timer to the text)
        page.wait_for_function(settled, arg=[count.element_handle(), seen["rows_before"]])
    seen["rows_after"] = count.inner_text().strip()
    seen["table_text"] = page.locator("#sb-table").inner_text()
    details = page.locator("#sb-details").get_by_text("Reproduce", exact=True)
    _until(lambda: page.locator("#sb-table [data-testid=cell-0-0]").click(), details, timeout)
    seen["details_id"] = page.locator("#sb-record-id textarea, #sb-record-id input").first.input_value()
    page.locator(".js-plotly-plot").first.wait_for()
    return seen


def _until(act, done, timeout: float, *, attempts: int = 3) -> None:
    """Do ``act`` until the locator ``done`` is visible: the app's acknowledgement of it. An act lost before the
    page was ready is repeated (``attempts`` in all, sharing ``timeout`` ms); the last failure is raised."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(attempts):
        act()
        try:
            done.first.wait_for(timeout=timeout / attempts)
            return
        except PlaywrightTimeout:
            if attempt == attempts - 1:
                raise


def _settle(page, timeout: float) -> None:
    """Wait until every image on the page has loaded (Gradio keeps a connection open, so 'networkidle' never comes)
    and give transitions a moment."""
    page.wait_for_function("() => Array.from(document.images).every(img => img.complete)", timeout=timeout)
    page.wait_for_timeout(500)


def screenshots(out_dir: str | Path) -> dict[str, Any]:
    """README screenshots of the app as the environment configures it: the default domain (the first in the
    domain dropdown) and its first example image, from the demo pack or the local data, with its ground truth."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import app

    state = app.AppState.load(app.AppConfig.from_env(), workdir=app.APP_TMP / "work")
    if not state.models:
        raise SystemExit("no weights in the store or demo pack: train them first (python -m segbench run)")
    domain = state.domains[0]
    rows = app.make_examples(app.APP_TMP / "work" / "shots", [domain], demo=state.demo)
    if not rows:
        raise SystemExit(f"no example image for the default domain '{domain}': add its data (python -m segbench "
                         "data) or a demo pack")
    demo = app.build_app(state)
    try:
        _, url, _ = app.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
        image, mask, _ = rows[0]
        return {"domain": domain, **browse(url, image=image, ground_truth=mask, dataset=None, out_dir=out_dir)}
    finally:
        demo.close()


# ================================================================ measurements


def measure_http(cfg, image: Path, keys: list[str], *, repeats: int = 3) -> dict[str, float]:
    """The same through the app's HTTP API (gradio_client, in-process server): compare and filter round trips,
    including Gradio's queue, file transfer and image encoding. Warm: one untimed call of each first."""
    from gradio_client import Client, handle_file

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import app

    state = app.AppState.load(cfg, workdir=app.APP_TMP / "work")
    demo = app.build_app(state)
    try:
        _, url, _ = app.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
        client = Client(url, verbose=False)
        times: dict[str, list[float]] = {"compare_http_s": [], "filter_http_s": []}
        calls = {
            "compare_http_s": lambda: client.predict(handle_file(str(image)), next(iter(state.models)), keys, 0.5,
                                                     None, api_name="/compare"),
            "filter_http_s": lambda: client.predict(["camvid"], [], [], [], "unet", False, False, "miou", True, [],
                                                    api_name="/filter"),
        }
        for name, call in calls.items():
            call()
            for _ in range(repeats):
                t0 = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - t0)
        return {name: statistics.median(values) for name, values in times.items()}
    finally:
        demo.close()


def run(store: Path | None, records: int, repeats: int = 5) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="segbench-bench-app-"))
    os.environ.setdefault("GRADIO_TEMP_DIR", str(work / "gradio"))
    leaderboard = write_fake_leaderboard(work / "leaderboard", records)
    if store is None:
        store = work / "store"
        write_bench_store(store, leaderboard)
    result: dict[str, Any] = {"records": records, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}

    result["startup_s"] = measure_startup(leaderboard, store)

    from ..app import compare as logic
    from ..app.catalog import PredictorCache, discover_models
    from ..app.config import AppConfig
    from ..app.leaderboard import BoardFilter, load_leaderboard, write_csv
    from ..app.uploads import read_upload
    from ..inference.predict import load_image  # noqa: F401 - imported before timing

    cfg = AppConfig(leaderboard=leaderboard, store=store)
    t0 = time.perf_counter()
    board = load_leaderboard(cfg)
    result["load_records_s"] = time.perf_counter() - t0
    timings = []
    for datasets, search in [(["camvid"], ""), ([], "unet"), (["synthetic", "isbi2012"], "_1"), ([], "")]:
        t0 = time.perf_counter()
        table = board.filter(BoardFilter(datasets=datasets, search=search), sort_by="miou")
        write_csv(table, work / "csv")
        timings.append(time.perf_counter() - t0)
    result["filter_s"] = max(timings)

    models = discover_models(store, board.records)
    entries = next(iter(models.values()))[:4]
    cache = PredictorCache()
    image = torch.randint(0, 256, (3, 512, 512), dtype=torch.uint8)
    image_path = work / "upload.png"
    from PIL import Image

    Image.fromarray(image.permute(1, 2, 0).numpy()).save(image_path)
    t0 = time.perf_counter()
    logic.compare(image, entries, cache)
    result["compare_cold_s"] = time.perf_counter() - t0
    warm, per_model = [], {e.name: [] for e in entries}
    for _ in range(repeats):
        t0 = time.perf_counter()
        img, notices = read_upload(image_path)
        cmp = logic.compare(img, entries, cache)
        panels = (logic.overlay_panels(cmp, 0.5), logic.mask_panels(cmp), logic.disagreement_panel(cmp),
                  logic.instance_panels(cmp, 0.5), logic.legend(cmp), logic.results_table(cmp))
        # Gradio encodes every panel (overlays and instances as JPEG, masks as PNG): count that too
        for p in panels[0] + panels[3] + [(panels[2][0], "")]:
            Image.fromarray(p[0]).save(work / "panel.jpg")
        for p in panels[1]:
            Image.fromarray(p[0]).save(work / "panel.png")
        warm.append(time.perf_counter() - t0)
        for r in cmp.results:
            per_model[r.entry.name].append(r.latency_ms)
    result["compare_s"] = statistics.median(warm)
    result["compare_models"] = {k: round(statistics.median(v), 1) for k, v in per_model.items()}
    result.update(measure_http(cfg, image_path, [e.key for e in entries], repeats=max(2, repeats // 2)))
    result["targets"] = TARGETS
    result["pass"] = {k: result[k] <= v for k, v in TARGETS.items()}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=None, help="weights store to time (default: random models)")
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--screenshots", type=Path, default=None, metavar="DIR",
                        help="only save compare.png, leaderboard.png and about.png of the configured app into DIR")
    parser.add_argument("--demo", action="store_true", help="demo-pack start-up and comparison, quiet and busy")
    parser.add_argument("--pack", type=Path, default=None, help="--demo: the pack to time (default: random models)")
    parser.add_argument("--loads", default="quiet,busy", help="--demo: quiet, busy or both (default)")
    parser.add_argument("--no-onnx", action="store_true", help="--demo: skip ONNX Runtime vs eager")
    args = parser.parse_args(argv)
    if args.screenshots:
        print(json.dumps(screenshots(args.screenshots), indent=2))
        return 0
    if args.demo:
        import importlib.util

        from .app_demo import run_demo

        onnx = not args.no_onnx and importlib.util.find_spec("onnxruntime") is not None
        result = run_demo(pack=args.pack, records=args.records, repeats=args.repeats, onnx=onnx,
                          loads=[load.strip() for load in args.loads.split(",") if load.strip()])
    else:
        result = run(args.store, args.records, args.repeats)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
