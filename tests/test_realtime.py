"""`/v1/realtime` for real: `voice-agent serve --profile local` on a free port, the official `openai` client over a socket.

Questions are espeak-ng speech streamed like a microphone (20 ms of PCM16 at 24 kHz every 20 ms); server VAD ends the
turn, Whisper hears it, SmolLM2 answers, Piper speaks it back sentence by sentence. Then an interruption, and every kind
of bad input, after which the server still serves. Run with `pytest -s` to see what was heard and said, and the latencies.
"""
import asyncio, base64, json, time

import httpx, numpy as np, pytest

from suite import server_env, start, stop
from voice_agent.audio import resample
from voice_agent.testing import (REALTIME_RATE as RATE, barge_in, configure, espeak_pcm, events_until, free_port,
                                 realtime_connect, spoken_turn, transcribe, voice_agent_cmd)

INTERRUPTION = "Wait, stop please."  # as bench/b12_realtime.py interrupts
KEY = "rt-key-123"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    "The local profile with an API key, at most 3 realtime sessions and 30 s of input audio per session."
    work = tmp_path_factory.mktemp("realtime")
    port = free_port()
    env = server_env(HF_HUB_OFFLINE="1", LOCAL_MODELS_DIR=str(work/"models"), MODEL_SERVER_API_KEY=KEY, MODEL_SERVER_MAX_SESSIONS=3,
                     MODEL_SERVER_REALTIME_MAX_BUFFER_SECONDS=30)
    proc = start(voice_agent_cmd("serve", "--profile", "local", "--port", port), env, port, work/"server.log", KEY)
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
    yield url, http, proc, work
    http.close(); stop(proc)


def alive(url, http, proc):
    assert proc.poll() is None, "the server died"
    assert httpx.get(url + "/health/live", timeout=5).status_code == 200
    assert http.get("/health").json()["status"] == "ok"


def run(coro): return asyncio.run(coro)


def test_spoken_question_gets_a_spoken_answer(server):
    "The question streamed at real-time pace: its transcription, a reply saying Paris, and audio that says the reply's words."
    from voice_agent.stt import word_accuracy
    url, http, _, _ = server
    async def go():
        async with realtime_connect(url, KEY) as conn:
            created = (await events_until(conn, "session.created", 30))[-1][1]
            assert created.session.audio.output.format.rate == 24000
            return await spoken_turn(conn, espeak_pcm("What is the capital of France?", RATE))
    t = run(go())
    kinds = [e.type for _, e in t["events"]]
    print(f"\n[realtime] heard {t['heard']!r}; said {t['said']!r}; end of speech -> first audio {t['first_audio_s']:.3f} s")
    assert kinds.index("input_audio_buffer.speech_started") < kinds.index("input_audio_buffer.speech_stopped") < kinds.index("input_audio_buffer.committed")
    assert "capital" in t["heard"].lower() and "france" in t["heard"].lower(), t["heard"]
    assert t["status"] == "completed" and "paris" in t["said"].lower(), t["said"]
    assert t["usage"].output_tokens > 0 and t["usage"].input_tokens > 0
    assert len(t["audio"]) > RATE//2 and np.abs(t["audio"]).max() > 0.05
    back = transcribe(http, resample(t["audio"], RATE, 16000))
    print(f"[realtime] the reply's audio heard back: {back!r}")
    assert "paris" in back.lower() and word_accuracy(t["said"], back) >= 0.6, (t["said"], back)
    assert 0 < t["first_audio_s"] < 15  # the figure is the benchmark's (bench/b12_realtime.py); here: it came


def test_interruption_cancels_the_reply(server):
    "Speech during a long spoken reply: cancelled (turn_detected), no audio after it, the item truncated, the session goes on."
    url, http, proc, _ = server
    async def go():
        async with realtime_connect(url, KEY) as conn:
            await events_until(conn, "session.created", 30)
            await configure(conn, create_response=False)
            b = await barge_in(conn, espeak_pcm(INTERRUPTION, RATE))
            await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello."}]})
            await conn.response.create(response={"output_modalities": ["text"]})
            after = (await events_until(conn, "response.done", 60))[-1][1]
            return b, after
    b, after = run(go())
    print(f"\n[barge-in] speech_started -> last delta {b['to_last_delta_s']:.3f} s, -> response.done {b['to_done_s']:.3f} s")
    assert (b["status"], b["reason"]) == ("cancelled", "turn_detected"), b
    assert b["to_done_s"] < 1.0 and b["to_last_delta_s"] <= 0.2, b
    assert b["truncated"] is not None and b["truncated"].audio_end_ms >= 0
    assert after.response.status == "completed"
    alive(url, http, proc)


