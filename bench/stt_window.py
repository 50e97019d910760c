"""Whisper's window on the `local` profile: word accuracy and time of the packaged Whisper tiny.en at several windows, side by side in one run.

The measurement behind the `local` profile's `stt_window` (nbs/06b_stt, nbs/05a_profiles). 37 utterances spoken by
espeak-ng at 150, 175 and 200 words per minute (bench 12's 12 questions, 20 household commands, 5 longer sentences;
1-7 s each) and the README's `tests/fixtures/hello.wav`; faster-whisper as the profile runs it (int8, one thread per
core, beam 5, temperature 0, its VAD filter). Each window is loaded and run in turn, windows alternating (15, 10, ...,
15, 10) so that a drifting machine hits both alike; times are per utterance, at the client.

    .venv/bin/python bench/stt_window.py [WINDOW ...]    # default: 15 10 12 8 15 10
"""
from __future__ import annotations
import os, sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parent))

QUESTIONS = __import__("b12_realtime").QUESTIONS
COMMANDS = ["Turn on the kitchen lights.", "Set a timer for ten minutes.", "What's the weather like tomorrow?", "Play some jazz music.",
            "Turn off the bedroom fan.", "Remind me to call my mother at six.", "Lock the front door.", "What time is it in Tokyo?",
            "Add milk and eggs to the shopping list.", "Open the garage door.", "Dim the living room lights to half.",
            "How long is my commute today?", "Turn the thermostat up two degrees.", "Stop the music.",
            "What's on my calendar this afternoon?", "Close the blinds in the office.", "Wake me up at seven tomorrow.",
            "Is it going to rain this weekend?", "Read me the latest news.", "Turn on the porch light at sunset."]
SENTENCES = ["The quick brown fox jumps over the lazy dog. Please call me back tomorrow morning.",
             "I would like to book a table for two people at eight o'clock tonight.",
             "My flight leaves at noon, so I need a taxi to the airport by ten.",
             "Could you explain how a refrigerator keeps food cold?",
             "The meeting has been moved to Thursday because the manager is travelling."]
HELLO = "Hello, what is the weather like today?"


def utterances() -> list[tuple[str, np.ndarray]]:
    "(what was said, 16 kHz samples): espeak-ng at three speeds, and hello.wav."
    from voice_agent.audio import load_audio
    from voice_agent.testing import espeak_pcm
    out = [(t, espeak_pcm(t, 16000, s)) for s in (150, 175, 200) for t in QUESTIONS + COMMANDS + SENTENCES]
    return out + [(HELLO, load_audio(str(Path(__file__).resolve().parents[1]/"tests/fixtures/hello.wav"), None, 16000))]


def measure(window: float, items: list) -> dict:
    "Word accuracy, exact transcripts, time per utterance and what hello.wav was heard as, at `window` seconds."
    from voice_agent.profiles import local_models
    from voice_agent.stt import windowed_whisper, word_accuracy
    m = windowed_whisper(window)(local_models()["stt"], device="cpu", compute_type="int8", cpu_threads=os.cpu_count() or 0)
    kw = dict(language="en", vad_filter=True, beam_size=5, temperature=0.0)
    hear = lambda x: " ".join(s.text.strip() for s in m.transcribe(x, **kw)[0])
    hear(items[0][1])  # warm
    acc, secs, heard = [], [], {}
    for ref, x in items:
        t = time.perf_counter(); heard[ref] = hear(x); secs.append(time.perf_counter() - t)
        acc.append(word_accuracy(ref, heard[ref]))
    return {"accuracy": float(np.mean(acc)), "exact": sum(a == 1 for a in acc), "p50_s": float(np.median(secs)), "hello": heard[HELLO]}


if __name__ == "__main__":
    windows = [float(w) for w in sys.argv[1:]] or [15, 10, 12, 8, 15, 10]
    items = utterances()
    print(f"{len(items)} utterances; load average {os.getloadavg()[0]:.2f}")
    runs = {}
    for w in windows:
        r = measure(w, items); runs.setdefault(w, []).append(r)
        print(f"window {w:g} s: word accuracy {r['accuracy']:.3f}, {r['exact']}/{len(items)} exact, p50 {r['p50_s']*1000:.0f} ms; "
              f"hello.wav heard as {r['hello']!r}", flush=True)
    base = np.median([r["p50_s"] for r in runs[windows[0]]])
    for w, rs in runs.items(): print(f"window {w:g} s / {windows[0]:g} s: time {np.median([r['p50_s'] for r in rs])/base:.2f}x")
    print(f"load average {os.getloadavg()[0]:.2f}")
