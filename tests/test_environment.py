"""The tests run in the environment `make test` installs: every package pinned in tests/constraints.txt that
segbench or its tests use is installed at its pinned version, so a green run means the same thing on any machine
(a newer pytest once refused a test that passed on the developers' machines)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / "tests" / "constraints.txt"


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[;\s]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pins() -> dict[str, str]:
    lines = [line for line in CONSTRAINTS.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return {_name(line): line.split("==", 1)[1].strip() for line in lines}


def direct_requirements() -> set[str]:
    """What requirements.txt and the test and onnx extras name: these must be installed, at their pins."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {_name(r) for r in project["dependencies"]}
    names |= {_name(r) for extra in ("test", "onnx") for r in project["optional-dependencies"][extra]}
    names |= {_name(line) for line in (REPO / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    return names


def test_every_dependency_is_pinned_exactly():
    assert all(re.fullmatch(r"[^=<>]+==[\w.+!-]+", line.strip()) for line in CONSTRAINTS.read_text().splitlines()
               if line.strip() and not line.startswith("#"))
    missing = direct_requirements() - set(pins())
    assert not missing, f"not pinned in {CONSTRAINTS.name}: {sorted(missing)}; run 'make lock'"


def test_installed_versions_are_the_pinned_ones():
    pinned, wrong = pins(), []
    for name, version in pinned.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed is None and name not in direct_requirements():
            continue  # a platform's own dependency (e.g. CUDA wheels) that this machine does not need
        if installed != version:
            wrong.append(f"{name} {installed or 'missing'} (pinned {version})")
    assert not wrong, f"run 'make test' (it installs the pins), or 'make lock' to upgrade on purpose: {wrong}"
