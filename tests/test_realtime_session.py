"""The rest of OpenAI's GA realtime session, for real: `voice-agent serve --profile local` (SmolLM2 via llama.cpp, Whisper
tiny.en, Piper) on a free port, the official `openai` client's realtime connection over a socket.

- G.711: a spoken question sent as A-law at 8 kHz (20 ms, 160 bytes, every 20 ms, as a telephone bridge sends it) is heard
  and answered; the answer comes back as µ-law at 8 kHz, and Whisper hears the decoded answer say what the reply says.
- Out-of-band responses: `conversation: "none"` with `input` (an item reference and a new message) and `metadata`: its
  `response.done` has no `conversation_id` and its metadata, and the conversation does not hold its item.
- `idle_timeout_ms`: after a reply, silence past the timeout gives `input_audio_buffer.timeout_triggered`, the silence
  committed as the user's item, and a reply.
- `truncation`, `noise_reduction` and formats: what is accepted shows in `session.updated`; what is not is an `error`
  naming the field and saying what to send, and the session still answers.
- `truncation` on a real 640-token llama.cpp context: a `retention_ratio` of 0.5 keeps every turn within the context and
  cuts deeper than `auto`; `disabled` fails the turn that overflows, saying what to do, and answers once items are deleted.

Every event is checked against the `openai` package's own types. Run with `pytest -s` to see what was heard and said.
"""
import asyncio, base64, time

import numpy as np, pytest
from pydantic import TypeAdapter
from openai.types.realtime import RealtimeServerEvent

from suite import server_env, start, stop, local_server, checked
from voice_agent.audio import resample
from voice_agent.stt import word_accuracy
from voice_agent.server.realtime.formats import g711_decode, g711_encode
from voice_agent.testing import REALTIME_RATE as RATE, espeak_pcm, events_until, free_port, realtime_connect, transcribe, voice_agent_cmd

