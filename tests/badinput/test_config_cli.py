"""Bad input to configs, YAML, names and the command line: each case goes through the real CLI
(``segbench.cli.main`` in-process; a few through ``python -m segbench``) and must end with exit status 2, one
``error:`` line holding the expected fragment, no traceback, and nothing written (no record, weights or checkpoint:
the workspace's file tree is unchanged). tests/README.md lists the cases.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from segbench.cli import main

TINY_YAML = """\
model: unet_small
model_args: {base_channels: 4, depth: 2}
dataset: synthetic
dataset_args: {size: 32, num_images: 8}
epochs: 1
batch_size: 4
crop_size: 32
latency_runs: 1
"""
OUT = ["--store", "store", "--leaderboard", "lb", "--no-progress"]

# a "billion laughs" list: 9 levels of 10 aliases each expand to 10^9 values (10 lines of text)
BOMB_LIST = "[&a0 [x, x, x, x, x, x, x, x, x, x], " + ", ".join(
    f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)) + "]"
BOMB = f"class_weights: {BOMB_LIST}\n"


WEIGHTS = b"<tiny unet weights>"  # a Case file value: real weights are saved in that folder (see _make_files)
W = {"w": WEIGHTS}  # eval / predict cases: valid weights, so only the argument under test is wrong


@dataclass
class Case:
    id: str
    argv: list[str]
    fragment: str
    files: dict[str, str | bytes | None] = field(default_factory=dict)  # None: a folder; WEIGHTS: tiny weights


def train(*overrides: str, config: str = "tiny.yaml") -> list[str]:
    return ["train", config, *overrides, *OUT]


def yaml_case(id: str, text: str | bytes, fragment: str, extra: str = TINY_YAML) -> Case:
    """A config file ``c.yaml`` holding the tiny config plus ``text`` (or just ``text`` when it is bytes)."""
    body = text if isinstance(text, bytes) else extra + text
    return Case(id, train(config="c.yaml"), fragment, {"c.yaml": body})


def suite_case(id: str, text: str, fragment: str, *overrides: str) -> Case:
    return Case(id, ["run", "s.yaml", *overrides, *OUT], fragment, {"s.yaml": text})


VALUE_CASES = [
    Case("eval_every=0", train("eval_every=0"), "eval_every=0 is invalid; valid: an integer in [1,"),
    Case("eval_every=-2", train("eval_every=-2"), "eval_every=-2 is invalid"),
    Case("latency_runs=0", train("latency_runs=0"), "latency_runs=0 is invalid"),
    Case("eval_size=[0,0]", train("eval_size=[0,0]"), "eval_size=[0, 0] is invalid; valid: [H, W]"),
    Case("eval_size=[32]", train("eval_size=[32]"), "eval_size=[32] is invalid"),
    Case("eval_size=abc", train("eval_size=abc"), "eval_size='abc' is invalid"),
    Case("crop_size=abc", train("crop_size=abc"), "override 'crop_size=abc': crop_size='abc' is invalid"),
    Case("crop_size=0", train("crop_size=0"), "crop_size=0 is invalid; valid: an integer in [1, 16384], or null"),
    Case("crop_size=1.5", train("crop_size=1.5"), "crop_size=1.5 is invalid"),
    Case("limit_images=abc", train("limit_images=abc"), "limit_images='abc' is invalid"),
    Case("limit_images=-3", train("limit_images=-3"), "limit_images=-3 is invalid; valid: an integer >= 1, or null"),
    Case("limit_images=0", train("limit_images=0"), "limit_images=0 is invalid"),
    Case("lr=-1", train("lr=-1"), "lr=-1 is invalid; valid: a finite number in (0, 10]"),
    Case("lr=0", train("lr=0"), "lr=0 is invalid"),
    Case("lr=abc", train("lr=abc"), "lr='abc' is invalid"),
    Case("lr=.nan", train("lr=.nan"), "lr=nan is invalid"),
    Case("lr=.inf", train("lr=.inf"), "lr=inf is invalid"),
    Case("num_workers=-1", train("num_workers=-1"), "num_workers=-1 is invalid; valid: an integer in [0, 256]"),
    Case("warmup_epochs=-1", train("warmup_epochs=-1"), "warmup_epochs=-1 is invalid"),
    Case("warmup_epochs>epochs", train("warmup_epochs=5"), "warmup_epochs=5.0 is longer than the run (epochs=1)"),
    Case("epochs=0", train("epochs=0"), "epochs=0 is invalid; valid: an integer in [1,"),
    Case("epochs=-1", train("epochs=-1"), "epochs=-1 is invalid"),
    Case("epochs=ten", train("epochs=ten"), "epochs='ten' is invalid"),
    Case("batch_size=0", train("batch_size=0"), "batch_size=0 is invalid"),
    Case("max_train_seconds=-5", train("max_train_seconds=-5"), "max_train_seconds=-5 is invalid"),
    Case("max_train_seconds=0", train("max_train_seconds=0"), "max_train_seconds=0 is invalid"),
    Case("model_args=", train("model_args="), "override 'model_args=': model_args=None is invalid"),
    Case("dataset_args=", train("dataset_args="), "dataset_args=None is invalid"),
    Case("model_args=[1,2]", train("model_args=[1,2]"), "model_args=[1, 2] is invalid; valid: a mapping"),
    Case("model_args.depth=abc", train("model_args.depth=abc"),
         "override 'model_args.depth=abc': model 'unet_small' option depth='abc' is invalid; valid: an integer"),
    Case("model_args.nope=3", train("model_args.nope=3"), "override 'model_args.nope=3': model 'unet_small' has no option 'nope'"),
    Case("dataset_args.sise=3", train("dataset_args.sise=3"), "dataset 'synthetic' has no option 'sise'"),
    Case("model_args nested", train("model_args.depth={a: {b: 1}}"), "(option 'depth')"),
    Case("aspp_channels=4", train("model=deeplabv3plus_lite0", "model_args={aspp_channels: 4}"),
         "deeplabv3plus_lite0: aspp_channels=4; give an integer >= 8"),
    Case("aspp_channels=12.5", train("model=deeplabv3plus_lite0", "model_args={aspp_channels: 12.5}"),
         "option aspp_channels=12.5 is invalid; valid: an integer (default 256)"),
    Case("box_head_size=0", train("model=maskrcnn_lite0", "model_args={box_head_size: 0}"),
         "Mask R-CNN: box_head_size=0; give an integer >= 8"),
    Case("box_head_size=true", train("model=maskrcnn_lite0", "model_args={box_head_size: true}"),
         "option box_head_size=True is invalid; valid: an integer (default 1024)"),
    Case("encoder_lr_mult=0.1 no encoder", train("encoder_lr_mult=0.1"),
         "encoder_lr_mult=0.1 needs a model with an encoder/decoder split; 'unet_small' has none"),
    Case("fpn_channels=-3", train("model=maskrcnn_small", "model_args={fpn_channels: -3}"),
         "Mask R-CNN: fpn_channels=-3; give an integer >= 8"),
    Case("momentum=2", train("momentum=2"), "momentum=2 is invalid; valid: a finite number in [0, 1]"),
    Case("weight_decay=-1", train("weight_decay=-1"), "weight_decay=-1 is invalid"),
    Case("optimizer=adam", train("optimizer=adam"), "optimizer='adam' is invalid; valid: one of adamw, sgd"),
    Case("schedule=step", train("schedule=step"), "schedule='step' is invalid; valid: one of poly, cosine, constant"),
    Case("loss=focal", train("loss=focal"), "loss='focal' is invalid"),
    Case("loader=gpu", train("loader=gpu"), "loader='gpu' is invalid"),
    Case("track=wall", train("track=wall"), "track='wall' is invalid"),
    Case("select_on=best", train("select_on=best"), "select_on='best' is invalid"),
    Case("holdout_fraction=1.5", train("select_on=holdout", "holdout_fraction=1.5"),
         "holdout_fraction=1.5 is invalid; valid: a finite number in (0, 1), or null"),
    Case("holdout_images=0", train("select_on=holdout", "holdout_images=0"), "holdout_images=0 is invalid"),
    Case("holdout_seed=-1", train("holdout_seed=-1"), "holdout_seed=-1 is invalid"),
    Case("seed=-1", train("seed=-1"), "seed=-1 is invalid; valid: an integer in [0, 4294967295]"),
    Case("seed=1.5", train("seed=1.5"), "seed=1.5 is invalid"),
    Case("score_threshold=2", train("score_threshold=2"), "score_threshold=2 is invalid"),
    Case("color_jitter=-0.1", train("color_jitter=-0.1"), "color_jitter=-0.1 is invalid"),
    Case("scale_min=0", train("scale_min=0"), "scale_min=0 is invalid"),
    Case("scale_min>scale_max", train("scale_min=2", "scale_max=1"), "need 0 < scale_min <= scale_max"),
    Case("hflip=maybe", train("hflip=maybe"), "hflip='maybe' is invalid; valid: true or false"),
    Case("amp=1", train("amp=1"), "amp=1 is invalid; valid: true or false"),
    Case("compile=2", train("compile=2"), "compile=2 is invalid"),
    Case("device=tpu", train("device=tpu"), "device='tpu' is invalid; valid: auto, cpu, cuda or cuda:N"),
    Case("device=cuda:abc", train("device=cuda:abc"), "device='cuda:abc' is invalid"),
    Case("grad_clip=0", train("grad_clip=0"), "grad_clip=0 is invalid"),
    Case("grad_clip=-1", train("grad_clip=-1"), "grad_clip=-1 is invalid"),
    Case("class_weights=[1,-1]", train("class_weights=[1,-1]"), "class_weights=[1, -1] is invalid; valid: 'auto' or a list"),
    Case("class_weights=[0,0]", train("class_weights=[0,0]"), "class_weights=[0, 0] is invalid (all zero)"),
    Case("class_weights=median", train("class_weights=median"), "class_weights='median' is invalid"),
    Case("class_weights nested", train("class_weights=[[1,2]]"), "class_weights=[[1, 2]] is invalid"),
    Case("aux_weight=-1", train("aux_weight=-1"), "aux_weight=-1 is invalid"),
    Case("sigma=0", train("sigma=0"), "sigma=0 is invalid"),
    Case("w0=-1", train("w0=-1"), "w0=-1 is invalid"),
    Case("eval_tile=0", train("eval_tile=0"), "eval_tile=0 is invalid"),
    Case("epoch=2 (typo)", train("epoch=2"), "unknown config key 'epoch' (did you mean 'epochs'?)"),
    Case("override without =", train("epochs"), "override 'epochs' must look like key=value"),
    Case("foo.bar=1", train("foo.bar=1"), "only model_args.X and dataset_args.X take a dot"),
    Case("model=unett", train("model=unett"), "unknown model 'unett'"),
    Case("dataset=camvidd", train("dataset=camvidd"), "unknown dataset 'camvidd'"),
    Case("data_root missing", train("data_root=/nonexistent/segbench"), "data_root='/nonexistent/segbench' does not exist"),
    Case("data_root is a file", train("data_root=tiny.yaml"), "data_root='tiny.yaml' is a file, not a folder"),
]

NAME_CASES = [
    Case("name=../../evil", train("name=../../evil"), "name='../../evil' is invalid; valid: letters, digits"),
    Case("name=a/b", train("name=a/b"), "name='a/b' is invalid"),
    Case("name=.hidden", train("name=.hidden"), "name='.hidden' is invalid"),
    Case("name of 81 chars", train("name=" + "n" * 81), "is invalid; valid: letters, digits, '.', '_' or '-'"),
    Case("name with a space", train("name=a b"), "name='a b' is invalid"),
    Case("train_split=../x", train("train_split=../x"), "train_split='../x' is invalid"),
    Case("eval_split=a/b", train("eval_split=a/b"), "eval_split='a/b' is invalid"),
    Case("dataset=../etc", train("dataset=../etc"), "dataset='../etc' is invalid"),
    Case("name with a non-ASCII letter", train("name=caf\u00e9"), "name='caf\u00e9' is invalid"),
    Case("eval --split ../x", ["eval", "w", "--split", "../x"], "--split='../x' is not a valid name", W),
]

YAML_CASES = [
    yaml_case("alias bomb in class_weights", BOMB, "expands to more than 100000"),
    yaml_case("alias bomb in model_args", f"model: unet_small\nmodel_args: {{depth: {BOMB_LIST}}}\n", "expands to more than",
              extra=""),
    yaml_case("recursive alias", "class_weights: &r [*r]\n", "a recursive alias"),
    yaml_case("deep nesting", "class_weights: " + "[" * 50 + "]" * 50 + "\n", "nested deeper than 20 levels"),
    yaml_case("duplicate key", "lr: 0.1\nlr: 0.2\n", "duplicate key 'lr' at line 10"),
    yaml_case("binary file", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "a binary file, not a YAML config file"),
    yaml_case("latin-1 text", "model: caf\xe9\n".encode("latin-1"), "not UTF-8 text"),
    yaml_case("2 MB file", "# " + "x" * (2 << 20) + "\n", "too large for a config file"),
    yaml_case("invalid syntax", "lr: [1, 2\n", "invalid YAML at line"),
    yaml_case("python tag", "lr: !!python/object/apply:os.system [echo hi]\n", "invalid YAML"),
    yaml_case("top-level list", b"- 1\n- 2\n", "expected a mapping of config keys at the top level"),
    yaml_case("integer key", "1: 2\n", "config key 1 is not a name"),
    yaml_case("lr: abc in YAML", "lr: abc\n", "c.yaml: lr='abc' is invalid"),
    yaml_case("suite given to train", "runs: [{model: fcn8s}]\n", "this is a suite", extra=""),
    Case("folder as config", train(config="cfgdir"), "cfgdir: is a folder, not a config file", {"cfgdir": None}),
    Case("missing config", train(config="missing.yaml"), "missing.yaml: config file not found"),
]

SUITE_CASES = [
    suite_case("runs entries are lists", "runs:\n  - [model, fcn8s]\n", "each entry of 'runs:' must be a mapping"),
    suite_case("runs empty", "runs: []\n", "a suite needs a non-empty 'runs:' list"),
    suite_case("runs a number", "runs: 3\n", "a suite needs a non-empty 'runs:' list"),
    suite_case("common a list", "common: [1]\nruns: [{model: unet_small}]\n", "'common:' must be a mapping"),
    suite_case("unknown suite key", "run: []\n", "unknown suite key 'run' (did you mean 'runs'?)"),
    suite_case("bad second run", "common: {dataset: synthetic}\nruns:\n  - {model: unet_small}\n  - {model: unet_small, crop_size: 0}\n",
               "s.yaml (run 2): crop_size=0 is invalid"),
    suite_case("override names itself", "runs: [{model: unet_small}]\n", "override 'lr=abc': lr='abc' is invalid", "lr=abc"),
    Case("unknown suite name", ["run", "defualt", *OUT], "unknown suite 'defualt'"),
]

ARG_CASES = [
    Case("models --size 0", ["models", "unet_small", "--size", "0"], "argument --size: '0' is invalid; valid: an integer in [1, 16384]"),
    Case("models --size abc", ["models", "unet_small", "--size", "abc"], "argument --size: 'abc' is invalid"),
    Case("models --num-classes 0", ["models", "unet_small", "--num-classes", "0"], "argument --num-classes"),
    Case("models --in-channels 0", ["models", "unet_small", "--in-channels", "0"], "argument --in-channels"),
    Case("eval --batch-size 0", ["eval", "w", "--batch-size", "0"], "argument --batch-size: '0' is invalid", W),
    Case("run --seeds 0", ["run", "default", "--seeds", "0"], "argument --seeds: '0' is invalid"),
    Case("predict --alpha 2", ["predict", "w", "x.png", "--out", "o", "--alpha", "2"], "argument --alpha: '2' is invalid", {"x.png": WEIGHTS, **W}),
    Case("speed --size 0", ["speed", "unet_small", "--baseline", "eager", "--size", "0"], "argument --size"),
    Case("unknown command", ["trian"], "invalid choice: 'trian'"),
    Case("train without a config", ["train"], "the following arguments are required: config"),
    Case("unknown flag", ["train", "tiny.yaml", "--bogus"], "unrecognized arguments: --bogus"),
    Case("eval --json is a folder", ["eval", "w", "--json", "jdir"], "--json jdir: is a folder, not a file", {"jdir": None, **W}),
    Case("eval --json under a file", ["eval", "w", "--json", "tiny.yaml/m.json"], "tiny.yaml is a file, so nothing can be written", W),
    Case("models --json is a folder", ["models", "unet_small", "--json", "jdir"], "--json jdir: is a folder", {"jdir": None}),
    Case("models --erf-out is a folder", ["models", "unet_small", "--erf", "--erf-out", "jdir"], "--erf-out jdir: is a folder", {"jdir": None}),
    Case("speed --json is a folder", ["speed", "unet_small", "--baseline", "eager", "--json", "jdir"], "--json jdir: is a folder", {"jdir": None}),
    Case("predict --out is a file", ["predict", "w", "x.png", "--out", "tiny.yaml"], "--out tiny.yaml: is a file, not a folder", {"x.png": WEIGHTS, **W}),
    Case("eval --data-root missing", ["eval", "w", "--data-root", "nowhere"], "--data-root nowhere: does not exist", W),
    Case("train --store is a file", ["train", "tiny.yaml", "--store", "f.txt", "--leaderboard", "lb"], "--store f.txt: is a file, not a folder", {"f.txt": "x"}),
    Case("run --store is a file", ["run", "tiny_suite.yaml", "--store", "f.txt"], "--store f.txt: is a file",
         {"f.txt": "x", "tiny_suite.yaml": "runs:\n  - {model: unet_small}\n"}),
    Case("train --leaderboard is a file", ["train", "tiny.yaml", "--store", "store", "--leaderboard", "f.txt"],
         "--leaderboard f.txt: is a file, not a folder", {"f.txt": "x"}),
    Case("leaderboard records is a file", train(), "lb/records is a file, so nothing can be written", {"lb/records": "x"}),
    Case("store weights is a file", train(), "store/weights is a file", {"store/weights": "x"}),
]

CASES = VALUE_CASES + NAME_CASES + YAML_CASES + SUITE_CASES + ARG_CASES


def _tree(root: Path) -> dict[str, int]:
    """Every path under ``root`` with its size (folders: -1), to prove a failed command wrote nothing."""
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1) for p in root.rglob("*")}


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEGBENCH_STORE", str(tmp_path / "default-store"))
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    return tmp_path


def _make_files(root: Path, files: dict[str, str | bytes | None]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is WEIGHTS and rel.endswith(".png"):
            from PIL import Image

            Image.new("RGB", (32, 32)).save(path)
        elif content is WEIGHTS:
            _save_tiny_weights(path)
        elif content is None:
            path.mkdir(exist_ok=True)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def _save_tiny_weights(directory: Path) -> None:
    from segbench.models import build_model
    from segbench.weights.store import save_weights
    from segbench.weights.meta import WeightsMeta

    args = {"base_channels": 4, "depth": 2}
    model = build_model("unet_small", num_classes=6, **args)
    save_weights(model, WeightsMeta.from_dict({"model": "unet_small", "model_args": args, "num_classes": 6,
                                               "dataset": "synthetic", "mean": [0.5] * 3, "std": [0.25] * 3,
                                               "palette": [[0, 0, 0]] * 6, "in_channels": 3}), directory)


def assert_refused(argv: list[str], fragment: str, root: Path, capsys: pytest.CaptureFixture) -> str:
    """Exit status 2, one ``error:`` line holding ``fragment``, no traceback, and no new or changed file."""
    before = _tree(root)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert fragment in err, err
    assert "Traceback" not in err
    assert _tree(root) == before, "a refused command wrote files"
    return err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_in_one_line_before_any_work(case: Case, workspace: Path, capsys) -> None:
    _make_files(workspace, case.files)
    assert_refused(case.argv, case.fragment, workspace, capsys)


def test_there_are_at_least_80_distinct_cases() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 80


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs no visible CUDA GPU: run with CUDA_VISIBLE_DEVICES=''")
def test_cuda_on_a_cpu_machine_is_refused_before_training(workspace, capsys) -> None:
    assert_refused(train("device=cuda"), "tiny.yaml: device 'cuda' asked for but no CUDA GPU is visible", workspace, capsys)


def test_read_only_leaderboard_is_refused_before_training(workspace, capsys, monkeypatch) -> None:
    """As root every folder is writable, so the check (os.access, which also sees a read-only mount) is simulated."""
    import segbench.cli.args as cli_args

    (workspace / "lb").mkdir()
    real = os.access
    monkeypatch.setattr(cli_args.os, "access", lambda p, mode: False if Path(p).name == "lb" else real(p, mode))
    assert_refused(train(), "--leaderboard lb: folder lb is not writable", workspace, capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="needs a non-root user (root writes into read-only folders): "
                    "run the tests as an ordinary user")
def test_read_only_leaderboard_folder_for_real(workspace, capsys) -> None:
    (workspace / "lb").mkdir()
    (workspace / "lb").chmod(0o500)
    assert_refused(train(), "is not writable", workspace, capsys)


def test_resume_without_a_checkpoint_names_the_checkpoint_path(workspace, capsys) -> None:
    err = assert_refused(["train", "tiny.yaml", "--resume", *OUT], "--resume: no checkpoint of this config in", workspace, capsys)
    assert "store/checkpoints/synthetic/unet_small--" in err  # the folder where the checkpoint was looked for


def test_worker_traceback_is_one_line(workspace, capsys) -> None:
    """A corrupt image read in a DataLoader worker (num_workers=1): the worker pastes its traceback into the
    exception's message; the CLI prints only the root cause's line."""
    from PIL import Image

    for split in ("train", "val"):
        for sub in ("images", "masks"):
            (workspace / "data" / split / sub).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (16, 16)).save(workspace / "data" / split / "images" / f"{i}.png")
            Image.new("L", (16, 16)).save(workspace / "data" / split / "masks" / f"{i}.png")
    (workspace / "data" / "train" / "images" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    argv = train("dataset=folder", "data_root=data", "dataset_args={num_classes: 2}", "crop_size=null",
                 "num_workers=1", "batch_size=2")
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err and "1.png" in err, err
    assert not list((workspace / "lb").rglob("*.json")) and not list((workspace / "store").rglob("*.safetensors"))


def test_one_line_keeps_the_root_cause_of_a_pasted_traceback() -> None:
    from segbench.errors import SegbenchError, one_line

    pasted = SegbenchError("Caught SegbenchError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                           "call last):\n  File \"x.py\", line 1, in f\n    raise SegbenchError(m)\n"
                           "segbench.errors.SegbenchError: a.png: not an image; re-export it\n")
    assert one_line(pasted) == "a.png: not an image; re-export it"
    assert one_line(SegbenchError("plain")) == "plain"
    assert one_line(SegbenchError("first\nlast words")) == "last words"


@pytest.mark.parametrize("argv, fragment, files", [
    (["train", "tiny.yaml", "crop_size=abc", *OUT], "crop_size='abc' is invalid", {}),
    (["train", "c.yaml", *OUT], "expands to more than 100000", {"c.yaml": BOMB}),
    (["models", "unet_small", "--size", "0"], "argument --size", {}),
    (["eval", "w", "--batch-size", "0"], "argument --batch-size", {}),
    (["train", "d", *OUT], "d: is a folder, not a config file", {"d": None}),
], ids=["override", "alias-bomb", "models-size", "eval-batch-size", "folder-config"])
@pytest.mark.slow
def test_python_dash_m_prints_one_line(argv, fragment, files, workspace) -> None:
    """The same through ``python -m segbench`` (a fresh interpreter: entry point, stderr, exit status)."""
    _make_files(workspace, files)
    before = _tree(workspace)
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "segbench", *argv], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: ") and fragment in lines[-1] and "Traceback" not in proc.stderr, proc.stderr
    assert len([line for line in lines if line.startswith("error: ")]) == 1
    assert _tree(workspace) == before


def test_every_config_key_has_a_type_and_range() -> None:
    from segbench.config.run import FIELDS
    from segbench.config.rules import RULES

    assert not set(FIELDS) - set(RULES), "add a row to config.rules.RULES for each new config key"


def test_exponent_floats_are_numbers_in_yaml_and_overrides(workspace) -> None:
    """PyYAML 1.1 reads 1e-4 as a string; every user means a float."""
    from segbench.config.run import load_config

    (workspace / "c.yaml").write_text(TINY_YAML + "lr: 1e-4\nweight_decay: 5E-5\n")
    cfg = load_config(workspace / "c.yaml", ["momentum=9e-1"])
    assert (cfg.lr, cfg.weight_decay, cfg.momentum) == (1e-4, 5e-5, 0.9)
    assert load_config(workspace / "tiny.yaml", ["lr=1e-3"]).lr == 1e-3


def test_valid_edge_values_are_accepted(workspace) -> None:
    from segbench.config.run import load_config

    cfg = load_config(workspace / "tiny.yaml", [
        "crop_size=1", "limit_images=1", "num_workers=0", "warmup_epochs=1", "class_weights=[0, 1.5, 2, 1, 1, 1]",
        "eval_size=[16, 24]", "name=my_model-v1.2", "model_args.depth=3", "momentum=0", "score_threshold=1",
        "seed=4294967295", "grad_clip=1e9", "color_jitter=1"])
    assert cfg.class_weights == [0, 1.5, 2, 1, 1, 1] and cfg.eval_size == [16, 24]
    assert cfg.name == "my_model-v1.2" and cfg.model_args == {"base_channels": 4, "depth": 3}


def test_yaml_merge_keys_and_small_aliases_still_work(workspace) -> None:
    from segbench.config.run import load_suite

    (workspace / "s.yaml").write_text("common: &c {dataset: synthetic, epochs: 1}\nruns:\n"
                                      "  - {<<: *c, model: unet_small, epochs: 2}\n  - {model: fcn8s, model_args: {}}\n")
    runs = load_suite(str(workspace / "s.yaml"))
    assert [(r.model, r.epochs) for r in runs] == [("unet_small", 2), ("fcn8s", 1)]


@pytest.mark.slow
def test_committed_records_still_validate_with_the_same_values() -> None:
    """No false refusal of a config already on the leaderboard, and values hashed into run ids keep their type
    (``max_train_seconds: 600`` stays an int: a float would change the id of every such record)."""
    import json

    from segbench.config.run import make_config

    files = sorted((Path(__file__).resolve().parents[2] / "leaderboard" / "records").glob("*/*.json"))
    for path in files:
        config = json.loads(path.read_text())["config"]
        cfg = make_config(config, str(path))
        assert cfg.max_train_seconds == config.get("max_train_seconds")
        assert type(cfg.max_train_seconds) is type(config.get("max_train_seconds"))


@pytest.mark.slow
def test_second_trainer_of_one_run_stops_at_once(tmp_path, monkeypatch, capsys):
    """Two `train`s of one config: the second says who holds the run and writes nothing, instead of both
    writing last.pt."""
    from segbench.config.run import load_config
    from segbench.files import path_lock

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    cfg = load_config("tiny.yaml")
    run_dir = tmp_path / "store" / "checkpoints" / cfg.dataset / f"{cfg.display_name()}--{cfg.run_id()}"
    with path_lock(run_dir, log=lambda _: None):
        code = main(train())
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "still locked by pid" in err[0], err
    assert not (tmp_path / "lb").exists() and not list((tmp_path / "store").rglob("*.safetensors"))


def test_bad_option_value_in_a_later_suite_run_fails_before_the_first_trains(tmp_path, monkeypatch, capsys):
    """A builder's own range check (``depth: -1``) runs for every run of a suite before any of them trains."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(
        "common: {model: unet_small, dataset: synthetic, dataset_args: {size: 32, num_images: 8}, epochs: 1}\n"
        "runs:\n  - {name: good}\n  - {name: bad, model_args: {depth: -1}}\n")
    code = main(["run", "s.yaml", *OUT])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "(run 2: bad / synthetic): model_args:" in err[0] and "depth" in err[0], err
    assert not (tmp_path / "lb").exists() and not (tmp_path / "store").exists()


@pytest.mark.slow
def test_a_reader_that_leaves_early_gets_no_traceback() -> None:
    """``segbench leaderboard | head``: the pipe's reader is gone before the table is written -> exit 141 (as a
    shell reports SIGPIPE), nothing on stderr."""
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to write_end now fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "segbench", "leaderboard", "--leaderboard",
                               str(repo / "leaderboard")], stdout=write_end, stderr=subprocess.PIPE, text=True,
                              env=env, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr
