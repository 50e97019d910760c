"""`semantic_vad` for real: `voice-agent serve --profile local` on a free port, the official `openai` client over a socket.

"I want to go to ... Paris." is espeak-ng speech with a 600 ms pause mid-sentence, streamed like a microphone (20 ms of
PCM16 at 24 kHz every 20 ms). server_vad at 300 ms cuts it into two user turns; semantic_vad hears one: Silero finds the
pause, Smart Turn (from the pipecat-ai wheel) says the speaker has not finished, and the turn ends only after "Paris.".
A plain finished question still gets its spoken answer. Run with `pytest -s` to see what was heard.

Eagerness `medium` ends a turn at a 200 ms pause when the words read finished and Smart Turn says so with p > 0.2, at
500 ms when the words read finished whatever the model says, and holds words that read unfinished until 1.5 s. At the pause
after espeak-ng's "I want to go to" Whisper writes "I want to go to..." (unfinished), which holds the turn whatever the
model says (it gives 0.6-0.7 there: it separates synthetic fragments from finished sentences poorly, see
`bench/b14_turns.py`); after "... Paris." the words and the model agree, so the turn ends about 200 ms into the final
silence, not at medium's 4 s limit.
"""
import asyncio, time

import numpy as np, pytest

from suite import server_env, start, stop
from voice_agent.testing import (REALTIME_RATE as RATE, espeak_pcm, events_until, free_port, microphone, realtime_connect,
                                 spoken_turn, voice_agent_cmd)

FIRST, SECOND, PAUSE_S = "I want to go to", "Paris.", 0.6


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    "The local profile (Silero VAD, Smart Turn, Whisper tiny.en, SmolLM2, Piper)."
    work = tmp_path_factory.mktemp("semantic")
    port = free_port()
    env = server_env(HF_HUB_OFFLINE="1", LOCAL_MODELS_DIR=str(work/"models"))
    proc = start(voice_agent_cmd("serve", "--profile", "local", "--port", port), env, port, work/"server.log")
    yield f"http://127.0.0.1:{port}"
    stop(proc)


def paused_sentence(pause_s: float=PAUSE_S, tail_s: float=2.0) -> np.ndarray:
    "'I want to go to', `pause_s` of silence, 'Paris.', then `tail_s` of silence (24 kHz)."
    z = lambda s: np.zeros(int(s*RATE), np.float32)
    return np.concatenate([z(0.3), espeak_pcm(FIRST, RATE), z(pause_s), espeak_pcm(SECOND, RATE), z(tail_s)])


async def update(conn, td: dict):
    "session.update with `td` as the turn detection; the session.updated event."
    await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": td}}})
    return (await events_until(conn, "session.updated", 30))[-1][1]


async def user_turns(conn, x: np.ndarray, settle_s: float=1.0) -> list[str]:
    "Stream `x` like a microphone; the transcripts of the user turns committed (in order)."
    events = []
    async def read():
        while True: events.append(await conn.recv())
    reader = asyncio.ensure_future(read())
    try:
        await microphone(conn, x)
        end = time.monotonic() + 30
        while time.monotonic() < end:  # the audio is sent: wait until every committed turn is transcribed
            await asyncio.sleep(settle_s)
            kinds = [e.type for e in events]
            if kinds.count("input_audio_buffer.committed") == kinds.count("conversation.item.input_audio_transcription.completed"): break
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    assert not [e for e in events if e.type == "error"], [e.error.message for e in events if e.type == "error"]
    done = {e.item_id: e.transcript for e in events if e.type == "conversation.item.input_audio_transcription.completed"}
    return [done.get(e.item_id, "") for e in events if e.type == "input_audio_buffer.committed"]


def test_semantic_vad_waits_out_a_mid_sentence_pause(server):
    "A 600 ms pause mid-sentence: two turns under server_vad at 300 ms, one under semantic_vad; a bad eagerness is refused."
    x = paused_sentence()
    async def go():
        async with realtime_connect(server) as conn:
            await events_until(conn, "session.created", 30)
            s = await update(conn, {"type": "server_vad", "silence_duration_ms": 300, "create_response": False})
            assert s.session.audio.input.turn_detection.type == "server_vad"
            server_turns = await user_turns(conn, x)
            await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "fast"}}}})
            err = (await events_until(conn, "error", 30))[-1][1].error
            s = await update(conn, {"type": "semantic_vad", "eagerness": "medium", "create_response": False})
            td = s.session.audio.input.turn_detection
            assert (td.type, td.eagerness, td.create_response) == ("semantic_vad", "medium", False), td
            semantic_turns = await user_turns(conn, x)
            return server_turns, err, semantic_turns
    server_turns, err, semantic_turns = asyncio.run(go())
    print(f"\n[turns] server_vad 300 ms: {server_turns}; semantic_vad medium: {semantic_turns}")
    assert len(server_turns) == 2, server_turns
    assert "eagerness must be one of" in err.message and "'medium'" in err.message, err.message
    assert len(semantic_turns) == 1, semantic_turns
    heard = semantic_turns[0].lower()
    assert "go" in heard and "paris" in heard, heard  # both halves, as one turn


def test_semantic_vad_answers_a_finished_question(server):
    "A plain finished question under semantic_vad (auto) is answered, the turn ended by the turn model, not the 4 s limit."
    async def go():
        async with realtime_connect(server) as conn:
            await events_until(conn, "session.created", 30)
            await update(conn, {"type": "semantic_vad"})
            return await spoken_turn(conn, espeak_pcm("What is the capital of France?", RATE))
    t = asyncio.run(go())
    kinds = [e.type for _, e in t["events"]]
    (t_start, started), = [(at, e) for at, e in t["events"] if e.type == "input_audio_buffer.speech_started"]
    (t_stop, stopped), = [(at, e) for at, e in t["events"] if e.type == "input_audio_buffer.speech_stopped"]
    # the audio is streamed at real time: the wait after the speech ended is the time between the two events less the speech's
    # length (speech_started comes once the speech has begun, `prefix_padding_ms` after its audio_start_ms)
    wait = (t_stop - t_start) - (stopped.audio_end_ms - started.audio_start_ms - 300)/1000
    print(f"\n[semantic] heard {t['heard']!r}; said {t['said']!r}; the turn ended {wait:.2f} s after the speech; "
          f"end of speech -> first audio {t['first_audio_s']:.3f} s")
    assert kinds.count("input_audio_buffer.committed") == 1 and "capital" in t["heard"].lower(), (kinds, t["heard"])
    assert t["status"] == "completed" and t["said"].strip() and len(t["audio"]) > RATE//4, t["said"]
    assert wait < 2.0, wait  # the words and the turn model ended it (about 0.2-0.5 s); the eagerness's limit would take 4 s
