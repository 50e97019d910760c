"""Benchmark 9: the `local` profile a person talks to: Piper's real-time factor, and a spoken turn to its first sound.

The models are those `./run serve` serves: Whisper tiny.en (faster-whisper), SmolLM2-135M-Instruct (GGUF, through the
LLM's loading chain: llama.cpp on a CPU) and Piper en_US-joe-medium, in one process, as the server holds them.

- Piper: synthesis seconds against the seconds of audio made (real-time factor), on a four-sentence reply.
The models are loaded once per worker process and shared with benchmarks 10 and 11 when they run in it (`run.py`).

- The turn: espeak-ng asks a one-sentence question. Streamed = STT + the LLM until its first whole sentence + Piper
  speaking that sentence (what a streaming voice loop waits for before the first sound). Waiting = STT + the whole
  reply + the whole reply spoken. The LLM's real reply is spoken (greedy, so both ways say the same words).
"""
from __future__ import annotations
import time
from common import local_model, local_settings, median, paired_ratio, row, scratch
from b5_stt import speak

QUESTION = "What is the capital of France?"
PASSAGE = ("The train leaves the station at nine in the morning. It stops twice before the border. "
           "Lunch is served in the dining car. We arrive in the city before dark.")


def run(cfg: dict, device: str, log) -> dict:
    from voice_agent.audio import load_audio, split_sentences
    s = local_settings()
    stt, llm, tts = local_model("stt"), local_model("llm"), local_model("tts")  # shared with the other local-profile benchmarks
    question = load_audio(speak(QUESTION, scratch()/"local_question.wav"))
    msgs = lambda text: [{"role": "system", "content": "You are a helpful voice assistant. Answer in one short sentence."},
                         {"role": "user", "content": text}]
    n = 48
    heard = stt.transcribe(question, 16000); llm.chat(msgs(heard), max_new_tokens=4, temperature=0); tts.synthesize_array(PASSAGE)
    m = {k: [] for k in ("tts_s", "audio_s", "stt", "llm_first_sentence", "llm_whole", "tts_first", "tts_whole")}
    reply = ""
    for i in range(cfg["local_repeats"]):
        t = time.perf_counter(); wav, sr = tts.synthesize_array(PASSAGE); m["tts_s"].append(time.perf_counter() - t)
        m["audio_s"].append(len(wav)/sr)
        t = time.perf_counter(); heard = stt.transcribe(question, 16000); m["stt"].append(time.perf_counter() - t)
        t, text, first = time.perf_counter(), "", None
        for piece in llm.stream_chat(msgs(heard), max_new_tokens=n, temperature=0):
            text += piece
            if first is None and len(split_sentences(text)) > 1: first = (time.perf_counter() - t, split_sentences(text)[0])
        m["llm_whole"].append(time.perf_counter() - t)
        first = first or (m["llm_whole"][-1], text)
        m["llm_first_sentence"].append(first[0]); reply = text
        t = time.perf_counter(); tts.synthesize_array(first[1]); m["tts_first"].append(time.perf_counter() - t)
        t = time.perf_counter(); tts.synthesize_array(text); m["tts_whole"].append(time.perf_counter() - t)
    med = {k: median(v) for k, v in m.items()}
    streamed = [a + b + c for a, b, c in zip(m["stt"], m["llm_first_sentence"], m["tts_first"])]
    waiting = [a + b + c for a, b, c in zip(m["stt"], m["llm_whole"], m["tts_whole"])]
    rows = [
        row("9 local profile", "Piper en_US-joe-medium: synthesis time vs the audio it makes (real-time factor)",
            med["tts_s"], med["audio_s"], "s", "synthesis", "audio", "A/B < 1 (faster than real time)", lambda a, b, r: r < 1,
            ratio=paired_ratio(m["tts_s"], m["audio_s"])),
        row("9 local profile", "spoken turn to first audio: STT + LLM first sentence + Piper first sentence vs waiting for everything",
            median(streamed), median(waiting), "s", "streamed", "waiting", "A ≤ 1.0 s on 2 cores", lambda a, b, r: a <= 1.0,
            ratio=paired_ratio(streamed, waiting),
            note=f"heard {heard!r}; reply {reply.strip()[:80]!r}; STT {1000*med['stt']:.0f} ms, LLM first sentence "
                 f"{1000*med['llm_first_sentence']:.0f} ms of {1000*med['llm_whole']:.0f} ms, Piper first sentence "
                 f"{1000*med['tts_first']:.0f} ms"),
    ]
    details = {"models": {"llm": s.llm_model, "stt": s.stt_model, "tts": s.tts_model}, "heard": heard, "reply": reply,
               "strategies": {"llm": llm.loading_strategy, "stt": stt.loading_strategy, "tts": tts.loading_strategy},
               "medians_s": med, "runs_s": m}
    return {"local": {"rows": rows, "details": details}}
