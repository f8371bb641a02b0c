"""Graceful stop on SIGTERM (preemption): the loop finishes its step, checkpoints and returns.

On one process a Python SIGTERM handler sets a flag that the loop polls after every step. With
several processes, all of them must stop at the same step, so the decision goes through JAX's
preemption sync point (its coordination service catches SIGTERM on any process and agrees on a
step); no Python handler is installed then.
"""

from __future__ import annotations

import logging
import signal
import threading

import jax
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


class StopOnSigterm:
    """Context manager: ``should_stop(step)`` turns True once SIGTERM has been received."""

    def __init__(self):
        self._received = threading.Event()
        self._previous = None
        self._installed = False

    def __enter__(self) -> "StopOnSigterm":
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False

    def _handle(self, signum, frame) -> None:
        del signum, frame
        if not self._received.is_set():
            log.warning("SIGTERM received: finishing the current step, then checkpointing and stopping")
        self._received.set()

    def request_stop(self) -> None:
        """Same as receiving SIGTERM (e.g. from another thread)."""
        self._received.set()

    def should_stop(self, step: int) -> bool:
        if self._received.is_set():
            return True
        if jax.process_count() > 1:
            return bool(multihost_utils.reached_preemption_sync_point(step))
        return False
