"""No self-interruption, for real: `voice-agent serve --profile local` on a free port, the official `openai` client over a socket.

The client is a laptop with speakers and no headset. Each reply's audio plays as it arrives (after what is queued, at real
time) and comes back into the microphone through a room: a synthetic reverberation (150 ms of decaying noise, a seed's),
40 ms of device delay, 20 dB below the reply, and a little noise; the microphone streams that like one (20 ms of PCM16 at
24 kHz every 20 ms), the user silent; the session says so (`audio.input.noise_reduction` `far_field`, which turns the
server's echo canceller on). The echo is not a copy of what was sent: the echo canceller (WebRTC's AEC3, 09ka9) learns the room. Ten replies (asked in text, spoken by Piper): none may be cancelled. Then a spoken "stop"
(espeak-ng, full voice) over a long reply's echo interrupts it: speech_started within 200 ms of the word's onset (the
first sample above 1% of full scale, on the microphone's clock), then response.done, cancelled. Run with `pytest -s`.
"""
import asyncio, time

import numpy as np, pytest
from scipy.signal import lfilter

from suite import server_env, start, stop
from voice_agent.testing import (CHUNK_MS, REALTIME_RATE as RATE, b64, configure, espeak_pcm, events_until, free_port, pcm,
                                 realtime_connect, voice_agent_cmd)

ECHO_DB, DELAY_MS = -20, 40
QUESTIONS = ["What is the capital of France?", "Name a fruit that is yellow.", "What do cats like to eat?", "Why is the sky blue?",
             "What is two plus two?", "Say hello to my friend Anna.", "What is the tallest mountain?", "Name three colours.",
             "How many days are in a week?", "What is a good name for a dog?"]
REPLY = {"instructions": "Answer in one or two short sentences.", "max_output_tokens": 60}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    "The local profile (Silero VAD, Whisper tiny.en, SmolLM2, Piper)."
    work = tmp_path_factory.mktemp("echo")
    port = free_port()
    env = server_env(HF_HUB_OFFLINE="1", LOCAL_MODELS_DIR=str(work/"models"))
    proc = start(voice_agent_cmd("serve", "--profile", "local", "--port", port), env, port, work/"server.log")
    yield f"http://127.0.0.1:{port}"
    stop(proc)


