"""Where the app reads from (``AppConfig``), what one running app holds (``AppState``), and dataset names.

``AppState`` replaces handler closures: every event handler in this package takes the state as its first argument,
so a test builds one with ``AppState.load(cfg, workdir=...)`` and calls the handler directly, without a browser.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..store import default_store

if TYPE_CHECKING:
    from ..demo import DemoPack
    from .catalog import ModelEntry, PredictorCache
    from .leaderboard import Leaderboard

FAMILIES = ("unet", "fcn", "deeplab", "maskrcnn")  # display order; the default picks one model of each
# Domain order in the app (first = the default Compare domain): street scenes first, where the pretrained models
# are; the built-in synthetic data last (it exists so a fresh clone has models, not to be looked at).
DATASET_ORDER = ("camvid", "balloon", "isbi2012", "synthetic")
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
    demo: Path | None = None  # the demo pack folder (segbench.demo); None: no demo models
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


@dataclass
class AppState:
    """One app's data: the config, a work folder (examples, CSV files), the leaderboard, the models with weights
    (dataset -> entries, replaced by a rescan), the loaded predictors and the verified demo pack (None when the
    config has none or a Hub models repo takes precedence)."""

    cfg: AppConfig
    workdir: Path
    board: Leaderboard
    models: dict[str, list[ModelEntry]]
    cache: PredictorCache
    demo: DemoPack | None = None

    @classmethod
    def load(cls, cfg: AppConfig | None = None, *, workdir: str | Path) -> AppState:
        """Read the records (local and Hub), verify the demo pack (sha256 of every file) and find the models with
        weights; nothing is loaded into memory yet. A demo file that fails verification is one line in the
        leaderboard's problems (and on stderr) and its model is left out."""
        from .catalog import PredictorCache, discover_models
        from .leaderboard import load_leaderboard

        cfg = cfg or AppConfig.from_env()
        board = load_leaderboard(cfg)
        demo = _load_demo(cfg)
        if demo is not None and demo.problems:
            board.problems.extend(demo.problems)
            print("\n".join(demo.problems), file=sys.stderr)
        models = discover_models(cfg.store, board.records, hub_models=cfg.hub_models, demo=demo)
        return cls(cfg, Path(workdir), board, models, PredictorCache(), demo)

    @property
    def domains(self) -> list[str]:
        return list(self.models)

    def rescan(self) -> None:
        """Find the models with weights again (the user trained or downloaded some while the app ran)."""
        from .catalog import discover_models

        self.models = discover_models(self.cfg.store, self.board.records, hub_models=self.cfg.hub_models,
                                      demo=self.demo)


def _load_demo(cfg: AppConfig) -> DemoPack | None:
    if cfg.demo is None or cfg.hub_models:
        return None
    from ..demo import load_pack

    return load_pack(cfg.demo)


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


def dataset_rank(name: str) -> tuple[int, str]:
    """Sort key: the built-in datasets in DATASET_ORDER, then the others by name."""
    return (DATASET_ORDER.index(name) if name in DATASET_ORDER else len(DATASET_ORDER), name)


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when the message is empty)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
