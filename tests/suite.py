"""This suite's bindings of the shared helpers (`voice_agent.testing`): where its models go, how long a server may take to
start, its working directory. The test modules and conftest.py import them from here."""
import os, sys, tempfile
from pathlib import Path
from voice_agent.testing import espeak, server_env as _server_env, start_server, stop_server

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODELS_DIR = Path(os.environ.get("VOICE_AGENT_TEST_MODELS", Path(tempfile.gettempdir())/"voice_agent-test-models"))
STARTUP_TIMEOUT = float(os.environ.get("VOICE_AGENT_STARTUP_TIMEOUT", 300))


def server_env(**kw) -> dict:
    "`voice_agent.testing.server_env` with this suite's models folder."
    return _server_env(MODELS_DIR, **kw)


def start(cmd: list, env: dict, port: int, log: Path, key: str|None=None, ready: bool=True):
    "Start a server process and wait until /health/ready answers 200 (or it exits: then the test fails with its log)."
    return start_server(cmd, env, port, log, key, ready, timeout=STARTUP_TIMEOUT, cwd=ROOT)


stop = stop_server
speak = espeak


def local_server(work: Path):
    "`voice-agent serve --profile local` on a free port, models under `work`: yields (url, process), stops it after (a module fixture's body)."
    from voice_agent.testing import free_port, voice_agent_cmd
    port = free_port()
    env = server_env(HF_HUB_OFFLINE="1", LOCAL_MODELS_DIR=str(work/"models"))
    proc = start(voice_agent_cmd("serve", "--profile", "local", "--port", port), env, port, work/"server.log")
    try: yield f"http://127.0.0.1:{port}", proc
    finally: stop(proc)


def checked(events) -> list:
    "The types of (time, event) pairs from `events_until`, each event validated by the `openai` package's own types."
    from openai.types.realtime import RealtimeServerEvent
    from pydantic import TypeAdapter
    for _, e in events: TypeAdapter(RealtimeServerEvent).validate_python(e.to_dict())
    return [e.type for _, e in events]
