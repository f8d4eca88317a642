"""Push: each run's weights, config, record and a model card to a model repo per (model, dataset), then every
published record to the results dataset repo with the aggregated ``leaderboard.csv``. Local files are only read.

Model repo ``{owner}/segbench-{model}-{dataset}``: ``runs/<id>/{model.safetensors, model.json, record.json,
config.yaml}`` for every pushed run (records point here, so a record's URI stays valid when a better run lands);
a copy of the best run (highest mIoU) at the root; ``README.md``, the model card.
Results repo ``{owner}/segbench-results``: ``records/<dataset>/<model>--<id>.json`` (the local leaderboard layout,
``weights.uri`` rewritten to ``hf://``), ``leaderboard.csv``, ``README.md``.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import HfHubHTTPError

from ..errors import SegbenchError
from ..records import io as rec
from ..weights.store import CONFIG_FILE, WEIGHTS_FILE, LocalStore, sha256_file
from .cards import model_card, results_card, results_table, run_config_yaml
from .http import check_write_access, http_status, short_error, with_retries
from .names import (CARD_FILE, ENV_RESULTS, RECORD_FILE, RUN_CONFIG_FILE, RUNS_DIR, TABLE_FILE, check_part,
    endpoint_url, model_repo_id, results_repo_id, validate_repo)
from .sync import Content, Hashes, Plan, Remote, sync_repo


@dataclass
class PushReport:
    """Which repos got a commit, which were already up to date, which failed (repo -> one-line reason)."""

    done: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        text = f"{len(self.done)} repo(s) updated, {len(self.unchanged)} unchanged, {len(self.failed)} failed"
        if self.failed:
            text += f" ({', '.join(self.failed)}); local files are untouched: rerun 'python -m segbench push' to finish"
        return text


def check_push_access(*, owner: str | None = None, endpoint: str | None = None) -> str:
    """For ``run --push``: fail before training when pushing cannot work. Returns the owner to push to."""
    user = check_write_access(HfApi(endpoint=endpoint_url(endpoint)))
    return owner or user


@dataclass(frozen=True)
class PushTarget:
    """Where a push goes: model repos ``{owner}/segbench-{model}-{dataset}`` (``repo_template`` overrides the name;
    owner default: the token's user), the results repo (default ``$SEGBENCH_HUB_RESULTS``, else
    ``<owner>/segbench-results``), ``private`` for repos it creates, and the Hub ``endpoint`` (default hf.co)."""

    owner: str | None = None
    results_repo: str | None = None
    repo_template: str | None = None
    private: bool | None = None
    endpoint: str | None = None


def push_one(
    record: dict[str, Any],
    *,
    store: LocalStore | None = None,
    target: PushTarget = PushTarget(),
    strict: bool = False,
    log: Callable[[str], None] = print,
) -> PushReport:
    """``run --push``: push one finished record and its weights.

    A repo that fails (network, 5xx, rate limit after the retries) is logged with a 'rerun push' hint and, by
    default, does not stop the suite: the run is saved locally and ``python -m segbench push`` completes it.
    ``strict=True`` raises SegbenchError instead. A missing or read-only token always raises (one line); call
    :func:`check_push_access` before training to fail early.
    """
    report = push_records([record], store=store, target=target, log=log)
    if strict and not report.ok:
        reasons = "; ".join(f"{k}: {v}" for k, v in report.failed.items())
        raise SegbenchError(
            f"push of {record['model']} on {record['dataset']} failed ({reasons}); "
            "the run is saved locally: run 'python -m segbench push' to retry"
        )
    return report


def push_records(
    records: Iterable[dict[str, Any]],
    *,
    store: LocalStore | None = None,
    target: PushTarget = PushTarget(),
    attempts: int | None = None,
    backoff_s: float | None = None,
    log: Callable[[str], None] = print,
) -> PushReport:
    """Push ``records`` (validated dicts, e.g. from records.load_records) and their local weights to ``target``;
    ``attempts`` and ``backoff_s`` tune the retries of each repo's commit (default: ``http.with_retries``'s).

    Model repos first (one commit each, skipped when nothing changed), then the results repo with the records
    whose weights made it. A failed repo is reported and skipped; the others go on. Nothing local is written.
    Raises SegbenchError before any upload for a missing/read-only token or an invalid repo name.
    """
    store = store or LocalStore()
    results_repo = target.results_repo or os.environ.get(ENV_RESULTS) or None
    repo_template = target.repo_template
    records = list(records)
    _check_names(records, owner=target.owner, results_repo=results_repo, repo_template=repo_template)
    endpoint = endpoint_url(target.endpoint)
    api = HfApi(endpoint=endpoint)
    user = check_write_access(api)  # one clear line for a missing, invalid or read-only token
    owner = target.owner or user
    results_id = results_repo_id(owner, results_repo)
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(model_repo_id(r["model"], r["dataset"], owner=owner, template=repo_template), []).append(r)

    sync = _Sync(api, private=target.private, hashes=Hashes(), attempts=attempts, backoff_s=backoff_s, log=log)
    report, published = PushReport(), []
    for repo_id, group in groups.items():
        try:
            local = [(r, _local_run(r, store)) for r in group]
        except SegbenchError as exc:
            report.failed[repo_id] = str(exc)
            log(f"FAILED     {repo_id}: {exc}")
            continue
        runs = [run for _, run in local if run is not None]
        published += [r for r, run in local if run is None]  # weights already on the Hub
        if runs and sync(repo_id, "model", functools.partial(_model_plan, api, repo_id, runs), report):
            published += [hub_record(run.record, repo_id, f"{RUNS_DIR}/{run.record['id']}") for run in runs]
    if published:
        sync(results_id, "dataset", functools.partial(_results_plan, results_id, published, endpoint=endpoint), report)
    log(report.summary())
    return report


def _check_names(records: list[dict[str, Any]], *, owner: str | None, results_repo: str | None,
                 repo_template: str | None) -> None:
    """Validate every record and every repo name before the first request."""
    for r in records:
        rec.validate_record(r)
        for part, what in ((r["dataset"], "dataset"), (r["model"], "model"), (r["id"], "id")):
            check_part(part, what)
    if owner is not None:
        validate_repo(f"{owner}/x", "--owner")
        for r in records:
            model_repo_id(r["model"], r["dataset"], owner=owner, template=repo_template)
        results_repo_id(owner, results_repo)


@dataclass(frozen=True)
class _Sync:
    """One push's settings for :func:`sync_repo` (the API, new repos' privacy, the upload hashes shared across repos,
    the retries, the log); called once per repo."""

    api: HfApi
    private: bool | None
    hashes: Hashes
    attempts: int | None
    backoff_s: float | None
    log: Callable[[str], None]

    def __call__(self, repo_id: str, repo_type: str, plan: Callable[[Remote], Plan], report: PushReport) -> bool:
        """sync_repo with retries; the outcome goes into ``report`` and the log. Returns whether it succeeded."""
        log = self.log
        try:
            commit, changed = with_retries(
                lambda: sync_repo(self.api, repo_id, repo_type, plan, private=self.private, hashes=self.hashes),
                what=repo_id, attempts=self.attempts, backoff_s=self.backoff_s, log=log,
            )
        except Exception as exc:
            report.failed[repo_id] = short_error(exc)
            log(f"FAILED     {repo_id}: {report.failed[repo_id]}")
            return False
        if commit is None:
            report.unchanged.append(repo_id)
            log(f"unchanged  {repo_id} (no commit)")
        else:
            report.done.append(repo_id)
            log(f"pushed     {repo_id} @ {commit[:8]} ({len(changed)} file(s))")
        return True


# ---------------------------------------------------------------------------------------------------------------
# What each repo holds
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class _Run:
    record: dict[str, Any]
    weights_dir: Path


def _local_run(record: dict[str, Any], store: LocalStore) -> _Run | None:
    """The run's local weights, checked against the record; None when the weights are already on the Hub."""
    uri = record["weights"]["uri"]
    if uri.startswith("hf://"):
        return None
    directory = store.resolve(uri)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file() or not (directory / CONFIG_FILE).is_file():
        raise SegbenchError(
            f"{directory}: weights or model.json missing; "
            "retrain, or pull them with 'python -m segbench pull --weights'"
        )
    actual = sha256_file(weights)
    if actual != record["weights"]["sha256"]:
        raise SegbenchError(
            f"{weights}: sha256 {actual[:12]}… differs from the record's {record['weights']['sha256'][:12]}…; "
            "not pushing mismatched weights (retrain, or restore the matching file)"
        )
    return _Run(record, directory)


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def hub_record(record: dict[str, Any], repo_id: str, subdir: str) -> dict[str, Any]:
    """The record as published: private keys ("_path") dropped, weights pointing at the model repo."""
    out = {k: copy.deepcopy(v) for k, v in record.items() if not k.startswith("_")}
    uri = f"hf://{repo_id}/{subdir}".rstrip("/")
    out["weights"] = {**out["weights"], "uri": uri, "config_uri": f"{uri}/{CONFIG_FILE}"}
    return out


