"""Hugging Face Hub: push weights and scores, pull them back, read the leaderboard from the Hub.

Layout on the Hub
- one **model repo** per (model, dataset), ``{owner}/segbench-{model}-{dataset}`` by default:
    ``runs/<id>/{model.safetensors, model.json, record.json, config.yaml}``  every pushed run;
        records point here (``hf://<repo>/runs/<id>``), so a record's URI stays valid when a better run lands;
    ``model.safetensors``, ``model.json``, ``record.json``  a copy of the best run (highest mIoU) at the root;
    ``README.md``  the model card (Hub metadata with ``model-index``, metrics with how each was measured,
    training, hardware, pretrained backbone, data licence).
- one **results dataset repo**, ``{owner}/segbench-results`` by default:
    ``records/<dataset>/<model>--<id>.json``  the local leaderboard layout, ``weights.uri`` rewritten to ``hf://``;
    ``leaderboard.csv``  the aggregated table of every record in the repo; ``README.md``  the dataset card.

Every transfer goes through huggingface_hub (``create_repo``, ``create_commit``, ``snapshot_download``,
``ModelCard``). What this package adds, one module each:

    names   repo ids (sanitised, validated before any request), file names, ``hf://`` URIs
    http    which failures are transient, one-line reports with the token redacted, retries, the token check
    sync    diff against the remote tree (sha256 / git blob id) and one commit per repo, none when unchanged
    push    what each repo holds; ``push_records``, ``push_one`` (``run --push``), ``check_push_access``
    pull    ``load_hub_records``, ``fetch_weights`` (sha256-checked), ``pull``
    cards   model and dataset cards, ``leaderboard.csv``

The ``push`` and ``pull`` subcommands are in ``segbench.cli.hub``. The names below are imported on first use, so
importing this package does not load huggingface_hub.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ imports on first use
    from .names import ENV_MODELS, ENV_RESULTS, hub_weights_uri
    from .pull import PullReport, RecordFilter, fetch_weights, load_hub_records, pull
    from .push import PushReport, PushTarget, check_push_access, push_one, push_records

_EXPORTS = {
    "ENV_MODELS": "names",
    "ENV_RESULTS": "names",
    "hub_weights_uri": "names",
    "PullReport": "pull",
    "RecordFilter": "pull",
    "fetch_weights": "pull",
    "load_hub_records": "pull",
    "pull": "pull",
    "PushReport": "push",
    "PushTarget": "push",
    "check_push_access": "push",
    "push_one": "push",
    "push_records": "push",
}

__all__ = [
    "ENV_MODELS", "ENV_RESULTS", "PullReport", "PushReport", "PushTarget", "RecordFilter", "check_push_access",
    "fetch_weights", "hub_weights_uri", "load_hub_records", "pull", "push_one", "push_records",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


class _Package(types.ModuleType):
    """Keeps ``segbench.hub.pull`` the function, as an eager ``from .pull import pull`` would.

    Loading a submodule sets the package attribute of its name; for ``pull.py`` that would hide the exported
    ``pull`` function whenever the module is loaded before the name is first looked up here.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
