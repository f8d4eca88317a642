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
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as app.py sets it (before torch loads OpenMP)

import torch  # noqa: E402

from ..records import SCHEMA_VERSION, write_record  # noqa: E402

BENCH_MODELS = [  # (model, options): one per family, as the default CPU suite trains them
    ("unet_small", {}),
    ("fcn8s_small", {}),
    ("deeplabv3plus_mobilenet", {}),
    ("maskrcnn_small", {}),
]
TARGETS = {"startup_s": 10.0, "filter_s": 0.5, "filter_http_s": 0.5, "compare_s": 3.0, "compare_http_s": 3.0}


# ================================================================ generated data


def bench_record(i: int, *, dataset: str, model: str, family: str, class_names: list[str],
                 weights: dict[str, str] | None = None, run_id: str | None = None) -> dict[str, Any]:
    """A schema-valid record with made-up numbers, for timing the app only (never for the leaderboard)."""
    rng = random.Random(i)
    run_id = run_id or f"{rng.getrandbits(48):012x}"
    miou, forward = rng.uniform(0.3, 0.9), rng.uniform(1.0, 400.0)
    latency = {"device": rng.choice(["cpu (2 cores)", "NVIDIA H100"]), "batch_size": 1, "image_size": [96, 96],
               "precision": "fp32", "forward_ms": forward, "forward_ms_std": 0.5, "end_to_end_ms": 1.3 * forward,
               "end_to_end_ms_std": 0.5, "ms": forward, "ms_std": 0.5}
    return {
        "schema": SCHEMA_VERSION, "id": run_id, "group": run_id[::-1], "model": model, "family": family,
        "hardware_class": "cuda" if latency["device"].startswith("NVIDIA") else "cpu",
        "variant": f"v{i % 7}", "task": "semantic", "dataset": dataset, "split": "val",
        "num_classes": len(class_names), "class_names": class_names,
        "metrics": {"pixel_accuracy": min(1.0, miou + 0.1), "mean_pixel_accuracy": miou + 0.05, "miou": miou,
                    "fwiou": miou, "mean_dice": miou, "iou": {c: rng.uniform(0.1, 1.0) for c in class_names},
                    "accuracy": {}, "dice": {}, "absent": [], "miou_ci": [miou - 0.02, min(1.0, miou + 0.02)],
                    "mask_ap": None, "box_ap": None, "coco": None, "score_threshold": None},
        "test_metrics": None,
        "selection": {"checkpoint": "final", "holdout_images": None, "holdout_seed": None, "selected_epoch": 4},
        "efficiency": {"params": rng.randint(10_000, 60_000_000), "gmacs": rng.uniform(0.05, 100.0),
                       "gflops": rng.uniform(0.1, 200.0), "flops_input": [3, 96, 96], "macs_input": [3, 96, 96],
                       "receptive_field": rng.randint(40, 900), "output_stride": 8, "latency": latency},
        "training": {"epochs": 4, "steps": 40, "track": "steps", "capped": False, "seconds": rng.uniform(10, 5000),
                     "images_per_s": 50.0, "device": "cpu",
                     "history": [{"epoch": e, "loss": 1.0 / (e + 1), "miou": miou * e / 4} for e in range(1, 5)]},
        "config": {"model": model, "dataset": dataset, "epochs": 4, "seed": 0},
        "seed": 0, "versions": {"torch": torch.__version__}, "git_commit": None,
        "date": f"2025-01-{1 + i % 28:02d}T00:00:00+00:00",
        "weights": weights or {"sha256": "0" * 64, "uri": f"local:{dataset}/{model}--{run_id}", "config_uri": ""},
        "hardware": {"device": latency["device"], "cpu": "bench", "cpu_count": 2},
    }


def write_fake_leaderboard(root: str | Path, count: int) -> Path:
    """``count`` generated records spread over four datasets and four families under ``root/records``."""
    families = [("unet_small", "unet"), ("fcn8s", "fcn"), ("deeplabv3", "deeplab"), ("maskrcnn_small", "maskrcnn")]
    classes = ["background", "disc", "rectangle", "triangle", "line", "blob"]
    for i in range(count):
        model, family = families[i % 4]
        dataset = ["synthetic", "isbi2012", "camvid", "balloon"][i // 4 % 4]
        write_record(bench_record(i, dataset=dataset, model=f"{model}_{i}", family=family, class_names=classes), root)
    return Path(root)


def save_random_model(store_root: str | Path, name: str, options: dict, *, dataset: str, run_id: str, seed: int = 0,
                      eval_size: list[int] | None = None):
    """Save a randomly initialised ``name`` for ``dataset`` into a LocalStore with the meta the runner writes.
    Returns (weights dict of the store, model, DatasetInfo)."""
    from ..data import build_dataset, dataset_info
    from ..models import build_model
    from ..store import LocalStore

    info = dataset_info(dataset) or build_dataset(dataset, split="val").info  # static info: no data needed
    torch.manual_seed(seed)
    model = build_model(name, num_classes=info.num_classes, in_channels=info.in_channels, **options)
    meta = {
        "model": name, "model_args": {"in_channels": info.in_channels, **options},
        "num_classes": info.num_classes, "in_channels": info.in_channels, "class_names": list(info.class_names),
        "semantic_classes": info.num_classes, "mean": list(info.mean), "std": list(info.std),
        "ignore_index": info.ignore_index, "dataset": dataset, "palette": [list(c) for c in info.palette],
        "eval_size": eval_size, "eval_tile": None, "task": model.task, "name": name, "score_threshold": 0.5,
        "label_to_class": None, "fill": 0 if model.task == "instance" else None, "run_id": run_id,
    }
    return LocalStore(store_root).save(model, meta, dataset, name, run_id), model, info


def write_bench_store(store_root: str | Path, leaderboard: str | Path) -> None:
    """One random model per BENCH_MODELS entry on the synthetic domain, each with a record pointing at it."""
    for i, (name, options) in enumerate(BENCH_MODELS):
        run_id = f"{i:012x}"
        weights, model, info = save_random_model(store_root, name, options, dataset="synthetic", run_id=run_id, seed=i)
        record = bench_record(i, dataset="synthetic", model=name, family=model.family,
                              class_names=list(info.class_names), weights=weights, run_id=run_id)
        record.update(variant=model.variant, task=model.task)
        write_record(record, leaderboard)


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_startup(leaderboard: Path, store: Path, *, timeout: float = 120.0) -> float:
    """Seconds from ``python app.py`` to the page answering HTTP 200 (a fresh process, no preloading)."""
    port = _free_port()
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
    from ..app.leaderboard import load_leaderboard, write_csv
    from ..app.uploads import read_upload
    from ..predict import load_image  # noqa: F401 - imported before timing

    cfg = AppConfig(leaderboard=leaderboard, store=store)
    t0 = time.perf_counter()
    board = load_leaderboard(cfg)
    result["load_records_s"] = time.perf_counter() - t0
    timings = []
    for datasets, search in [(["camvid"], ""), ([], "unet"), (["synthetic", "isbi2012"], "_1"), ([], "")]:
        t0 = time.perf_counter()
        table = board.filter(datasets=datasets, search=search, sort_by="miou")
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
