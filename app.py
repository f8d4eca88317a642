"""segbench app: compare segmentation models on your image, browse the leaderboard, read the protocol.

Run ``python app.py`` (http://127.0.0.1:7860); it is also the Hugging Face Spaces entry point. The logic lives in
``segbench/app_logic.py``; this file only lays out the Gradio UI and wires the events. Configuration (environment):
SEGBENCH_LEADERBOARD (default ./leaderboard), SEGBENCH_STORE (weights folder), SEGBENCH_HUB_RESULTS and
SEGBENCH_HUB_MODELS (Hub repos), SEGBENCH_APP_PRELOAD=0 to skip loading the default models at start.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

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

from segbench import app_logic as logic  # noqa: E402
from segbench.errors import SegbenchError  # noqa: E402

COMPARE_CONCURRENCY = 1  # model runs use every core: one comparison at a time, the others wait in the queue
DEFAULT_CONCURRENCY = 4  # leaderboard filters and redraws are cheap
UPLOAD_LIFETIME_S = 1800  # uploads and drawn panels are deleted this long after they were written (checked every 5 min)
# Photos (overlays, disagreement, instances) go out as JPEG: 2 ms and ~90 KB per 512x512 panel instead of PNG's
# 38 ms and 560 KB. Colour masks stay PNG: lossless, and flat colours make them small and fast.
PHOTO_FORMAT, MASK_FORMAT = "jpeg", "png"
CSS = ".sb-status p { margin: 0.2em 0; }"


def _upload_path(payload) -> tuple[str, str] | None:
    """(local path, name the user gave it) of a raw Gradio file payload (events run with preprocess=False)."""
    if not payload:
        return None
    if isinstance(payload, str):
        return payload, Path(payload).name
    path = payload.get("path")
    return (path, payload.get("orig_name") or Path(path).name) if path else None


def _gallery(panels: list, *, max_columns: int):
    """One row of panels; the height follows the column count so square panels fill it (Gradio cannot size a
    gallery to its content without leaving a gap)."""
    columns = min(max(len(panels), 2), max_columns)
    return gr.update(value=panels, columns=columns, height={2: 440, 3: 320, 4: 260, 5: 220}[columns])


def _status(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def build_app(cfg: logic.AppConfig | None = None, *, workdir: str | Path | None = None) -> gr.Blocks:
    """The whole UI. ``cfg`` defaults to the environment; ``workdir`` holds examples and CSV files."""
    cfg = cfg or logic.AppConfig.from_env()
    workdir = Path(workdir or APP_TMP / "work")
    board = logic.load_leaderboard(cfg)
    models = logic.discover_models(cfg.store, board.records, hub_models=cfg.hub_models)
    cache = logic.PredictorCache()
    domains = list(models)
    first = domains[0] if domains else None

    def model_choices(domain):
        entries = models.get(domain, [])
        return logic.model_choices(entries), logic.default_selection(entries)

    # ------------------------------------------------------------ compare handlers

    def on_domain(domain):
        choices, value = model_choices(domain)
        return gr.update(choices=choices, value=value)

    def on_upload(payload):
        upload = _upload_path(payload)
        if upload is None:
            return None, ""
        try:
            image, notices = logic.read_upload(upload[0], name=upload[1], cfg=cfg)
        except SegbenchError as exc:
            gr.Warning(str(exc))
            return None, f"**Not loaded.** {exc}"
        c, h, w = image.shape
        notices.insert(0, f"{upload[1]}: {w}x{h}, {'grey' if c == 1 else 'colour'}. Press **Compare**.")
        return image.permute(1, 2, 0).numpy().squeeze(-1) if c == 1 else image.permute(1, 2, 0).numpy(), _status(notices)

    def on_compare(image_payload, domain, keys, alpha, gt_payload):
        upload = _upload_path(image_payload)
        if upload is None:
            raise gr.Error("Upload an image or click an example first.")
        try:
            entries = logic.pick_models(models, domain, keys)
            image, notices = logic.read_upload(upload[0], name=upload[1], cfg=cfg)
            cmp = logic.compare(image, entries, cache, ground_truth=_upload_path(gt_payload), notices=notices)
        except SegbenchError as exc:
            raise gr.Error(str(exc)) from None
        picture, sentence = logic.disagreement_panel(cmp)
        instances = logic.instance_panels(cmp, alpha)
        mask_panels = logic.mask_panels(cmp)
        n = len(cmp.results)
        notices = [f"Compared {n} model{'s' * (n > 1)} in {cmp.seconds:.2f} s. {logic.machine_line()}"] + cmp.notices
        return (
            _gallery(logic.overlay_panels(cmp, alpha), max_columns=4),
            _gallery(mask_panels, max_columns=5),
            picture, sentence, logic.legend(cmp), logic.results_table(cmp),
            gr.update(value=instances, visible=bool(instances), columns=max(1, len(instances))),
            _status(notices), cmp.compact(), gr.update(value=[r.entry.key for r in cmp.results]), gr.update(visible=True),
        )

    def on_alpha(alpha, cmp):
        if cmp is None:
            return gr.skip(), gr.skip()
        instances = logic.instance_panels(cmp, alpha)
        return logic.overlay_panels(cmp, alpha), gr.update(value=instances, visible=bool(instances))

    def on_rescan():
        nonlocal models, domains
        models = logic.discover_models(cfg.store, board.records, hub_models=cfg.hub_models)
        domains = list(models)
        domain = domains[0] if domains else None
        choices, value = model_choices(domain)
        return (gr.update(visible=not domains), gr.update(visible=bool(domains)),
                gr.update(choices=[(logic.dataset_label(d), d) for d in domains], value=domain),
                gr.update(choices=choices, value=value))

    # ------------------------------------------------------------ leaderboard handlers

    def on_filter(datasets, families, devices, search, sort_by, descending, columns):
        table = board.filter(datasets=datasets, families=families, devices=devices, search=search,
                             sort_by=sort_by or None, descending=descending, columns=columns)
        return table, str(logic.write_csv(table, workdir / "csv")), f"{len(table)} of {len(board.table)} records"

    def on_charts(datasets, families, devices, search, heat_dataset):
        """The three charts of the filtered rows; the heat map follows the filter when its dataset is filtered out."""
        from segbench import viz

        frame = board.frame[board.rows(datasets=datasets, families=families, devices=devices, search=search)]
        shown = [d for d in board.choices("dataset") if d in set(frame["dataset"])]
        if heat_dataset not in shown and shown:
            heat_dataset = shown[0]
        ids = set(frame["id"])
        return (
            viz.scatter_figure(frame, x="latency_ms", x_title="latency (ms)", title="mIoU vs latency (Pareto front ringed)",
                               pareto=True),
            viz.scatter_figure(frame, x="params", x_title="parameters", title="mIoU vs parameters"),
            viz.class_iou_heatmap([r for r in board.records if r["id"] in ids], heat_dataset or ""),
            gr.update(value=heat_dataset),
        )

    def on_details(record_id):
        from segbench import viz

        record = board.record(record_id or "")
        if record is None:
            return f"No record with id `{record_id}`." if record_id else "Select a row to see its details.", None
        return logic.record_details(record), viz.training_curve_figure(record["training"].get("history") or [])

    def on_select(evt: gr.SelectData):
        row = evt.row_value or []
        record_id = str(row[-1]) if row else ""
        return (record_id, *on_details(record_id))

    # ------------------------------------------------------------ layout

    with gr.Blocks(title="segbench: compare segmentation models", delete_cache=(300, UPLOAD_LIFETIME_S),
                   analytics_enabled=False) as demo:
        gr.Markdown("# segbench\nClassic segmentation models (U-Net, FCN, DeepLab, Mask R-CNN) trained from scratch "
                    "under one protocol: compare them on your own image, or browse the results.")
        with gr.Tabs():
            with gr.Tab("Compare", id="compare"):
                with gr.Column(visible=not domains) as no_weights:
                    gr.Markdown(logic.no_weights_markdown(cfg), elem_id="sb-no-weights")
                    rescan_empty = gr.Button("Rescan store", size="sm")
                with gr.Row(visible=bool(domains)) as compare_area:
                    with gr.Column(scale=1, min_width=320):
                        image = gr.Image(label="Image (JPEG, PNG, TIFF; grey, RGB, RGBA or 16-bit)", type="filepath",
                                         sources=["upload", "clipboard"], format="png", height=300, elem_id="sb-image")
                        domain = gr.Dropdown([(logic.dataset_label(d), d) for d in domains], value=first,
                                             label="Domain: the dataset the models were trained on")
                        choices, value = model_choices(first)
                        chosen = gr.Dropdown(choices, value=value, multiselect=True, max_choices=logic.MAX_MODELS,
                                             label="Models (up to 4; default: the best of each family)")
                        with gr.Accordion("Ground-truth mask (optional): scores each model", open=False):
                            gt = gr.File(label="Class-index PNG (or colours of the legend)", type="filepath",
                                         file_types=["image", ".tif", ".tiff"], height=90, elem_id="sb-gt")
                        with gr.Row():
                            run = gr.Button("Compare", variant="primary", scale=3, elem_id="sb-compare")
                            rescan = gr.Button("Rescan store", scale=1, size="sm")
                        example_rows = logic.make_examples(workdir / "examples", domains)
                        examples = gr.Examples(example_rows, inputs=[image, gt, domain], label="Examples (click one)",
                                               examples_per_page=8) if example_rows else None
                    with gr.Column(scale=2):
                        status = gr.Markdown("Upload an image (or click an example), pick a domain and models, "
                                             "then press **Compare**.", elem_classes="sb-status", elem_id="sb-status")
                        with gr.Column(visible=False) as results:
                            alpha = gr.Slider(0, 1, value=0.5, step=0.05, label="Mask opacity")
                            overlays = gr.Gallery(label="Overlays", columns=4, rows=1, format=PHOTO_FORMAT, height=260,
                                                  object_fit="contain", elem_id="sb-overlays", preview=False)
                            legend = gr.HTML()
                            table = gr.Dataframe(label="Per model: latency here; scores on the ground truth if given",
                                                 interactive=False, elem_id="sb-results")
                            masks = gr.Gallery(label="Colour masks (and the ground truth)", columns=5, rows=1,
                                               format=MASK_FORMAT, height=220, object_fit="contain", elem_id="sb-masks")
                            with gr.Row():
                                disagreement = gr.Image(label="Disagreement map", format=PHOTO_FORMAT, interactive=False,
                                                        height=300, elem_id="sb-disagreement")
                                with gr.Column():
                                    disagreement_text = gr.Markdown()
                                    instances = gr.Gallery(label="Instances (Mask R-CNN): colours, boxes, scores",
                                                           columns=1, format=PHOTO_FORMAT, visible=False, height="auto",
                                                           elem_id="sb-instances")
                comparison = gr.State(None, time_to_live=UPLOAD_LIFETIME_S)  # for redrawing at another opacity

            with gr.Tab("Leaderboard", id="leaderboard"):
                gr.Markdown(logic.problems_markdown(board.problems), visible=bool(board.problems),
                            elem_id="sb-problems")
                with gr.Row():
                    f_dataset = gr.Dropdown(board.choices("dataset"), value=[], multiselect=True, label="Dataset",
                                            elem_id="sb-filter-dataset")
                    f_family = gr.Dropdown(board.choices("family"), value=[], multiselect=True, label="Family")
                    f_device = gr.Dropdown(board.choices("latency_device"), value=[], multiselect=True,
                                           label="Latency device")
                    f_search = gr.Textbox(label="Search", placeholder="model, backbone, id ...", elem_id="sb-search")
                with gr.Row():
                    sort_by = gr.Dropdown([("dataset, then mIoU", "")] + logic.COLUMN_LABELS, value="",
                                          label="Sort by (or click a header)")
                    descending = gr.Checkbox(True, label="Descending")
                    initial = board.filter()
                    download = gr.DownloadButton("Download CSV", value=str(logic.write_csv(initial, workdir / "csv")))
                with gr.Accordion("Columns", open=False):
                    columns = gr.CheckboxGroup(logic.CHOOSABLE_COLUMNS, value=logic.CHOOSABLE_COLUMNS, label="Show")
                count = gr.Markdown(f"{len(initial)} of {len(board.table)} records", elem_id="sb-count")
                board_table = gr.Dataframe(initial, interactive=False, max_height=520, elem_id="sb-table",
                                           show_search="none", buttons=["fullscreen", "copy"])
                with gr.Row():
                    plot_latency = gr.Plot(label="mIoU vs latency")
                    plot_params = gr.Plot(label="mIoU vs parameters")
                datasets = board.choices("dataset")
                heat_dataset = gr.Dropdown(datasets, value=datasets[0] if datasets else None,
                                           label="Per-class IoU heat map for")
                heat = gr.Plot(label="Per-class IoU")
                with gr.Accordion("Record details: select a row, or paste an id", open=True):
                    record_id = gr.Textbox(label="Record id", elem_id="sb-record-id")
                    details = gr.Markdown("Select a row to see its details.")
                    curve = gr.Plot(label="Training curve")

            with gr.Tab("About", id="about"):
                gr.Markdown(logic.about_markdown(board))

        # ------------------------------------------------------------ events
        compare_outputs = [overlays, masks, disagreement, disagreement_text, legend, table, instances, status,
                           comparison, chosen, results]
        compare_inputs = [image, domain, chosen, alpha, gt]
        domain.change(on_domain, domain, chosen, api_name="models")
        image.upload(on_upload, image, [image, status], preprocess=False, api_name="upload")
        run.click(on_compare, compare_inputs, compare_outputs, preprocess=False, api_name="compare",
                  concurrency_limit=COMPARE_CONCURRENCY, concurrency_id="models")
        if examples is not None:
            examples.load_input_event.then(on_compare, compare_inputs, compare_outputs, preprocess=False, api_name=False,
                                           concurrency_limit=COMPARE_CONCURRENCY, concurrency_id="models")
        alpha.release(on_alpha, [alpha, comparison], [overlays, instances], api_name="redraw")
        gr.on([rescan.click, rescan_empty.click], on_rescan, None, [no_weights, compare_area, domain, chosen],
              api_name=False)

        filters = [f_dataset, f_family, f_device, f_search]
        charts = [plot_latency, plot_params, heat, heat_dataset]
        table_inputs = [*filters, sort_by, descending, columns]
        gr.on([c.change for c in table_inputs], on_filter, table_inputs, [board_table, download, count],
              api_name="filter", trigger_mode="always_last").then(
            on_charts, [*filters, heat_dataset], charts, api_name=False)
        heat_dataset.input(on_charts, [*filters, heat_dataset], charts, api_name="charts")  # user changes only
        demo.load(on_charts, [*filters, heat_dataset], charts, api_name=False)
        board_table.select(on_select, None, [record_id, details, curve], api_name=False)
        record_id.submit(on_details, record_id, [details, curve], api_name="details")

    demo.queue(default_concurrency_limit=DEFAULT_CONCURRENCY, max_size=64)
    demo.segbench = {"cfg": cfg, "board": board, "models": lambda: models, "cache": cache}  # for tests and bench
    return demo


def launch(demo: gr.Blocks, **kwargs):
    """Launch with the app's settings (upload size limit, theme); ``kwargs`` override them."""
    options = {"max_file_size": "50mb", "show_error": True, "theme": gr.themes.Soft(), "css": CSS,
               "footer_links": ["api"], "state_session_capacity": 200}
    options.update(kwargs)
    return demo.launch(**options)


def preload(demo: gr.Blocks) -> None:
    """Load (and warm up) the default models of the first domain, so the first comparison is fast."""
    models = demo.segbench["models"]()
    if not models:
        return
    first = next(iter(models.values()))
    for key in logic.default_selection(first):
        entry = next(e for e in first if e.key == key)
        try:
            demo.segbench["cache"].get(entry)
        except Exception:  # noqa: BLE001 - a model that fails here fails again, with a message, when used
            pass


if __name__ == "__main__":
    # A stopped Space gets SIGTERM: exit through Python so atexit removes the temporary folder.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = build_app()
    launch(app, prevent_thread_lock=True)
    if os.environ.get("SEGBENCH_APP_PRELOAD", "1") != "0":
        threading.Thread(target=preload, args=(app,), daemon=True).start()
    app.block_thread()
