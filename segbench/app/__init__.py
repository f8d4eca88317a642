"""Everything the Gradio app (``app.py``) does, without its layout: one module per tab, so it is tested and timed
directly.

- ``config``: ``AppConfig`` (where to read from, from the environment), display constants, dataset names.
- ``state``: ``AppState``, what a running app holds (records, models, predictors, the demo pack).
- ``catalog``: which models have weights (local store or Hub), the default picks, the predictor cache, examples.
- ``uploads``: reading an uploaded image and ground-truth mask.
- ``compare``: running the models, scoring, the panels; the Compare tab's handlers.
- ``leaderboard`` (+ ``ranking``, ``details``): the records table, shared ranks, seed merging, CSV, charts, record
  details; the Leaderboard tab's handlers.
- ``about``: the About tab's text.

Every handler is a plain function ``on_x(state, *values)`` returning the components' new values.
"""

from .config import AppConfig
from .state import AppState

__all__ = ["AppConfig", "AppState"]
