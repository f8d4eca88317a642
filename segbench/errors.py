"""User-facing errors: one line that names the file (or thing) and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SegbenchError(Exception):
    """An error caused by the user's input. The CLI prints ``error: <message>`` and exits with status 2."""


def nearest(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""`` when nothing is close."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""
