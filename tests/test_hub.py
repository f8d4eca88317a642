"""Hub push / pull / app mode against a fake Hub (tests/hub_server.py) with the real huggingface_hub client.

No network: HF_ENDPOINT points at a server on 127.0.0.1 started here; Xet is disabled so uploads take the
LFS batch path the fake server implements.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from segbench.records.columns import BOUNDARY_CONVENTION, MACS_CONVENTION
from segbench.weights.meta import WeightsMeta
from segbench.weights.store import LocalStore, sha256_file
from torch import nn

from segbench import hub
from segbench.cli.hub import register
from segbench.errors import SegbenchError
from segbench.hub import cards, names
from segbench.hub import http as hub_http
from segbench.hub.pull import _VERIFIED
from segbench.hub.push import PushTarget
from segbench.records import io as records

try:  # tests/ is on sys.path (pytest's default rootdir-less layout) or a package
    from hub_server import FakeHub
except ImportError:  # pragma: no cover
    from .hub_server import FakeHub

TOKEN = "hf_SeCrEt0123456789abcdefWRITE"
READ_TOKEN = "hf_SeCrEt0123456789abcdefREAD"
OWNER = "alice"


# ---------------------------------------------------------------------------------------------------------------
# Fixtures: fake Hub, records with real safetensors weights
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture
def fake(tmp_path, monkeypatch):
    from huggingface_hub import constants
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    server = FakeHub(tokens={TOKEN: (OWNER, "write"), READ_TOKEN: (OWNER, "read")})
    url = server.start()
    home = tmp_path / "hf"
    for key, value in {"HF_TOKEN": TOKEN, "HF_ENDPOINT": url, "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1",
                       "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv(hub.ENV_RESULTS, raising=False)
    monkeypatch.delenv(hub.ENV_MODELS, raising=False)
    # huggingface_hub read these at import time (maybe imported by another test first): point them here too.
    for name, value in {"ENDPOINT": url, "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
                        "HF_HUB_CACHE": str(home / "hub"), "HF_TOKEN_PATH": str(home / "token"),
                        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"), "HF_HUB_DISABLE_XET": True,
                        "HF_HUB_DISABLE_TELEMETRY": True, "HF_HUB_OFFLINE": False}.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(hub_http, "BACKOFF_S", 0.0)
    _VERIFIED.clear()
    bars_were_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    yield server
    if not bars_were_disabled:
        enable_progress_bars()
    server.stop()


@functools.cache
def _registered(name: str) -> bool:
    try:
        from segbench.models import MODELS
    except Exception:  # the models package may not be complete yet
        return False
    return name in MODELS


def _net(model: str) -> nn.Module:
    """The registered model when there is one (so load_model can rebuild it), else a toy network."""
    if _registered(model):
        from segbench.models import build_model

        return build_model(model, num_classes=3)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 3, 1))


def _record(store: LocalStore, model: str, dataset: str, run_id: str, miou: float, *, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    net = _net(model)
    meta = WeightsMeta(model=model, model_args={}, num_classes=3, in_channels=3, class_names=("bg", "a", "b"),
                       mean=(0.5,) * 3, std=(0.25,) * 3, ignore_index=255, dataset=dataset, palette=((0, 0, 0),) * 3,
                       eval_size=None, task="semantic")
    weights = store.save(net, meta, dataset, model, run_id)
    return {
        "schema": 1, "id": run_id, "model": model, "family": "unet", "variant": "same-8", "task": "semantic",
        "dataset": dataset, "split": "val", "num_classes": 3, "class_names": ["bg", "a", "b"],
        "metrics": {"pixel_accuracy": 0.9, "mean_pixel_accuracy": 0.8, "miou": miou, "fwiou": 0.85, "mean_dice": 0.7,
                    "iou": {"bg": miou + min(miou, 1 - miou) / 2, "a": miou - min(miou, 1 - miou) / 2, "b": None}, "accuracy": {"bg": 0.95, "a": 0.6, "b": None},
                    "dice": {"bg": 0.94, "a": 0.66, "b": None}, "absent": ["b"], "mask_ap": None, "box_ap": None,
                    "coco": None, "score_threshold": None},
        "efficiency": {"params": 150, "gflops": 0.01, "flops_input": [3, 32, 32], "receptive_field": 5, "output_stride": 1,
                       "latency": {"device": "cpu", "batch_size": 1, "image_size": [32, 32], "ms": 1.5, "ms_std": 0.1}},
        "training": {"epochs": 2, "seconds": 3.0, "images_per_s": 40.0, "device": "cpu",
                     "history": [{"epoch": 1, "loss": 1.0, "miou": 0.3, "lr": 0.01}]},
        "config": {"model": model, "dataset": dataset, "epochs": 2, "lr": 0.01, "crop_size": [32, 32]},
        "seed": seed, "versions": {"python": "3.11", "torch": torch.__version__, "torchvision": "x", "segbench": "0.1.0"},
        "git_commit": None, "date": "2025-01-01T00:00:00+00:00", "weights": weights,
        "hardware": {"device": "cpu", "cpu": "test cpu", "cpu_count": 2},
    }


@pytest.fixture
def local(tmp_path):
    """A leaderboard with two runs (unet_small on synthetic and on camvid) and their weights."""
    store = LocalStore(tmp_path / "store")
    board = tmp_path / "leaderboard"
    recs = [_record(store, "unet_small", "synthetic", "aaaaaaaaaaaa", 0.61),
            _record(store, "unet_small", "camvid", "bbbbbbbbbbbb", 0.42, seed=1)]
    for r in recs:
        records.write_record(r, board)
    return board, store, recs


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="segbench")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def _push(board, store, *extra: str) -> int:
    return _cli("push", "--leaderboard", str(board), "--store", str(store.root), "--owner", OWNER, *extra)


def _snapshot(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


SYN = f"{OWNER}/segbench-unet_small-synthetic"
CAM = f"{OWNER}/segbench-unet_small-camvid"
RESULTS = f"{OWNER}/segbench-results"


# ---------------------------------------------------------------------------------------------------------------
# Push
# ---------------------------------------------------------------------------------------------------------------

def test_push_creates_repos_files_and_card_metadata(fake, local, capsys):
    from huggingface_hub import ModelCard

    board, store, recs = local
    before = _snapshot(board, store.root)
    assert _push(board, store) == 0
    assert _snapshot(board, store.root) == before  # a push only reads local files

    files = fake.files(CAM)
    run = "runs/bbbbbbbbbbbb"
    assert {f"{run}/model.safetensors", f"{run}/model.json", f"{run}/record.json", f"{run}/config.yaml",
            "model.safetensors", "model.json", "record.json", "README.md", ".gitattributes"} == set(files)
    assert yaml.safe_load(files[f"{run}/config.yaml"]) == recs[1]["config"]  # what 'segbench train' reads
    weights = store.run_dir("camvid", "unet_small", "bbbbbbbbbbbb") / "model.safetensors"
    assert files["model.safetensors"] == weights.read_bytes() == files[f"{run}/model.safetensors"]
    assert fake.repo(CAM).head.files["model.safetensors"].lfs  # went through the LFS batch + upload path
    assert fake.count("POST", r"\.git/info/lfs/objects/batch$") >= 1 and fake.count("PUT", r"^/lfs-upload/") >= 1
    pushed = json.loads(files[f"{run}/record.json"])
    assert pushed["weights"]["uri"] == f"hf://{CAM}/{run}" and pushed["weights"]["sha256"] == recs[1]["weights"]["sha256"]
    records.validate_record(pushed)

    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "pytorch" and card.data.datasets == ["camvid"]
    assert card.data.license == "cc-by-nc-4.0"
    assert {"segbench", "unet_small", "camvid"} <= set(card.data.tags)
    miou = next(r for r in card.data.eval_results if r.metric_type == "mean_iou")
    assert miou.metric_value == 0.42 and miou.dataset_type == "camvid" and miou.dataset_split == "val"
    assert miou.task_type == "image-segmentation"
    assert "model-index" in files["README.md"].decode()
    text = card.text
    for expected in ("| mIoU | 0.4200 |", "CC BY-NC 4.0", f"python -m segbench train segbench-unet_small-camvid/{run}/config.yaml",
                     f"hf download {CAM} {run}/config.yaml", "test cpu", "training time"):
        assert expected in text

    # results dataset repo: one JSON per record + the aggregated table
    results = fake.files(RESULTS, "dataset")
    assert {"records/camvid/unet_small--bbbbbbbbbbbb.json", "records/synthetic/unet_small--aaaaaaaaaaaa.json",
            "leaderboard.csv", "README.md"} <= set(results)
    table = results["leaderboard.csv"].decode().splitlines()
    assert len(table) == 3 and "weights_uri" in table[0] and f"hf://{SYN}/runs/aaaaaaaaaaaa" in "\n".join(table)
    # one commit per repo (after the repo's initial commit), with a meaningful message
    for repo_id, repo_type in ((SYN, "model"), (CAM, "model"), (RESULTS, "dataset")):
        commits = fake.repo(repo_id, repo_type).commits
        assert len(commits) == 2 and commits[-1].message.startswith("segbench: ")
    assert "unet_small on camvid" in fake.repo(CAM).head.message
    assert "2 new" in fake.repo(RESULTS, "dataset").head.message
    out = capsys.readouterr().out
    assert "3 repo(s) updated, 0 unchanged, 0 failed" in out


def test_second_push_of_same_files_makes_no_commit(fake, local, capsys):
    board, store, _ = local
    assert _push(board, store) == 0
    commits = {key: len(repo.commits) for key, repo in fake.repos.items()}
    calls = len(fake.calls)
    assert _push(board, store) == 0
    assert {key: len(repo.commits) for key, repo in fake.repos.items()} == commits
    later = fake.calls[calls:]
    assert not [c for c in later if "/commit/" in c[1] or "/preupload/" in c[1] or "lfs" in c[1]]
    assert "0 repo(s) updated, 3 unchanged" in capsys.readouterr().out


def test_changed_run_updates_only_what_changed(fake, local, tmp_path):
    board, store, recs = local
    assert _push(board, store) == 0
    better = _record(store, "unet_small", "camvid", "cccccccccccc", 0.55, seed=3)
    records.write_record(better, board)
    assert _push(board, store, "--dataset", "camvid") == 0
    files = fake.files(CAM)
    assert "runs/bbbbbbbbbbbb/model.safetensors" in files and "runs/cccccccccccc/model.safetensors" in files
    assert json.loads(files["record.json"])["id"] == "cccccccccccc"  # the best run moves to the root
    commit = fake.repo(CAM).head
    assert "runs/cccccccccccc/model.safetensors" in commit.description
    assert "runs/bbbbbbbbbbbb" not in commit.description  # unchanged files are not re-sent
    assert len(fake.repo(SYN).commits) == 2  # not selected: untouched
    results = fake.files(RESULTS, "dataset")
    assert len(results["leaderboard.csv"].decode().splitlines()) == 4  # the table covers remote records too


def test_commit_failure_is_reported_and_rerun_completes(fake, local, capsys):
    board, store, _ = local
    before = _snapshot(board, store.root)
    fake.fail("POST", rf"/api/models/{CAM}/commit/", status=500, times=100)
    assert _push(board, store) == 1
    out = capsys.readouterr().out
    assert f"FAILED     {CAM}" in out and "HTTP 500" in out and "rerun 'python -m segbench push'" in out
    assert f"pushed     {SYN}" in out and f"pushed     {RESULTS}" in out
    assert fake.count("POST", rf"/api/models/{CAM}/commit/") == hub_http.ATTEMPTS  # retried with backoff, then gave up
    assert "records/camvid/unet_small--bbbbbbbbbbbb.json" not in fake.files(RESULTS, "dataset")  # no dangling URI
    assert _snapshot(board, store.root) == before

    fake.clear_failures()
    assert _push(board, store) == 0
    out = capsys.readouterr().out
    assert f"pushed     {CAM}" in out and f"unchanged  {SYN}" in out and f"pushed     {RESULTS}" in out
    assert "records/camvid/unet_small--bbbbbbbbbbbb.json" in fake.files(RESULTS, "dataset")
    assert len(fake.repo(CAM).commits) == 2


@pytest.mark.parametrize("fault", [
    {"status": 503},
    {"status": 429, "headers": {"Retry-After": "0"}},
    {"drop": True},
])
def test_transient_errors_are_retried(fake, local, fault, capsys):
    board, store, _ = local
    fake.fail("POST", rf"/api/models/{SYN}/commit/", times=1, **fault)
    assert _push(board, store) == 0
    assert "retrying" in capsys.readouterr().out
    assert len(fake.repo(SYN).commits) == 2


def test_failure_creating_results_repo_keeps_model_repos(fake, local, capsys):
    board, store, _ = local
    fake.fail("POST", r"/api/repos/create", status=500, times=100)
    assert _push(board, store) == 1
    assert not fake.repos
    fake.clear_failures()
    assert _push(board, store) == 0
    assert len(fake.repos) == 3


# ---------------------------------------------------------------------------------------------------------------
# Pull
# ---------------------------------------------------------------------------------------------------------------

def test_pull_verifies_sha256_and_rejects_tampered_weights(fake, local, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    board, store, recs = local
    assert _push(board, store) == 0
    fresh_board, fresh_store = tmp_path / "pulled", LocalStore(tmp_path / "pulled-store")
    assert _cli("pull", RESULTS, "--leaderboard", str(fresh_board), "--store", str(fresh_store.root), "--weights") == 0
    pulled, problems = records.load_records(fresh_board)
    assert not problems and len(pulled) == 2
    for r in pulled:
        assert r["weights"]["uri"] == f"local:{r['dataset']}/{r['model']}--{r['id']}"
        weights = fresh_store.resolve(r["weights"]["uri"]) / "model.safetensors"
        assert sha256_file(weights) == r["weights"]["sha256"]
    if _registered("unet_small"):  # the pulled folder rebuilds the model
        from segbench.weights.store import load_model

        model, meta = load_model(pulled[0]["weights"]["uri"], store=fresh_store)
        assert meta.dataset == pulled[0]["dataset"] and not model.training

    # A corrupted download: the server serves flipped bytes under the right ETag. Fresh cache, fresh store.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache2"))
    fake.tamper(CAM, "runs/bbbbbbbbbbbb/model.safetensors")
    other_board, other_store = tmp_path / "pulled2", LocalStore(tmp_path / "pulled2-store")
    capsys.readouterr()
    assert _cli("pull", "--results-repo", RESULTS, "--leaderboard", str(other_board), "--store", str(other_store.root), "--weights") == 1
    out = capsys.readouterr().out
    assert "does not match the record's" in out and "discarded" in out
    assert not other_store.run_dir("camvid", "unet_small", "bbbbbbbbbbbb").exists()  # rejected, not written
    assert other_store.has("synthetic", "unet_small", "aaaaaaaaaaaa")
    by_dataset = {r["dataset"]: r for r in records.load_records(other_board)[0]}
    assert by_dataset["camvid"]["weights"]["uri"].startswith("hf://")  # scores kept, weights stay on the Hub
    _assert_cache_clean(tmp_path / "cache2")  # the bad copy is not left for the app to use


def _assert_cache_clean(cache: Path) -> None:
    """Every LFS blob in the HF cache is named by its sha256: none may hold other bytes."""
    blobs = [p for p in cache.rglob("blobs/*") if len(p.name) == 64]
    for blob in blobs:
        assert sha256_file(blob) == blob.name, blob


def test_pull_never_overwrites_a_different_local_run(fake, local, tmp_path, capsys):
    board, store, recs = local
    assert _push(board, store) == 0
    # Same id, retrained locally (other weights), not pushed yet.
    changed = _record(store, "unet_small", "camvid", "bbbbbbbbbbbb", 0.43, seed=7)
    records.write_record(changed, board)
    before = _snapshot(board, store.root)
    assert _cli("pull", "--results-repo", RESULTS, "--leaderboard", str(board), "--store", str(store.root), "--weights") == 1
    assert "kept it" in capsys.readouterr().out
    assert _snapshot(board, store.root) == before


def test_pull_without_weights_keeps_hub_uris_and_filters(fake, local, tmp_path):
    board, store, _ = local
    assert _push(board, store) == 0
    out_board = tmp_path / "only-camvid"
    assert _cli("pull", "--owner", OWNER, "--leaderboard", str(out_board), "--store", str(tmp_path / "empty"), "--dataset", "camvid") == 0
    pulled, _ = records.load_records(out_board)
    assert [r["dataset"] for r in pulled] == ["camvid"]
    assert pulled[0]["weights"]["uri"] == f"hf://{CAM}/runs/bbbbbbbbbbbb"


# ---------------------------------------------------------------------------------------------------------------
# App mode
# ---------------------------------------------------------------------------------------------------------------

def test_app_hub_mode_reads_records_and_weights_through_the_server(fake, local, tmp_path, monkeypatch):
    """What the app does with $SEGBENCH_HUB_RESULTS / $SEGBENCH_HUB_MODELS: records, then verified weights."""
    board, store, recs = local
    assert _push(board, store) == 0
    found, problems = hub.load_hub_records(RESULTS)
    assert not problems
    assert sorted(r["dataset"] for r in found) == ["camvid", "synthetic"]
    assert all(r["weights"]["uri"].startswith("hf://") for r in found)
    cam = next(r for r in found if r["dataset"] == "camvid")
    folder = hub.fetch_weights(hub.hub_weights_uri(cam), cam["weights"]["sha256"])
    assert sha256_file(folder / "model.safetensors") == recs[1]["weights"]["sha256"]
    assert json.loads((folder / "model.json").read_text())["dataset"] == "camvid"
    # A local record (local: URI) finds its run in the model repos named by $SEGBENCH_HUB_MODELS.
    monkeypatch.setenv(hub.ENV_MODELS, OWNER)
    assert hub.hub_weights_uri(recs[1]) == cam["weights"]["uri"] == f"hf://{CAM}/runs/bbbbbbbbbbbb"
    assert hub.hub_weights_uri(recs[1], models=OWNER + "/segbench-{model}-{dataset}") == cam["weights"]["uri"]

    # Tampered on the server: rejected, and the bad copy is not kept in the cache.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache3"))
    fake.tamper(CAM, "runs/bbbbbbbbbbbb/model.safetensors")
    with pytest.raises(SegbenchError, match="does not match"):
        hub.fetch_weights(cam["weights"]["uri"], cam["weights"]["sha256"])
    _assert_cache_clean(tmp_path / "cache3")
    fake.tampered.clear()
    good = hub.fetch_weights(cam["weights"]["uri"], cam["weights"]["sha256"])
    assert sha256_file(good / "model.safetensors") == cam["weights"]["sha256"]


def test_unreachable_hub_is_one_line_for_the_app(fake, monkeypatch):
    """The app shows local records with this line when the results repo cannot be read."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(SegbenchError, match="cannot read the results") as exc:
        hub.load_hub_records(RESULTS)
    assert "\n" not in str(exc.value) and TOKEN not in str(exc.value)