server_event = TypeAdapter(RealtimeServerEvent)
TEXT = lambda text: {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    "The local profile on a free port."
    yield from local_server(tmp_path_factory.mktemp("realtime_session"))



async def telephone(conn, wire: bytes, stop: asyncio.Event):
    "Send G.711 bytes like a telephone bridge: 160 bytes (20 ms at 8 kHz) every 20 ms, then silence until `stop`."
    t0, k, silence = time.perf_counter(), 0, bytes([0xD5])*160  # A-law's zero
    while not stop.is_set():
        piece = wire[k*160:(k + 1)*160] or silence
        await asyncio.sleep(max(0.0, t0 + (k + 1)*0.02 - time.perf_counter()))
        await conn.input_audio_buffer.append(audio=base64.b64encode(piece).decode())
        k += 1


def test_g711_telephone_turn(server):
    "A-law in, µ-law out: the question is heard, the reply says Paris, and Whisper hears the decoded µ-law say it too."
    url, proc = server
    question = resample(espeak_pcm("What is the capital of France?", RATE), RATE, 8000)
    wire = g711_encode((np.clip(question, -1, 1)*32767).astype("<i2"), "audio/pcma")
    async def go():
        async with realtime_connect(url) as conn:
            await events_until(conn, "session.created", 30)
            await conn.session.update(session={"type": "realtime", "instructions": "Answer in one short sentence.", "audio": {
                "input": {"format": {"type": "audio/pcma"}, "turn_detection": {"type": "server_vad"}},
                "output": {"format": {"type": "audio/pcmu"}}}})
            updated = (await events_until(conn, "session.updated", 30))[-1][1]
            stop = asyncio.Event()
            mic = asyncio.ensure_future(telephone(conn, wire, stop))
            try: ev = await events_until(conn, "response.done", 120)
            finally:
                stop.set(); await mic
            return updated, ev
    updated, ev = asyncio.run(go())
    kinds = checked(ev)
    assert (updated.session.audio.input.format.type, updated.session.audio.output.format.type) == ("audio/pcma", "audio/pcmu")
    heard = next((e.transcript for _, e in ev if e.type == "conversation.item.input_audio_transcription.completed"), "")
    said = "".join(e.delta for _, e in ev if e.type == "response.output_audio_transcript.delta")
    wire_out = b"".join(base64.b64decode(e.delta) for _, e in ev if e.type == "response.output_audio.delta")
    done = ev[-1][1].response
    audio = g711_decode(wire_out, "audio/pcmu").astype(np.float32)/32768
    back = transcribe(url, resample(audio, 8000, 16000))
    print(f"\n[g711] heard {heard!r} (A-law, 8 kHz); said {said!r}; {len(wire_out)} bytes of µ-law ({len(wire_out)/8000:.1f} s), heard back {back!r}")
    assert "input_audio_buffer.speech_started" in kinds and "capital" in heard.lower() and "france" in heard.lower(), heard
    assert done.status == "completed" and done.audio.output.format.type == "audio/pcmu" and "paris" in said.lower(), (done.status, said)
    # Whisper hears the µ-law reply say it: most of its words (Piper samples its voice, so the last word heard through 8 kHz
    # µ-law varies from run to run: "Paris", "Francis Paris", "Perretz"; the words before it do not)
    assert len(wire_out) > 8000//2 and "capital" in back.lower() and word_accuracy(said, back) >= 0.5, (said, back)
    assert proc.poll() is None


def test_out_of_band_response(server):
    "conversation 'none' with input and metadata: no conversation_id, the metadata back, an answer from its input; the conversation unchanged."
    url, proc = server
    async def go():
        async with realtime_connect(url) as conn:
            await events_until(conn, "session.created", 30)
            await conn.conversation.item.create(item=TEXT("My name is Ada and I live in Rome."))
            added = (await events_until(conn, "conversation.item.done", 30))[-1][1].item
            await conn.response.create(response={
                "conversation": "none", "output_modalities": ["text"], "metadata": {"purpose": "city"}, "max_output_tokens": 20,
                "instructions": "Answer with one word.",
                "input": [{"type": "item_reference", "id": added.id}, TEXT("Which city do I live in?")]})
            oob = await events_until(conn, "response.done", 120)
            item = oob[-1][1].response.output[0]
            await conn.conversation.item.retrieve(item_id=item.id)  # not in the conversation
            missing = await events_until(conn, "error", 30)
            return oob, missing
    oob, missing = asyncio.run(go())
    kinds, done = checked(oob), oob[-1][1].response
    text = done.output[0].content[0].text
    print(f"\n[out of band] {kinds}\n[out of band] said {text!r}; metadata {done.metadata}; retrieving its item: {missing[-1][1].error.message}")
    assert done.conversation_id is None and done.metadata == {"purpose": "city"} and done.status == "completed"
    assert not any(k.startswith("conversation.item") for k in kinds) and "rom" in text.lower(), (kinds, text)  # Rome (SmolLM2 has said "Roma")
    assert missing[-1][1].error.code == "item_not_found"
    assert proc.poll() is None


def test_idle_timeout_asks_again(server):
    "After a reply, 1.5 s of silence: timeout_triggered (the silent stretch), the silence committed as the user's item, a reply."
    url, proc = server
    async def go():
        async with realtime_connect(url) as conn:
            await events_until(conn, "session.created", 30)
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "max_output_tokens": 30,
                                               "instructions": "You are a friendly phone agent. Answer in one short sentence.",
                                               "audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 1500}}}})
            await events_until(conn, "session.updated", 30)
            await conn.conversation.item.create(item=TEXT("Hello, I need help with my order."))
            await conn.response.create()
            await events_until(conn, "response.done", 120)
            silence = base64.b64encode(bytes(2*RATE//10)).decode()  # 100 ms
            sent = 0
            async def quiet():
                nonlocal sent
                while True:
                    await conn.input_audio_buffer.append(audio=silence); sent += 1
                    await asyncio.sleep(0.01)
            q = asyncio.ensure_future(quiet())
            try: ev = await events_until(conn, "response.done", 120)
            finally: q.cancel()
            return ev, sent
    ev, sent = asyncio.run(go())
    kinds = checked(ev)
    t = next(e for _, e in ev if e.type == "input_audio_buffer.timeout_triggered")
    committed = next(e for _, e in ev if e.type == "input_audio_buffer.committed")
    done = ev[-1][1].response
    heard = next((e.transcript for _, e in ev if e.type == "conversation.item.input_audio_transcription.completed"), None)
    print(f"\n[idle] {kinds[:4]} ... {kinds[-1]}; silent {t.audio_start_ms}-{t.audio_end_ms} ms; Whisper heard {heard!r}; said {done.output[0].content[0].text!r}")
    assert kinds.index("input_audio_buffer.timeout_triggered") < kinds.index("input_audio_buffer.committed") < kinds.index("response.created")
    assert committed.item_id == t.item_id and 1500 <= t.audio_end_ms - t.audio_start_ms < 1700, t
    assert done.status == "completed" and done.output[0].content[0].text.strip()
    assert proc.poll() is None


def test_session_fields_accepted_or_refused_with_a_reason(server):
    "truncation shown in session.updated; a bad truncation, noise reduction and an unknown format: errors naming the field; then an answer."
    url, proc = server
    async def go():
        async with realtime_connect(url) as conn:
            await events_until(conn, "session.created", 30)
            await conn.session.update(session={"type": "realtime", "truncation": {"type": "retention_ratio", "retention_ratio": 0.5}})
            updated = (await events_until(conn, "session.updated", 30))[-1][1]
            errors = []
            for s in ({"truncation": "sometimes"}, {"audio": {"input": {"noise_reduction": {"type": "cancel_echo"}}}},
                      {"audio": {"output": {"format": {"type": "audio/opus"}}}}):
                await conn.session.update(session={"type": "realtime", **s})
                e = (await events_until(conn, "error", 30))[-1][1]
                server_event.validate_python(e.to_dict()); errors.append(e.error)
            await conn.response.create(response={"conversation": "elsewhere"})
            errors.append((await events_until(conn, "error", 30))[-1][1].error)
            await conn.conversation.item.create(item=TEXT("Say hello."))
            await conn.response.create(response={"output_modalities": ["text"]})
            done = (await events_until(conn, "response.done", 120))[-1][1].response
            return updated, errors, done
    updated, errors, done = asyncio.run(go())
    for e in errors: print(f"\n[session] {e.code} ({e.param}): {e.message}", end="")
    assert updated.session.truncation.retention_ratio == 0.5
    trunc, noise, fmt, conv = errors
    assert trunc.param == "session.truncation" and '"auto", "disabled" or {"type": "retention_ratio"' in trunc.message
    assert noise.param == "session.audio.input.noise_reduction" and '{"type": "far_field"} or null' in noise.message
    assert fmt.code == "unsupported_audio_format" and "audio/pcmu" in fmt.message, fmt
    assert conv.param == "response.conversation" and "'none' (out of band)" in conv.message
    assert done.status == "completed"
    assert proc.poll() is None


CONTEXT = 640  # llama.cpp's context on the small server: eight typed turns of ~100 tokens overflow it


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    "The local profile with a 640-token LLM context (llama.cpp: MODEL_SERVER_LLM_CONTEXT)."
    work = tmp_path_factory.mktemp("realtime_small")
    port = free_port()
    env = server_env(HF_HUB_OFFLINE="1", LOCAL_MODELS_DIR=str(work/"models"), MODEL_SERVER_LLM_CONTEXT=CONTEXT)
    proc = start(voice_agent_cmd("serve", "--profile", "local", "--port", port), env, port, work/"server.log")
    yield f"http://127.0.0.1:{port}", proc
    stop(proc)


def test_truncation_over_a_small_context(small):
    "retention_ratio 0.5: every turn answered within the context, the cuts deeper than auto's; disabled: the overflowing turn fails saying so, then the session goes on."
    url, proc = small
    topics = ["the sea", "mountains", "a city at night", "a forest", "the desert", "a river", "winter", "a market", "the moon", "a library"]
    ask = lambda t: TEXT(f"Describe {t} in a few words. " + "Think of its colours, its sounds, its smells and the people you would meet there. " * 3)
    async def session(truncation):
        done, ids = [], []
        async with realtime_connect(url) as conn:
            await events_until(conn, "session.created", 30)
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "max_output_tokens": 40,
                                               "instructions": "You are a poet. Answer in one short sentence.", "truncation": truncation})
            updated = (await events_until(conn, "session.updated", 30))[-1][1]
            assert updated.session.truncation == truncation or updated.session.truncation.to_dict() == truncation
            for t in topics:
                await conn.conversation.item.create(item=ask(t))
                await conn.response.create()
                ev = await events_until(conn, "response.done", 120)
                checked(ev)
                ids += [e.item.id for _, e in ev if e.type == "conversation.item.added"]
                err = next((e.error for _, e in ev if e.type == "error"), None)
                done.append((ev[-1][1].response, err))
                if err: break
            if done[-1][1]:  # disabled: once the conversation overflows, the client deletes all but the last question, and it answers again
                for i in [i for i in ids if i != ids[-2]]:
                    await conn.conversation.item.delete(item_id=i); await events_until(conn, "conversation.item.deleted", 30)
                await conn.response.create()
                done.append(((await events_until(conn, "response.done", 120))[-1][1].response, None))
        return done
    ratio = asyncio.run(session({"type": "retention_ratio", "retention_ratio": 0.5}))
    used = [(r.status, r.usage.input_tokens) for r, _ in ratio]
    print(f"\n[truncation] retention_ratio 0.5 on a {CONTEXT}-token context, (status, prompt tokens) per turn: {used}")
    assert all(s == "completed" and p + 40 <= CONTEXT for s, p in used), used
    drops = [b for (_, a), (_, b) in zip(used, used[1:]) if b < a]
    assert drops and min(drops) <= 0.5*(CONTEXT - 40) + 100, used  # cut to about half of what fits, not 3/4
    disabled = asyncio.run(session("disabled"))
    (failed, err), last = disabled[-2], disabled[-1][0]
    print(f"[truncation] disabled: {[(r.status, r.usage and r.usage.input_tokens) for r, _ in disabled]}; the error: {err.message}")
    assert failed.status == "failed" and 'truncation is "disabled"' in err.message and "conversation.item.delete" in err.message, (failed.status, err)
    assert last.status == "completed"  # after deleting items, it answers again
    assert proc.poll() is None
