import os
from types import SimpleNamespace

import pytest

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    config.addinivalue_line("markers", "ray: starts a local Ray cluster (tests/test_ray.py, minutes); `-m 'not ray'` leaves it out")


@pytest.fixture(scope="session")
def local_server(tmp_path_factory):
    """`voice-agent serve --profile local` with its default settings, started once and shared by the test modules that need
    nothing else (test_audio_api, test_tools, test_frameworks): url, port, proc, log.

    A module that needs other settings (an API key, limits) or times the startup starts a server of its own."""
    from test_server_socket import BIN, free_port, server_env, start, stop
    work = tmp_path_factory.mktemp("local_server")
    port, log = free_port(), work/"server.log"
    proc = start([str(BIN/"voice-agent"), "serve", "--profile", "local", "--port", str(port)],
                 server_env(HF_HUB_OFFLINE="1", LOCAL_MODELS_DIR=str(work/"models")), port, log)
    yield SimpleNamespace(url=f"http://127.0.0.1:{port}", port=port, proc=proc, log=log)
    stop(proc)
