"""The ``afnet`` command line (also ``python -m afnet``).

Each subcommand lives in its own module, which registers its parser with
``add_parser(sub)`` and sets ``run(args, parser) -> exit status`` as its default.
"""

from __future__ import annotations

import argparse
import importlib
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


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``afnet`` console script. Returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.run(args, parser)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
