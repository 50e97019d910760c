"""`POST /v1/realtime/calls` for real: `voice-agent serve --profile local` on a free port, aiortc as the client (as a browser).

The client offers a microphone track and the `oai-events` data channel; the microphone plays espeak-ng's "What is the
capital of France?" in real time (Opus over the track); the server's VAD, Whisper, SmolLM2 and Piper answer, the events
come on the data channel (checked against the `openai` package's types) and the reply's audio on the server's track,
which is then transcribed. Plus the refusals (key, origin, bad offers, the session cap) and hanging up. Run with
`pytest -s` to see what was heard and said.
"""
import asyncio, time

import httpx, numpy as np, pytest

pytest.importorskip("aiortc", reason="WebRTC needs aiortc: pip install aiortc")

from pydantic import TypeAdapter
from openai.types.realtime import RealtimeServerEvent
from suite import server_env, start, stop
from voice_agent.audio import resample
from voice_agent.server.realtime.webrtc import WebRTCClient
from voice_agent.testing import REALTIME_RATE as RATE, espeak_pcm, free_port, transcribe, voice_agent_cmd

KEY = "rtc-key-123"
PAGE = "http://localhost:5173"  # the one web page origin the server allows
server_event = TypeAdapter(RealtimeServerEvent)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    "The local profile with an API key, one allowed page origin and at most 2 realtime sessions."
    work = tmp_path_factory.mktemp("webrtc")
    port = free_port()
    env = server_env(HF_HUB_OFFLINE="1", LOCAL_MODELS_DIR=str(work/"models"), MODEL_SERVER_API_KEY=KEY, MODEL_SERVER_MAX_SESSIONS=2,
                     MODEL_SERVER_ALLOWED_ORIGINS=PAGE)
    proc = start(voice_agent_cmd("serve", "--profile", "local", "--port", port), env, port, work/"server.log", KEY)
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
    yield url, http, proc
    http.close(); stop(proc)


def open_sessions(http) -> float:
    line = next(l for l in http.get("/metrics").text.splitlines() if l.startswith("voice_agent_realtime_sessions "))
    return float(line.split()[1])


def wait_sessions(http, n: int, timeout: float=15.0) -> float:
    "The open realtime sessions, once they are `n` (or `timeout` has passed)."
    deadline = time.monotonic() + timeout
    while (k := open_sessions(http)) != n and time.monotonic() < deadline: time.sleep(0.1)
    return k


def run(coro): return asyncio.run(coro)


