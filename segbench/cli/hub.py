"""``python -m segbench push``, ``pull`` and ``space deploy``: the Hub subcommands.

huggingface_hub is imported only when one of these commands runs, so ``--help`` stays fast: this module imports
nothing from the rest of segbench.hub at the top.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..errors import SegbenchError


def register(subparsers: Any) -> None:
    """Add ``push``, ``pull`` and ``space`` to an argparse subparsers object; each sets ``func`` (Namespace -> exit
    code)."""
    push = subparsers.add_parser(
        "push",
        help="push weights, model cards and scores to the Hugging Face Hub",
        description="For each local record: a model repo per (model, dataset) with the weights, their config, the "
        "record and a model card; then every score to one results dataset repo. One commit per repo; unchanged "
        "repos get no commit. Auth: HF_TOKEN or 'hf auth login' (write access).",
    )
    _common(push)
    push.add_argument("--repo-template", default=None, metavar="TEMPLATE",
                      help="model repo id; default '{owner}/segbench-{model}-{dataset}'")
    push.add_argument("--private", action="store_true", help="create new repos as private")
    push.set_defaults(func=cmd_push)

    pull = subparsers.add_parser(
        "pull",
        help="fetch the Hub's results (and, with --weights, the weights) into the local leaderboard and store",
        description="Copies the results repo's records into --leaderboard; with --weights also downloads each "
        "run's weights into the local store after checking their sha256 against the record.",
    )
    pull.add_argument("repo", nargs="?", default=None, help="results dataset repo, same as --results-repo")
    _common(pull)
    pull.add_argument("--weights", action="store_true", help="also download the weights (sha256-verified)")
    pull.add_argument("--revision", default=None, help="results repo branch, tag or commit (default main)")
    pull.set_defaults(func=cmd_pull)
    _register_space(subparsers)


def _register_space(subparsers: Any) -> None:
    space = subparsers.add_parser(
        "space", help="deploy the app to a Hugging Face Space",
        description="Without a subcommand: the same as 'space deploy --help'.")
    space.set_defaults(func=lambda args: _help(space))
    sub = space.add_subparsers(dest="space_command", metavar="SUBCOMMAND")
    deploy = sub.add_parser(
        "deploy", help="create the Space if needed and upload exactly the files the app needs, in one commit",
        description="Uploads app.py, README.md (the Space's metadata), requirements.txt (PyTorch's CPU wheels), "
        "segbench/ and leaderboard/; never tests, venvs or caches. Unchanged files are not sent, files the app no "
        "longer has are deleted, an unchanged app makes no commit. Auth: HF_TOKEN or 'hf auth login' (write).")
    deploy.add_argument("space", metavar="OWNER/NAME", help="the Space's id")
    deploy.add_argument("--private", action="store_true", help="create it as a private Space")
    deploy.add_argument("--dry-run", action="store_true", help="list the files and the total size; send nothing")
    deploy.add_argument("--copy-to", metavar="DIR", default=None,
                        help="also write exactly those files into the new folder DIR (with --dry-run: only that)")
    deploy.add_argument("--results-repo", default=None, metavar="REPO",
                        help="the Space shows the records of this Hub results repo (sets $SEGBENCH_HUB_RESULTS there)")
    deploy.add_argument("--models", default=None, metavar="OWNER",
                        help="the Space runs weights from OWNER's model repos (sets $SEGBENCH_HUB_MODELS there)")
    deploy.add_argument("--root", default=".", metavar="DIR", help="the segbench checkout (default: .)")
    deploy.add_argument("--endpoint", default=None, help="Hub URL (default $HF_ENDPOINT or https://huggingface.co)")
    deploy.set_defaults(func=cmd_space_deploy)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def cmd_space_deploy(args: argparse.Namespace) -> int:
    from ..hub.space import DeployOptions, deploy_space

    deploy_space(args.space, DeployOptions(root=args.root, private=True if args.private else None,
                                           dry_run=args.dry_run, copy_to=args.copy_to, results_repo=args.results_repo,
                                           models_owner=args.models, endpoint=args.endpoint))
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--leaderboard", default="leaderboard", metavar="DIR",
                        help="leaderboard folder (default leaderboard)")
    parser.add_argument("--store", default=None, metavar="DIR",
                        help="weights store (default $SEGBENCH_STORE or ~/.cache/segbench)")
    parser.add_argument("--dataset", default=None, help="only these datasets (comma-separated)")
    parser.add_argument("--model", default=None, help="only these models (comma-separated)")
    parser.add_argument("--owner", default=None, help="Hub user or organisation (default: the token's user)")
    parser.add_argument("--results-repo", default=None, metavar="REPO",
                        help="results dataset repo (default $SEGBENCH_HUB_RESULTS, else OWNER/segbench-results)")
    parser.add_argument("--endpoint", default=None, help="Hub URL (default $HF_ENDPOINT or https://huggingface.co)")


def _names(text: str | None) -> set[str]:
    return {part.strip() for part in (text or "").split(",") if part.strip()}


def cmd_push(args: argparse.Namespace) -> int:
    from ..hub.names import ENV_RESULTS
    from ..hub.push import PushTarget, push_records
    from ..records import io as records
    from ..weights.store import LocalStore

    found, problems = records.load_records(args.leaderboard)
    for problem in problems:
        print(f"skipped    {problem}")
    datasets, models = _names(args.dataset), _names(args.model)
    selected = [r for r in found if (not datasets or r["dataset"] in datasets) and (not models or r["model"] in models)]
    if not selected:
        what = " matching --dataset/--model" if datasets or models else ""
        raise SegbenchError(
            f"{args.leaderboard}: no records{what}; run 'python -m segbench run' first or check the filters"
        )
    report = push_records(
        selected,
        store=LocalStore(args.store) if args.store else None,
        target=PushTarget(owner=args.owner, results_repo=args.results_repo or os.environ.get(ENV_RESULTS) or None,
                          repo_template=args.repo_template, private=True if args.private else None,
                          endpoint=args.endpoint),
    )
    return 0 if report.ok else 1


def cmd_pull(args: argparse.Namespace) -> int:
    from ..hub.names import DEFAULT_RESULTS_NAME, ENV_RESULTS
    from ..hub.pull import RecordFilter, pull
    from ..weights.store import LocalStore

    results_repo = args.repo or args.results_repo or os.environ.get(ENV_RESULTS) or (
        f"{args.owner}/{DEFAULT_RESULTS_NAME}" if args.owner else None
    )
    if not results_repo:
        raise SegbenchError(f"pull: no results repo; pass --results-repo OWNER/NAME, --owner, or set {ENV_RESULTS}")
    report = pull(
        results_repo=results_repo,
        leaderboard=args.leaderboard,
        store=LocalStore(args.store) if args.store else None,
        weights=args.weights,
        only=RecordFilter.of(_names(args.dataset), _names(args.model)),
        revision=args.revision,
        endpoint=args.endpoint,
    )
    return 0 if report.ok else 1

