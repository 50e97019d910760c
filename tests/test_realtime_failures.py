"""The failure paths of `/v1/realtime` that depend on time, over a real socket (issue 19, items 3, 5, 6 and 8).

Most tests serve the fakes of `voice_agent.server.fakes` with uvicorn on a thread of this process, so a test can slow a
model down (an STT that takes 1.5 s opens the window between the end of a turn and its transcript) and look at the
models' counters; the Silero VAD and the espeak-ng speech are real. The last ones run `voice-agent serve --profile local`
with a small LLM context: a long typed session must keep being answered, and its memory is read from /proc.
Run with `pytest -s` to see the figures.
"""
import asyncio, json, time
from pathlib import Path

import httpx, numpy as np, pytest

from suite import server_env, start, stop
from voice_agent.config import Settings
from voice_agent.server.fakes import FakeLLM, FakeSTT, FakeTTS
from voice_agent.testing import REALTIME_RATE as RATE, ThreadServer, b64, espeak_pcm, free_port, voice_agent_cmd

SILENCE = np.zeros(RATE, np.float32)


class SlowSTT(FakeSTT):
    "The fake STT, taking `seconds` per transcription (as Whisper does on a busy machine)."
    def __init__(self, seconds: float=1.5): super().__init__(); self.seconds = seconds
    def transcribe(self, audio, sample_rate=None, language=None) -> str:
        time.sleep(self.seconds)
        return super().transcribe(audio, sample_rate, language)


class LongLLM(FakeLLM):
    "The fake LLM, writing a long reply (up to `max_new_tokens` words, `delay` seconds each) whatever it is asked."
    def _raw(self, messages, tools, tool_choice) -> str: return " ".join(f"word{i}" for i in range(1000))


class Served(ThreadServer):
    "An app on fakes, served by uvicorn on a thread of this process, on a free loopback port."
    def __init__(self, models: dict, **settings):
        from voice_agent.server.app import create_app
        port = free_port()
        self.app = create_app(Settings(host="127.0.0.1", port=port, **settings), models=models)
        self.state = self.app.state.server
        super().__init__(self.app, port, timeout=30, lifespan="on")


@pytest.fixture
def served():
    "Start `Served` apps; stop them all at the end of the test."
    made = []
    def make(models: dict, **settings) -> Served:
        made.append(Served(models, **settings)); return made[-1]
    yield make
    for s in made: s.stop(10)


async def recv(ws, timeout: float) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def until(ws, kind: str, timeout: float=30, log: list|None=None) -> list[dict]:
    "Events up to the first of type `kind`; fails at an `error` event, or when none comes within `timeout` seconds."
    out, deadline = [], time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try: e = await recv(ws, max(left, 0.001))
        except asyncio.TimeoutError:
            raise AssertionError(f"no {kind} within {timeout:g} s; got {[x['type'] for x in out]}") from None
        out.append(e)
        if log is not None: log.append(e["type"])
        assert e["type"] != "error", e
        if e["type"] == kind: return out


async def append(ws, x: np.ndarray, ms: int=20):
    "Send `x` as appends of `ms` each, at once (not at the microphone's pace)."
    n = RATE*ms//1000
    for i in range(0, len(x), n): await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": b64(x[i:i+n])}))


def session_update(**session) -> str: return json.dumps({"type": "session.update", "session": {"type": "realtime", **session}})


def connect(url: str):
    import websockets
    return websockets.connect(url.replace("http", "ws") + "/v1/realtime?model=llm", max_size=2**24)


# --- item 3: a transcription outlives the turn or response that waited for it -----------------------------------