# ---------------------------------------------------------------------------------------------------------------
# Auth, names, secrecy
# ---------------------------------------------------------------------------------------------------------------

def test_missing_or_read_only_token_gets_one_line(fake, local, monkeypatch):
    board, store, _ = local
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(SegbenchError, match="token not found") as missing:
        _push(board, store)
    monkeypatch.setenv("HF_TOKEN", READ_TOKEN)
    with pytest.raises(SegbenchError, match="read-only") as read_only:
        _push(board, store)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token_xyz")
    with pytest.raises(SegbenchError, match="rejected") as invalid:
        _push(board, store)
    for exc in (missing, read_only, invalid):
        assert "\n" not in str(exc.value) and READ_TOKEN not in str(exc.value) and "hf_not_a_real" not in str(exc.value)
    assert not fake.repos and not [c for c in fake.calls if "/api/repos/create" in c[1]]


def test_token_without_rights_on_namespace_is_reported_per_repo(fake, local, capsys):
    board, store, _ = local
    assert _cli("push", "--leaderboard", str(board), "--store", str(store.root), "--owner", "bob") == 1
    out = capsys.readouterr().out
    assert "no write access" in out and "bob/segbench-unet_small-camvid" in out


def test_token_never_appears_in_output_logs_or_files(fake, local, tmp_path, capsys, caplog):
    board, store, _ = local
    caplog.set_level(logging.DEBUG)
    fake.fail("POST", rf"/api/models/{SYN}/commit/", status=503, times=1)
    assert _push(board, store) == 0
    assert _cli("pull", "--results-repo", RESULTS, "--leaderboard", str(tmp_path / "p"), "--store", str(tmp_path / "s"), "--weights") == 0
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err + caplog.text
    for path in [*tmp_path.rglob("*")]:
        if path.is_file() and not path.is_symlink():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert not any(TOKEN.encode() in body for body in fake.bodies)  # never sent as content
    assert any(f"Bearer {TOKEN}" in h for h in fake.headers_seen)  # only as the auth header


