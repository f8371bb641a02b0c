"""Which JAX backend a run starts, and a quiet start on machines without an accelerator.

With ``libtpu`` installed (the ``[tpu]`` and ``[dev]`` extras bring it, so that TPU programs can be
compiled ahead of time on any machine), JAX tries the TPU backend first; on a machine with no TPU
that attempt fails and prints libtpu's start-up errors before JAX falls back to the CPU.
``quiet_absent_tpu`` skips the attempt where no accelerator is attached: it selects the CPU backend
only when libtpu is installed, no Google (TPU), NVIDIA or AMD device is on the PCI bus, and
neither ``JAX_PLATFORMS`` nor ``jax_platforms`` was set. On a TPU VM it changes nothing.
"""

from __future__ import annotations

import glob
import importlib.util
import os

# PCI vendor ids of accelerators JAX has backends for: Google (TPU), NVIDIA, AMD.
ACCELERATOR_VENDORS = ("0x1ae0", "0x10de", "0x1002")


def libtpu_installed() -> bool:
    return importlib.util.find_spec("libtpu") is not None


def accelerator_attached(pci_root: str = "/sys/bus/pci/devices") -> bool:
    """True if any PCI device comes from an accelerator vendor (or the bus cannot be read)."""
    paths = glob.glob(os.path.join(pci_root, "*", "vendor"))
    if not paths:
        return True  # no PCI information (not Linux, a sandbox): assume there may be one
    for path in paths:
        try:
            with open(path) as f:
                if f.read().strip().lower() in ACCELERATOR_VENDORS:
                    return True
        except OSError:
            return True
    return False


def quiet_absent_tpu() -> bool:
    """Selects the CPU backend where libtpu is installed but no accelerator is attached (see the
    module docstring); True if it did. Takes effect only before JAX's first backend use."""
    if os.environ.get("JAX_PLATFORMS") is not None or not libtpu_installed() or accelerator_attached():
        return False
    import jax

    if jax.config.jax_platforms:
        return False
    jax.config.update("jax_platforms", "cpu")
    return True
