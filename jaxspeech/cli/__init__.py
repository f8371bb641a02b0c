"""The ``jaxspeech`` command. Flags are parsed here and in the subcommand modules of this package
only; everything else in jaxspeech imports cleanly into a notebook.

Each subcommand lives in ``jaxspeech/cli/<name>.py`` and exposes ``register(subparsers)``, which
adds its parser and sets ``func`` to the function that runs it.

Errors: a bad flag, and every ``KnownError`` (a missing or malformed file, a config key or value
that does not fit, a damaged checkpoint, ...), prints one line ``error: <file, key or flag>: <what
was expected>`` to stderr and exits 2, without a traceback; ``--debug`` (or ``JAXSPEECH_DEBUG=1``)
raises it with its traceback instead. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from jaxspeech.errors import KnownError

SUBCOMMANDS = (
    "check_data",
    "eval",
    "generate",
    "launch",
    "plan",
    "plot",
    "prepare_data",
    "score",
    "sweep",
    "train",
    "transcribe",
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag on one line (``error: --flag: what was expected``), exit 2."""

    def error(self, message: str):
        message = re.sub(r"^argument ([^:]+): ", lambda m: m.group(1).split("/")[-1] + ": ", message)
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jaxspeech",
        description="Speech LLMs in JAX: train, evaluate, transcribe, generate, convert checkpoints, build data.",
    )
    debug_help = "show the traceback of an error (also JAXSPEECH_DEBUG=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"jaxspeech.cli.{name}").register(subparsers)
    for subparser in subparsers.choices.values():
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    return parser


def one_line(error: BaseException) -> str:
    """The error's message with its lines joined by "; "."""
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KnownError as error:
        if args.debug or os.environ.get("JAXSPEECH_DEBUG", "") not in ("", "0"):
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