def test_repo_names_are_sanitised_and_validated_before_any_request(fake, tmp_path):
    assert names.model_repo_id("U-Net small/v2", "cam vid", owner="alice") == "alice/segbench-U-Net-small-v2-cam-vid"
    assert names.model_repo_id("a--b", "c..d", owner="o", template="{owner}/{model}_{dataset}") == "o/a-b_c.d"
    with pytest.raises(SegbenchError, match="owner/name"):
        names.model_repo_id("m", "d", owner="alice", template="{model}-{dataset}")
    with pytest.raises(SegbenchError, match="placeholder"):
        names.model_repo_id("m", "d", owner="alice", template="{owner}/{nope}")
    with pytest.raises(SegbenchError, match="96"):
        names.model_repo_id("m" * 100, "d", owner="alice")
    with pytest.raises(SegbenchError):
        names.parse_hf_uri("hf://alice/../etc")
    assert names.parse_hf_uri("hf://alice/repo/runs/abc") == ("alice/repo", "runs/abc")
    store = LocalStore(tmp_path / "s")
    record = _record(store, "unet_small", "camvid", "dddddddddddd", 0.5)
    with pytest.raises(SegbenchError, match="--owner"):
        hub.push_records([record], store=store, target=PushTarget(owner="bad owner!"))
    assert not fake.calls


