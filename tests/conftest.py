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
    from suite import server_env, start, stop
    from voice_agent.testing import free_port, voice_agent_cmd
    work = tmp_path_factory.mktemp("local_server")
    port, log = free_port(), work/"server.log"
    proc = start(voice_agent_cmd("serve", "--profile", "local", "--port", port),
                 server_env(HF_HUB_OFFLINE="1", LOCAL_MODELS_DIR=str(work/"models")), port, log)
    yield SimpleNamespace(url=f"http://127.0.0.1:{port}", port=port, proc=proc, log=log)
    stop(proc)