def test_speech_during_a_slow_transcript_leaves_the_session_answering(served):
    "The user speaks again while Whisper transcribes the turn that just ended: that turn is dropped, the next one is answered."
    srv = served({"llm": FakeLLM(), "stt": SlowSTT(1.5), "tts": FakeTTS()})
    q = espeak_pcm("What is the capital of France?", RATE)
    async def go():
        async with connect(srv.url) as ws:
            await recv(ws, 10)
            await ws.send(session_update(output_modalities=["text"])); await until(ws, "session.updated")
            await append(ws, np.concatenate([SILENCE[:RATE//2], q, SILENCE[:RATE*8//10]]))
            await until(ws, "input_audio_buffer.committed")  # the turn ended; its transcript takes 1.5 s
            await append(ws, np.concatenate([q, SILENCE]))  # speech again, while it runs
            ev = await until(ws, "response.done", 30)
            kinds = [e["type"] for e in ev]
            assert kinds.count("input_audio_buffer.committed") == 1 and "input_audio_buffer.speech_started" in kinds, kinds
            assert ev[-1]["response"]["status"] == "completed", ev[-1]
            heard = [e["transcript"] for e in ev if e["type"] == "conversation.item.input_audio_transcription.completed"]
            assert len(heard) == 2, heard  # both turns' words were heard: the first transcript was not cancelled
            await ws.send(json.dumps({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                                                     "content": [{"type": "input_text", "text": "and now?"}]}}))
            await ws.send(json.dumps({"type": "response.create"}))
            return (await until(ws, "response.done", 30))[-1]
    done = asyncio.run(go())
    assert done["response"]["status"] == "completed", done


def test_cancel_while_the_transcript_runs_ends_the_response(served):
    "response.cancel while the response still waits for a slow transcript: response.created and response.done (cancelled); the next response works."
    srv = served({"llm": FakeLLM(), "stt": SlowSTT(1.5), "tts": FakeTTS()})
    q = espeak_pcm("Hello there.", RATE)
    async def go():
        async with connect(srv.url) as ws:
            await recv(ws, 10)
            await ws.send(session_update(output_modalities=["text"], audio={"input": {"turn_detection": None}}))
            await until(ws, "session.updated")
            await append(ws, q)
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            await until(ws, "conversation.item.added")
            await ws.send(json.dumps({"type": "response.create"}))
            await asyncio.sleep(0.3)
            await ws.send(json.dumps({"type": "response.cancel"}))
            ev = await until(ws, "response.done", 10)
            kinds = [e["type"] for e in ev]
            assert "response.created" in kinds and ev[-1]["response"]["status"] == "cancelled", kinds
            await ws.send(json.dumps({"type": "response.create"}))
            ev = await until(ws, "response.done", 30)
            return ev
    ev = asyncio.run(go())
    assert ev[-1]["response"]["status"] == "completed", ev[-1]
    assert ev[-1]["response"]["output"][0]["content"][0]["text"].startswith("echo: "), ev[-1]


# --- item 6: a drafted reply never holds the LLM from others --------------------------------------------------

async def _draft_held(srv, llm, ws, q):
    "Speak `q` and pause (shorter than the 2 s turn silence): the reply is drafted and held; wait until the LLM streams it."
    await recv(ws, 10)
    await ws.send(session_update(output_modalities=["text"], audio={"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 2000}}}))
    await until(ws, "session.updated")
    await append(ws, np.concatenate([SILENCE[:RATE//2], q, SILENCE[:RATE*4//10]]))
    deadline = time.monotonic() + 10
    while llm.streams == 0:
        assert time.monotonic() < deadline, "no draft was started"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)


def test_a_held_draft_does_not_delay_another_clients_chat(served):
    "While one session's text reply is drafted and held (its turn not over), another client's chat call is answered at once; the turn is still answered when it ends."
    llm = LongLLM(delay=0.02)
    srv = served({"llm": llm, "stt": FakeSTT(), "tts": FakeTTS()})
    q = espeak_pcm("Tell me everything you know.", RATE)
    async def go():
        async with connect(srv.url) as ws:
            await _draft_held(srv, llm, ws, q)
            t = time.monotonic()
            r = await asyncio.to_thread(httpx.post, srv.url + "/v1/chat/completions", timeout=60,
                                        json={"model": "llm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
            waited = time.monotonic() - t
            print(f"\n[draft] another client's chat call took {waited:.2f} s while a draft was held")
            await append(ws, np.zeros(2*RATE, np.float32))  # the turn ends: answered (the draft gave the LLM away, so afresh)
            ev = await until(ws, "response.done", 30)
            return r, waited, ev
    r, waited, ev = asyncio.run(go())
    assert r.status_code == 200, r.text
    assert waited < 5, f"the chat call waited {waited:.1f} s behind a held draft"  # before: ~30 s (the stream's stall limit)
    assert ev[-1]["response"]["status"] == "completed"
    assert [e["type"] for e in ev].count("response.created") == 1


def test_session_update_drops_a_held_draft(served):
    "A session.update while a reply is drafted and held stops its LLM call at once, and nothing of it is sent."
    llm = LongLLM(delay=0.02)
    srv = served({"llm": llm, "stt": FakeSTT(), "tts": FakeTTS()})
    slot = srv.state.slots["llm"]
    q = espeak_pcm("Tell me everything you know.", RATE)
    async def go():
        async with connect(srv.url) as ws:
            await _draft_held(srv, llm, ws, q)
            assert slot.in_flight == 1
            await ws.send(session_update(audio={"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 1000}}}))
            await until(ws, "session.updated")
            deadline = time.monotonic() + 2
            while slot.in_flight and time.monotonic() < deadline: await asyncio.sleep(0.02)
            free = slot.in_flight == 0
            await ws.send(json.dumps({"type": "conversation.item.retrieve", "item_id": "no_such_item"}))  # a marker: what came before it
            seen = []
            while True:
                e = await recv(ws, 10)
                seen.append(e["type"])
                if e["type"] == "error": break
            return free, seen
    free, seen = asyncio.run(go())
    assert free, "the held draft's LLM call was still running 2 s after session.update"
    assert not any(k.startswith("response.") for k in seen), seen


# --- items 5 and 8 on the real models: a long session on a small context, and text limits ---------------------

CONTEXT = 640  # llama.cpp context of this server: a dozen typed turns overflow it


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    "`voice-agent serve --profile local` with a 640-token LLM context."
    work = tmp_path_factory.mktemp("realtime_local")
    port = free_port()
    env = server_env(HF_HUB_OFFLINE="1", LOCAL_MODELS_DIR=str(work/"models"), MODEL_SERVER_LLM_CONTEXT=CONTEXT)
    proc = start(voice_agent_cmd("serve", "--profile", "local", "--port", port), env, port, work/"server.log")
    yield f"http://127.0.0.1:{port}", proc
    stop(proc)


def memory_mb(pid: int) -> dict:
    "The process's resident memory now and at its peak (MB), from /proc."
    fields = dict(l.split(":", 1) for l in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in l)
    return {k: int(fields[k].split()[0])/1024 for k in ("VmRSS", "VmHWM")}


def typed(text: str) -> str:
    return json.dumps({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})


def test_a_long_session_on_a_small_context_is_answered_to_the_end(local):
    "Twelve typed turns of ~80 tokens on a 640-token context: every response completes, its prompt and reply within the context."
    url, proc = local
    topics = ["the sea", "mountains", "a city at night", "a forest", "the desert", "a river", "winter", "a market", "the moon",
              "a library", "a train journey", "a garden"]
    async def go():
        done = []
        async with connect(url) as ws:
            await recv(ws, 30)
            await ws.send(session_update(output_modalities=["text"], instructions="You are a poet. Answer in one short sentence.", max_output_tokens=40))
            await until(ws, "session.updated")
            for t in topics:
                await ws.send(typed(f"Describe {t} in a few words. " + "Think of its colours, its sounds, its smells and the people you would meet there. " * 3))
                await ws.send(json.dumps({"type": "response.create"}))
                ev = await until(ws, "response.done", 120)
                done.append(ev[-1]["response"])
        return done
    done = asyncio.run(go())
    used = [(r["status"], r["usage"]["input_tokens"], r["usage"]["output_tokens"]) for r in done]
    print(f"\n[context] (status, prompt tokens, reply tokens) per turn on a {CONTEXT}-token context: {used}")
    assert all(s == "completed" for s, _, _ in used), used  # before: "the prompt has N tokens" from the 6th turn on
    assert all(p + 40 <= CONTEXT for _, p, _ in used), used
    assert max(p for _, p, _ in used) > CONTEXT//2 and all(o > 5 for _, _, o in used), used  # the history was read, the replies not starved


def test_a_megabyte_of_text_is_refused_before_the_llm(local):
    "A 1 MB input_text is refused at once (text_too_long), the LLM reads nothing, the server's memory hardly moves; the session goes on."
    url, proc = local
    metrics = lambda: {l.rsplit(" ", 1)[0]: float(l.rsplit(" ", 1)[1]) for l in httpx.get(url + "/metrics").text.splitlines() if l and not l.startswith("#")}
    before, mem0 = metrics()["voice_agent_prompt_tokens_total"], memory_mb(proc.pid)
    async def go():
        async with connect(url) as ws:
            await recv(ws, 30)
            await ws.send(typed("x" * 1_000_000))
            e = await recv(ws, 30)
            await ws.send(json.dumps({"type": "response.create", "response": {"output_modalities": ["text"], "instructions": "y" * 1_000_000}}))
            e2 = await recv(ws, 30)
            held = metrics()['voice_agent_held_bytes{holder="realtime_sessions"}']
            await ws.send(typed("Say hello.")); await ws.send(json.dumps({"type": "response.create", "response": {"output_modalities": ["text"]}}))
            return e, e2, held, (await until(ws, "response.done", 120))[-1]
    e, e2, held, done = asyncio.run(go())
    mem1, after = memory_mb(proc.pid), metrics()
    cache = after['voice_agent_held_bytes{holder="llm_prompt_cache"}']
    print(f"\n[limits] 1 MB input_text and 1 MB instructions: {e['error']['code']}, {e2['error']['code']}; server RSS {mem0['VmRSS']:.0f} -> "
          f"{mem1['VmRSS']:.0f} MB, peak {mem0['VmHWM']:.0f} -> {mem1['VmHWM']:.0f} MB; sessions held {held:.0f} bytes; "
          f"prompt cache {cache:.0f} bytes")
    assert (e["error"]["code"], e2["error"]["code"]) == ("text_too_long", "text_too_long"), (e, e2)
    assert "MODEL_SERVER_MAX_TEXT_CHARS" in e["error"]["message"]
    assert done["response"]["status"] == "completed"
    assert after["voice_agent_prompt_tokens_total"] - before < 200  # only "Say hello." was read
    assert held < 100_000  # the megabytes were not kept


def test_a_draft_whose_turn_never_ends_is_dropped(served, monkeypatch):
    "The client stops sending audio within the silence: after DRAFT_HOLD_S the held draft is dropped and its LLM call stopped."
    from voice_agent.server.routers import realtime
    from voice_agent.server.realtime import turns
    monkeypatch.setattr(turns, "DRAFT_HOLD_S", 1.0)
    llm = LongLLM(delay=0.02)  # 200 words: 4 s of LLM
    srv = served({"llm": llm, "stt": FakeSTT(), "tts": FakeTTS()})
    slot, q = srv.state.slots["llm"], espeak_pcm("Tell me everything you know.", RATE)
    async def go():
        async with connect(srv.url) as ws:
            await _draft_held(srv, llm, ws, q)
            session = next(iter(realtime.live_sessions(srv.state)))
            held = session.draft is not None
            await asyncio.sleep(1.5)
            return held, session.draft, slot.in_flight, llm.tokens
    held, draft, in_flight, tokens = asyncio.run(go())
    assert held and draft is None and in_flight == 0, (held, draft, in_flight)
    assert tokens < 150, tokens  # stopped well before its 200 words