def test_model_card_for_unknown_dataset_and_instance_metrics(tmp_path):
    from huggingface_hub import ModelCard

    record = _record(LocalStore(tmp_path), "maskrcnn_r50", "folder", "eeeeeeeeeeee", 0.3)
    record["task"], record["metrics"]["mask_ap"] = "instance", 0.25
    card = ModelCard(str(cards.model_card(record, repo_id="o/segbench-maskrcnn_r50-folder", runs=["x1"])))
    assert card.data.license is None and "unknown" in card.text
    assert {r.metric_type for r in card.data.eval_results} >= {"mean_iou", "mask_ap"}
    assert "`x1`" in card.text and "`eeeeeeeeeeee`" in card.text


def test_push_one_for_run_push(fake, tmp_path):
    store = LocalStore(tmp_path / "store")
    record = _record(store, "unet_small", "synthetic", "ffffffffffff", 0.5)
    assert hub.check_push_access(owner=OWNER) == OWNER
    assert hub.push_one(record, store=store, target=PushTarget(owner=OWNER), log=lambda line: None).ok
    assert "runs/ffffffffffff/model.safetensors" in fake.files(SYN)
    assert "records/synthetic/unet_small--ffffffffffff.json" in fake.files(RESULTS, "dataset")
    fake.fail("POST", r"/commit/", status=500, times=100)
    record2 = _record(store, "unet_small", "synthetic", "999999999999", 0.6)
    lines = []
    report = hub.push_one(record2, store=store, target=PushTarget(owner=OWNER), log=lines.append)  # the suite goes on
    assert not report.ok and SYN in report.failed and "rerun 'python -m segbench push'" in lines[-1]
    with pytest.raises(SegbenchError, match="saved locally"):
        hub.push_one(record2, store=store, target=PushTarget(owner=OWNER), strict=True, log=lambda line: None)


