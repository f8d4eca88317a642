"""The package reads like its architecture, and stays so: layers as packages (few top-level modules), no function
outside the model and dataset builders over 8 parameters, the weights' metadata read as a typed object only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "segbench"
MAX_TOP_LEVEL_MODULES = 12
MAX_PARAMETERS = 8
# Builders take their options as keyword-only arguments (STYLE.md): the models' and datasets' own tables check them.
BUILDER_FOLDERS = ("models", "data")


def parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = node.args
    count = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs)
    return count - 1 if args.args and args.args[0].arg in ("self", "cls") else count


def is_builder(path: Path, package: Path, node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    keyword_only = not node.args.args and not node.args.posonlyargs
    return keyword_only and path.relative_to(package).parts[0] in BUILDER_FOLDERS


def long_signatures(package: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and parameters(node) > MAX_PARAMETERS \
                    and not is_builder(path, package, node):
                found.append(f"{path.relative_to(package.parent)}:{node.lineno} {node.name} ({parameters(node)})")
    return found


def test_top_level_is_layers():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, f"segbench/ has {len(modules)} modules: group them by layer"
    for layer in ("config", "data", "models", "train", "evaluation", "inference", "records", "weights", "app", "cli"):
        assert (PACKAGE / layer / "__init__.py").is_file(), layer


def test_no_function_outside_builders_takes_more_than_eight_parameters():
    assert long_signatures() == []


def test_the_signature_check_sees_a_long_one(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "loop.py").write_text("def f(a, b, c, d, e, f, g, h, i):\n    pass\n", encoding="utf-8")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "net.py").write_text("def build(*, a, b, c, d, e, f, g, h, i):\n    pass\n",
                                                encoding="utf-8")
    assert long_signatures(tmp_path) == [f"{tmp_path.name}/train/loop.py:1 f (9)"]


META_AS_DICT = re.compile(r"\bmeta(?:\[|\.get\()")


def test_weights_meta_is_never_read_as_a_dict():
    reads = [f"{p.relative_to(PACKAGE.parent)}:{i}" for p in sorted(PACKAGE.rglob("*.py"))
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if META_AS_DICT.search(line)]
    assert reads == [], "read WeightsMeta's attributes instead"
