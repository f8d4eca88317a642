"""What one running app holds (``AppState``): the config, the leaderboard, the models with weights, the loaded
predictors and the demo pack.

``AppState`` replaces handler closures: every event handler in this package takes the state as its first argument,
so a test builds one with ``AppState.load(cfg, workdir=...)`` and calls the handler directly, without a browser.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ..weights.demo import DemoPack, load_pack
from .catalog import ModelEntry, PredictorCache, discover_models
from .config import AppConfig
from .leaderboard import Leaderboard, load_leaderboard


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
        self.models = discover_models(self.cfg.store, self.board.records, hub_models=self.cfg.hub_models,
                                      demo=self.demo)


def _load_demo(cfg: AppConfig) -> DemoPack | None:
    if cfg.demo is None or cfg.hub_models:
        return None
    return load_pack(cfg.demo)