def test_run_push_end_to_end_through_the_cli(fake, tmp_path, monkeypatch):
    """`segbench run --push`: token checked first, then each record is pushed as it completes."""
    import yaml

    from segbench.cli import main

    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"common": {
        "model": "unet_small", "model_args": {"base_channels": 4, "depth": 2}, "dataset": "synthetic",
        "dataset_args": {"size": 32, "num_images": 8}, "epochs": 1, "batch_size": 4, "crop_size": 32,
        "latency_runs": 1}, "runs": [{}]}))
    argv = ["run", str(suite), "--leaderboard", str(tmp_path / "board"), "--store", str(tmp_path / "store"),
            "--owner", OWNER, "--no-progress", "--push"]
    monkeypatch.setenv("HF_TOKEN", READ_TOKEN)
    assert main(argv) == 2  # a read-only token fails before any training
    assert not (tmp_path / "board").exists()
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert main(argv) == 0
    files = fake.files(RESULTS, "dataset")
    assert any(f.startswith("records/synthetic/unet_small--") for f in files)


# ---------------------------------------------------------------------------------------------------------------
# Cards: every number with how it was measured; dataset terms from DatasetInfo
# ---------------------------------------------------------------------------------------------------------------

def _schema2(record: dict) -> dict:
    """The schema-2 keys (contract.md) on top of a schema-1 test record."""
    record = json.loads(json.dumps(record))
    record["schema"], record["hardware_class"], record["group"] = 2, "cpu", "0123456789ab"
    record["metrics"].update(miou_ci=[0.3811, 0.4602], ci={"method": "bootstrap over images, percentile",
                             "level": 0.95, "resamples": 1000, "seed": 0},
                             boundary_iou={"bg": 0.7, "a": 0.25, "b": None}, mean_boundary_iou=0.475,
                             boundary_dilation_ratio=0.02, max_dets=None)
    record["test_metrics"] = {**record["metrics"], "miou": 0.39, "miou_ci": [0.35, 0.43]}
    record["selection"] = {"checkpoint": "holdout", "holdout_images": 12, "holdout_seed": 0, "selected_epoch": 2}
    record["efficiency"] = {
        "params": 150, "gmacs": 0.123, "gmacs_aux": None, "macs_input": [3, 32, 32], "receptive_field": 5,
        "macs_convention": "1 multiply-add = 1 MAC (torchvision/fvcore 'GFLOPS'); aux head not counted",
        "output_stride": 1,
        "latency": {"device": "cpu", "batch_size": 1, "image_size": [32, 32], "precision": "bf16",
                    "forward_ms": 1.25, "forward_ms_std": 0.05, "end_to_end_ms": 2.5, "end_to_end_ms_std": 0.1,
                    "forward_scope": "model forward only, input already normalised on the device",
                    "end_to_end_scope": "resize + normalise + forward + argmax/paste + copy back to host; "
                                        "decode excluded", "inputs": "random", "mean_detections": None}}
    record["training"].update(steps=8, budget={"epochs": 2, "steps": 8}, track="steps", capped=False,
                              loader="host", world_size=1)
    record["pretrained"] = {"source": "torchvision:ResNet50_Weights.IMAGENET1K_V1", "sha256": "ab" * 32}
    return record


