"""The server's browser-facing surface, over a real socket (issue 19, item 9).

- API keys stay out of the log: `?api_key=` on the WebSocket URL (uvicorn writes the path with its query on the
  handshake line, and on the 401 line for a wrong key), the `openai-insecure-api-key.` subprotocol, `Bearer` tokens.
- A server without a key refuses web pages of other sites (`Origin`) before the WebSocket upgrade, and on HTTP routes
  (a page may POST a multipart upload without a CORS preflight).
- A loopback server without a key refuses a `Host` that isn't this machine's (DNS rebinding).

The servers serve no models (`MODEL_SERVER_*_MODEL=none`): what is tested happens before any model is asked.
"""
import base64, os, socket, sys, time
from pathlib import Path

import httpx, pytest

sys.path.insert(0, str(Path(__file__).parent))
from suite import server_env, start, stop  # noqa: E402
from voice_agent.testing import free_port, voice_agent_cmd  # noqa: E402

SECRET = "sk-Zq7SECRETvalue9"  # the key; nothing in the server's log may contain it
NO_MODELS = dict(MODEL_SERVER_MODEL_NAME="none", MODEL_SERVER_STT_MODEL="none", MODEL_SERVER_TTS_MODEL="none")


def handshake(port: int, path: str="/v1/realtime", host: str|None=None, **headers) -> tuple[int, bytes]:
    "Send a WebSocket upgrade request by hand; the status the server answers and what it sent (up to the first frame)."
    lines = [f"GET {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}", "Sec-WebSocket-Version: 13",
             *[f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data and (chunk := s.recv(65536)): data += chunk
        status = int(data.split(b" ", 2)[1])
        if status == 101:  # wait for the first event (session.created): the session really opened
            s.settimeout(30)
            while len(data.split(b"\r\n\r\n", 1)[1]) < 2 and (chunk := s.recv(65536)): data += chunk
    return status, data


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    "A default server: loopback, no key."
    port, log = free_port(), tmp_path_factory.mktemp("open")/"server.log"
    proc = start(voice_agent_cmd("serve", "--port", port), server_env(**NO_MODELS), port, log)
    yield port
    stop(proc)


def test_other_sites_pages_are_refused_before_the_upgrade(open_server):
    "Browsers apply no same-origin rule to WebSockets: a page of evil.example could open the realtime session."
    status, data = handshake(open_server, Origin="http://evil.example")
    assert status == 403, data[:400]
    assert b"MODEL_SERVER_ALLOWED_ORIGINS" in data and b"evil.example" in data, data[:600]
    for origin in ("http://127.0.0.1:8888", "http://localhost:3000", "https://[::1]", None):  # pages of this machine, or no browser
        status, data = handshake(open_server, **({"Origin": origin} if origin else {}))
        assert status == 101 and b"session.created" in data, (origin, data[:400])


def test_other_sites_pages_cant_post_uploads(open_server):
    "A page may POST multipart/form-data cross-site without a preflight: refused when its Origin is another site's."
    url = f"http://127.0.0.1:{open_server}"
    files = {"audio": ("a.wav", b"RIFF", "audio/wav")}
    r = httpx.post(f"{url}/stt", files=files, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "MODEL_SERVER_ALLOWED_ORIGINS" in r.json()["error"]["message"], r.text
    r = httpx.post(f"{url}/stt", files=files, headers={"Origin": f"http://localhost:{open_server}"})
    assert r.status_code == 503 and "not served" in r.text, r.text  # past the check: the STT isn't served here


def test_dns_rebinding_is_refused(open_server):
    "A name that resolves to 127.0.0.1 once the page has loaded: the Host header still says evil.example."
    url = f"http://127.0.0.1:{open_server}"
    for path in ("/health", "/v1/models"):
        r = httpx.get(url + path, headers={"Host": f"evil.example:{open_server}"})
        assert r.status_code == 403 and "MODEL_SERVER_ALLOWED_HOSTS" in r.json()["error"]["message"], (path, r.text)
    status, data = handshake(open_server, host=f"evil.example:{open_server}", Origin=f"http://evil.example:{open_server}")
    assert status == 403 and b"MODEL_SERVER_ALLOWED_HOSTS" in data, data[:400]
    for host in (f"localhost:{open_server}", f"[::1]:{open_server}", "127.0.0.1"):
        assert httpx.get(url + "/health", headers={"Host": host}).status_code == 200, host
    assert httpx.get(url + "/health/live", headers={"Host": "evil.example"}).status_code == 200  # probes: liveness only


@pytest.mark.parametrize("how", ["voice-agent serve", "uvicorn --factory"])
def test_keys_never_reach_the_log(tmp_path, how):
    "Right and wrong keys, in the query, the subprotocol and the header: the log has the lines, with *** for the key."
    port, log = free_port(), tmp_path/"server.log"
    env = server_env(**NO_MODELS, MODEL_SERVER_API_KEY=SECRET)
    cmd = (voice_agent_cmd("serve", "--port", port) if how == "voice-agent serve" else
           [sys.executable, "-m", "uvicorn", "--factory", "voice_agent.server.app:create_app", "--port", str(port)])
    proc = start(cmd, env, port, log, SECRET)
    try:
        assert handshake(port, f"/v1/realtime?api_key={SECRET}")[0] == 101
        assert handshake(port, f"/v1/realtime?model=x&api_key=wrong-{SECRET}")[0] == 401
        assert handshake(port, f"/v1/realtime?api%5Fkey={SECRET}")[0] == 101
        assert handshake(port, Sec_WebSocket_Protocol=f"realtime, openai-insecure-api-key.{SECRET}")[0] == 101
        assert handshake(port, Authorization=f"Bearer wrong-{SECRET}")[0] == 401
        assert httpx.get(f"http://127.0.0.1:{port}/health?api_key={SECRET}", headers={"Authorization": f"Bearer {SECRET}"}).status_code == 200
        time.sleep(0.5)
    finally: stop(proc)
    text = log.read_text()
    assert "WebSocket /v1/realtime?api_key=***" in text and "api_key=***\" 401" in text, text[-3000:]
    assert SECRET not in text, [l for l in text.splitlines() if SECRET in l]
