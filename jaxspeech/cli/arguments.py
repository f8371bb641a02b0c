"""Flag values checked as argparse parses them, so that a bad one is refused by name before any
work starts: ``type=number(int, low=1)`` takes an integer >= 1, ``number(float, 0, 1)`` a finite
number in [0, 1] (never NaN); ``folder_to_write`` an output folder that can be created."""

from __future__ import annotations

import argparse
import math
import os


def number(kind: type = float, low: float | None = None, high: float | None = None, low_open: bool = False):
    """An argparse ``type``: ``kind`` (int or float) parsed from the flag, finite, within the bounds."""
    bounds = [] if low is None else [f"{'>' if low_open else '>='} {low:g}"]
    bounds += [] if high is None else [f"<= {high:g}"]
    expected = ("an integer" if kind is int else "a finite number") + (" " + " and ".join(bounds) if bounds else "")

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        above = low is None or (value > low if low_open else value >= low)
        if not math.isfinite(value) or not above or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = expected  # what argparse names in its own messages
    return parse


def folder_to_write(text: str) -> str:
    """An argparse ``type`` for an output folder: it exists as a folder, or its nearest existing
    parent is a writable folder (checked before any work, so a run never fails at its first write).
    Paths with a scheme (``gs://...``) are taken as given."""
    if "://" in text:
        return text
    path = os.path.abspath(text)
    if os.path.exists(path) and not os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{text} is a file, expected a folder")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise argparse.ArgumentTypeError(f"cannot create {text}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot create or write {text}: {existing} is not writable")
    return text
