"""``python -m segbench.bench``: list the development tools of this package with the first line of each docstring."""

from __future__ import annotations

import ast
from pathlib import Path


def main() -> int:
    print("development tools; run one as: python -m segbench.bench.NAME [--help]")
    for path in sorted(Path(__file__).parent.glob("*.py")):
        if path.stem.startswith("_"):
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        print(f"  {path.stem:16s} {doc.splitlines()[0] if doc else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
