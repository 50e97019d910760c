"""Home Assistant's Wyoming protocol for real: `voice-agent serve --profile local --wyoming-port N`, the `wyoming` package's
own client (`AsyncTcpClient`) over a TCP socket.

espeak-ng's question streamed in chunks -> `transcript`; `synthesize` -> audio that Whisper (over HTTP) hears back;
an LLM's reply streamed word by word as Home Assistant streams it (`synthesize-start`, `synthesize-chunk`...,
`synthesize-stop`) is heard before its last word is sent; the conversation (`handle`) service answers "Paris" to the capital of France; a malformed line, a bad event and a client
that vanishes mid-audio (and mid-speech) leave the server healthy and the connection usable; an API key without
`--allow-public` refuses the Wyoming port. Run with `pytest -s` to see what was heard and said.
"""
import asyncio, subprocess, time

import httpx, numpy as np, pytest

pytest.importorskip("wyoming", reason="the Wyoming endpoint needs the wyoming package: pip install wyoming")

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.handle import Handled
from wyoming.info import Describe, Info
from wyoming.ping import Ping
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice
from suite import server_env, start, stop
from voice_agent.audio import resample
from voice_agent.testing import espeak_pcm, free_port, transcribe, voice_agent_cmd

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    "The local profile with a Wyoming port beside HTTP: (http url, wyoming port, http client, process)."
    work = tmp_path_factory.mktemp("wyoming")
    port, wport = free_port(), free_port()
    env = server_env(HF_HUB_OFFLINE="1", LOCAL_MODELS_DIR=str(work/"models"))
    proc = start(voice_agent_cmd("serve", "--profile", "local", "--port", port, "--wyoming-port", wport), env, port, work/"server.log")
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=url, timeout=120)
    yield url, wport, http, proc
    http.close(); stop(proc)


def run(coro): return asyncio.run(coro)


def pcm16(x: np.ndarray) -> bytes: return (np.clip(x, -1, 1)*32767).astype("<i2").tobytes()


async def read_until(c: AsyncTcpClient, *types: str, timeout: float=120) -> list[Event]:
    "Events read until one of `types` (included)."
    out = []
    while True:
        e = await asyncio.wait_for(c.read_event(), timeout)
        assert e is not None, f"the server closed the connection; got {[x.type for x in out]}"
        out.append(e)
        if e.type in types: return out


async def read_timed(c: AsyncTcpClient, t0: float, *types: str, timeout: float=120) -> tuple[list[Event], list[float]]:
    "Events read until one of `types` (included), and when each came (seconds after `t0`)."
    out, times = [], []
    while True:
        e = await asyncio.wait_for(c.read_event(), timeout)
        assert e is not None, f"the server closed the connection; got {[x.type for x in out]}"
        out.append(e); times.append(time.perf_counter() - t0)
        if e.type in types: return out, times