class Room:
    "Speakers, a room and a microphone: `play` queues reply audio, `say` the user's voice, `record(n)` is what the microphone hears."
    def __init__(self, seed: int=0):
        rng = np.random.default_rng(seed)
        t = np.arange(int(0.15*RATE))/RATE
        h = rng.standard_normal(len(t))*np.exp(-6.9*t/0.25); h[0] = 1
        self.h, self.zi, self.rng = h/np.sqrt((h**2).sum())*10**(ECHO_DB/20), np.zeros(len(h) - 1), rng
        self.queue, self.line, self.voice = np.zeros(0, np.float32), np.zeros(RATE*DELAY_MS//1000), np.zeros(0, np.float32)
        self.played, self.recorded = 0, 0  # reply samples played; chunks recorded

    def play(self, delta: str): self.queue = np.concatenate([self.queue, pcm(delta)])
    def clear(self): self.queue = self.queue[:0]
    def say(self, x: np.ndarray): self.voice = np.concatenate([self.voice, x])

    def record(self, n: int) -> np.ndarray:
        out, self.queue, self.recorded = self.queue[:n], self.queue[n:], self.recorded + 1
        self.played += len(out)
        self.line = np.concatenate([self.line, np.pad(out, (0, n - len(out)))])
        delayed, self.line = self.line[:n], self.line[n:]
        echo, self.zi = lfilter(self.h, [1.0], delayed, zi=self.zi)
        voice, self.voice = self.voice[:n], self.voice[n:]
        return echo + np.pad(voice, (0, n - len(voice))) + self.rng.normal(0, 3e-4, n)


async def with_room(conn, room: Room, body):
    "Run `body(events)` while the microphone streams the room and every event is read (reply audio played as it comes)."
    events, n = [], RATE*CHUNK_MS//1000
    async def mic():
        t0, k = time.perf_counter(), 0
        while True:
            await asyncio.sleep(max(0.0, t0 + (k + 1)*CHUNK_MS/1000 - time.perf_counter()))
            x = room.record(n)
            await conn.input_audio_buffer.append(audio=b64(x))
            room.sent.append((time.perf_counter(), x))
            k += 1
    async def read():
        while True:
            e = await conn.recv()
            events.append((time.perf_counter(), e))
            if e.type == "response.output_audio.delta": room.play(e.delta)
            elif e.type == "input_audio_buffer.speech_started": room.clear()  # the client stops playing, as OpenAI's clients do
    room.sent = []  # (when sent, the chunk)
    tasks = [asyncio.ensure_future(mic()), asyncio.ensure_future(read())]
    try: return await body(events)
    finally:
        for t in tasks: t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def until(events: list, kind: str, after: int=0, timeout: float=60):
    "The first event of `kind` at index `after` or later (waits)."
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for i in range(after, len(events)):
            if events[i][1].type == kind: return i, events[i]
        await asyncio.sleep(0.01)
    raise TimeoutError(f"no {kind} within {timeout} s")


async def ask(conn, events: list, room: Room, question: str, reply: dict=REPLY):
    "Ask in text; wait for response.done and for the reply to have played (and its echo died away); the done event."
    await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": question}]})
    start = len(events)
    await conn.response.create(response=reply)
    _, (_, done) = await until(events, "response.done", start, 120)
    while len(room.queue): await asyncio.sleep(0.05)
    await asyncio.sleep(0.6)  # the room's tail, and the server's silence window
    return done


async def far_field(conn):
    "Say the microphone is far-field (speakers in the room): the session's `noise_reduction` that turns the echo canceller on."
    await conn.session.update(session={"type": "realtime", "audio": {"input": {"noise_reduction": {"type": "far_field"}}}})
    updated = (await events_until(conn, "session.updated", 30))[-1][1]
    assert updated.session.audio.input.noise_reduction.type == "far_field"


def test_replies_echoed_back_do_not_interrupt_themselves(server):
    "Ten replies whose echo comes back into the microphone at -20 dB: none cancelled."
    room = Room()
    async def go():
        async with realtime_connect(server) as conn:
            await events_until(conn, "session.created", 30)
            await configure(conn, create_response=False)
            await far_field(conn)
            async def body(events):
                dones = [await ask(conn, events, room, q) for q in QUESTIONS]
                return dones, events
            return await with_room(conn, room, body)
    dones, events = asyncio.run(go())
    statuses = [d.response.status for d in dones]
    started = sum(e.type == "input_audio_buffer.speech_started" for _, e in events)
    said = ["".join(e.delta for _, e in events if e.type == "response.output_audio_transcript.delta" and e.response_id == d.response.id) for d in dones]
    print(f"\n[echo] {room.played/RATE:.1f} s of replies played back into the microphone at {ECHO_DB} dB; statuses {statuses}; "
          f"speech started {started} times; said e.g. {said[:2]}")
    assert all(s.strip() for s in said), said  # every reply spoke
    # No self-interruption: no reply cancelled (the measure). AEC3 alone leaked while it relearnt the delay, which jumps when
    # a loaded server reads the microphone late: with two busy processes beside it, 3 speech starts and 1 of 10 replies cancelled
    # (9 starts, 1 cancelled in a CI run); with the double-talk check (09ka9) 0 starts, 0 cancelled, with two or four busy processes
    assert statuses.count("cancelled") == 0, (statuses, started)


def test_a_spoken_stop_over_the_echo_still_interrupts(server):
    "A long reply plays and echoes; the user says 'stop' over it: speech starts within 200 ms of the word, the reply is cancelled."
    room, stop_pcm = Room(seed=1), espeak_pcm("stop", RATE)
    onset = int(np.flatnonzero(np.abs(stop_pcm) > 0.01)[0])
    async def go():
        async with realtime_connect(server) as conn:
            await events_until(conn, "session.created", 30)
            await configure(conn, create_response=False)
            await far_field(conn)
            async def body(events):
                await ask(conn, events, room, QUESTIONS[0])  # one reply first: the canceller has heard the room
                await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "Tell me a long story about a dragon who lives in a castle by the sea."}]})
                start = len(events)
                await conn.response.create(response={"instructions": "You are a storyteller. Tell long stories.", "max_output_tokens": 300})
                while room.played < 1.5*RATE: await asyncio.sleep(0.01)  # 1.5 s of the story has played
                first = room.recorded  # the chunk the word begins in
                room.say(stop_pcm)
                i, (t_started, started) = await until(events, "input_audio_buffer.speech_started", start, 30)
                _, (t_done, done) = await until(events, "response.done", start, 30)
                # the microphone's clock: the chunk holding the word's onset was sent once recorded, at the end of its 20 ms
                n = RATE*CHUNK_MS//1000
                t_chunk = room.sent[first + onset//n][0]
                t_onset = t_chunk - (n - onset % n)/RATE
                return t_started - t_onset, t_done - t_onset, done
            return await with_room(conn, room, body)
    to_started, to_done, done = asyncio.run(go())
    print(f"\n[echo] 'stop' over the reply's echo: speech_started {to_started*1000:.0f} ms after the word's onset, "
          f"response.done ({done.response.status}) {to_done*1000:.0f} ms")
    assert done.response.status == "cancelled", done.response.status
    assert to_started <= 0.2, to_started
