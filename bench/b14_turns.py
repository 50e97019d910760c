"""Benchmark 14: turn detection on spoken sentences, `server_vad` (500 and 300 ms) against `semantic_vad` (Smart Turn v3.2).

Method. Ten espeak-ng sentences, each spoken twice: whole, and in two pieces joined by a mid-sentence pause (300, 400, 500,
600 or 700 ms of digital silence, in turn) where a speaker might stop to think ("I want to go to" ... "Paris."). Each piece is
trimmed to its voiced samples (espeak-ng's own trailing silence removed), so the pause is what the table says; 0.3 s of
silence comes before and 9 s after (more than `low`'s 8 s). The audio goes through the realtime session's own code (`RealtimeSession` in memory:
`input_audio_buffer.append` events of 20 ms, real Silero VAD, the real turn model, the real Whisper tiny.en of the local
profile (semantic_vad reads its early transcript) and no responses), in *simulated time*: appends are handled as fast as
they are judged, not paced at real time, and an early transcript in flight is waited for before the next append (as if
Whisper took no time), so the positions below are positions in the audio stream and do not depend on the machine's load.
Only "model ms" is a wall-clock figure.

Counted (deterministic): a premature cut-off is a turn committed before the sentence's last voiced sample (the pause
ended the turn); "one turn" counts the samples heard as exactly one turn; "quick" counts the turns that ended within 1 s
of the speech's end (for semantic_vad: the words and the turn model judged it finished; else the eagerness's 2-8 s limit ended them). "end -> turn end" is the median and the largest
audio time from the last voiced sample to the commit of the turn (the silence the detector waited out; for
semantic_vad add the model's time, printed apart: run at idle for that figure).

Run: `.venv/bin/python bench/b14_turns.py` (about a minute on 2 cores); `--probs` prints the turn model's probabilities.
"""
from __future__ import annotations
import argparse, asyncio, json, statistics, time

import numpy as np

SENTENCES = [("I want to go to", "Paris."), ("Can you tell me", "what time it is?"), ("My name is", "John Smith."),
             ("What is the weather like", "in London tomorrow?"), ("I would like to order", "a large pizza."),
             ("Could you please", "turn off the lights?"), ("I think that", "we should leave now."),
             ("The meeting is on", "Tuesday afternoon."), ("Remind me to", "call my mother."),
             ("How far is it from", "here to the station?")]
PAUSES_MS = [300, 400, 500, 600, 700]
MODES = {"server_vad 500 ms": {"type": "server_vad", "silence_duration_ms": 500},
         "server_vad 300 ms": {"type": "server_vad", "silence_duration_ms": 300},
         "semantic_vad medium": {"type": "semantic_vad", "eagerness": "medium"},
         "semantic_vad high": {"type": "semantic_vad", "eagerness": "high"},
         "semantic_vad low": {"type": "semantic_vad", "eagerness": "low"}}
RATE, CHUNK_MS, LEAD_S, TAIL_S, LEVEL = 24000, 20, 0.3, 9.0, 0.01


def voiced(x: np.ndarray) -> np.ndarray:
    "`x` trimmed to its voiced samples (over 1% of full scale), 20 ms kept either side."
    on = np.nonzero(np.abs(x) > LEVEL)[0]
    pad = RATE//50
    return x[max(0, on[0] - pad):on[-1] + pad]


def samples() -> list[dict]:
    "Each sentence whole and with its pause: the audio (24 kHz float), where its last voiced sample is, the pause."
    from voice_agent.testing import espeak_pcm
    z = lambda s: np.zeros(int(s*RATE), np.float32)
    out = []
    for i, (a, b) in enumerate(SENTENCES):
        for pause in (None, PAUSES_MS[i % len(PAUSES_MS)]):
            speech = voiced(espeak_pcm(f"{a} {b}", RATE)) if pause is None else np.concatenate(
                [voiced(espeak_pcm(a, RATE)), z(pause/1000), voiced(espeak_pcm(b, RATE))])
            x = np.concatenate([z(LEAD_S), speech, z(TAIL_S)])
            out.append({"text": f"{a} {b}" if pause is None else f"{a} ... {b}", "pause": pause, "x": x,
                        "end": int(LEAD_S*RATE) + np.nonzero(np.abs(speech) > LEVEL)[0][-1]})
    return out


