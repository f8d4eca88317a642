"""The product never imports the development tooling: no module of segbench outside ``segbench/bench/`` (nor
``app.py``) imports ``segbench.bench``, at module level or inside a function, absolute or relative."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "segbench"
TOOLING = "segbench.bench"


def imported_modules(path: Path, module: str) -> set[str]:
    """Every module named by an import statement of ``path`` (``module``: its dotted name), relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def product_modules() -> dict[str, Path]:
    modules = {"app": ROOT / "app.py"}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if not (name == TOOLING or name.startswith(TOOLING + ".") or name.startswith("segbench.scripts")):
            modules[name] = path
    return modules


def imports_tooling(path: Path, module: str) -> list[str]:
    return sorted(m for m in imported_modules(path, module) if m == TOOLING or m.startswith(TOOLING + "."))


def test_the_checker_sees_every_form_of_import(tmp_path):
    forms = {"import segbench.bench.app": "segbench.x", "from segbench.bench import app": "segbench.x",
             "def f():\n    from ..bench.run import g": "segbench.cli.x", "from .. import bench": "segbench.cli.x",
             "from . import bench": "segbench.x"}
    for i, (code, module) in enumerate(forms.items()):
        path = tmp_path / f"m{i}.py"
        path.write_text(code + "\n")
        assert imports_tooling(path, module), code
    (tmp_path / "ok.py").write_text("from ..analysis import baselines\nimport benchmark\n")
    assert not imports_tooling(tmp_path / "ok.py", "segbench.cli.ok")


def test_no_product_module_imports_the_bench_tooling():
    modules = product_modules()
    assert "segbench.cli.models" in modules and "segbench.analysis.baselines" in modules and "app" in modules
    offenders = {name: imports_tooling(path, name) for name, path in modules.items()}
    offenders = {name: found for name, found in offenders.items() if found}
    assert not offenders, f"product modules import development tooling (move that code out of segbench/bench/): " \
                          f"{offenders}"


def test_the_tooling_lists_itself(capsys):
    from segbench.bench.__main__ import main

    assert main() == 0
    out = capsys.readouterr().out
    assert "python -m segbench.bench.NAME" in out and "split_gap" in out and "__main__" not in out