def test_model_card_states_conventions_next_to_the_numbers(tmp_path):
    record = _schema2(_record(LocalStore(tmp_path), "unet_small", "camvid", "aaaaaaaaaaaa", 0.42))
    card = cards.model_card(record, repo_id=CAM)
    text = card.text
    for expected in (
        f"| GMACs | 0.1230 | {MACS_CONVENTION}; input 3x32x32",
        "| mIoU | 0.4200 | 95% CI [0.3811, 0.4602], bootstrap over images, percentile, 1000 resamples |",
        "| latency, forward (ms) | 1.25 ± 0.05 | model forward only, input already normalised on the device |",
        "| latency, end to end (ms) | 2.50 ± 0.10 | resize + normalise + forward",
        "device cpu, batch 1, 32x32, bf16, inputs: random",
        f"| Boundary IoU (mean) | 0.4750 | {BOUNDARY_CONVENTION}; band 2% of the image diagonal |",
        "best mIoU on a holdout slice of train (12 images, seed 0), epoch 2",
        "Scores are on the `val` split", "`cpu` hardware", "| hardware class | cpu |",
        "On the `test` split", "| mIoU | 0.3900 | 95% CI [0.3500, 0.4300]",
        "| optimizer steps | 8 |", "| budget | 2 epochs, 8 steps |", "| capped | no |",
        "`torchvision:ResNet50_Weights.IMAGENET1K_V1` (sha256 `" + "ab" * 32 + "`)",
    ):
        assert expected in text, expected
    assert "None" not in text and "GMACs with aux head" not in text  # unknown values are left out
    assert "mean detections" not in text and "GFLOPs" not in text
    splits = {(r.metric_type, r.dataset_split) for r in card.data.eval_results}
    assert {("mean_iou", "val"), ("mean_iou", "test"), ("boundary_iou", "val")} <= splits


