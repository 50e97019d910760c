"""Live input transcripts for real: `voice-agent serve --profile local` on a free port, the official `openai` client over a socket.

A long espeak-ng sentence is streamed like a microphone (20 ms of PCM16 at 24 kHz every 20 ms). While it is still being
spoken, Whisper (tiny.en) transcribes the speech so far and the words two partials agree on arrive as
`conversation.item.input_audio_transcription.delta`, under the item id `speech_started` gave; after the turn, the deltas
add up to the `.completed` transcript (or it revised a word). Every event is validated against the `openai` package's
own types. Transcription settings: `language` "en" honoured, "de" refused (the model is English-only), a `prompt` refused
(the STT takes none), a TTS model's name refused, each with an error that says what to send. Run with `pytest -s`.
"""
import asyncio, time

import pytest
from pydantic import TypeAdapter
from openai.types.realtime import RealtimeServerEvent

from suite import server_env, start, stop
from voice_agent.testing import (REALTIME_RATE as RATE, configure, espeak_pcm, events_until, free_port, microphone,
                                 realtime_connect, voice_agent_cmd, voiced_seconds)

SENTENCE = "I would like to book a table for four people at an Italian restaurant near the station tomorrow evening."
server_event = TypeAdapter(RealtimeServerEvent)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    "The local profile (Silero VAD, Whisper tiny.en, SmolLM2, Piper)."
    work = tmp_path_factory.mktemp("transcripts")
    port = free_port()
    env = server_env(HF_HUB_OFFLINE="1", LOCAL_MODELS_DIR=str(work/"models"))
    proc = start(voice_agent_cmd("serve", "--profile", "local", "--port", port), env, port, work/"server.log")
    yield f"http://127.0.0.1:{port}"
    stop(proc)


async def update(conn, transcription) -> object:
    "session.update with `transcription`; session.updated or the error."
    await conn.session.update(session={"type": "realtime", "audio": {"input": {"transcription": transcription}}})
    while True:
        e = await asyncio.wait_for(conn.recv(), 30)
        if e.type in ("session.updated", "error"): return e


def test_partial_transcripts_arrive_while_the_user_speaks(server):
    "Deltas during the speech, the item id speech_started named, adding up to .completed; every event valid."
    x = espeak_pcm(SENTENCE, RATE)
    async def go():
        async with realtime_connect(server) as conn:
            await events_until(conn, "session.created", 30)
            await configure(conn, create_response=False)
            e = await update(conn, {"model": "whisper-1", "language": "en"})
            assert e.type == "session.updated" and e.session.audio.input.transcription.language == "en", e
            stop_mic = asyncio.Event()
            mic = asyncio.ensure_future(microphone(conn, x, stop_mic))
            t0 = time.perf_counter()
            try: ev = await events_until(conn, "conversation.item.input_audio_transcription.completed", 60)
            finally:
                stop_mic.set(); await mic
            return t0, ev
    t0, ev = asyncio.run(go())
    speech_end = t0 + voiced_seconds(x)
    started = next(e for _, e in ev if e.type == "input_audio_buffer.speech_started")
    deltas = [(t, e) for t, e in ev if e.type == "conversation.item.input_audio_transcription.delta"]
    done = ev[-1][1]
    early = [e.delta for t, e in deltas if t < speech_end]
    print(f"\n[transcripts] {len(deltas)} deltas, {len(early)} before the speech ended: {[round(t - t0, 2) for t, _ in deltas]} s; "
          f"early text {''.join(early)!r}; completed {done.transcript!r}")
    for _, e in ev: server_event.validate_python(e.model_dump(exclude_unset=True))
    assert len(early) >= 2 and len("".join(early).split()) >= 4, early  # words shown while the user still speaks
    assert all(e.item_id == started.item_id == done.item_id for _, e in deltas)
    joined = "".join(e.delta for _, e in deltas)  # all of .completed, unless Whisper revised a word already sent ("four" -> "4")
    norm = lambda s: [w.strip(".,?!").lower() for w in s.split()]
    assert norm(joined)[:4] == norm(done.transcript)[:4], (joined, done.transcript)
    assert joined == done.transcript or norm(joined) != norm(done.transcript)[:len(norm(joined))], (joined, done.transcript)
    assert "table" in done.transcript.lower() and "restaurant" in done.transcript.lower(), done.transcript


def test_transcription_settings_refused_with_a_reason(server):
    "language 'de' on an English-only Whisper, a prompt, a TTS model's name: each an error saying what to send; null is accepted."
    async def go():
        async with realtime_connect(server) as conn:
            await events_until(conn, "session.created", 30)
            out = [await update(conn, t) for t in ({"language": "de"}, {"prompt": "Anna, Bolzano"}, {"model": "tts-1"}, {"language": "xx"}, None)]
            return out
    de, prompt, tts, xx, off = asyncio.run(go())
    for e in (de, prompt, tts, xx): print(f"\n[transcripts] {e.error.param}: {e.error.message}" if e.type == "error" else f"\n[transcripts] accepted: {e.session.audio.input.transcription}")
    assert de.type == "error" and "English-only" in de.error.message and de.error.param.endswith("language"), de
    assert prompt.type == "error" and "takes no prompt" in prompt.error.message and prompt.error.code == "unsupported_feature", prompt
    assert tts.type == "error" and "STT" in tts.error.message and tts.error.param.endswith("model"), tts
    assert xx.type == "error" and "ISO 639-1" in xx.error.message, xx
    assert off.type == "session.updated" and off.session.audio.input.transcription is None, off
