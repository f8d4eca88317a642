"""Deploy the app to a Hugging Face Space: exactly the files the app needs, in one commit through huggingface_hub.

What a Space receives (``space_files``): ``app.py``, ``README.md`` (its front matter is the Space's metadata),
``requirements.txt`` rewritten for a CPU Space (below), the ``segbench/`` package and ``leaderboard/`` (records, the
demo pack, screenshots). Never tests, virtual environments, caches, hidden files or a local weights store. Binary
files go through LFS (huggingface_hub decides per file, as the Hub wants), so the Hub's refusal of plain binaries
over 1 MB in a git push does not apply.

CPU install: PyTorch's default wheels on Linux carry CUDA (3.2 GB of NVIDIA libraries and 0.9 GB of Triton that a
2-vCPU Space never uses). The Space's ``requirements.txt`` pins the same versions as ``+cpu`` builds from PyTorch's
CPU index (``cpu_requirements``). That index cannot be reached from the machines this project is tested on, so the
rewrite is tested as text and the deployed-files check installs the ordinary wheels (``.ci/space-check``).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SegbenchError

SPACE_PATHS = ("app.py", "README.md", "requirements.txt", "segbench", "leaderboard")
SPACE_HARDWARE = "cpu-basic"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
MAX_MB = 60.0  # the whole upload; the demo pack is most of it
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo", ".lock", ".egg-info")
_PINNED = re.compile(r"^(torch|torchvision)==([0-9][0-9.]*)\s*$")


def cpu_requirements(text: str) -> str:
    """``requirements.txt`` for a CPU Space: ``torch==X`` / ``torchvision==Y`` become the ``+cpu`` builds of the same
    versions from PyTorch's CPU index; every other line is kept as it is."""
    lines, pinned = [], 0
    for line in text.splitlines():
        match = _PINNED.match(line)
        if match:
            line, pinned = f"{match.group(1)}=={match.group(2)}+cpu", pinned + 1
        lines.append(line)
    if pinned != 2:
        raise SegbenchError("requirements.txt must pin torch==X and torchvision==Y (one line each) for the Space's "
                            "CPU install")
    head = ["# Rewritten by 'segbench space deploy': PyTorch's CPU-only wheels (no CUDA libraries on a CPU Space).",
            f"--extra-index-url {CPU_INDEX}"]
    return "\n".join(head + lines) + "\n"


def space_readme(text: str, *, results_repo: str | None = None, model_repos: list[str] | None = None) -> str:
    """README.md with the Hub links in its front matter (the Space's metadata): ``datasets`` names the results repo
    and ``models`` the model repos the app reads, so the Hub shows them on the Space's page."""
    import yaml

    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    if not match:
        raise SegbenchError("README.md does not start with the Space's YAML front matter (--- ... ---)")
    front = yaml.safe_load(match.group(1)) or {}
    if results_repo:
        front["datasets"] = [results_repo]
    if model_repos:
        front["models"] = sorted(set(model_repos))
    head = yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip()
    return f"---\n{head}\n---\n" + text[match.end():]


def space_files(root: str | Path, *, results_repo: str | None = None,
                model_repos: list[str] | None = None) -> dict[str, bytes | Path]:
    """Path in the Space -> content (a local file, or bytes for the rewritten requirements and README), sorted."""
    root = Path(root)
    missing = [name for name in SPACE_PATHS if not (root / name).exists()]
    if missing:
        raise SegbenchError(f"{root}: {', '.join(missing)} missing; run 'segbench space deploy' from the segbench "
                            "repository (the folder holding app.py)")
    files: dict[str, bytes | Path] = {}
    for name in SPACE_PATHS:
        path = root / name
        if path.is_file():
            files[name] = path
            continue
        for folder, dirs, names in os.walk(path):  # links are not followed: nothing outside the checkout goes up
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith(".")
                             and not d.endswith(_SKIP_SUFFIXES))
            for file in sorted(names):
                full = Path(folder) / file
                if file.startswith(".") or file.endswith(_SKIP_SUFFIXES) or full.is_symlink() or not full.is_file():
                    continue
                files[full.relative_to(root).as_posix()] = full
    files["requirements.txt"] = cpu_requirements((root / "requirements.txt").read_text(encoding="utf-8")).encode()
    if results_repo or model_repos:
        readme = (root / "README.md").read_text(encoding="utf-8")
        files["README.md"] = space_readme(readme, results_repo=results_repo, model_repos=model_repos).encode()
    return dict(sorted(files.items()))


def hub_variables(results_repo: str | None, models_owner: str | None) -> dict[str, str]:
    """The Space's variables that make the app read records (and weights) from the Hub."""
    from .names import ENV_MODELS, ENV_RESULTS

    return {k: v for k, v in ((ENV_RESULTS, results_repo), (ENV_MODELS, models_owner)) if v}


def model_repos_of(root: Path, owner: str) -> list[str]:
    """The model repos ``segbench push --owner OWNER`` made for the local records: what the Space links to."""
    from ..records import io as rec
    from .names import model_repo_id

    found, _ = rec.load_records(root / "leaderboard")
    return sorted({model_repo_id(r["model"], r["dataset"], owner=owner) for r in found})


