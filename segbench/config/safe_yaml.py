"""YAML for configs and ``key=value`` overrides: PyYAML's safe loader with bounds, YAML 1.2 floats and no
duplicate keys.

Why a loader of our own:
- PyYAML's ``safe_load`` expands aliases, so ten lines of ``&a [*b, *b, ...]`` (a "billion laughs" document)
  become 10^9 objects and hang the process. We compose the node graph first (aliases are shared nodes there, so
  it stays small), measure its *expanded* size and depth, and only then build Python objects.
- PyYAML follows YAML 1.1, where ``1e-4`` (no dot) is a string; every YAML 1.2 reader and every user means a
  float, so an extra resolver reads it as one.
- A mapping that repeats a key silently keeps the last value in PyYAML; here it is an error naming the line.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from ..errors import SegbenchError

MAX_BYTES = 1 << 20  # a config or suite file; the shipped suites are under 4 KiB
MAX_NODES = 100_000  # scalars + containers after alias expansion
MAX_DEPTH = 20  # nesting of lists/mappings; configs are flat (a suite is 4 levels deep)

# YAML 1.2 floats without a dot (1e-4, -2E3); the 1.1 resolver already reads 1.0e-4 and 0.5.
_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _Refused(ValueError):
    """Raised inside the loader; :func:`load` turns it into a SegbenchError naming the source."""


class YamlSyntaxError(SegbenchError):
    """Text that is not YAML at all (as opposed to YAML over the bounds); an override then reads it as a string."""


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses documents whose expansion is too large or too deep (see module doc)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        # The composer recurses once per nesting level: refuse before Python's own recursion limit is hit.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Node | None:
        node = super().get_single_node()
        if node is not None:
            check_expanded_size(node)
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges may be overridden by explicit keys: that is not a duplicate
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _Refused(f"duplicate key '{key}' at line {key_node.start_mark.line + 1}; keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


BoundedLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789"))


def check_expanded_size(root: Node) -> int:
    """The number of nodes ``root`` becomes once every alias is expanded (memoised over the shared graph, so the
    count costs one pass over the *unexpanded* nodes); raises on a recursive alias or more than MAX_NODES."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children = _children(node)
        if children_done:
            in_progress.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > MAX_NODES:
                raise _Refused(f"expands to more than {MAX_NODES} values (aliases repeated inside aliases)")
            continue
        if key in in_progress:
            raise _Refused("a recursive alias (an anchor used inside itself)")
        in_progress.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load(text: str, source: str) -> Any:
    """Parse ``text`` (from ``source``, named in errors) with :class:`BoundedLoader`; one-line SegbenchError on
    invalid YAML or a document over the bounds."""
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    except _Refused as exc:
        raise SegbenchError(f"{source}: refused YAML: {exc}") from None
    except RecursionError:
        raise SegbenchError(f"{source}: refused YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None)
        raise YamlSyntaxError(f"{source}: invalid YAML{where}" + (f" ({problem})" if problem else "")
                            + "; fix the syntax") from None
    finally:
        loader.dispose()


def read_text(path: Any, what: str = "config file") -> str:
    """The UTF-8 text of a YAML file, with one-line errors for a folder, a missing, huge, unreadable or binary file."""
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        raise SegbenchError(f"{path}: is a folder, not a {what}; give the path of a .yaml file inside it")
    if not path.is_file():
        raise SegbenchError(f"{path}: {what} not found; give a YAML path or a suite name from segbench/suites/")
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise SegbenchError(f"{path}: {size} bytes is too large for a {what} (at most {MAX_BYTES}); "
                                "is this the right file?")
        data = path.read_bytes()
    except OSError as exc:
        raise SegbenchError(f"{path}: cannot read the {what} ({exc.strerror or exc}); check its permissions") from None
    if b"\x00" in data:
        raise SegbenchError(f"{path}: a binary file, not a YAML {what}; give a text .yaml file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SegbenchError(f"{path}: not UTF-8 text (byte {exc.start}); save the {what} as UTF-8 YAML") from None
