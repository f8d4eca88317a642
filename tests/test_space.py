"""The Space: what `segbench space deploy` sends (exactly the app's files, CPU PyTorch), one commit then none on
the fake Hub, the Space metadata in README.md, and LFS rules for every tracked binary file."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from segbench.cli import main
from segbench.hub.space import CPU_INDEX, MAX_MB, cpu_requirements, space_files

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_hub as th  # noqa: E402
from test_hub import fake  # noqa: E402,F401  (the fake Hub, as a fixture here)

REPO = Path(__file__).resolve().parents[1]
SPACE = f"{th.OWNER}/segbench-demo"


def front_matter() -> dict:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md must start with the Space's YAML front matter"
    return yaml.safe_load(match.group(1))


def pinned(name: str) -> str:
    for line in (REPO / "tests" / "constraints.txt").read_text().splitlines():
        if line.lower().startswith(name + "=="):
            return line.split("==", 1)[1]
    raise AssertionError(f"{name} not pinned")


# ---------------------------------------------------------------- what a Space receives

def test_the_space_gets_the_apps_files_and_nothing_else():
    files = space_files(REPO)
    tops = {path.split("/")[0] for path in files}
    assert tops == {"app.py", "README.md", "requirements.txt", "segbench", "leaderboard"}
    assert not [p for p in files if "__pycache__" in p or p.endswith(".pyc") or "/." in "/" + p]
    assert "segbench/cli/__init__.py" in files and "segbench/suites/default.yaml" in files
    assert any(p.startswith("leaderboard/demo/models/camvid/") and p.endswith("model.safetensors") for p in files)
    assert sum(len(c) if isinstance(c, bytes) else c.stat().st_size for c in files.values()) / 1e6 <= MAX_MB


def test_requirements_become_the_cpu_builds_of_the_same_versions():
    text = cpu_requirements((REPO / "requirements.txt").read_text())
    lines = text.splitlines()
    assert f"--extra-index-url {CPU_INDEX}" in lines
    assert f"torch=={pinned('torch')}+cpu" in lines and f"torchvision=={pinned('torchvision')}+cpu" in lines
    kept = [line for line in (REPO / "requirements.txt").read_text().splitlines() if not line.startswith("torch")]
    assert all(line in lines for line in kept)  # everything else unchanged


def test_dry_run_lists_the_files_and_sends_nothing(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)  # no token needed
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: a request would fail
    assert main(["space", "deploy", SPACE, "--dry-run", "--root", str(REPO)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"\d+ files, \d+\.\d MB; dry run: nothing sent", out[-1])
    assert float(out[-1].split(", ")[1].split(" MB")[0]) <= MAX_MB
    assert not [line for line in out[:-1] if line.split()[-1].startswith(("tests/", ".venv", ".ci"))]


def test_copy_to_writes_exactly_those_files(tmp_path, capsys):
    out = tmp_path / "space"
    assert main(["space", "deploy", SPACE, "--dry-run", "--copy-to", str(out), "--root", str(REPO)]) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == sorted(space_files(REPO))
    assert (out / "requirements.txt").read_text() == cpu_requirements((REPO / "requirements.txt").read_text())
    assert main(["space", "deploy", SPACE, "--dry-run", "--copy-to", str(out), "--root", str(REPO)]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["space", "deploy", "not a repo", "--dry-run"], "not a repo"),
    (["space", "deploy", SPACE, "--dry-run", "--root", "/nonexistent"], "app.py, README.md, requirements.txt"),
    (["space", "deploy", SPACE, "--dry-run", "--results-repo", "../x"], "--results-repo"),
    (["space", "deploy", SPACE, "--dry-run", "--models", "a/b"], "--models owner"),
], ids=["bad-id", "not-a-checkout", "bad-results-repo", "bad-models-owner"])
def test_space_bad_input_is_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


# ---------------------------------------------------------------- deploy against the fake Hub

def _app_copy(tmp_path: Path) -> Path:
    """A small stand-in checkout: the deploy logic is the same, the upload smaller than the real 40 MB."""
    root = tmp_path / "checkout"
    (root / "segbench").mkdir(parents=True)
    (root / "leaderboard" / "records").mkdir(parents=True)
    (root / "app.py").write_text("print('app')\n")
    (root / "README.md").write_text("---\nsdk: gradio\n---\n# demo\n")
    (root / "requirements.txt").write_text("torch==2.14.1\ntorchvision==0.29.1\ngradio>=5.0\n")
    (root / "segbench" / "__init__.py").write_text("")
    (root / "segbench" / "old.py").write_text("x = 1\n")
    (root / "leaderboard" / "model.safetensors").write_bytes(b"\0" * 2_000_000)  # binary: goes up through LFS
    (root / "tests").mkdir()
    (root / "tests" / "test_x.py").write_text("")
    return root


def test_deploy_makes_one_commit_then_none_and_mirrors_deletions(fake, tmp_path, capsys):
    root = _app_copy(tmp_path)
    assert main(["space", "deploy", SPACE, "--root", str(root)]) == 0
    repo = fake.repo(SPACE, "space")
    assert repo.sdk == "gradio" and len(repo.commits) == 2  # the Hub's initial commit, then ours
    files = fake.files(SPACE, "space")
    assert set(files) == {".gitattributes", "app.py", "README.md", "requirements.txt", "segbench/__init__.py",
                          "segbench/old.py", "leaderboard/model.safetensors"}
    assert files["requirements.txt"].decode().startswith("# Rewritten by 'segbench space deploy'")
    assert repo.head.files["leaderboard/model.safetensors"].lfs
    assert th.TOKEN not in capsys.readouterr().out

    assert main(["space", "deploy", SPACE, "--root", str(root)]) == 0  # unchanged: no commit
    assert len(fake.repo(SPACE, "space").commits) == 2 and "unchanged, no commit" in capsys.readouterr().out

    (root / "segbench" / "old.py").unlink()  # a module the app no longer has must not linger on the Space
    (root / "app.py").write_text("print('app 2')\n")
    assert main(["space", "deploy", SPACE, "--root", str(root)]) == 0
    files = fake.files(SPACE, "space")
    assert len(fake.repo(SPACE, "space").commits) == 3 and "segbench/old.py" not in files
    assert files["app.py"] == b"print('app 2')\n" and ".gitattributes" in files


def test_deploy_links_the_hub_repos_and_sets_the_spaces_variables(fake, tmp_path, capsys):
    root = _app_copy(tmp_path)
    from segbench.records.io import write_record
    from test_records import make_record

    write_record(make_record(), root / "leaderboard")
    argv = ["space", "deploy", SPACE, "--root", str(root), "--results-repo", th.RESULTS, "--models", th.OWNER]
    assert main(argv) == 0
    assert "variable SEGBENCH_HUB_RESULTS=" in capsys.readouterr().out
    space = fake.repo(SPACE, "space")
    assert space.variables == {"SEGBENCH_HUB_RESULTS": th.RESULTS, "SEGBENCH_HUB_MODELS": th.OWNER}
    readme = fake.files(SPACE, "space")["README.md"].decode()
    meta = yaml.safe_load(readme.split("---\n")[1])
    assert meta["sdk"] == "gradio" and meta["datasets"] == [th.RESULTS]
    assert meta["models"] == [f"{th.OWNER}/segbench-unet_small-synthetic"] and readme.endswith("# demo\n")
    assert main(argv) == 0  # the same again: no commit, no variable written
    out = capsys.readouterr().out
    assert len(fake.repo(SPACE, "space").commits) == 2 and "unchanged, no commit" in out and "variable" not in out


def test_deploy_without_write_access_is_one_line(fake, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", th.READ_TOKEN)
    assert main(["space", "deploy", SPACE, "--root", str(_app_copy(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "read-only" in err and th.READ_TOKEN not in err
    assert (("space", SPACE) not in fake.repos)


# ---------------------------------------------------------------- metadata and LFS

def test_space_metadata_matches_what_is_installed_and_shipped():
    meta = front_matter()
    assert meta["sdk"] == "gradio" and str(meta["sdk_version"]) == pinned("gradio")  # what the tests ran with
    assert (REPO / meta["app_file"]).is_file() and meta["app_file"] == "app.py"
    assert str(meta["python_version"]) == "3.11" and meta["suggested_hardware"] == "cpu-basic"
    manifest = json.loads((REPO / "leaderboard" / "demo" / "manifest.json").read_text())
    terms = " ".join(str(v) for m in manifest["models"] for v in (m.get("license") or {}).values())
    if "NC" in terms or "non-commercial" in terms.lower():  # CamVid's CC BY-NC 4.0 travels with the demo pack
        assert meta["license"] in ("other", "cc-by-nc-4.0") and "by-nc" in str(meta.get("license_link", "")).lower()


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs a git checkout (it reads git ls-files): "
                    "run it in a clone, not in an sdist or a Space copy")
def test_every_tracked_binary_file_is_under_an_lfs_rule():
    tracked = [p for p in _git("ls-files", "-z").split("\0") if p and (REPO / p).is_file()]
    binary = [p for p in tracked if b"\0" in (REPO / p).read_bytes()[:8000]]
    assert binary, "expected the demo pack's weights and images"
    attrs = _git("check-attr", "filter", "--", *binary).splitlines()
    outside = [line.split(":")[0] for line in attrs if not line.endswith(": filter: lfs")]
    assert not outside, f"binary files without an LFS rule in .gitattributes: {outside}"
