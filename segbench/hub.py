"""Hugging Face Hub: push weights and scores, pull them back, read the leaderboard from the Hub.

Layout on the Hub
- one **model repo** per (model, dataset), ``{owner}/segbench-{model}-{dataset}`` by default:
    ``runs/<id>/{model.safetensors, model.json, record.json, config.yaml}``  every pushed run;
        records point here (``hf://<repo>/runs/<id>``), so a record's URI stays valid when a better run lands;
    ``model.safetensors``, ``model.json``, ``record.json``  a copy of the best run (highest mIoU) at the root;
    ``README.md``  the model card (Hub metadata with ``model-index``, metrics, training, hardware, data licence).
- one **results dataset repo**, ``{owner}/segbench-results`` by default:
    ``records/<dataset>/<model>--<id>.json``  the local leaderboard layout, ``weights.uri`` rewritten to ``hf://``;
    ``leaderboard.csv``  the aggregated table of every record in the repo; ``README.md``  the dataset card.

Every transfer goes through huggingface_hub (``create_repo``, ``create_commit``, ``snapshot_download``,
``ModelCard``). What this module adds: which files to send, a diff against the remote tree (sha256 for LFS
files, the git blob id for small ones) so an unchanged push makes no commit, one commit per repo, retries with
backoff around each repo, a report of what was done, and a sha256 check of every downloaded weight file
against its record before anything uses it. Local files are only read by a push.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import (
    CommitOperationAdd,
    HfApi,
    get_token,
    snapshot_download,
)
from huggingface_hub.errors import HFValidationError, HfHubHTTPError
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import validate_repo_id
from huggingface_hub.utils.sha import git_hash

from . import records as rec
from .errors import SegbenchError
from .hub_cards import (  # noqa: F401  (re-exported: the cards are part of this module's API)
    RUN_CONFIG_FILE,
    RUNS_DIR,
    TABLE_FILE,
    data_terms,
    model_card,
    reproduce_command,
    results_card,
    results_table,
    run_config_yaml,
)
from .store import CONFIG_FILE, WEIGHTS_FILE, LocalStore, sha256_file

DEFAULT_TEMPLATE = "{owner}/segbench-{model}-{dataset}"
DEFAULT_RESULTS_NAME = "segbench-results"
RECORD_FILE = "record.json"
CARD_FILE = "README.md"
RECORDS_GLOB = "records/*/*.json"
ENV_RESULTS = "SEGBENCH_HUB_RESULTS"
ENV_MODELS = "SEGBENCH_HUB_MODELS"

# Retries around one repo's whole sync (create, diff, upload, commit). The commit POST itself is not retried by
# huggingface_hub; re-diffing before each attempt makes a retry after a lost response a no-op, not a 2nd commit.
ATTEMPTS = 4
BACKOFF_S = 1.0  # first wait; doubles each attempt
MAX_WAIT_S = 30.0
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_REGULAR_MAX = 10 * 1024 * 1024  # the Hub stores files above this as LFS, so a git blob id cannot match

_SAFE_PART = re.compile(r"[A-Za-z0-9._-]+")


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Network-level exception classes of whichever HTTP client huggingface_hub uses."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx", "requests"):  # whichever huggingface_hub imported (by version)
        mod = sys.modules.get(module)
        if mod is None:
            continue
        for name in ("TransportError", "ConnectionError", "Timeout"):
            cls = getattr(mod, name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                errors.append(cls)
    return tuple(errors)


_TRANSPORT = _transport_errors()


# ---------------------------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------------------------

def sanitize_name(text: str) -> str:
    """A repo-name fragment: characters outside ``[A-Za-z0-9._-]`` become '-', runs of '-' or '.' collapse
    (the Hub forbids '--' and '..'), leading/trailing '-' and '.' are dropped."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", text)
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
    return validate_repo(results_repo or f"{owner}/{DEFAULT_RESULTS_NAME}", "results repo id")


def parse_hf_uri(uri: str) -> tuple[str, str]:
    """``hf://owner/name[/sub/dir]`` -> (repo_id, subdir or "")."""
    if not uri.startswith("hf://"):
        raise SegbenchError(f"{uri}: not a Hub weights URI; expected 'hf://owner/name[/subdir]'")
    parts = uri[len("hf://"):].strip("/").split("/")
    if len(parts) < 2 or any(p in ("", ".", "..") for p in parts):
        raise SegbenchError(f"{uri}: malformed Hub weights URI; expected 'hf://owner/name[/subdir]'")
    return validate_repo("/".join(parts[:2]), uri), "/".join(parts[2:])


