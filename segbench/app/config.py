"""Where the app reads from (``AppConfig``), the app's display constants, and dataset names. What one running app
holds is ``state.AppState``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..data.facts import dataset_rank
from ..weights.store import default_store

__all__ = ["MAX_MODELS", "AppConfig", "dataset_label", "dataset_license", "dataset_rank", "one_line"]

MAX_MODELS = 4


@dataclass(frozen=True)
class AppConfig:
    """Where the app reads from. ``from_env`` maps SEGBENCH_LEADERBOARD (default ./leaderboard),
    SEGBENCH_STORE (default ~/.cache/segbench), SEGBENCH_HUB_RESULTS and SEGBENCH_HUB_MODELS (Hub repo ids, off
    when unset) and SEGBENCH_DEMO (the demo pack, default <leaderboard>/demo; "off" disables it)."""

    leaderboard: Path = Path("leaderboard")
    store: Path = field(default_factory=default_store)
    hub_results: str | None = None
    hub_models: str | None = None
    demo: Path | None = None  # the demo pack folder (segbench.weights.demo); None: no demo models
    max_side: int | None = None  # downscale uploads with a longer side to this (None: full size; models slide)
    max_pixels: int = 64_000_000  # uploads above this are refused before decoding (decompression bombs)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> AppConfig:
        env = os.environ if environ is None else environ
        leaderboard = Path(env.get("SEGBENCH_LEADERBOARD") or "leaderboard").expanduser()
        demo = env.get("SEGBENCH_DEMO", "")
        return cls(
            leaderboard=leaderboard,
            store=Path(env["SEGBENCH_STORE"]).expanduser() if env.get("SEGBENCH_STORE") else default_store(),
            hub_results=env.get("SEGBENCH_HUB_RESULTS") or None,
            hub_models=env.get("SEGBENCH_HUB_MODELS") or None,
            demo=None if demo.lower() in ("off", "0", "none") else Path(demo).expanduser() if demo else leaderboard / "demo",
        )


def dataset_label(name: str) -> str:
    """The dataset's display name (``DatasetInfo.label``), or ``name`` for datasets without static info."""
    from ..data import dataset_info

    info = dataset_info(name)
    return info.label if info is not None else name


def dataset_license(name: str) -> str:
    """The dataset's terms (``DatasetInfo.license``), '' when unknown."""
    from ..data import dataset_info

    info = dataset_info(name)
    return info.license if info is not None else ""


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when the message is empty)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
