"""Names on the Hub: repo ids (sanitised and validated before any request), file names, ``hf://`` URIs."""

from __future__ import annotations

import os
import re
from typing import Any

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..errors import SegbenchError

DEFAULT_TEMPLATE = "{owner}/segbench-{model}-{dataset}"
DEFAULT_RESULTS_NAME = "segbench-results"
ENV_RESULTS = "SEGBENCH_HUB_RESULTS"  # the results dataset repo (push, pull, the app)
ENV_MODELS = "SEGBENCH_HUB_MODELS"  # an owner or a repo template: where the app finds weights of local records

RUNS_DIR = "runs"  # runs/<id>/ in a model repo: every pushed run
RECORD_FILE = "record.json"
RUN_CONFIG_FILE = "config.yaml"  # the training config, for 'python -m segbench train'
CARD_FILE = "README.md"
TABLE_FILE = "leaderboard.csv"
RECORDS_GLOB = "records/*/*.json"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SAFE_PART = re.compile(r"[A-Za-z0-9._-]+")


def sanitize_name(text: str) -> str:
    """A repo-name fragment: characters outside ``[A-Za-z0-9._-]`` become '-', runs of '-' or '.' collapse
    (the Hub forbids '--' and '..'), leading/trailing '-' and '.' are dropped."""
    out = _UNSAFE.sub("-", text)
    out = re.sub(r"-{2,}", "-", re.sub(r"\.{2,}", ".", out))
    return out.strip("-.")


def validate_repo(repo_id: str, what: str = "repo id") -> str:
    """Check ``repo_id`` locally (``owner/name``, the Hub's character rules) before any request."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise SegbenchError(f"{what} '{repo_id}': must be 'owner/name'; pass --owner or a full 'owner/name'")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise SegbenchError(
            f"{what} '{repo_id}': {str(exc).splitlines()[0]} Use letters, digits, '-', '_' and '.' "
            "(no '--' or '..', at most 96 characters)"
        ) from None
    return repo_id


def model_repo_id(model: str, dataset: str, *, owner: str, template: str | None = None) -> str:
    """``template`` (default ``{owner}/segbench-{model}-{dataset}``) with sanitised names, validated."""
    template = template or DEFAULT_TEMPLATE
    try:
        text = template.format(owner=owner, model=sanitize_name(model), dataset=sanitize_name(dataset))
    except (KeyError, IndexError, ValueError) as exc:
        raise SegbenchError(
            f"--repo-template '{template}': bad placeholder {exc}; use {{owner}}, {{model}} and {{dataset}}"
        ) from None
    return validate_repo(text, "model repo id")


def results_repo_id(owner: str, results_repo: str | None = None) -> str:
    """``results_repo`` when given, else ``<owner>/segbench-results``; validated."""
    return validate_repo(results_repo or f"{owner}/{DEFAULT_RESULTS_NAME}", "results repo id")


def check_part(value: str, what: str) -> str:
    """A record's dataset, model or id as one path component on the Hub (and locally on pull)."""
    if not _SAFE_PART.fullmatch(value) or value in (".", ".."):
        raise SegbenchError(
            f"record {what} '{value}': only letters, digits, '-', '_' and '.' can name a Hub path; rename it"
        )
    return value


def parse_hf_uri(uri: str) -> tuple[str, str]:
    """``hf://owner/name[/sub/dir]`` -> (repo_id, subdir or "")."""
    if not uri.startswith("hf://"):
        raise SegbenchError(f"{uri}: not a Hub weights URI; expected 'hf://owner/name[/subdir]'")
    parts = uri[len("hf://"):].strip("/").split("/")
    if len(parts) < 2 or any(p in ("", ".", "..") for p in parts):
        raise SegbenchError(f"{uri}: malformed Hub weights URI; expected 'hf://owner/name[/subdir]'")
    return validate_repo("/".join(parts[:2]), uri), "/".join(parts[2:])


def run_uri(repo_id: str, run_id: str) -> str:
    """The ``hf://`` URI of one run's folder in a model repo; records point here, so it survives a better run."""
    return f"hf://{repo_id}/{RUNS_DIR}/{run_id}"


def hub_weights_uri(record: dict[str, Any], *, models: str | None = None) -> str | None:
    """Where ``record``'s weights are on the Hub: its own ``hf://`` URI, else the run folder in the model repo
    named by ``models`` (``$SEGBENCH_HUB_MODELS``: an owner, or a repo template with {owner}/{model}/{dataset})."""
    uri = record["weights"]["uri"]
    if uri.startswith("hf://"):
        return uri
    models = models or os.environ.get(ENV_MODELS) or None
    if not models:
        return None
    template = models if "{" in models else DEFAULT_TEMPLATE
    owner = "" if "{" in models else models
    return run_uri(model_repo_id(record["model"], record["dataset"], owner=owner, template=template), record["id"])


def endpoint_url(endpoint: str | None) -> str | None:
    """``endpoint``, else ``$HF_ENDPOINT`` read now (huggingface_hub reads it once, at import time)."""
    value = endpoint or os.environ.get("HF_ENDPOINT")
    return value.rstrip("/") if value else None
