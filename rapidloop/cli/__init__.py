"""The ``rapidloop`` command: one subcommand per module in this package.

Each subcommand module exposes ``add_parser(subparsers)`` and ``run(args) -> int``.
Expected failures raise :class:`CliError` (or ``ConfigError``) and become one
clear line on stderr with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rapidloop.base.config import ConfigError

SUBCOMMANDS = ("run", "replay", "capture", "explain", "simulate", "tail", "topics",
               "evaluate", "active", "export", "serve")


class CliError(Exception):
    """A user-facing failure: bad arguments, unreachable broker, unreadable file."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"rapidloop: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from rapidloop import __version__

    parser = _Parser(prog="rapidloop", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"rapidloop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"rapidloop.cli.{name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CliError, ConfigError) as exc:
        print(f"rapidloop {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