def _download_json(api: HfApi, repo_id: str, repo_type: str, revision: str, path: str) -> dict[str, Any] | None:
    """A small JSON file of the repo, None when it is missing or unreadable (transient errors propagate)."""
    try:
        local = api.hf_hub_download(repo_id, path, repo_type=repo_type, revision=revision)
        return json.loads(Path(local).read_text(encoding="utf-8"))
    except HfHubHTTPError as exc:
        if http_status(exc) == 404:
            return None
        raise
    except (OSError, json.JSONDecodeError):
        return None


def _model_plan(api: HfApi, repo_id: str, runs: list[_Run], remote: Remote) -> Plan:
    """Every run under runs/<id>/, the best run at the root (unless a better one is already there), the card."""
    files: dict[str, Content] = {}
    for run in runs:
        base = f"{RUNS_DIR}/{run.record['id']}"
        files[f"{base}/{WEIGHTS_FILE}"] = run.weights_dir / WEIGHTS_FILE
        files[f"{base}/{CONFIG_FILE}"] = run.weights_dir / CONFIG_FILE
        files[f"{base}/{RECORD_FILE}"] = _json_bytes(hub_record(run.record, repo_id, base))
        files[f"{base}/{RUN_CONFIG_FILE}"] = run_config_yaml(run.record)
    top = max(runs, key=lambda r: r.record["metrics"]["miou"])
    top_record = top.record
    root_record = hub_record(top_record, repo_id, f"{RUNS_DIR}/{top_record['id']}")
    local_ids = {r.record["id"] for r in runs}
    best: _Run | None = top
    if RECORD_FILE in remote.files and remote.head:
        # Keep a better run already at the root (pushed earlier, maybe from another machine).
        current = _download_json(api, repo_id, "model", remote.head, RECORD_FILE)
        current_miou = ((current or {}).get("metrics") or {}).get("miou", -1)
        if current and current.get("id") not in local_ids and current_miou > root_record["metrics"]["miou"]:
            root_record, best = current, None
    if best is not None:
        files[WEIGHTS_FILE] = best.weights_dir / WEIGHTS_FILE
        files[CONFIG_FILE] = best.weights_dir / CONFIG_FILE
        files[RECORD_FILE] = _json_bytes(root_record)
    remote_runs = {p.split("/")[1] for p in remote.files if p.startswith(f"{RUNS_DIR}/") and p.count("/") == 2}
    files[CARD_FILE] = str(model_card(root_record, repo_id=repo_id, runs=remote_runs | local_ids)).encode("utf-8")
    verb = "add" if not remote_runs else "update"
    ids = ", ".join(sorted(local_ids))
    summary = (f"segbench: {verb} {top_record['model']} on {top_record['dataset']} "
               f"({ids}; mIoU {top_record['metrics']['miou']:.4f})")
    details = [
        f"run {r.record['id']}: mIoU {r.record['metrics']['miou']:.4f}, {r.record['training'].get('epochs')} epochs, "
        f"{r.record['date']}"
        for r in runs
    ]
    return Plan(files, summary, details)