def test_spoken_question_over_webrtc(server):
    "Speech on the microphone track: the turn's events on the data channel, a reply saying Paris, and its voice on the server's track."
    from voice_agent.stt import word_accuracy
    url, http, proc = server
    question = espeak_pcm("What is the capital of France?", RATE)
    async def go():
        c = WebRTCClient()
        try:
            r = await c.connect(url, KEY)
            assert r.status_code == 201, r.text
            assert r.headers["content-type"] == "application/sdp" and r.headers["location"].startswith("/v1/realtime/calls/rtc_"), r.headers
            events = await c.until("session.created", 30)
            assert open_sessions(http) == 1
            c.say(np.concatenate([np.zeros(RATE//2, np.float32), question, np.zeros(2*RATE, np.float32)]))
            events += await c.until("output_audio_buffer.stopped", 120)
            return events, c.audio()
        finally: await c.close()
    events, heard = run(go())
    for e in events: server_event.validate_python(e)
    kinds = [e["type"] for e in events]
    heard_q = next(e["transcript"] for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")
    said = next(e["transcript"] for e in events if e["type"] == "response.output_audio_transcript.done")
    back = transcribe(http, resample(heard, RATE, 16000))
    print(f"\n[webrtc] heard {heard_q!r}; said {said!r}; the track's audio heard back: {back!r} ({len(heard)/RATE:.1f} s received)")
    assert kinds.index("input_audio_buffer.speech_started") < kinds.index("input_audio_buffer.committed") < kinds.index("response.done")
    assert "capital" in heard_q.lower() and "france" in heard_q.lower(), heard_q  # the Opus track carried the question intact
    assert "response.output_audio.delta" not in kinds, "audio deltas go on the media track over WebRTC, not on the data channel"
    assert kinds.index("response.created") < kinds.index("output_audio_buffer.started") < kinds.index("response.done") < kinds.index("output_audio_buffer.stopped"), kinds
    assert np.abs(heard).max() > 0.05, "no reply audio on the server's track"
    assert "paris" in said.lower(), said
    assert word_accuracy(said, back) >= 0.6, (said, back)  # what the track played is what the server says it said
    assert wait_sessions(http, 0) == 0, "the call was closed but its session is still open"
    assert proc.poll() is None


def test_session_in_the_offer_and_typed_events(server):
    "OpenAI's multipart offer (`sdp` and `session`): the session starts configured; a typed turn over the data channel is answered in text."
    url, http, _ = server
    async def go():
        c = WebRTCClient()
        try:
            r = await c.connect(url, KEY, session={"type": "realtime", "output_modalities": ["text"], "instructions": "Answer in one short sentence.",
                                                   "audio": {"input": {"turn_detection": None}}})
            assert r.status_code == 201, r.text
            created = (await c.until("session.created", 30))[-1]
            c.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}})
            c.send({"type": "response.create"})
            c.send({"type": "no.such.event", "event_id": "evt_1"})
            return created, await c.until("response.done", 120)
        finally: await c.close()
    created, events = run(go())
    for e in events: server_event.validate_python(e)
    assert created["session"]["output_modalities"] == ["text"] and created["session"]["audio"]["input"]["turn_detection"] is None
    assert created["session"]["instructions"] == "Answer in one short sentence."
    errors = [e["error"] for e in events if e["type"] == "error"]
    assert [(x["code"], x["event_id"]) for x in errors] == [("unknown_event_type", "evt_1")], errors
    assert events[-1]["response"]["status"] == "completed" and events[-1]["response"]["output"][0]["content"][0]["text"].strip()
    assert wait_sessions(http, 0) == 0


def test_refusals(server):
    "No key: 401; a foreign page: 403; no SDP, an offer without the data channel, a bad session: 400 saying why; past the cap: 503."
    url, http, _ = server
    offer = lambda body, **h: httpx.post(url + "/v1/realtime/calls", content=body, headers={"Content-Type": "application/sdp", **h}, timeout=30)
    r = offer("v=0")
    assert (r.status_code, r.json()["error"]["code"]) == (401, "invalid_api_key"), r.text
    r = offer("v=0", Authorization=f"Bearer {KEY}", Origin="http://evil.example")
    assert (r.status_code, r.json()["error"]["code"]) == (403, "origin_not_allowed"), r.text
    r = offer("this is not SDP", Authorization=f"Bearer {KEY}")
    assert r.status_code == 400 and "not an SDP offer" in r.json()["error"]["message"], r.text
    r = offer("v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nthis is broken\r\n", Authorization=f"Bearer {KEY}")
    assert r.status_code == 400 and "could not be used" in r.json()["error"]["message"], r.text
    async def go():
        out, calls = {}, [WebRTCClient() for _ in range(5)]
        try:
            out["no_channel"] = await calls[0].connect(url, KEY, events=False)
            out["bad_session"] = await calls[4].connect(url, KEY, session={"type": "realtime", "audio": {"output": {"voice": "no-such-voice"}}})
            out["page"] = await calls[1].connect(url, KEY, headers={"Origin": PAGE})
            await calls[1].until("session.created", 30)
            out["second"] = await calls[2].connect(url, KEY)
            out["third"] = await calls[3].connect(url, KEY)
        finally:
            for c in calls: await c.close()
        return out
    out = run(go())
    assert out["no_channel"].status_code == 400 and "oai-events" in out["no_channel"].json()["error"]["message"], out["no_channel"].text
    bad = out["bad_session"].json()["error"]
    assert out["bad_session"].status_code == 400 and bad["param"] == "session.audio.output.voice" and "voices" in bad["message"], bad
    assert (out["page"].status_code, out["second"].status_code) == (201, 201)  # the allowed page, and a second call
    assert out["third"].status_code == 503 and "MODEL_SERVER_MAX_SESSIONS=2" in out["third"].json()["error"]["message"], out["third"].text
    assert wait_sessions(http, 0) == 0, "refused or closed calls left sessions open"


def test_shutdown_hangs_up_calls(tmp_path):
    "SIGTERM with a call open: the server closes the call (the client's data channel closes), frees its session and exits, without waiting for the peer."
    import signal
    port = free_port()
    env = server_env(HF_HUB_OFFLINE="1", LOCAL_MODELS_DIR=str(tmp_path/"models"))
    log = tmp_path/"server.log"
    proc = start(voice_agent_cmd("serve", "--profile", "local", "--port", port), env, port, log)
    try:
        async def go():
            c = WebRTCClient()
            r = await c.connect(f"http://127.0.0.1:{port}")
            assert r.status_code == 201, r.text
            await c.until("session.created", 30)
            closed = asyncio.Event()
            c.dc.on("close", closed.set)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(closed.wait(), 20)
            took = time.monotonic() - t0
            await c.close()
            return took
        hung_up = run(go())
        proc.wait(timeout=30)
        print(f"\n[webrtc] SIGTERM -> the client's data channel closed after {hung_up:.2f} s; the server exited {proc.returncode}")
        text = log.read_text()
        assert "realtime call closed (0 sessions open)" in text, text[-2000:]
        assert proc.returncode == 0, text[-2000:]
    finally: stop(proc)
