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
from torch import nn

from segbench import hub, hub_cli, records
from segbench.errors import SegbenchError
from segbench.store import LocalStore, sha256_file

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
    monkeypatch.setattr(hub, "BACKOFF_S", 0.0)
    hub._VERIFIED.clear()
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
    meta = {"model": model, "model_args": {}, "num_classes": 3, "in_channels": 3, "class_names": ["bg", "a", "b"],
            "mean": [0.5] * 3, "std": [0.25] * 3, "ignore_index": 255, "dataset": dataset, "palette": [[0, 0, 0]] * 3,
            "eval_size": None, "task": "semantic"}
    weights = store.save(net, meta, dataset, model, run_id)
    return {
        "schema": 1, "id": run_id, "model": model, "family": "unet", "variant": "same-8", "task": "semantic",
        "dataset": dataset, "split": "val", "num_classes": 3, "class_names": ["bg", "a", "b"],
        "metrics": {"pixel_accuracy": 0.9, "mean_pixel_accuracy": 0.8, "miou": miou, "fwiou": 0.85, "mean_dice": 0.7,
                    "iou": {"bg": 0.9, "a": 0.5, "b": None}, "accuracy": {"bg": 0.95, "a": 0.6, "b": None},
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
    hub_cli.register(parser.add_subparsers(dest="command", required=True))
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
    assert fake.count("POST", rf"/api/models/{CAM}/commit/") == hub.ATTEMPTS  # retried with backoff, then gave up
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
        from segbench.store import load_model

        model, meta = load_model(pulled[0]["weights"]["uri"], store=fresh_store)
        assert meta["dataset"] == pulled[0]["dataset"] and not model.training

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
    board, store, recs = local
    assert _push(board, store) == 0
    monkeypatch.setenv(hub.ENV_RESULTS, RESULTS)
    empty = tmp_path / "no-local-records"
    found, problems, notice = hub.load_leaderboard(empty)
    assert notice is None and not problems
    assert sorted(r["dataset"] for r in found) == ["camvid", "synthetic"]
    assert all(r["weights"]["uri"].startswith("hf://") for r in found)
    cam = next(r for r in found if r["dataset"] == "camvid")
    folder = hub.resolve_weights(cam, store=LocalStore(tmp_path / "nothing-here"))
    assert sha256_file(folder / "model.safetensors") == recs[1]["weights"]["sha256"]
    assert json.loads((folder / "model.json").read_text())["dataset"] == "camvid"

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


def test_app_falls_back_to_local_records_when_hub_unreachable(fake, local, monkeypatch):
    board, _, _ = local
    monkeypatch.setenv(hub.ENV_RESULTS, RESULTS)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    found, problems, notice = hub.load_leaderboard(board)
    assert len(found) == 2 and notice is not None
    assert "showing the local records" in notice and "\n" not in notice


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
    assert hub.model_repo_id("U-Net small/v2", "cam vid", owner="alice") == "alice/segbench-U-Net-small-v2-cam-vid"
    assert hub.model_repo_id("a--b", "c..d", owner="o", template="{owner}/{model}_{dataset}") == "o/a-b_c.d"
    with pytest.raises(SegbenchError, match="owner/name"):
        hub.model_repo_id("m", "d", owner="alice", template="{model}-{dataset}")
    with pytest.raises(SegbenchError, match="placeholder"):
        hub.model_repo_id("m", "d", owner="alice", template="{owner}/{nope}")
    with pytest.raises(SegbenchError, match="96"):
        hub.model_repo_id("m" * 100, "d", owner="alice")
    with pytest.raises(SegbenchError):
        hub.parse_hf_uri("hf://alice/../etc")
    assert hub.parse_hf_uri("hf://alice/repo/runs/abc") == ("alice/repo", "runs/abc")
    store = LocalStore(tmp_path / "s")
    record = _record(store, "unet_small", "camvid", "dddddddddddd", 0.5)
    with pytest.raises(SegbenchError, match="--owner"):
        hub.push_records([record], store=store, owner="bad owner!")
    assert not fake.calls


def test_model_card_for_unknown_dataset_and_instance_metrics(tmp_path):
    from huggingface_hub import ModelCard

    record = _record(LocalStore(tmp_path), "maskrcnn_r50", "folder", "eeeeeeeeeeee", 0.3)
    record["task"], record["metrics"]["mask_ap"] = "instance", 0.25
    card = ModelCard(str(hub.model_card(record, repo_id="o/segbench-maskrcnn_r50-folder", runs=["x1"])))
    assert card.data.license is None and "unknown" in card.text
    assert {r.metric_type for r in card.data.eval_results} >= {"mean_iou", "mask_ap"}
    assert "`x1`" in card.text and "`eeeeeeeeeeee`" in card.text


def test_push_one_for_run_push(fake, tmp_path):
    store = LocalStore(tmp_path / "store")
    record = _record(store, "unet_small", "synthetic", "ffffffffffff", 0.5)
    assert hub.check_push_access(owner=OWNER) == OWNER
    assert hub_cli.push_one(record, store=store, owner=OWNER, log=lambda line: None).ok
    assert "runs/ffffffffffff/model.safetensors" in fake.files(SYN)
    assert "records/synthetic/unet_small--ffffffffffff.json" in fake.files(RESULTS, "dataset")
    fake.fail("POST", r"/commit/", status=500, times=100)
    record2 = _record(store, "unet_small", "synthetic", "999999999999", 0.6)
    lines = []
    report = hub.push_one(record2, store=store, owner=OWNER, log=lines.append)  # the suite goes on
    assert not report.ok and SYN in report.failed and "rerun 'python -m segbench push'" in lines[-1]
    with pytest.raises(SegbenchError, match="saved locally"):
        hub.push_one(record2, store=store, owner=OWNER, strict=True, log=lambda line: None)


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
