"""Command line: ``python -m segbench <command>`` (or the ``segbench`` console script).

One module per group of commands, each with a ``register(sub)`` that adds its parsers and a ``cmd_*`` function per
command. Registering imports only the standard library and torch-free facts; the work (torch, the models, the Hub)
is imported when a command runs, so ``--help`` and argument errors answer at once (a test checks that torch stays
unloaded). Every user-caused problem is printed as one line ``error: ...`` with exit status 2.
"""

from __future__ import annotations

import os
import sys

from .. import __version__
from ..errors import SegbenchError, one_line
from . import data, hub, models, pack, report, training
from .args import OneLineParser

# PyTorch's OpenMP workers spin while waiting; on a shared 2-core machine a spinning worker holds the core the
# other needs and parallel ops stall (8-10x slower inference measured on a busy 2-core box). Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

EPILOG = "Run 'python -m segbench COMMAND --help' for a command's options."


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="segbench", description="Train, evaluate and compare classic segmentation models.",
                           epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"segbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in (training, models, report, data, pack, hub):
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a reader gone before the buffered table is written is a BrokenPipeError
        return status
    except SegbenchError as exc:
        # one line even when a DataLoader worker pasted its traceback into the message
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader left (`segbench leaderboard | head`): stop quietly; point stdout at devnull so the
        # interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