def whisper():
    "The local profile's Whisper tiny.en (CTranslate2, its window), loaded once."
    global _WHISPER
    if _WHISPER is None:
        from voice_agent.config import Settings
        from voice_agent.profiles import local_models, profile_settings
        from voice_agent.stt import WhisperSTT
        _WHISPER = WhisperSTT(local_models()["stt"], profile_settings("local", Settings()), device="cpu")
    return _WHISPER
_WHISPER = None


async def turns(x: np.ndarray, td: dict) -> list[int]:
    "Feed `x` to a session in memory with turn detection `td`; the stream positions (samples) at which turns were committed."
    import base64
    from voice_agent.config import Settings
    from voice_agent.server.fakes import fakes
    from voice_agent.server.slots import ServerState
    from voice_agent.server.realtime.session import MemoryChannel, RealtimeSession
    from voice_agent.server.realtime import turns as _  # noqa: F401 (the handlers)
    ch = MemoryChannel(); s = RealtimeSession(ch, ServerState(Settings(), {**fakes(), "stt": whisper()}), "llm")
    await s.handle(json.dumps({"type": "session.update", "session": {"audio": {"input": {"turn_detection": {**td, "create_response": False}}}}}))
    pcm, n, at, seen = (np.clip(x, -1, 1)*32767).astype("<i2"), RATE*CHUNK_MS//1000, [], 0
    for i in range(0, len(pcm), n):
        await s.handle(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i:i+n].tobytes()).decode()}))
        if s.spec and not s.spec.task.done(): await asyncio.wait([s.spec.task])  # simulated time: Whisper takes none
        k = ch.types().count("input_audio_buffer.committed")
        at += [i + n]*(k - seen); seen = k
    errors = [e for e in ch.sent if e["type"] == "error"]
    assert not errors, errors
    await s.close()
    return at


def main(show_probs: bool=False):
    from voice_agent.server.realtime import turns as T
    calls, probs = [], []
    model = T.turn_probability
    def timed(x):
        t = time.perf_counter(); p = model(x); calls.append(time.perf_counter() - t); probs.append(p)
        return p
    T.turn_probability = timed
    data = samples()
    print(__doc__.split("\n\n")[0])
    print(f"\n{len(data)} samples ({sum(d['pause'] is not None for d in data)} with a mid-sentence pause); simulated time\n")
    print("| mode | premature cut-offs (paused) | premature cut-offs (whole) | one turn | quick | end -> turn end, median / max (audio ms) | model calls | model ms, median (wall) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, td in MODES.items():
        calls.clear()
        cut = {True: 0, False: 0}; one = 0; waits = []
        for d in data:
            probs.clear()
            at = asyncio.run(turns(d["x"], td))
            early = [a for a in at if a < d["end"]]
            cut[d["pause"] is not None] += len(early)
            one += len(at) == 1
            late = [a for a in at if a >= d["end"]]
            if late: waits.append((late[0] - d["end"])*1000/RATE)
            if show_probs and td["type"] == "semantic_vad":
                print(f"  {name:20} {d['text']:45} p at each pause: {', '.join(f'{p:.2f}' for p in probs)}; turns {len(at)}")
        med = f"{statistics.median(waits):.0f} / {max(waits):.0f}" if waits else "-"
        ms = f"{1000*statistics.median(calls):.0f}" if calls else "-"
        quick = sum(w <= 1000 for w in waits)
        print(f"| {name} | {cut[True]} | {cut[False]} | {one}/{len(data)} | {quick}/{len(waits)} | {med} | {len(calls)} | {ms} |")
    T.turn_probability = model
    print("\n'model ms' is wall time on this machine now: meaningful only when it is idle.")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probs", action="store_true", help="print the turn model's probability at each pause")
    main(ap.parse_args().probs)
