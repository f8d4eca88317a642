"""segbench app: compare segmentation models on your image, browse the leaderboard, read the protocol.

Run ``python app.py`` (http://127.0.0.1:7860); it is also the Hugging Face Spaces entry point. This file only lays
out the Gradio UI and wires events to the handlers in ``segbench/app/`` (one module per tab; each handler is a
plain function of the ``AppState`` and the components' values). Configuration (environment): SEGBENCH_LEADERBOARD
(default ./leaderboard), SEGBENCH_STORE (weights folder), SEGBENCH_HUB_RESULTS and SEGBENCH_HUB_MODELS (Hub repos),
SEGBENCH_APP_PRELOAD=0 to skip loading the default models at start.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
import tempfile
import threading
from functools import partial
from pathlib import Path
from types import SimpleNamespace

# Everything users upload and everything drawn for them lives in one private temporary folder, deleted at exit
# (Gradio reads GRADIO_TEMP_DIR when it builds components, so this comes before importing it).
APP_TMP = Path(tempfile.mkdtemp(prefix="segbench-app-"))
atexit.register(shutil.rmtree, APP_TMP, ignore_errors=True)
os.environ.setdefault("GRADIO_TEMP_DIR", str(APP_TMP / "gradio"))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# PyTorch's OpenMP workers spin while they wait. On a shared 2-core machine (a Space's CPUs are a quota on a busy
# node) a spinning worker holds the core the other one needs, and every parallel op waits for a descheduled thread:
# 8x slower inference measured on this project's busy 2-core box, none with passive waiting. Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import gradio as gr  # noqa: E402

from segbench.app import about, compare, leaderboard  # noqa: E402
from segbench.app.catalog import MAX_MODELS, make_examples, no_weights_markdown, preload  # noqa: E402
from segbench.app.config import AppConfig  # noqa: E402
from segbench.app.state import AppState  # noqa: E402
from segbench.device import keep_freed_memory  # noqa: E402
from segbench.models.families import FAMILIES  # noqa: E402

# A server runs the same models again and again: keep their freed activation buffers instead of page-faulting fresh
# ones in on every call (1.3-1.5x faster comparisons on this project's CPU; segbench.device.keep_freed_memory).
keep_freed_memory()

COMPARE_CONCURRENCY = 1  # model runs use every core: one comparison at a time, the others wait in the queue
DEFAULT_CONCURRENCY = 4  # leaderboard filters and redraws are cheap
UPLOAD_LIFETIME_S = 1800  # uploads and drawn panels are deleted this long after they were written (checked every 5 min)
# Photos (overlays, disagreement, instances) go out as JPEG: 2 ms and ~90 KB per 512x512 panel instead of PNG's
# 38 ms and 560 KB. Colour masks stay PNG: lossless, and flat colours make them small and fast.
PHOTO_FORMAT, MASK_FORMAT = "jpeg", "png"
CSS = ".sb-status p { margin: 0.2em 0; }"


def compare_tab(state: AppState) -> None:
    """The Compare tab: upload, domain and models, optional ground truth; overlays, masks, disagreement, scores."""
    with gr.Tab("Compare", id="compare"):
        ui = _compare_layout(state)
    inputs = [ui.image, ui.domain, ui.chosen, ui.alpha, ui.gt]
    outputs = [ui.overlays, ui.masks, ui.disagreement, ui.disagreement_text, ui.legend, ui.table, ui.instances,
               ui.status, ui.comparison, ui.chosen, ui.results]
    on_compare = partial(compare.on_compare, state)
    ui.domain.change(partial(compare.on_domain, state), ui.domain, ui.chosen, api_name="models")
    ui.image.upload(partial(compare.on_upload, state), ui.image, [ui.image, ui.status], preprocess=False,
                    api_name="upload")
    gr.on([ui.gt.upload, ui.gt.clear], partial(compare.on_ground_truth, state), ui.gt, ui.gt_status,
          preprocess=False, api_name="ground_truth")
    ui.run.click(on_compare, inputs, outputs, preprocess=False, api_name="compare",
                 concurrency_limit=COMPARE_CONCURRENCY, concurrency_id="models")
    if ui.examples is not None:
        ui.examples.load_input_event.then(on_compare, inputs, outputs, preprocess=False, api_name=False,
                                          concurrency_limit=COMPARE_CONCURRENCY, concurrency_id="models")
    ui.alpha.release(partial(compare.on_alpha, state), [ui.alpha, ui.comparison], [ui.overlays, ui.instances],
                     api_name="redraw")
    gr.on([ui.rescan.click, ui.rescan_empty.click], partial(compare.on_rescan, state), None,
          [ui.no_weights, ui.compare_area, ui.domain, ui.chosen], api_name=False)


def _compare_layout(state: AppState) -> SimpleNamespace:
    domains = state.domains
    first = domains[0] if domains else None
    ui = SimpleNamespace()
    with gr.Column(visible=not domains) as ui.no_weights:
        gr.Markdown(no_weights_markdown(state.cfg), elem_id="sb-no-weights")
        ui.rescan_empty = gr.Button("Rescan store", size="sm")
    with gr.Row(visible=bool(domains)) as ui.compare_area:
        with gr.Column(scale=1, min_width=320):
            ui.image = gr.Image(label="Image (JPEG, PNG, TIFF; grey, RGB, RGBA or 16-bit)", type="filepath",
                                sources=["upload", "clipboard"], format="png", height=300, elem_id="sb-image")
            ui.domain = gr.Dropdown(compare.domain_choices(state), value=first,
                                    label="Domain: the dataset the models were trained on")
            choices, value = compare.model_picker(state, first)
            ui.chosen = gr.Dropdown(choices, value=value, multiselect=True, max_choices=MAX_MODELS, elem_id="sb-models",
                                    label="Models (up to 4; default: the best of each family)")
            with gr.Accordion("Ground-truth mask (optional): scores each model", open=False):
                ui.gt = gr.File(label="Class-index PNG (or colours of the legend)", type="filepath",
                                file_types=["image", ".tif", ".tiff"], height=90, elem_id="sb-gt")
                ui.gt_status = gr.Markdown(elem_id="sb-gt-status")
            with gr.Row():
                ui.run = gr.Button("Compare", variant="primary", scale=3, elem_id="sb-compare")
                ui.rescan = gr.Button("Rescan store", scale=1, size="sm")
            rows = make_examples(state.workdir / "examples", domains, demo=state.demo)
            ui.examples = gr.Examples(rows, inputs=[ui.image, ui.gt, ui.domain], label="Examples (click one)",
                                      examples_per_page=8) if rows else None
        with gr.Column(scale=2):
            ui.status = gr.Markdown(compare.OPEN_HINT, elem_classes="sb-status", elem_id="sb-status")
            with gr.Column(visible=False) as ui.results:
                ui.alpha = gr.Slider(0, 1, value=0.5, step=0.05, label="Mask opacity")
                ui.overlays = gr.Gallery(label="Overlays", columns=4, rows=1, format=PHOTO_FORMAT, height=260,
                                         object_fit="contain", elem_id="sb-overlays", preview=False)
                ui.legend = gr.HTML()
                ui.table = gr.Dataframe(label=f"Per model: {compare.HERE_LATENCY} = {compare.HERE_LATENCY_SCOPE}; "
                                        "scores on the ground truth if given", interactive=False, elem_id="sb-results")
                ui.masks = gr.Gallery(label="Colour masks (and the ground truth)", columns=5, rows=1,
                                      format=MASK_FORMAT, height=220, object_fit="contain", elem_id="sb-masks")
                with gr.Row():
                    ui.disagreement = gr.Image(label="Disagreement map", format=PHOTO_FORMAT, interactive=False,
                                               height=300, elem_id="sb-disagreement")
                    with gr.Column():
                        ui.disagreement_text = gr.Markdown()
                        ui.instances = gr.Gallery(label="Instances (Mask R-CNN): colours, boxes, scores", columns=1,
                                                  format=PHOTO_FORMAT, visible=False, height="auto",
                                                  elem_id="sb-instances")
    ui.comparison = gr.State(None, time_to_live=UPLOAD_LIFETIME_S)  # for redrawing at another opacity
    return ui


def leaderboard_tab(state: AppState) -> None:
    """The Leaderboard tab: filters, the ranked table with CIs, CSV, charts with error bars, record details."""
    with gr.Tab("Leaderboard", id="leaderboard") as tab:
        ui = _leaderboard_layout(state)
    filters = [ui.dataset, ui.family, ui.hardware, ui.device, ui.search, ui.show_capped, ui.by_seed]  # BoardFilter order
    table_inputs = [*filters, ui.sort_by, ui.descending, ui.columns]
    chart_inputs = [*filters, ui.latency, ui.heat_dataset]
    charts = [ui.plot_latency, ui.plot_params, ui.heat, ui.heat_dataset]
    on_charts = leaderboard.with_filter(leaderboard.on_charts, state)
    on_labels = leaderboard.with_filter(leaderboard.on_label_efficiency, state)
    gr.on([c.change for c in table_inputs], leaderboard.with_filter(leaderboard.on_filter, state), table_inputs,
          [ui.table, ui.download, ui.count], api_name="filter", trigger_mode="always_last").then(
        on_charts, chart_inputs, charts, api_name=False).then(on_labels, chart_inputs, ui.plot_labels, api_name=False)
    gr.on([ui.heat_dataset.input, ui.latency.input], on_charts, chart_inputs, charts, api_name="charts")
    ui.heat_dataset.input(on_labels, chart_inputs, ui.plot_labels, api_name=False)
    tab.select(on_charts, chart_inputs, charts, api_name=False)  # drawn when the tab opens, not at start-up
    tab.select(on_labels, chart_inputs, ui.plot_labels, api_name=False)

    def on_select(evt: gr.SelectData):  # Gradio passes the clicked row through a typed argument
        return leaderboard.on_select(state, evt.row_value)

    ui.table.select(on_select, None, [ui.record_id, ui.details, ui.curve], api_name=False)
    ui.record_id.submit(partial(leaderboard.on_details, state), ui.record_id, [ui.details, ui.curve],
                        api_name="details")


def _leaderboard_layout(state: AppState) -> SimpleNamespace:
    board, ui = state.board, SimpleNamespace()
    gr.Markdown(leaderboard.problems_markdown(board.problems), visible=bool(board.problems), elem_id="sb-problems")
    with gr.Row():
        ui.dataset = gr.Dropdown(board.choices("dataset"), value=[], multiselect=True, label="Dataset",
                                 elem_id="sb-filter-dataset")
        ui.family = gr.Dropdown(board.choices("family"), value=[], multiselect=True, label="Family")
        ui.hardware = gr.Dropdown(board.choices("hardware_class"), value=[], multiselect=True, label="Hardware class")
        ui.device = gr.Dropdown(board.choices("latency_device"), value=[], multiselect=True, label="Latency device")
        ui.search = gr.Textbox(label="Search", placeholder="model, backbone, id ...", elem_id="sb-search")
    with gr.Row():
        ui.show_capped = gr.Checkbox(False, label="Show capped / time-budget runs", elem_id="sb-show-capped")
        ui.by_seed = gr.Checkbox(False, label="Merge seeds (mean ± s.d. over the seeds of one configuration)")
        ui.sort_by = gr.Dropdown([("dataset, then rank", "")] + board.column_choices(), value="",
                                 label="Sort by (or click a header)")
        ui.descending = gr.Checkbox(True, label="Descending")
    initial = board.filter()
    with gr.Row():
        with gr.Accordion("Columns", open=False):
            ui.columns = gr.CheckboxGroup(board.column_choices(), value=leaderboard.DEFAULT_COLUMNS, label="Show")
        ui.download = gr.DownloadButton("Download CSV", value=str(leaderboard.write_csv(initial, state.workdir / "csv")))
    ui.count = gr.Markdown(leaderboard.count_text(board, len(initial), show_capped=False, by_seed=False),
                           elem_id="sb-count")
    ui.table = gr.Dataframe(initial, interactive=False, max_height=520, elem_id="sb-table", show_search="none",
                            buttons=["fullscreen", "copy"])
    gr.Markdown(leaderboard.TABLE_NOTES, elem_id="sb-table-notes")
    ui.latency = gr.Radio([("end to end", "end_to_end_ms"), ("forward only", "forward_ms")], value="end_to_end_ms",
                          label="Latency in the chart")
    with gr.Row():
        ui.plot_latency = gr.Plot(label="mIoU vs latency")
        ui.plot_params = gr.Plot(label="mIoU vs parameters")
    datasets = board.choices("dataset")
    ui.heat_dataset = gr.Dropdown(datasets, value=datasets[0] if datasets else None, label="Per-class IoU heat map for")
    ui.heat = gr.Plot(label="Per-class IoU")
    ui.plot_labels = gr.Plot(label="mIoU vs labelled images (pretrained vs scratch)")
    with gr.Accordion("Record details: select a row, or paste an id", open=True):
        ui.record_id = gr.Textbox(label="Record id", elem_id="sb-record-id")
        ui.details = gr.Markdown("Select a row to see its details.", elem_id="sb-details")
        ui.curve = gr.Plot(label="Training curve")
    return ui


def build_app(state: AppState) -> gr.Blocks:
    """The whole UI over ``state`` (``AppState.load(cfg, workdir=...)``)."""
    with gr.Blocks(title="segbench: compare segmentation models", delete_cache=(300, UPLOAD_LIFETIME_S),
                   analytics_enabled=False) as demo:
        families = ", ".join(f.label for f in FAMILIES.values())
        gr.Markdown(f"# segbench\nClassic segmentation models ({families}) trained under one "
                    "protocol, from scratch and on an ImageNet-pretrained encoder: compare them on your own image, "
                    "or browse the results.")
        with gr.Tabs():
            compare_tab(state)
            leaderboard_tab(state)
            with gr.Tab("About", id="about"):
                gr.Markdown(about.about_markdown(state.board))
    demo.queue(default_concurrency_limit=DEFAULT_CONCURRENCY, max_size=64)
    return demo


def launch(demo: gr.Blocks, **kwargs):
    """Launch with the app's settings (upload size limit, theme); ``kwargs`` override them."""
    options = {"max_file_size": "50mb", "show_error": True, "theme": gr.themes.Soft(), "css": CSS,
               "footer_links": ["api"], "state_session_capacity": 200}
    options.update(kwargs)
    return demo.launch(**options)


if __name__ == "__main__":
    # A stopped Space gets SIGTERM: exit through Python so atexit removes the temporary folder.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app_state = AppState.load(AppConfig.from_env(), workdir=APP_TMP / "work")
    app = build_app(app_state)
    launch(app, prevent_thread_lock=True)
    if os.environ.get("SEGBENCH_APP_PRELOAD", "1") != "0":
        threading.Thread(target=preload, args=(app_state.models, app_state.cache), daemon=True).start()
    app.block_thread()