def _endpoint(endpoint: str | None) -> str | None:
    # Read HF_ENDPOINT now: huggingface_hub reads it once, at import time.
    value = endpoint or os.environ.get("HF_ENDPOINT")
    return value.rstrip("/") if value else None


def _check_part(value: str, what: str) -> str:
    if not _SAFE_PART.fullmatch(value) or value in (".", ".."):
        raise SegbenchError(
            f"record {what} '{value}': only letters, digits, '-', '_' and '.' can name a Hub path; rename it"
        )
    return value


# ---------------------------------------------------------------------------------------------------------------
# Errors, redaction, retries
# ---------------------------------------------------------------------------------------------------------------

def _redact(text: str) -> str:
    """Remove the token from anything we print, in case a server echoes it."""
    token = get_token()
    return text.replace(token, "hf_***") if token else text


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _http_status(exc: BaseException) -> int | None:
    for e in _chain(exc):
        response = getattr(e, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
    return None


def is_transient(exc: BaseException) -> bool:
    """Network errors, timeouts, HTTP 408/429/5xx: worth another try."""
    status = _http_status(exc)
    if status is not None:
        return status in TRANSIENT_STATUS
    return any(isinstance(e, _TRANSPORT) for e in _chain(exc))


def short_error(exc: BaseException) -> str:
    """One line for a report: the HTTP status and the server's message, or the exception's first line."""
    status = _http_status(exc)
    if isinstance(exc, SegbenchError):
        text = str(exc)
    elif status is not None:
        e = next((e for e in _chain(exc) if getattr(e, "response", None) is not None), exc)
        reason = getattr(e.response, "reason_phrase", None) or getattr(e.response, "reason", None) or ""
        server = getattr(e, "server_message", None) or ""
        text = f"HTTP {status} {reason}".strip() + (f": {server.splitlines()[0]}" if server else "")
    else:
        root = list(_chain(exc))[-1]
        first = (str(root).strip().splitlines() or [""])[0]
        text = f"{type(root).__name__}: {first}" if first else type(root).__name__
    return _redact(text)[:300]


def with_retries(
    fn: Callable[[], Any],
    *,
    what: str,
    attempts: int | None = None,
    backoff_s: float | None = None,
    log: Callable[[str], None] | None = None,
) -> Any:
    """Call ``fn`` and retry transient failures with exponential backoff (honouring ``Retry-After``)."""
    attempts = ATTEMPTS if attempts is None else max(1, attempts)
    backoff_s = BACKOFF_S if backoff_s is None else backoff_s
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            wait = min(MAX_WAIT_S, backoff_s * 2 ** (attempt - 1))
            retry_after = _retry_after(exc)
            if retry_after is not None:
                wait = min(MAX_WAIT_S, max(wait, retry_after))
            if log:
                log(f"  {what}: {short_error(exc)}; retrying in {wait:.1f}s ({attempt + 1}/{attempts})")
            time.sleep(wait)
    raise AssertionError("unreachable")


def _retry_after(exc: BaseException) -> float | None:
    for e in _chain(exc):
        headers = getattr(getattr(e, "response", None), "headers", None)
        if headers is not None and headers.get("Retry-After"):
            try:
                return float(headers["Retry-After"])
            except ValueError:
                return None
    return None


# ---------------------------------------------------------------------------------------------------------------
# Auth
# ---------------------------------------------------------------------------------------------------------------

def check_write_access(api: HfApi) -> str:
    """The user name behind the token, or SegbenchError (one line) when there is no usable write token.

    The token comes from ``HF_TOKEN`` or the saved login (huggingface_hub's ``get_token``); it is never printed.
    """
    if not get_token():
        raise SegbenchError(
            "Hugging Face token not found: set HF_TOKEN or run 'hf auth login' with a token that has write access"
        )
    try:
        info = api.whoami()
    except HfHubHTTPError as exc:
        if _http_status(exc) == 401:
            raise SegbenchError(
                "Hugging Face token rejected (401): set HF_TOKEN or run 'hf auth login' with a valid write token"
            ) from None
        raise SegbenchError(f"{api.endpoint}: token check failed ({short_error(exc)}); try again later") from None
    except Exception as exc:
        if is_transient(exc):
            raise SegbenchError(
                f"{api.endpoint}: Hugging Face Hub not reachable ({short_error(exc)}); "
                "check the connection or --endpoint"
            ) from None
        raise
    role = ((info.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise SegbenchError(
            "Hugging Face token is read-only: pushing needs a token with write access "
            "(https://huggingface.co/settings/tokens)"
        )
    return str(info["name"])


def _no_write_access(exc: BaseException, repo_id: str) -> SegbenchError | None:
    if _http_status(exc) in (401, 403):
        return SegbenchError(
            f"{repo_id}: no write access ({short_error(exc)}); "
            "use a write token for this namespace or pick another --owner"
        )
    return None


def check_push_access(*, owner: str | None = None, endpoint: str | None = None) -> str:
    """For ``run --push``: fail before training when pushing cannot work. Returns the owner to push to."""
    user = check_write_access(HfApi(endpoint=_endpoint(endpoint)))
    return owner or user


# ---------------------------------------------------------------------------------------------------------------
# Repo sync: one commit with only the files whose content differs from the remote tree
# ---------------------------------------------------------------------------------------------------------------

Content = bytes | Path


@dataclass
class _Remote:
    head: str | None
    files: dict[str, tuple[str | None, str, int]]  # path -> (LFS sha256 or None, git blob id, size)


def _remote_state(api: HfApi, repo_id: str, repo_type: str) -> _Remote:
    info = api.repo_info(repo_id, repo_type=repo_type)
    files = {}
    for entry in api.list_repo_tree(repo_id, repo_type=repo_type, revision=info.sha, recursive=True):
        if isinstance(entry, RepoFile):
            files[entry.path] = (entry.lfs.sha256 if entry.lfs else None, entry.blob_id, entry.size)
    return _Remote(info.sha, files)


class _Hashes:
    """sha256 of local files, computed once per push (the root weights are a copy of a run's)."""

    def __init__(self) -> None:
        self._cache: dict[Path, str] = {}

    def sha256(self, content: Content) -> str:
        if isinstance(content, bytes):
            return hashlib.sha256(content).hexdigest()
        if content not in self._cache:
            self._cache[content] = sha256_file(content)
        return self._cache[content]


def _same(content: Content, remote: tuple[str | None, str, int] | None, hashes: _Hashes) -> bool:
    """Whether the remote file already holds ``content``: sha256 for LFS files, the git blob id otherwise."""
    if remote is None:
        return False
    lfs_sha256, blob_id, _ = remote
    if lfs_sha256 is not None:
        return hashes.sha256(content) == lfs_sha256
    size = len(content) if isinstance(content, bytes) else content.stat().st_size
    if size > _REGULAR_MAX:
        return False
    data = content if isinstance(content, bytes) else content.read_bytes()
    return git_hash(data) == blob_id


@dataclass
class _Plan:
    files: dict[str, Content]
    summary: str
    details: list[str] = field(default_factory=list)


def _sync_repo(
    api: HfApi,
    repo_id: str,
    repo_type: str,
    build: Callable[[_Remote], _Plan],
    *,
    private: bool | None,
    hashes: _Hashes,
) -> tuple[str | None, list[str]]:
    """Create ``repo_id`` if needed and commit what differs. Returns (commit id or None if unchanged, paths)."""
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    except HfHubHTTPError as exc:
        raise (_no_write_access(exc, repo_id) or exc) from None
    remote = _remote_state(api, repo_id, repo_type)
    plan = build(remote)
    changed = sorted(p for p, c in plan.files.items() if not _same(c, remote.files.get(p), hashes))
    if not changed:
        return None, []
    contents = {p: c if isinstance(c, bytes) else str(c) for p, c in plan.files.items()}
    operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=contents[p]) for p in changed]
    description = "\n".join([*plan.details, "", "Files:", *(f"- {p}" for p in changed)]).strip()
    try:
        info = api.create_commit(
            repo_id,
            operations,
            repo_type=repo_type,
            commit_message=plan.summary,
            commit_description=description,
            parent_commit=remote.head,  # fail rather than overwrite a commit made since we looked
        )
    except HfHubHTTPError as exc:
        raise (_no_write_access(exc, repo_id) or exc) from None
    return info.oid, changed


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def hub_record(record: dict[str, Any], repo_id: str, subdir: str) -> dict[str, Any]:
    """The record as published: private keys ("_path") dropped, weights pointing at the model repo."""
    out = {k: copy.deepcopy(v) for k, v in record.items() if not k.startswith("_")}
    uri = f"hf://{repo_id}/{subdir}".rstrip("/")
    out["weights"] = {**out["weights"], "uri": uri, "config_uri": f"{uri}/{CONFIG_FILE}"}
    return out


# ---------------------------------------------------------------------------------------------------------------
# Push
# ---------------------------------------------------------------------------------------------------------------

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


def _download_json(api: HfApi, repo_id: str, repo_type: str, revision: str, path: str) -> dict[str, Any] | None:
    """A small JSON file of the repo, None when it is missing or unreadable (transient errors propagate)."""
    try:
        local = api.hf_hub_download(repo_id, path, repo_type=repo_type, revision=revision)
        return json.loads(Path(local).read_text(encoding="utf-8"))
    except HfHubHTTPError as exc:
        if _http_status(exc) == 404:
            return None
        raise
    except (OSError, json.JSONDecodeError):
        return None


def _model_plan(api: HfApi, repo_id: str, runs: list[_Run], remote: _Remote) -> _Plan:
    files: dict[str, Content] = {}
    for run in runs:
        base = f"{RUNS_DIR}/{run.record['id']}"
        files[f"{base}/{WEIGHTS_FILE}"] = run.weights_dir / WEIGHTS_FILE
        files[f"{base}/{CONFIG_FILE}"] = run.weights_dir / CONFIG_FILE
        files[f"{base}/{RECORD_FILE}"] = _json_bytes(hub_record(run.record, repo_id, base))
        files[f"{base}/{RUN_CONFIG_FILE}"] = run_config_yaml(run.record)
    best = max(runs, key=lambda r: r.record["metrics"]["miou"])
    root_record = hub_record(best.record, repo_id, f"{RUNS_DIR}/{best.record['id']}")
    local_ids = {r.record["id"] for r in runs}
    if RECORD_FILE in remote.files and remote.head:
        # Keep a better run already at the root (pushed earlier, maybe from another machine).
        current = _download_json(api, repo_id, "model", remote.head, RECORD_FILE)
        current_miou = ((current or {}).get("metrics") or {}).get("miou", -1)
        if current and current.get("id") not in local_ids and current_miou > root_record["metrics"]["miou"]:
            root_record = current
            best = None
    if best is not None:
        files[WEIGHTS_FILE] = best.weights_dir / WEIGHTS_FILE
        files[CONFIG_FILE] = best.weights_dir / CONFIG_FILE
        files[RECORD_FILE] = _json_bytes(root_record)
    remote_runs = {p.split("/")[1] for p in remote.files if p.startswith(f"{RUNS_DIR}/") and p.count("/") == 2}
    card = model_card(root_record, repo_id=repo_id, runs=remote_runs | local_ids)
    files[CARD_FILE] = str(card).encode("utf-8")
    top = max(runs, key=lambda r: r.record["metrics"]["miou"]).record
    new = "add" if not remote_runs else "update"
    ids = ", ".join(sorted(local_ids))
    summary = f"segbench: {new} {top['model']} on {top['dataset']} ({ids}; mIoU {top['metrics']['miou']:.4f})"
    details = [
        f"run {r.record['id']}: mIoU {r.record['metrics']['miou']:.4f}, {r.record['training'].get('epochs')} epochs, "
        f"{r.record['date']}"
        for r in runs
    ]
    return _Plan(files, summary, details)


def _results_plan(repo_id: str, published: list[dict[str, Any]], remote: _Remote, endpoint: str | None) -> _Plan:
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
    return _Plan(files, summary, details)


def push_records(
    records: Iterable[dict[str, Any]],
    *,
    store: LocalStore | None = None,
    owner: str | None = None,
    results_repo: str | None = None,
    repo_template: str | None = None,
    private: bool | None = None,
    endpoint: str | None = None,
    attempts: int | None = None,
    backoff_s: float | None = None,
    log: Callable[[str], None] = print,
) -> PushReport:
    """Push ``records`` (validated dicts, e.g. from records.load_records) and their local weights.

    The results repo defaults to ``$SEGBENCH_HUB_RESULTS``, else ``<owner>/segbench-results``.
    Model repos first (one commit each, skipped when nothing changed), then the results repo with the records
    whose weights made it. A failed repo is reported and skipped; the others go on. Nothing local is written.
    Raises SegbenchError before any upload for a missing/read-only token or an invalid repo name.
    """
    store = store or LocalStore()
    results_repo = results_repo or os.environ.get(ENV_RESULTS) or None
    records = [r for r in records]
    for r in records:
        rec.validate_record(r)
        _check_part(r["dataset"], "dataset"), _check_part(r["model"], "model"), _check_part(r["id"], "id")
    endpoint = _endpoint(endpoint)
    if owner is not None:  # validate every name before the first request
        validate_repo(f"{owner}/x", "--owner")
        for r in records:
            model_repo_id(r["model"], r["dataset"], owner=owner, template=repo_template)
        results_repo_id(owner, results_repo)
    api = HfApi(endpoint=endpoint)
    user = check_write_access(api)  # one clear line for a missing, invalid or read-only token
    owner = owner or user
    results_id = results_repo_id(owner, results_repo)
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(model_repo_id(r["model"], r["dataset"], owner=owner, template=repo_template), []).append(r)

    report, hashes, published = PushReport(), _Hashes(), []
    for repo_id, group in groups.items():
        try:
            local = [(r, _local_run(r, store)) for r in group]
        except SegbenchError as exc:
            report.failed[repo_id] = str(exc)
            log(f"FAILED     {repo_id}: {exc}")
            continue
        runs = [run for _, run in local if run is not None]
        published += [r for r, run in local if run is None]  # weights already on the Hub
        if not runs:
            continue
        plan = functools.partial(_model_plan, api, repo_id, runs)  # remote -> _Plan
        if _sync_reported(api, repo_id, "model", plan, report, private=private, hashes=hashes, attempts=attempts,
                          backoff_s=backoff_s, log=log):
            published += [hub_record(run.record, repo_id, f"{RUNS_DIR}/{run.record['id']}") for run in runs]

    if published:
        plan = functools.partial(_results_plan, results_id, published, endpoint=endpoint)
        _sync_reported(api, results_id, "dataset", plan, report, private=private, hashes=hashes, attempts=attempts,
                       backoff_s=backoff_s, log=log)
    log(report.summary())
    return report


def _sync_reported(
    api: HfApi, repo_id: str, repo_type: str, plan: Callable[[_Remote], _Plan], report: PushReport, *,
    private: bool | None, hashes: _Hashes, attempts: int | None, backoff_s: float | None, log: Callable[[str], None],
) -> bool:
    """_sync_repo with retries; the outcome goes into ``report`` and the log. Returns whether it succeeded."""
    try:
        commit, changed = with_retries(
            lambda: _sync_repo(api, repo_id, repo_type, plan, private=private, hashes=hashes),
            what=repo_id, attempts=attempts, backoff_s=backoff_s, log=log,
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


def push_one(
    record: dict[str, Any],
    *,
    store: LocalStore | None = None,
    owner: str | None = None,
    results_repo: str | None = None,
    repo_template: str | None = None,
    private: bool | None = None,
    endpoint: str | None = None,
    strict: bool = False,
    log: Callable[[str], None] = print,
) -> PushReport:
    """``run --push``: push one finished record and its weights.

    A repo that fails (network, 5xx, rate limit after the retries) is logged with a 'rerun push' hint and, by
    default, does not stop the suite: the run is saved locally and ``python -m segbench push`` completes it.
    ``strict=True`` raises SegbenchError instead. A missing or read-only token always raises (one line); call
    :func:`check_push_access` before training to fail early.
    """
    report = push_records([record], store=store, owner=owner, results_repo=results_repo, repo_template=repo_template,
                          private=private, endpoint=endpoint, log=log)
    if strict and not report.ok:
        reasons = "; ".join(f"{k}: {v}" for k, v in report.failed.items())
        raise SegbenchError(
            f"push of {record['model']} on {record['dataset']} failed ({reasons}); "
            "the run is saved locally: run 'python -m segbench push' to retry"
        )
    return report


# ---------------------------------------------------------------------------------------------------------------
# Read back: records, weights, pull
# ---------------------------------------------------------------------------------------------------------------

def load_hub_records(
    results_repo: str, *, revision: str | None = None, endpoint: str | None = None, cache_dir: str | Path | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every valid record of the results repo, through huggingface_hub's cache (works offline once cached).

    Returns (records, problems) like records.load_records; raises SegbenchError when the repo cannot be read.
    """
    validate_repo(results_repo, "results repo id")
    try:
        folder = snapshot_download(results_repo, repo_type="dataset", revision=revision, allow_patterns=[RECORDS_GLOB],
                                   endpoint=_endpoint(endpoint), cache_dir=cache_dir)
    except Exception as exc:
        raise SegbenchError(
            f"hf://datasets/{results_repo}: cannot read the results ({short_error(exc)}); "
            "check the repo id and the connection"
        ) from None
    return rec.load_records(Path(folder))


def load_leaderboard(
    local_root: str | Path = rec.DEFAULT_ROOT, *, results_repo: str | None = None, revision: str | None = None,
    endpoint: str | None = None,
) -> tuple[list[dict[str, Any]], list[str], str | None]:
    """Records for the app: from the results repo when one is set (argument or ``$SEGBENCH_HUB_RESULTS``), else
    the local leaderboard. Returns (records, problems, notice); notice is one line when the Hub could not be
    read and the local records are shown instead."""
    results_repo = results_repo or os.environ.get(ENV_RESULTS) or None
    if results_repo:
        try:
            records, problems = load_hub_records(results_repo, revision=revision, endpoint=endpoint)
            return records, problems, None
        except SegbenchError as exc:
            records, problems = rec.load_records(local_root)
            return records, problems, f"{exc} — showing the local records in {local_root}"
    records, problems = rec.load_records(local_root)
    return records, problems, None


_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, so the app hashes once


def _verified_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256_file(path)
    return _VERIFIED[key]


def _discard(path: Path) -> None:
    """Remove a cached file and the blob its snapshot link points to, so the cache cannot serve it again."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    if blob != path:
        blob.unlink(missing_ok=True)


def fetch_weights(
    uri: str, expected_sha256: str, *, revision: str | None = None, endpoint: str | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Download ``model.safetensors`` + ``model.json`` of ``hf://<repo_id>[/subdir]`` into the HF cache and return
    their folder (for store.load_model). A file whose sha256 differs from ``expected_sha256`` is deleted from
    the cache and SegbenchError is raised: a corrupted or tampered download is never used."""
    repo_id, subdir = parse_hf_uri(uri)
    prefix = f"{subdir}/" if subdir else ""
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, endpoint=_endpoint(endpoint), cache_dir=cache_dir,
                                        allow_patterns=[prefix + WEIGHTS_FILE, prefix + CONFIG_FILE])) / subdir
    except Exception as exc:
        raise SegbenchError(
            f"{uri}: cannot download the weights ({short_error(exc)}); check the connection and try again"
        ) from None
    weights = folder / WEIGHTS_FILE
    if not weights.is_file() or not (folder / CONFIG_FILE).is_file():
        raise SegbenchError(
            f"{uri}: {WEIGHTS_FILE} or {CONFIG_FILE} missing (not on the Hub, or not cached while offline); "
            "check the connection, else re-push the run"
        )
    actual = _verified_sha256(weights)
    if actual != expected_sha256:
        _discard(weights)
        raise SegbenchError(
            f"{uri}/{WEIGHTS_FILE}: downloaded sha256 {actual[:12]}… does not match the record's "
            f"{expected_sha256[:12]}…; "
            "the download was discarded: pull again, or re-push if the Hub copy is wrong"
        )
    return folder


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
    repo_id = model_repo_id(record["model"], record["dataset"], owner=owner, template=template)
    return f"hf://{repo_id}/{RUNS_DIR}/{record['id']}"


def resolve_weights(record: dict[str, Any], *, store: LocalStore | None = None, endpoint: str | None = None) -> Path:
    """A local folder with the verified weights of ``record``: the local store when it has them, else the Hub
    (``hf://`` URI or ``$SEGBENCH_HUB_MODELS``) through the HF cache. For the app and ``predict``."""
    store = store or LocalStore()
    uri = record["weights"]["uri"]
    if not uri.startswith("hf://"):
        directory = store.resolve(uri)
        if (directory / WEIGHTS_FILE).is_file():
            return directory
    hub_uri = hub_weights_uri(record)
    if hub_uri is None:
        raise SegbenchError(
            f"{uri}: weights not in the local store {store.root}; "
            f"pull them with 'python -m segbench pull --weights' or set {ENV_MODELS}"
        )
    return fetch_weights(hub_uri, record["weights"]["sha256"], endpoint=endpoint)


@dataclass
class PullReport:
    records: list[Path] = field(default_factory=list)
    weights: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _install_weights(folder: Path, target: Path, expected_sha256: str) -> None:
    """Copy verified weights into the store layout atomically (temporary folder, then a rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            shutil.copyfile(folder / name, tmp / name)  # follows the cache's symlinks
        if sha256_file(tmp / WEIGHTS_FILE) != expected_sha256:
            raise SegbenchError(f"{target}: copied weights changed on disk; pull again")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def pull(
    *,
    results_repo: str,
    leaderboard: str | Path = rec.DEFAULT_ROOT,
    store: LocalStore | None = None,
    weights: bool = False,
    datasets: Iterable[str] | None = None,
    models: Iterable[str] | None = None,
    revision: str | None = None,
    endpoint: str | None = None,
    log: Callable[[str], None] = print,
) -> PullReport:
    """Fetch the results repo's records into ``leaderboard`` and, with ``weights=True``, their weights into the
    local store (sha256 checked against each record; a mismatch is reported and nothing is written for it).

    A record whose weights are in the local store (pulled now or before, same sha256) points at ``local:...``;
    otherwise it keeps its ``hf://`` URI, which the app resolves through the HF cache.
    """
    store = store or LocalStore()
    datasets, models = set(datasets or ()), set(models or ())
    hub_records, problems = load_hub_records(results_repo, revision=revision, endpoint=endpoint)
    report = PullReport(problems=list(problems))
    for p in problems:
        log(f"skipped    {p}")
    for record in hub_records:
        if (datasets and record["dataset"] not in datasets) or (models and record["model"] not in models):
            continue
        try:
            path = _pull_one(record, leaderboard=leaderboard, store=store, weights=weights, endpoint=endpoint,
                             report=report, log=log)
        except SegbenchError as exc:
            report.problems.append(str(exc))
            log(f"FAILED     {exc}")
            continue
        report.records.append(path)
    problems_note = f"; {len(report.problems)} problem(s)" if report.problems else ""
    log(f"pulled {len(report.records)} record(s) into {leaderboard}, "
        f"{len(report.weights)} weight folder(s) into {store.root}{problems_note}")
    return report


def _pull_one(
    record: dict[str, Any], *, leaderboard: str | Path, store: LocalStore, weights: bool, endpoint: str | None,
    report: PullReport, log: Callable[[str], None],
) -> Path:
    """Write one Hub record locally (and its weights with ``weights=True``); never overwrites a local run that
    has other weights under the same id (SegbenchError instead)."""
    record = {k: v for k, v in record.items() if not k.startswith("_")}
    sha = record["weights"]["sha256"]
    for part, what in ((record["dataset"], "dataset"), (record["model"], "model"), (record["id"], "id")):
        _check_part(part, what)
    existing = rec.record_path(leaderboard, record)
    target = store.run_dir(record["dataset"], record["model"], record["id"])
    target_sha = sha256_file(target / WEIGHTS_FILE) if (target / WEIGHTS_FILE).is_file() else None
    clash = target_sha is not None and target_sha != sha
    if existing.is_file():
        try:
            old = rec.read_record(existing)
            clash = clash or (old["weights"]["sha256"] != sha and not old["weights"]["uri"].startswith("hf://"))
        except rec.RecordError:
            pass
    if clash:
        raise SegbenchError(
            f"{existing}: a local run with other weights has this id; kept it "
            "(pull into another --leaderboard and --store to compare)"
        )
    local = target_sha == sha and (target / CONFIG_FILE).is_file()
    if weights and not local:
        hub_uri = hub_weights_uri(record)
        if hub_uri is None:
            raise SegbenchError(
                f"{existing}: the record has no Hub weights URI; re-push it with 'python -m segbench push'"
            )
        try:
            _install_weights(fetch_weights(hub_uri, sha, endpoint=endpoint), target, sha)
            report.weights.append(target)
            log(f"weights    {target}")
            local = True
        except SegbenchError as exc:  # keep the scores; the weights stay on the Hub
            report.problems.append(str(exc))
            log(f"FAILED     {exc}")
    if local:
        uri = store.uri(record["dataset"], record["model"], record["id"])
        record["weights"] = {**record["weights"], "uri": uri, "config_uri": f"{uri}/{CONFIG_FILE}"}
    path = rec.write_record(record, leaderboard)
    log(f"record     {path}")
    return path
