"""Cloud TPU slices without a TPU: the devices of a named topology, for ahead-of-time compilation.

``tpu_topology("v5p:4x4x4")`` returns the 64 devices of that slice (with their hosts) from libtpu's
topology description; a ``Mesh`` over them and ``jax.jit(f).lower(*abstract args).compile()`` run
the real TPU compiler on this machine. Loading libtpu here never reaches the network:
``TPU_SKIP_MDS_QUERY=1`` is set before it initialises (otherwise it may ask the cloud metadata
server what machine it runs on), and its start-up messages about the missing TPU are held back
unless loading fails. On a machine without an accelerator, several processes may load libtpu at
once (``ALLOW_MULTIPLE_LIBTPU_LOAD``; it otherwise takes a lock meant for a TPU's chips).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile
from typing import Iterator

import jax
from jax.experimental import topologies

from jaxspeech.errors import KnownError
from jaxspeech.platforms import accelerator_attached, libtpu_installed

# Examples of names libtpu accepts: "<generation>:<chips per dimension>".
EXAMPLES = ("v4:2x2x1", "v5e:2x2", "v5e:4x4", "v5e:16x16", "v5p:2x2x1", "v5p:4x4x4", "v6e:2x2", "v6e:8x8")


class TopologyError(KnownError, ValueError):
    """A topology name libtpu does not know, or libtpu is missing."""


@contextlib.contextmanager
def _held_back_stderr() -> Iterator[None]:
    """Sends what is written to file descriptor 2 (libtpu's C++ logging) to a temporary file,
    and replays it only if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@functools.lru_cache(maxsize=None)
def tpu_topology(name: str) -> topologies.TopologyDescription:
    """The devices of TPU slice ``name`` (e.g. "v5e:2x2", "v5p:4x4x4"), on any machine."""
    if not libtpu_installed():
        raise TopologyError(f"compiling for TPU topology {name!r} needs libtpu: pip install -e '.[tpu]'")
    os.environ["TPU_SKIP_MDS_QUERY"] = "1"
    if not accelerator_attached():  # no TPU to guard: compiling processes need not take turns
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    try:
        with _held_back_stderr():
            return topologies.get_topology_desc(topology_name=name, platform="tpu")
    except jax.errors.JaxRuntimeError as error:
        raise TopologyError(
            f"libtpu does not know the TPU topology {name!r} ({error}); names look like {', '.join(EXAMPLES)}"
        ) from error


def host_count(devices) -> int:
    """Number of hosts (processes) the devices belong to."""
    return len({d.process_index for d in devices})