def _results_plan(repo_id: str, published: list[dict[str, Any]], remote: Remote, endpoint: str | None) -> Plan:
    """One JSON per published record, and the table and card over every record in the repo."""
    files: dict[str, Content] = {}
    for r in published:
        files[f"records/{r['dataset']}/{r['model']}--{r['id']}.json"] = _json_bytes(r)
    others = sorted(p for p in remote.files if re.fullmatch(r"records/[^/]+/[^/]+\.json", p) and p not in files)
    table = list(published)
    if others and remote.head:
        # The aggregated table covers every record in the repo, not just this push.
        folder = Path(snapshot_download(repo_id, repo_type="dataset", revision=remote.head, allow_patterns=others,
                                        endpoint=endpoint))
        for path in others:
            try:
                table.append(rec.read_record(folder / path))
            except rec.RecordError:
                continue
    files[TABLE_FILE] = results_table(table)
    files[CARD_FILE] = results_card(table, repo_id=repo_id).encode("utf-8")
    new = [p for p in files if p.startswith("records/") and p not in remote.files]
    summary = f"segbench: {len(new)} new, {len(published) - len(new)} updated record(s); {len(table)} in the table"
    details = [f"- {r['model']} on {r['dataset']} ({r['id']}): mIoU {r['metrics']['miou']:.4f}" for r in published]
    return Plan(files, summary, details)
