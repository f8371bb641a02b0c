"""The ``jaxspeech`` command. Flags are parsed here and in the subcommand modules of this package
only; everything else in jaxspeech imports cleanly into a notebook.

Each subcommand lives in ``jaxspeech/cli/<name>.py`` and exposes ``register(subparsers)``, which
adds its parser and sets ``func`` to the function that runs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxspeech",
        description="Speech LLMs in JAX: train, evaluate, transcribe, generate, convert checkpoints, build data.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"jaxspeech.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