def size_of(content: bytes | Path) -> int:
    return len(content) if isinstance(content, bytes) else content.stat().st_size


@dataclass
class DeployReport:
    repo_id: str
    files: dict[str, bytes | Path]
    commit: str | None = None
    sent: list[str] = field(default_factory=list)
    url: str = ""
    variables: dict[str, str] = field(default_factory=dict)  # the Space's environment: where the app reads from

    @property
    def total_mb(self) -> float:
        return sum(size_of(c) for c in self.files.values()) / 1e6


@dataclass(frozen=True)
class DeployOptions:
    """How to deploy: ``dry_run`` lists the files and the total size and sends nothing (no token needed);
    ``copy_to`` also writes those exact files into a new folder (the deployed-files check runs from it);
    ``results_repo`` / ``models_owner`` make the Space read records / weights from the Hub (Space variables and
    the README's ``datasets`` / ``models`` links)."""

    root: str | Path = "."
    private: bool | None = None
    dry_run: bool = False
    copy_to: str | Path | None = None
    results_repo: str | None = None
    models_owner: str | None = None
    endpoint: str | None = None


def deploy_space(repo_id: str, options: DeployOptions = DeployOptions(), *,
                 log: Callable[[str], None] = print) -> DeployReport:
    """Create the Space ``repo_id`` (Gradio SDK, ``cpu-basic``) if needed and upload ``space_files`` in one commit;
    files already there with the same content are not sent, files no longer in the app are deleted, and an
    unchanged app makes no commit; then set the Space's Hub variables (``DeployOptions``)."""
    from .names import check_part, validate_repo

    validate_repo(repo_id, "Space id")
    if options.results_repo:
        validate_repo(options.results_repo, "--results-repo")
    if options.models_owner:
        check_part(options.models_owner, "--models owner")
    root = Path(options.root)
    models = model_repos_of(root, options.models_owner) if options.models_owner else None
    files = space_files(root, results_repo=options.results_repo, model_repos=models)
    report = DeployReport(repo_id, files, variables=hub_variables(options.results_repo, options.models_owner))
    if report.total_mb > MAX_MB:
        raise SegbenchError(f"the Space would be {report.total_mb:.1f} MB, over {MAX_MB:g} MB; rebuild the demo pack "
                            "smaller ('segbench demo-pack --max-mb') or remove files from leaderboard/")
    if options.copy_to is not None:
        write_copy(files, Path(options.copy_to))
    if options.dry_run or options.copy_to is not None:
        for path, content in files.items():
            log(f"{size_of(content) / 1e6:9.3f} MB  {path}")
        copied = f", copied to {options.copy_to}" if options.copy_to else ""
        dry = "; dry run: nothing sent" if options.dry_run else ""
        log(f"{len(files)} files, {report.total_mb:.1f} MB{copied}{dry}")
        if options.dry_run:
            return report
    return _upload(report, private=options.private, endpoint=options.endpoint, log=log)


def write_copy(files: dict[str, bytes | Path], out: Path) -> None:
    """The files a Space would receive, in ``out`` (which must not exist yet, or be empty)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SegbenchError(f"--copy-to {out}: exists and is not an empty folder; give a new folder")
    for path, content in files.items():
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            shutil.copyfile(content, target)


def _upload(report: DeployReport, *, private: bool | None, endpoint: str | None,
            log: Callable[[str], None]) -> DeployReport:
    from huggingface_hub import HfApi

    from .http import check_write_access, short_error, with_retries
    from .names import endpoint_url
    from .sync import Hashes, Plan, sync_repo

    api = HfApi(endpoint=endpoint_url(endpoint))
    check_write_access(api)
    plan = Plan(report.files, summary="Deploy the segbench app", prune=True,
                details=[f"{len(report.files)} files, {report.total_mb:.1f} MB, from 'segbench space deploy'"])
    try:
        commit, sent = with_retries(
            lambda: sync_repo(api, report.repo_id, "space", lambda remote: plan, private=private, hashes=Hashes(),
                              space_sdk="gradio"),
            what=f"Space {report.repo_id}", log=log)
    except SegbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - after the retries: one line, the token redacted
        raise SegbenchError(f"Space {report.repo_id}: deploy failed ({short_error(exc)}); nothing half-done stays "
                            "(one commit or none): run the command again") from None
    report.commit, report.sent = commit, sent
    report.url = f"{api.endpoint}/spaces/{report.repo_id}"
    current = {k: v.value for k, v in api.get_space_variables(report.repo_id).items()} if report.variables else {}
    for key, value in report.variables.items():
        if current.get(key) != value:
            api.add_space_variable(report.repo_id, key, value)
            log(f"{report.repo_id}: variable {key}={value}")
    log(f"{report.repo_id}: " + (f"commit {commit[:8]}, {len(sent)} file(s) sent or deleted" if commit
                                 else "unchanged, no commit") + f" -> {report.url}")
    return report
