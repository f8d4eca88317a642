"""User-facing errors: one line that names the file (or thing) and the fix."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


class SegbenchError(Exception):
    """An error caused by the user's input. The CLI prints ``error: <message>`` and exits with status 2."""


def nearest(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""`` when nothing is close."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


NAME_RULE = "letters, digits, '.', '_' or '-', not starting with '.', at most 80 characters"
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,79}")


def valid_name(value: object) -> bool:
    """``value`` is a string obeying :data:`NAME_RULE` (safe as one path component)."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def check_name(what: str, value: object) -> str:
    """``value`` if it is safe as one path component (records and weights are stored under it: ``../`` would
    escape the folder, ``/`` would hide a record from the app); otherwise a one-line SegbenchError."""
    if not valid_name(value):
        raise SegbenchError(f"{what}={short_repr(value)} is not a valid name; use {NAME_RULE}")
    return value


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` as one line. A DataLoader worker re-raises an error with the worker's whole traceback
    as its message ("Caught SegbenchError in DataLoader worker process 0. Original Traceback ..."): keep the
    root cause's message, the traceback's last line, without its exception-class prefix."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) == 1:
        return lines[0]
    last = lines[-1]
    head, sep, rest = last.partition(": ")
    if sep and re.fullmatch(r"[\w.]+(Error|Exception|Warning)", head):
        return rest
    return last


def short_repr(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, so a huge value cannot flood the one error line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
