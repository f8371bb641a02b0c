"""With libtpu installed and no TPU attached, jaxspeech starts JAX on the CPU without libtpu's
start-up errors; loading a TPU topology never asks the cloud metadata server."""

import os
import subprocess
import sys

import pytest

from jaxspeech.platforms import accelerator_attached, libtpu_installed

needs_libtpu = pytest.mark.skipif(not libtpu_installed(), reason="libtpu is not installed (the [dev] extra brings it)")


def _pci(tmp_path, *vendors):
    for i, vendor in enumerate(vendors):
        device = tmp_path / f"0000:00:0{i}.0"
        device.mkdir(parents=True)
        (device / "vendor").write_text(vendor + "\n")
    return str(tmp_path)


def test_accelerators_are_told_by_their_pci_vendor(tmp_path):
    assert not accelerator_attached(_pci(tmp_path / "cpu_only", "0x8086", "0x1af4"))
    assert accelerator_attached(_pci(tmp_path / "tpu_vm", "0x8086", "0x1ae0"))
    assert accelerator_attached(_pci(tmp_path / "gpu", "0x10de"))
    assert accelerator_attached(str(tmp_path / "no_pci_bus"))  # unknown: leave JAX to decide


@needs_libtpu
@pytest.mark.skipif(accelerator_attached(), reason="this machine has an accelerator: JAX should start it")
def test_importing_jaxspeech_keeps_libtpu_quiet_on_a_cpu_machine():
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "TPU_SKIP_MDS_QUERY")}
    code = "import jaxspeech, jax; print(jax.devices()[0].platform)"
    quiet = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert quiet.stdout.strip() == "cpu" and "TPU" not in quiet.stderr, quiet.stderr
    loud = subprocess.run(
        [sys.executable, "-c", "import jax; print(jax.devices()[0].platform)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loud.stdout.strip() == "cpu" and "TPU" in loud.stderr  # what the import keeps out


@needs_libtpu
def test_loading_a_topology_skips_the_metadata_server():
    from jaxspeech.sharding.topology import tpu_topology

    devices = tpu_topology("v5p:2x2x1").devices
    assert len(devices) == 4 and devices[0].device_kind == "TPU v5"
    assert os.environ["TPU_SKIP_MDS_QUERY"] == "1"