async def send_audio(c: AsyncTcpClient, x: np.ndarray, rate: int=16000, samples: int=1024, language: str|None="en", pace: bool=False):
    "transcribe, audio-start, the audio in chunks of `samples` (`pace`: at real-time pace, as a microphone gives them), audio-stop (as Home Assistant sends them)."
    await c.write_event(Transcribe(language=language).event())
    await c.write_event(AudioStart(rate=rate, width=2, channels=1).event())
    pcm, t0 = pcm16(x), time.perf_counter()
    for i in range(0, len(pcm), 2*samples):
        await c.write_event(AudioChunk(rate=rate, width=2, channels=1, audio=pcm[i:i + 2*samples]).event())
        if pace: await asyncio.sleep(max(0.0, t0 + (i//2 + samples)/rate - time.perf_counter()))
    await c.write_event(AudioStop().event())


def held_bytes(http) -> float:
    line = next((l for l in http.get("/metrics").text.splitlines() if l.startswith('voice_agent_held_bytes{holder="wyoming"}')), None)
    return float(line.split()[1]) if line else -1.0


def test_describe(server):
    "`info` names the STT, the TTS voices (OpenAI's names too) and the LLM as a conversation service."
    url, wport, http, proc = server
    async def go():
        async with AsyncTcpClient("127.0.0.1", wport) as c:
            await c.write_event(Describe().event())
            return Info.from_event((await read_until(c, "info"))[-1])
    info = run(go())
    voices = [v.name for v in info.tts[0].voices]
    print(f"\n[wyoming] asr {info.asr[0].models[0].name}, tts voices {voices[:4]}..., handle {info.handle[0].models[0].name}")
    assert info.asr[0].models[0].name == "whisper-tiny.en" and info.asr[0].models[0].languages == ["en"]
    assert voices[0] == "en_US-joe-medium" and "alloy" in voices and all(v.languages == ["en_US"] for v in info.tts[0].voices)
    assert info.handle[0].installed and info.handle[0].models[0].name


def test_transcribe_streamed_speech(server):
    "espeak-ng's question, 1024 samples a chunk -> the transcript."
    from voice_agent.stt import word_accuracy
    url, wport, http, proc = server
    async def go():
        async with AsyncTcpClient("127.0.0.1", wport) as c:
            await send_audio(c, espeak_pcm(QUESTION, 16000))
            return (await read_until(c, "transcript", "error"))[-1]
    e = run(go())
    assert e.type == "transcript", e
    text = Transcript.from_event(e).text
    print(f"\n[wyoming] heard {text!r}")
    assert word_accuracy(QUESTION, text) >= 0.8, text
    # 48 kHz audio, converted as it comes, is heard the same
    async def go48():
        async with AsyncTcpClient("127.0.0.1", wport) as c:
            await send_audio(c, espeak_pcm(QUESTION, 48000), rate=48000, samples=3072)
            return (await read_until(c, "transcript", "error"))[-1]
    e = run(go48())
    assert e.type == "transcript" and word_accuracy(QUESTION, e.data["text"]) >= 0.8, e
    # at a microphone's pace, with the pause in the middle and the silence a satellite sends before Home Assistant's VAD
    # ends the audio: the speech is transcribed at the pause (and again when it resumes), the transcript is the same
    two = np.concatenate([espeak_pcm("What is the capital", 16000), np.zeros(8000, np.float32),
                          espeak_pcm("of France?", 16000), np.zeros(12800, np.float32)])
    async def paced():
        async with AsyncTcpClient("127.0.0.1", wport) as c:
            await send_audio(c, two, pace=True)
            t0 = time.perf_counter()
            e = (await read_until(c, "transcript", "error"))[-1]
            return e, time.perf_counter() - t0
    e, secs = run(paced())
    print(f"[wyoming] at a microphone's pace: heard {e.data.get('text')!r}, {secs*1000:.0f} ms after audio-stop")
    assert e.type == "transcript" and word_accuracy(QUESTION, e.data["text"]) >= 0.8, e


def test_synthesize_heard_back(server):
    "synthesize (an OpenAI voice name) -> audio-start, chunks as each sentence is made, audio-stop; Whisper hears the words."
    from voice_agent.stt import word_accuracy
    url, wport, http, proc = server
    said = "The weather is nice today. We could go for a walk in the park. See you tomorrow."
    async def go():
        async with AsyncTcpClient("127.0.0.1", wport) as c:
            t0 = time.perf_counter()
            await c.write_event(Synthesize(text=said, voice=SynthesizeVoice(name="alloy")).event())
            return await read_timed(c, t0, "audio-stop", "error")
    events, times = run(go())
    types = [e.type for e in events]
    assert types[0] == "audio-start" and types[-1] == "audio-stop" and set(types[1:-1]) == {"audio-chunk"}, types[:5]
    rate = events[0].data["rate"]
    x = np.frombuffer(b"".join(e.payload for e in events if e.type == "audio-chunk"), "<i2").astype(np.float32)/32768
    first = times[types.index("audio-chunk")]
    print(f"\n[wyoming] {len(x)/rate:.2f} s of speech at {rate} Hz in {types.count('audio-chunk')} chunks; first chunk at {first:.2f} s, "
          f"last at {times[-1]:.2f} s")
    assert first < times[-1]*0.8, (first, times[-1])  # sentence-streamed: the first sentence goes out before the last is made
    heard = transcribe(http, resample(x, rate, 16000), 16000, language="en")
    print(f"[wyoming] Whisper heard {heard!r}")
    assert word_accuracy(said, heard) >= 0.7, heard


def test_streamed_synthesis(server):
    "An LLM's reply streamed word by word, as Home Assistant sends it: its first sentence is heard before the last word is sent; one audio, then synthesize-stopped; Whisper hears it; a client that leaves mid-stream stops it."
    from voice_agent.stt import word_accuracy
    url, wport, http, proc = server
    said = "The capital of France is Paris. It is known for the Eiffel Tower, its museums and its food."
    async def go():
        async with AsyncTcpClient("127.0.0.1", wport) as c:
            t0, sent = time.perf_counter(), {}
            async def write():  # as Home Assistant writes: start, the reply as the LLM makes it (~25 words/s), the whole text again, stop
                await c.write_event(SynthesizeStart(voice=SynthesizeVoice(name="alloy")).event())
                for w in said.split(" "):
                    await c.write_event(SynthesizeChunk(text=w + " ").event()); await asyncio.sleep(0.04)
                sent["last"] = time.perf_counter() - t0
                await c.write_event(Synthesize(text=said, voice=SynthesizeVoice(name="alloy")).event())
                await c.write_event(SynthesizeStop().event())
            writer = asyncio.ensure_future(write())
            out, times = await read_timed(c, t0, "synthesize-stopped", "error")
            await writer
            return out, times, sent["last"]
    events, times, last = run(go())
    types = [e.type for e in events]
    assert [t for t in types if t != "audio-chunk"] == ["audio-start", "audio-stop", "synthesize-stopped"], types[:5]
    first = times[types.index("audio-chunk")]
    rate = events[0].data["rate"]
    x = np.frombuffer(b"".join(e.payload for e in events if e.type == "audio-chunk"), "<i2").astype(np.float32)/32768
    print(f"\n[wyoming] streamed: the last word sent at {last:.2f} s, the first audio at {first:.2f} s, "
          f"{len(x)/rate:.2f} s of speech, synthesize-stopped at {times[-1]:.2f} s")
    assert first < last, (first, last)  # the first sentence is spoken while the rest of the reply is still coming
    heard = transcribe(http, resample(x, rate, 16000), 16000, language="en")
    print(f"[wyoming] Whisper heard {heard!r}")
    assert word_accuracy(said, heard) >= 0.7, heard  # said once: the whole text sent again inside the stream is not spoken

    async def vanish_mid_stream():
        async with AsyncTcpClient("127.0.0.1", wport) as c:
            await c.write_event(SynthesizeStart().event())
            await c.write_event(SynthesizeChunk(text=" ".join(f"This is sentence number {i}." for i in range(30))).event())
            await read_until(c, "audio-chunk")
            c._writer.transport.abort()
    run(vanish_mid_stream())
    deadline = time.monotonic() + 30
    while 'voice_agent_model_queue{kind="tts"} 0.0' not in http.get("/metrics").text and time.monotonic() < deadline: time.sleep(0.2)
    assert 'voice_agent_model_queue{kind="tts"} 0.0' in http.get("/metrics").text  # the stream's sentences stopped with it
    assert proc.poll() is None and http.get("/health/ready").status_code == 200


def test_handle_answers_paris(server):
    "transcript to the conversation service -> handled with the LLM's answer; the connection keeps the conversation."
    url, wport, http, proc = server
    async def go():
        async with AsyncTcpClient("127.0.0.1", wport) as c:
            await c.write_event(Transcript(text=QUESTION, language="en").event())
            first = (await read_until(c, "handled", "error"))[-1]
            await c.write_event(Transcript(text="And what is it famous for?", language="en").event())
            second = (await read_until(c, "handled", "error"))[-1]
            return first, second
    first, second = run(go())
    assert first.type == "handled" and second.type == "handled", (first, second)
    a, b = Handled.from_event(first), Handled.from_event(second)
    print(f"\n[wyoming] handled {a.text!r}, then {b.text!r}")
    assert "Paris" in a.text, a.text
    assert a.context["conversation_id"] == b.context["conversation_id"]  # one conversation per connection
    m = http.get("/metrics").text
    assert 'voice_agent_requests_total{method="WYOMING",route="wyoming transcript",status="200"}' in m


def test_bad_events_and_vanishing_clients(server):
    "A malformed line and bad events get `error` and the connection goes on; clients that vanish mid-audio or mid-speech leave the server healthy."
    url, wport, http, proc = server
    async def bad():
        async with AsyncTcpClient("127.0.0.1", wport) as c:
            c._writer.write(b"this is not json\n"); await c._writer.drain()
            e1 = (await read_until(c, "error"))[-1]
            await c.write_event(Event("synthesize", {"voice": {"name": "alloy"}}))  # no text
            e2 = (await read_until(c, "error"))[-1]
            await c.write_event(Event("audio-chunk", {"rate": 16000, "width": 3, "channels": 1}, b"\0"*6))
            e3 = (await read_until(c, "error"))[-1]
            await c.write_event(Ping(text="still there?").event())
            pong = (await read_until(c, "pong"))[-1]
            await c.write_event(Describe().event())
            info = (await read_until(c, "info"))[-1]
            return [e1.data["code"], e2.data["code"], e3.data["code"]], pong.data.get("text"), info.type
    codes, pong, info = run(bad())
    print(f"\n[wyoming] errors {codes}, then pong {pong!r} and {info} on the same connection")
    assert codes == ["invalid_event", "missing_text", "invalid_audio_format"] and pong == "still there?" and info == "info"

    async def vanish_mid_audio():
        r, w = await asyncio.open_connection("127.0.0.1", wport)
        c = AsyncTcpClient("127.0.0.1", wport); c._reader, c._writer = r, w
        await c.write_event(Transcribe(language="en").event())
        await c.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        x = pcm16(espeak_pcm(QUESTION, 16000))
        await c.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=x[:len(x)//2]).event())
        w.write(b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}, "payload_length": 32000}\n' + b"\0"*1000)
        await w.drain()
        w.transport.abort()  # gone mid-payload, without a goodbye

    async def vanish_mid_speech():
        async with AsyncTcpClient("127.0.0.1", wport) as c:
            await c.write_event(Synthesize(text=" ".join(f"This is sentence number {i}." for i in range(30))).event())
            await read_until(c, "audio-chunk")
            c._writer.transport.abort()

    before = held_bytes(http)  # the conversations kept (test_handle_answers_paris's): no audio in progress
    run(vanish_mid_audio()); run(vanish_mid_speech())
    deadline = time.monotonic() + 30
    while held_bytes(http) != before and time.monotonic() < deadline: time.sleep(0.2)
    assert held_bytes(http) == before, f"a vanished client's audio is still held ({held_bytes(http)} bytes, {before} before)"
    assert http.get("/health/ready").status_code == 200
    assert proc.poll() is None
    async def after():
        async with AsyncTcpClient("127.0.0.1", wport) as c:
            await send_audio(c, espeak_pcm(QUESTION, 16000))
            return (await read_until(c, "transcript", "error"))[-1]
    e = run(after())
    assert e.type == "transcript" and "France" in e.data["text"], e


def test_a_key_needs_allow_public(tmp_path):
    "Wyoming has no authentication: with an API key, `--wyoming-port` is refused unless `--allow-public`."
    env = server_env(HF_HUB_OFFLINE="1", MODEL_SERVER_API_KEY="k-123")
    r = subprocess.run(voice_agent_cmd("serve", "--profile", "tiny", "--port", free_port(), "--wyoming-port", free_port()),
                       env=env, capture_output=True, text=True, timeout=120)
    print(f"\n[wyoming] {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 2 and "Wyoming protocol has no authentication" in r.stderr and "--allow-public" in r.stderr, r.stderr[-800:]


def test_full_queue_waits(tmp_path):
    """Three clients' questions end at once on a server whose STT takes one call and queues none (`MODEL_SERVER_MAX_QUEUE=0`):
    each is transcribed, the later ones waiting for a place (Home Assistant asks once; before, they got `queue_full`),
    and the wait is logged."""
    port, wport, log = free_port(), free_port(), tmp_path/"server.log"
    env = server_env(HF_HUB_OFFLINE="1", LOCAL_MODELS_DIR=str(tmp_path/"models"), MODEL_SERVER_MAX_QUEUE="0")
    proc = start(voice_agent_cmd("serve", "--profile", "local", "--port", port, "--wyoming-port", wport), env, port, log)
    try:
        x = espeak_pcm(QUESTION, 16000)
        async def one(c):
            await send_audio(c, x)
            return (await read_until(c, "transcript", "error"))[-1]
        async def go():
            cs = [AsyncTcpClient("127.0.0.1", wport) for _ in range(3)]
            for c in cs: await c.connect()
            try: return await asyncio.gather(*[one(c) for c in cs])
            finally:
                for c in cs: await c.disconnect()
        got = run(go())
        print(f"\n[wyoming] full queue: {[(e.type, e.data.get('text') or e.data.get('code')) for e in got]}")
        assert [e.type for e in got] == ["transcript"]*3 and all("France" in e.data["text"] for e in got), got
        assert "a call waits for a place" in log.read_text()
        refused = [l for l in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines()
                   if l.startswith('voice_agent_rejected_requests_total{kind="stt",reason="queue_full"}')]
        assert all(float(l.split()[-1]) == 0 for l in refused), refused  # none refused (no line: never counted)
        assert 'voice_agent_model_queue_waiting{kind="stt"} 0.0' in httpx.get(f"http://127.0.0.1:{port}/metrics").text  # none left waiting
    finally: stop(proc)