def test_model_card_reads_schema_1_records(tmp_path):
    record = _record(LocalStore(tmp_path), "unet_small", "camvid", "aaaaaaaaaaaa", 0.42)  # gflops 0.01, ms 1.5
    text = cards.model_card(record, repo_id=CAM).text
    assert "| GMACs | 0.0050 | GFLOPs / 2 of a schema-1 record" in text
    assert "| latency, forward (ms) | 1.50 ± 0.10 | batch-1 forward through the predict path (schema-1 record) |" in text
    assert "| mIoU | 0.4200 |  |" in text  # no CI recorded: none invented
    for absent in ("None", "95% CI", "end to end", "holdout", "hardware class", "Pretrained backbone"):
        assert absent not in text, absent


def test_instance_card_gives_mask_ap_with_max_dets(tmp_path):
    record = _schema2(_record(LocalStore(tmp_path), "maskrcnn_r50", "balloon", "eeeeeeeeeeee", 0.3))
    record["task"] = "instance"
    record["metrics"].update(mask_ap=0.25, box_ap=0.3, max_dets=[1, 10, 100])
    record["efficiency"]["latency"].update(mean_detections=3.5, inputs="val images [0..7] (8)")
    text = cards.model_card(record, repo_id="o/segbench-maskrcnn_r50-balloon").text
    assert "| mask AP | 0.2500 | COCO AP@[.50:.95], 101 recall points, maxDets 100 |" in text
    assert "| mean detections per image | 3.50 |" in text and "inputs: val images \\[0..7\\] (8)" in text


