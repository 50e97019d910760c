"""The server does what its `/openapi.json` says. schemathesis generates requests from the schema, valid and
invalid ones, sends them to a real socket and checks every answer against the schema: status codes, content
types, bodies, headers, auth, 405s' `Allow`, and that invalid requests are refused. The models are the quick
fakes: the routes, schemas, limits and errors are what is checked.

One check is left out, `positive_data_acceptance` ("every request the schema allows is accepted"): a request
can be valid in type and still refused for its meaning, with a 400 that says why and what to send instead:
a voice the loaded TTS does not have, bytes that do not decode as audio. The schema cannot list the voices of
a model loaded after it is served, nor say "decodable audio"."""
import re, subprocess, sys
from pathlib import Path
import httpx, pytest
from voice_agent.testing import free_port, server_env, start_server, stop_server

SERVE = """
import sys, uvicorn
from voice_agent.config import Settings
from voice_agent.server.app import create_app
from voice_agent.server.fakes import fakes
uvicorn.run(create_app(Settings(), fakes()), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""

@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    port = free_port()
    p = start_server([sys.executable, "-c", SERVE, str(port)], server_env(), port, tmp_path_factory.mktemp("fuzz")/"server.log", ready=False)
    yield f"http://127.0.0.1:{port}"
    stop_server(p, grace=10)

def test_server_matches_its_schema(base_url, tmp_path):
    st = Path(sys.executable).with_name("schemathesis")
    r = subprocess.run([str(st), "run", base_url + "/openapi.json", "--checks", "all",
                        "--exclude-checks", "positive_data_acceptance", "--max-examples", "25", "--seed", "20261128",
                        "--generation-deterministic", "--report-dir", str(tmp_path), "--no-color"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    # every operation the schema lists was selected and tested (not skipped for an unresolvable schema, not filtered out)
    spec = httpx.get(base_url + "/openapi.json").json()
    ops = sum(1 for item in spec["paths"].values() for m in item if m in {"get", "put", "post", "delete", "patch", "head", "options"})
    sel, tested = re.search(r"Selected: (\d+)/(\d+)", out), re.search(r"Tested: (\d+)", out)
    assert sel and tested, out[-2000:]
    assert int(sel[1]) == int(sel[2]) == int(tested[1]) == ops and ops >= 10, (ops, sel[0], tested[0], out[-2000:])
