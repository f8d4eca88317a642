"""Diff and commit: one commit per repo holding only the files whose content differs from the remote tree.

A file is unchanged when its sha256 equals the remote LFS pointer's, or (small files) its git blob id equals the
remote blob id; an unchanged push therefore makes no commit, and a retry after a lost commit response re-diffs
and finds nothing to do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils.sha import git_hash

from ..weights.store import sha256_file
from .http import no_write_access

Content = bytes | Path  # a file to send: its bytes, or a local file read at upload time
_REGULAR_MAX = 10 * 1024 * 1024  # the Hub stores files above this as LFS, so a git blob id cannot match


@dataclass
class Remote:
    """A repo's head commit and its files: path -> (LFS sha256 or None, git blob id, size in bytes)."""

    head: str | None
    files: dict[str, tuple[str | None, str, int]]


@dataclass
class Plan:
    """What a repo should hold (path -> content) and the commit message: a summary line and detail lines."""

    files: dict[str, Content]
    summary: str
    details: list[str] = field(default_factory=list)
    prune: bool = False  # also delete the remote files the plan does not hold (a Space mirrors its files exactly)


KEEP_REMOTE = {".gitattributes"}  # written by the Hub when it creates a repo: never pruned

class Hashes:
    """sha256 of local files, computed once per push (the root weights are a copy of a run's)."""

    def __init__(self) -> None:
        self._cache: dict[Path, str] = {}

    def sha256(self, content: Content) -> str:
        if isinstance(content, bytes):
            return hashlib.sha256(content).hexdigest()
        if content not in self._cache:
            self._cache[content] = sha256_file(content)
        return self._cache[content]


def remote_state(api: HfApi, repo_id: str, repo_type: str) -> Remote:
    """The head commit and every file of ``repo_id`` at that commit."""
    info = api.repo_info(repo_id, repo_type=repo_type)
    files = {}
    for entry in api.list_repo_tree(repo_id, repo_type=repo_type, revision=info.sha, recursive=True):
        if isinstance(entry, RepoFile):
            files[entry.path] = (entry.lfs.sha256 if entry.lfs else None, entry.blob_id, entry.size)
    return Remote(info.sha, files)


def same(content: Content, remote: tuple[str | None, str, int] | None, hashes: Hashes) -> bool:
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


def sync_repo(
    api: HfApi,
    repo_id: str,
    repo_type: str,
    build: Callable[[Remote], Plan],
    *,
    private: bool | None,
    hashes: Hashes,
    space_sdk: str | None = None,
) -> tuple[str | None, list[str]]:
    """Create ``repo_id`` if needed (a Space with ``space_sdk``) and commit what differs from ``build(remote)``:
    the files whose content changed and, for a pruning plan, deletions of the remote files it does not hold.

    Returns (commit id, or None when nothing changed; the paths sent or deleted). A 401/403 becomes a one-line
    SegbenchError; other HTTP errors propagate for the caller's retries.
    """
    options = {"space_sdk": space_sdk} if repo_type == "space" else {}
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, **options)
    except HfHubHTTPError as exc:
        raise (no_write_access(exc, repo_id) or exc) from None
    remote = remote_state(api, repo_id, repo_type)
    plan = build(remote)
    changed = sorted(p for p, c in plan.files.items() if not same(c, remote.files.get(p), hashes))
    stale = sorted(set(remote.files) - set(plan.files) - KEEP_REMOTE) if plan.prune else []
    if not changed and not stale:
        return None, []
    contents = {p: c if isinstance(c, bytes) else str(c) for p, c in plan.files.items()}
    operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=contents[p]) for p in changed]
    operations += [CommitOperationDelete(path_in_repo=p) for p in stale]
    description = "\n".join([*plan.details, "", "Files:", *(f"- {p}" for p in changed),
                             *(f"- {p} (deleted)" for p in stale)]).strip()
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
        raise (no_write_access(exc, repo_id) or exc) from None
    return info.oid, changed + stale
