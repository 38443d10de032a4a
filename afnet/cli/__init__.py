"""The ``afnet`` command line (also ``python -m afnet``).

Each subcommand lives in its own module, which registers its parser with
``add_parser(sub)`` and sets ``run(args, parser) -> exit status`` as its default.
:func:`main` runs it; Ctrl-C ends any command with one line on stderr (the interrupt's message,
e.g. how to resume a training run) and exit status 130, the shell's code for SIGINT. The command
owns its process, so it pins glibc's allocator thresholds first (``afnet.tools.allocator``;
``AFNET_MALLOC_TUNING=0`` leaves them alone).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import List, Optional

# Modules defining one subcommand each (``add_parser``), in the order ``--help`` lists them.
COMMAND_MODULES = (
    "afnet.cli.bench",
    "afnet.cli.demo_data",
    "afnet.cli.train",
    "afnet.cli.plot_log",
    "afnet.cli.evaluate",
    "afnet.cli.predict",
    "afnet.cli.export",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="afnet", description="AFNet: efficient video recognition.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


# Exit status of a command ended by Ctrl-C: 128 + SIGINT, as shells report it.
INTERRUPTED = 130


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``afnet`` console script. Returns the exit status."""
    from afnet.tools.allocator import pin_malloc_thresholds
    from afnet.tools.interrupts import sigint_handler, sigint_received

    if os.environ.get("AFNET_MALLOC_TUNING", "1") != "0":
        pin_malloc_thresholds()
    parser = build_parser()
    args = parser.parse_args(argv)
    with sigint_handler():
        try:
            return args.run(args, parser)
        except KeyboardInterrupt as exc:
            # A command that knows where it stopped says so in the exception
            # (afnet.training.trainer.TrainingInterrupted); a traceback would tell the user nothing.
            message = str(exc) or "interrupted"
        except Exception:
            if not sigint_received():
                raise
            message = "interrupted"  # what Ctrl-C broke on its way (a DataLoader's killed workers)
    if os.environ.get("RANK", "0") == "0":  # under torchrun one line, not one per process
        print(f"afnet {args.command}: {message}", file=sys.stderr, flush=True)
    return INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