def test_dataset_terms_and_names_come_from_dataset_info(tmp_path, monkeypatch):
    from segbench.data import DatasetInfo, dataset_info

    camvid = dataset_info("camvid")
    assert cards.data_terms("camvid") == (camvid.hub_license, f"{camvid.license}. Citation: {camvid.citation}")
    assert cards.data_terms("balloon")[0] == "mit" and "Abdulla 2017" in cards.data_terms("balloon")[1]
    assert cards.data_terms("isbi2012")[0] is None and "Cardona" in cards.data_terms("isbi2012")[1]
    assert cards.data_terms("coco") == (None, cards.UNKNOWN_TERMS)  # no static info: its terms come with the files
    assert cards.dataset_label("coco") == "coco" and cards.dataset_label("camvid") == camvid.label

    info = DatasetInfo(name="camvid", num_classes=3, class_names=("bg", "a", "b"), license="Terms X",
                       hub_license="other", display_name="Street Set", citation="Someone 2024")
    monkeypatch.setattr(cards, "dataset_info", lambda name: info)
    card = cards.model_card(_record(LocalStore(tmp_path), "unet_small", "camvid", "aaaaaaaaaaaa", 0.4), repo_id=CAM)
    assert card.data.license == "other" and card.text.lstrip().startswith("# unet_small on Street Set")
    assert "Street Set: Terms X. Citation: Someone 2024. These weights" in card.text
    assert next(iter(card.data.eval_results)).dataset_name == "Street Set"


def test_leaderboard_csv_and_results_card_carry_the_convention_columns(tmp_path):
    import csv
    import io

    store = LocalStore(tmp_path)
    new = _schema2(_record(store, "unet_small", "camvid", "aaaaaaaaaaaa", 0.42))
    old = _record(store, "unet_small", "camvid", "bbbbbbbbbbbb", 0.40)  # schema 1
    rows = list(csv.DictReader(io.StringIO(cards.results_table([old, new]).decode())))
    assert [r["id"] for r in rows] == ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]  # best mIoU first
    first, second = rows
    assert float(first["gmacs"]) == 0.123 and float(second["gmacs"]) == 0.005
    assert float(first["forward_ms"]) == 1.25 and float(first["end_to_end_ms"]) == 2.5
    assert float(second["forward_ms"]) == 1.5 and second["end_to_end_ms"] == ""
    assert first["split"] == "test" and (float(first["miou_ci_low"]), float(first["miou_ci_high"])) == (0.35, 0.43)
    assert (float(first["val_miou_ci_low"]), float(first["val_miou_ci_high"])) == (0.3811, 0.4602)  # val beside
    assert first["hardware_class"] == "cpu" and first["selection"] == "holdout"
    assert float(first["mean_boundary_iou"]) == 0.475 and first["pretrained_sha256"] == "ab" * 32
    assert "path" not in first and first["weights_uri"].startswith("local:")
    text = cards.results_card([old, new], repo_id=RESULTS)
    assert "| 0.4200 [0.3811, 0.4602] |" in text and "## Columns" in text and "None" not in text
    assert "CamVid (street scenes)" in text and "torchvision/fvcore" in text


def test_cli_help_does_not_import_huggingface_hub():
    """`--help` stays fast: registering push/pull loads nothing heavy."""
    import subprocess
    import sys

    code = "import sys, segbench.cli as c; c.build_parser(); assert 'huggingface_hub' not in sys.modules, 'hub'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_pull_stays_the_function_when_its_module_binds_the_name():
    """Loading a submodule sets the package attribute of its name; the lazily exported ``pull`` must survive it."""
    import sys

    from segbench.hub.pull import pull as direct

    setattr(hub, "pull", sys.modules["segbench.hub.pull"])  # what the import system does on a first load
    assert hub.pull is direct and callable(hub.pull)
    from segbench.hub import pull

    assert pull is direct
