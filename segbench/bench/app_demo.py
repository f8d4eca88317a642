"""The app out of the box: start-up and a four-model comparison with a demo pack, on a quiet machine and on
a busy one (another process spinning on one core), plus ONNX Runtime against eager PyTorch on the same weights.

    python -m segbench.bench.app --demo [--pack DIR] [--records 1000] [--json out.json]

Without ``--pack`` a pack is built from randomly initialised CamVid models (unet_small, fcn8s_lite0,
deeplabv3plus_lite0, unet_lite0; speed does not depend on the weights' values) with the demo-pack command's code.
Targets: app ready (page served: leaderboard loaded and demo models known, which app.py does before serving)
<= 8 s quiet / 12 s busy; a warm comparison of 4 demo models on a 512x512 upload <= 2 s quiet / 3 s busy.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

DEMO_MODELS = ["unet_small", "fcn8s_lite0", "deeplabv3plus_lite0", "unet_lite0"]
DEMO_TARGETS = {"quiet": {"startup_s": 8.0, "compare_s": 2.0}, "busy": {"startup_s": 12.0, "compare_s": 3.0}}


@contextmanager
def busy_core(active: bool):
    """While active: another process spinning on one core (CPU 0 where affinity can be set), as a neighbour on a
    shared 2-core Space would."""
    if not active:
        yield
        return
    code = "import os\ntry:\n    os.sched_setaffinity(0, {0})\nexcept (AttributeError, OSError):\n    pass\nwhile True:\n    pass\n"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.5)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def build_random_pack(work: Path, records: int) -> tuple[Path, Path]:
    """A fake leaderboard of ``records`` records plus DEMO_MODELS (random CamVid weights, steps track) and the demo
    pack built from them in ``<leaderboard>/demo``. Returns (leaderboard, pack)."""
    from ..records.io import write_record
    from ..weights.demo import build_pack
    from .fixtures import bench_record, save_random_model, write_fake_leaderboard

    leaderboard = write_fake_leaderboard(work / "leaderboard", records)
    store = work / "store"
    for i, name in enumerate(DEMO_MODELS):
        run_id = f"d{i:011x}"
        weights, model, info = save_random_model(store, name, {}, dataset="camvid", run_id=run_id, seed=i)
        record = bench_record(i, dataset="camvid", model=name, family=model.family, weights=weights, run_id=run_id,
                              class_names=list(info.class_names))
        record.update(variant=model.variant, task=model.task)
        write_record(record, leaderboard)
    pack = leaderboard / "demo"
    build_pack(leaderboard=leaderboard, store=store, out=pack, models=[f"d{i:011x}" for i in range(len(DEMO_MODELS))],
               examples=False, log=lambda line: None)
    return leaderboard, pack


def measure_compare(pack: Path, image: torch.Tensor, *, repeats: int) -> dict[str, Any]:
    """Cold (loading included) and warm (median) seconds of comparing the pack's models on ``image``."""
    from ..app import compare as logic
    from ..app.catalog import PredictorCache, discover_models
    from ..weights.demo import load_pack

    models = discover_models(Path(tempfile.mkdtemp()), [], demo=load_pack(pack))
    entries = max(models.values(), key=len)[:4]  # the domain with the most models: one per family on CamVid
    cache = PredictorCache(backend="torch")
    t0 = time.perf_counter()
    logic.compare(image, entries, cache)
    cold = time.perf_counter() - t0
    warm, per_model = [], {e.name: [] for e in entries}
    for _ in range(repeats):
        t0 = time.perf_counter()
        cmp = logic.compare(image, entries, cache)
        logic.overlay_panels(cmp, 0.5), logic.mask_panels(cmp), logic.disagreement_panel(cmp)
        warm.append(time.perf_counter() - t0)
        for r in cmp.results:
            per_model[r.entry.name].append(r.latency_ms)
    return {"models": len(entries), "compare_cold_s": round(cold, 3), "compare_s": round(statistics.median(warm), 3),
            "per_model_ms": {k: round(statistics.median(v), 1) for k, v in per_model.items()}}


def measure_onnx(pack: Path, image: torch.Tensor, *, repeats: int) -> dict[str, Any]:
    """End-to-end ms (median) per model: ONNX Runtime vs eager PyTorch as the app runs it here (bf16 where the
    CPU has it, channels_last) and eager fp32 channels_last (a CPU without bf16, e.g. a free Space)."""
    from ..inference.export import OnnxModel, export_onnx
    from ..inference.predict import Predictor
    from ..weights.demo import load_pack
    from ..weights.store import load_model

    def median_ms(predictor) -> float:
        predictor(image)
        times = []
        for _ in range(repeats):
            times.append(predictor(image).latency_ms)
        return round(statistics.median(times), 1)

    rows = {}
    for model in load_pack(pack).models:
        if model["task"] != "semantic":  # ONNX Runtime serves the semantic models (Mask R-CNN stays eager)
            continue
        onnx_path = Path(tempfile.mkdtemp()) / "model.onnx"  # never beside the pack's files
        export_onnx(model["folder"], out=onnx_path, parity=False)
        torch_model, meta = load_model(model["folder"])
        onnx = Predictor.from_model(OnnxModel.like(onnx_path, torch_model), meta)
        fast = Predictor(model["folder"])
        fp32 = Predictor(model["folder"])
        fp32.cpu_bf16, fp32.precision = False, "fp32"
        row = {"eager_app_ms": median_ms(fast), "eager_app_precision": fast.precision,
               "eager_fp32_ms": median_ms(fp32), "onnx_ms": median_ms(onnx)}
        row["onnx_vs_eager_app"] = round(row["onnx_ms"] / row["eager_app_ms"], 2)
        row["onnx_vs_eager_fp32"] = round(row["onnx_ms"] / row["eager_fp32_ms"], 2)
        rows[model["name"]] = row
    return rows


def run_demo(*, pack: Path | None, records: int, repeats: int, loads: list[str], onnx: bool) -> dict[str, Any]:
    from ..device import keep_freed_memory
    from .startup import measure_startup

    keep_freed_memory()  # as app.py does: the comparisons below run in this process, as in the app's
    work = Path(tempfile.mkdtemp(prefix="segbench-bench-demo-"))
    if pack is None:
        leaderboard, pack = build_random_pack(work, records)
    else:
        leaderboard = pack.parent
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 512, 512), dtype=torch.uint8, generator=generator)
    result: dict[str, Any] = {"pack": str(pack), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    for load in loads:
        with busy_core(load == "busy"):
            row = {"startup_s": round(measure_startup(leaderboard, work / "empty-store"), 2)}
            row.update(measure_compare(pack, image, repeats=repeats))
            if onnx and load == "quiet":
                row["onnx"] = measure_onnx(pack, image, repeats=repeats)
        row["pass"] = {k: row[k] <= v for k, v in DEMO_TARGETS[load].items()}
        result[load] = row
    result["targets"] = DEMO_TARGETS
    return result
