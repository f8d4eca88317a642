"""Builder options: every family file keeps a ``DEFAULTS`` table (builder name -> {option: default}); a builder
is ``{**defaults, **options}`` of its row, so presets are table rows instead of repeated keyword lists."""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import SegbenchError, nearest

__all__ = ["check_width", "merge_options"]


def merge_options(model: str, defaults: Mapping[str, object], options: Mapping[str, object]) -> dict[str, object]:
    """``{**defaults, **options}`` once every key of ``options`` is one of ``defaults``.

    An unknown key raises SegbenchError naming model ``model``, the nearest valid option and all of them.
    """
    for key in options:
        if key not in defaults:
            raise SegbenchError(
                f"model '{model}' has no option '{key}'{nearest(key, defaults)}; "
                f"its options: {', '.join(sorted(defaults))}"
            )
    return {**defaults, **options}


def check_width(model: str, name: str, value: object) -> None:
    """A layer-width option (channels, features) is an integer >= 8, else SegbenchError naming ``model`` and it."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 8:
        raise SegbenchError(f"{model}: {name}={value!r}; give an integer >= 8, e.g. 128")