def test_bad_events_get_errors_and_the_session_goes_on(server):
    "Malformed JSON, an unknown event, audio that is not base64, an oversized append: error events with codes; then a turn."
    url, http, proc, _ = server
    async def go():
        async with realtime_connect(url, KEY) as conn:
            await events_until(conn, "session.created", 30)
            codes = []
            async def expect_error(raw):
                await conn.send_raw(raw)
                e = (await events_until(conn, "error", 30))[-1][1]
                codes.append(e.error.code)
                return e.error
            await expect_error("{this is not json")
            assert (await expect_error(json.dumps({"type": "session.explode", "event_id": "evt_x"}))).event_id == "evt_x"
            await expect_error(json.dumps({"type": "input_audio_buffer.append", "audio": "@@@ not base64 @@@"}))
            big = base64.b64encode(np.zeros(31*RATE, "<i2").tobytes()).decode()  # 31 s, over the 30 s the server allows
            msg = (await expect_error(json.dumps({"type": "input_audio_buffer.append", "audio": big}))).message
            assert "MODEL_SERVER_REALTIME_MAX_BUFFER_SECONDS" in msg
            voice = await expect_error(json.dumps({"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"voice": "no-such-voice"}}}}))
            assert voice.param == "session.audio.output.voice" and "has the voices" in voice.message, voice  # as /v1/audio/speech says
            await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello."}]})
            await conn.response.create(response={"output_modalities": ["text"]})
            done = (await events_until(conn, "response.done", 60))[-1][1]
            return codes, done
    codes, done = run(go())
    assert codes == ["invalid_json", "unknown_event_type", "invalid_audio", "input_audio_buffer_full", "invalid_value"], codes
    assert done.response.status == "completed" and done.response.output[0].content[0].text.strip()
    alive(url, http, proc)


def test_a_client_that_vanishes_mid_response_frees_everything(server):
    "The socket dropped while the reply streams: the LLM stops, the session's place is free, the server serves on."
    url, http, proc, _ = server
    aborted = []
    async def go():
        async with realtime_connect(url, KEY) as conn:
            await events_until(conn, "session.created", 30)
            await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Tell me a long story."}]})
            await conn.response.create(response={"instructions": "Tell long stories.", "max_output_tokens": 300})
            await events_until(conn, "response.output_audio.delta", 60)
            aborted.append(True)
            conn._connection.transport.abort()  # no closing handshake: the client is simply gone
    from websockets.exceptions import ConnectionClosed
    try: run(go())
    except (ConnectionClosed, ConnectionError):  # leaving the `async with` on the dropped socket may raise this, once dropped
        if not aborted: raise
    assert aborted, "the test never reached the abort"
    deadline = time.monotonic() + 10
    def queued(): return [l for l in http.get("/metrics").text.splitlines() if l.startswith("voice_agent_model_queue{")]
    while time.monotonic() < deadline and any(not l.endswith(" 0.0") for l in queued()): time.sleep(0.1)
    assert all(l.endswith(" 0.0") for l in queued()), queued()
    alive(url, http, proc)
    async def three():  # all three places are free again
        async with realtime_connect(url, KEY) as a, realtime_connect(url, KEY) as b, realtime_connect(url, KEY) as c:
            for conn in (a, b, c): await events_until(conn, "session.created", 30)
    run(three())


def test_access_and_the_session_cap(server):
    "The key in each form clients send it, checked before the upgrade; one session over MODEL_SERVER_MAX_SESSIONS is a 503."
    import websockets
    from websockets.exceptions import InvalidStatus
    url, http, proc, _ = server
    ws_url = url.replace("http", "ws") + "/v1/realtime?model=llm"
    async def go():
        with pytest.raises(InvalidStatus) as e:
            async with realtime_connect(url, "wrong"): pass
        assert e.value.response.status_code == 401 and b"invalid_api_key" in e.value.response.body
        async with websockets.connect(ws_url, subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"]) as ws:
            assert ws.subprotocol == "realtime" and json.loads(await ws.recv())["type"] == "session.created"
        async with websockets.connect(ws_url + f"&api_key={KEY}") as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
        async with realtime_connect(url, KEY) as a, realtime_connect(url, KEY) as b, realtime_connect(url, KEY) as c:
            for conn in (a, b, c): await events_until(conn, "session.created", 30)
            with pytest.raises(InvalidStatus) as e:
                async with realtime_connect(url, KEY): pass
            assert e.value.response.status_code == 503 and b"MODEL_SERVER_MAX_SESSIONS=3" in e.value.response.body
    run(go())
    alive(url, http, proc)
