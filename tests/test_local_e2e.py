"""A voice agent a person can talk to: `voice-agent serve --profile local` (what `./run serve` serves), real models, offline.

SmolLM2-135M-Instruct (GGUF, llama.cpp), Whisper tiny.en (faster-whisper) and the Piper voice en_US-joe-medium, all from
pip packages, with HF_HUB_OFFLINE=1. A spoken question (espeak-ng) goes through /stt, /v1/chat/completions and
/v1/audio/speech, and the spoken answer is transcribed back; Piper -> Whisper is checked over ten fixed sentences.
Run with `pytest -s` to see what was heard and said, and the start-up times.
"""
import io, os, subprocess, sys, time
from pathlib import Path

import httpx, numpy as np, pytest, soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite import server_env, speak, start, stop  # noqa: E402
from voice_agent.testing import free_port, transcribe, voice_agent_cmd  # noqa: E402

QUESTION = "What is the capital of France?"
# Ten fixed sentences for the Piper -> Whisper round trip: everyday words, numbers spelled out, a question.
SENTENCES = [
    "The weather will be sunny tomorrow morning.",
    "Please call me back after the meeting.",
    "My train leaves at seven in the evening.",
    "Could you turn the lights off in the kitchen?",
    "We need two more chairs for the dinner party.",
    "The museum opens at ten and closes at six.",
    "She bought fresh bread and a bottle of milk.",
    "Remind me to water the plants on Sunday.",
    "The book is on the table next to the window.",
    "How long does it take to drive to the airport?",
]


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    "The local profile on a free port, started twice: the first start and a later one are both timed."
    work = tmp_path_factory.mktemp("local")
    env = server_env(HF_HUB_OFFLINE="1", LOCAL_MODELS_DIR=str(work/"models"))
    times = []
    for i in range(2):
        port, log = free_port(), work/f"server{i}.log"
        t = time.perf_counter()
        proc = start(voice_agent_cmd("serve", "--profile", "local", "--port", port), env, port, log)
        times.append(time.perf_counter() - t)
        if i == 0: stop(proc)
    print(f"\n[local] ready after {times[0]:.1f} s (first start), {times[1]:.1f} s (second start)")
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    yield client, work, times
    client.close(); stop(proc)


def say(client: httpx.Client, text: str, **kw) -> bytes:
    r = client.post("/v1/audio/speech", json={"model": "tts", "input": text, "response_format": "wav", **kw})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    return r.content


def test_health_shows_the_real_models(local):
    client, _, _ = local
    h = client.get("/health").json()
    assert h["status"] == "ok", h
    m = h["models"]
    assert m["llm"]["loading_strategy"] == "llama.cpp (GGUF)" and m["llm"]["name"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert m["stt"]["loading_strategy"] == "faster-whisper (CTranslate2)"
    assert m["tts"]["type"] == "piper" and m["tts"]["voices"] == ["en_US-joe-medium"], m["tts"]


def test_spoken_question_gets_a_spoken_answer(local):
    "espeak-ng asks; /stt hears; the LLM answers Paris; Piper says it; Whisper hears Paris in Piper's speech."
    client, work, _ = local
    heard = transcribe(client, speak(QUESTION, work/"question.wav").read_bytes(), route="/stt")
    print(f"\n[turn] heard: {heard!r}")
    assert "capital" in heard.lower() and "france" in heard.lower(), heard
    r = client.post("/v1/chat/completions", json={"model": "llm", "messages": [{"role": "user", "content": heard}]})
    assert r.status_code == 200, r.text
    reply = r.json()["choices"][0]["message"]["content"]
    print(f"[turn] reply: {reply!r}")
    assert "Paris" in reply
    spoken = say(client, reply, voice="alloy")  # an OpenAI voice name: the client's default keeps working
    x, sr = sf.read(io.BytesIO(spoken))
    assert sr == 24000 and len(x)/sr > 0.8 and np.abs(x).max() > 0.05  # Piper's 22,050 Hz, sent at OpenAI's 24 kHz
    back = transcribe(client, spoken)
    print(f"[turn] Piper's answer heard back: {back!r}")
    assert "paris" in back.lower()


def test_piper_whisper_round_trip_word_accuracy(local):
    "Ten fixed sentences spoken by Piper and transcribed by Whisper: at least 90% of the words come back."
    from voice_agent.stt import word_accuracy
    client, _, _ = local
    ref_words = hyp_words = 0
    total = 0.0
    for s in SENTENCES:
        heard = transcribe(client, say(client, s))
        acc = word_accuracy(s, heard)
        n = len(s.split())
        total += acc*n; ref_words += n
        print(f"[round trip] {acc:.2f} {s!r} -> {heard!r}")
    print(f"[round trip] word accuracy over {len(SENTENCES)} sentences: {total/ref_words:.3f}")
    assert total/ref_words >= 0.90


def test_voices_and_speed(local):
    "The voice that is there, OpenAI's names, an unknown voice (400 listing the voices), and speed."
    client, _, _ = local
    normal = sf.info(io.BytesIO(say(client, "Hello there, how are you today?", voice="en_US-joe-medium"))).duration
    fast = sf.info(io.BytesIO(say(client, "Hello there, how are you today?", voice="nova", speed=2.0))).duration
    assert fast < 0.75*normal, (fast, normal)
    r = client.post("/v1/audio/speech", json={"input": "Hello", "voice": "galadriel"})
    assert r.status_code == 400 and "en_US-joe-medium" in r.json()["error"]["message"], r.text
    r = client.post("/tts", json={"text": "Hello", "voice": "galadriel"})
    assert r.status_code == 400 and "en_US-joe-medium" in r.json()["error"]["message"], r.text
    r = client.post("/tts", json={"text": "Hello", "speed": 9})
    assert r.status_code == 400, r.text
    for fmt, ct in (("mp3", "audio/mpeg"), ("opus", "audio/ogg"), ("flac", "audio/flac"), ("pcm", "audio/pcm")):
        r = client.post("/v1/audio/speech", json={"input": "Hello", "response_format": fmt})
        assert r.status_code == 200 and r.headers["content-type"] == ct and len(r.content) > 1000, (fmt, r.text[:200])


def test_conversation_history_reaches_the_model(local):
    "A second turn sent with the first as history: the model reads the longer conversation and still answers."
    client, _, _ = local
    chat = lambda msgs: client.post("/v1/chat/completions", json={"model": "llm", "messages": msgs, "max_tokens": 24}).json()
    first = [{"role": "user", "content": "What is the capital of France?"}]
    r1 = chat(first)
    answer = r1["choices"][0]["message"]["content"]
    second = first + [{"role": "assistant", "content": answer}, {"role": "user", "content": "And of Italy?"}]
    r2 = chat(second)
    print(f"\n[history] {answer!r} then {r2['choices'][0]['message']['content']!r}; prompt tokens {r1['usage']['prompt_tokens']} -> "
          f"{r2['usage']['prompt_tokens']}")
    assert r2["usage"]["prompt_tokens"] > r1["usage"]["prompt_tokens"] + r1["usage"]["completion_tokens"]
    assert r2["choices"][0]["message"]["content"].strip()
