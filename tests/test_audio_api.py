"""The audio API as OpenAI's Python SDK calls it, over a real socket, on the `local` profile's real models.

Piper (en_US-joe-medium) speaks a four-sentence reply streamed as server-sent events and as chunked pcm; Whisper tiny.en
(faster-whisper) transcribes espeak-ng speech into segments, words, srt and vtt. Checked: the stream comes a sentence at
a time, the audio is 24 kHz and sounds like the text (Whisper hears it back), a client that leaves stops synthesis,
errors before the first byte keep their status, speed is honored. Run with `pytest -s` to see the figures.
"""
import base64, io, json, re, time

import httpx, numpy as np, pytest, soundfile as sf

from voice_agent.testing import espeak as speak, transcribe

openai = pytest.importorskip("openai", reason="the openai SDK is in the dev extras: pip install -e '.[dev]'")

REPLY = ("The weather will be sunny tomorrow morning. Please call me back after the meeting. "
         "My train leaves at seven in the evening. We need two more chairs for the dinner party.")
SAID = "The quick brown fox jumps over the lazy dog. Please call me back tomorrow morning."


@pytest.fixture(scope="module")
def server(tmp_path_factory, local_server):
    "The local profile (shared: conftest.py); an OpenAI SDK client and a plain httpx client for it."
    work = tmp_path_factory.mktemp("audio_api")
    sdk = openai.OpenAI(base_url=local_server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    http = httpx.Client(base_url=local_server.url, timeout=120)
    yield sdk, http, work
    http.close()


def heard(http: httpx.Client, pcm24: bytes) -> str:
    "What Whisper hears in 24 kHz 16-bit pcm."
    return transcribe(http, np.frombuffer(pcm24, "<i2").astype(np.float32)/32768, 24000)


def synthesized_seconds(http: httpx.Client) -> float:
    m = re.search(r"^voice_agent_synthesized_audio_seconds_total (\S+)$", http.get("/metrics").text, re.M)
    return float(m.group(1))


def test_speech_streams_as_sse_through_the_sdk(server):
    "LiveKit's way: stream_format=sse, pcm; the deltas come a sentence at a time, and the audio says the reply."
    from voice_agent.stt import word_accuracy
    sdk, http, _ = server
    t0, times, audio, done = time.perf_counter(), [], b"", None
    with sdk.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input=REPLY, response_format="pcm",
                                                         stream_format="sse") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line.startswith("data: "): continue
            ev = json.loads(line[6:])
            if ev["type"] == "speech.audio.delta": audio += base64.b64decode(ev["audio"]); times.append(time.perf_counter() - t0)
            else: done = ev
    total = time.perf_counter() - t0
    text = heard(http, audio)
    print(f"\n[sse] {len(times)} deltas; first at {times[0]:.2f} s of {total:.2f} s; {len(audio)/48000:.2f} s of audio; heard {text!r}")
    assert done == {"type": "speech.audio.done"}
    assert len(times) == 4  # one a sentence
    assert 6 < len(audio)/48000 < 20  # 24 kHz, 16-bit: about 2-3 s a sentence
    assert word_accuracy(REPLY, text) >= 0.7, text


def test_speech_streams_as_chunked_pcm_and_wav(server):
    "Pipecat's way: plain pcm bytes, chunked; and wav with a streaming header; both the same 24 kHz audio."
    sdk, http, _ = server
    with sdk.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input=REPLY, response_format="pcm") as r:
        assert r.headers["content-type"] == "audio/pcm" and "content-length" not in r.headers
        chunks = list(r.iter_bytes())
    pcm = b"".join(chunks)
    r = http.post("/v1/audio/speech", json={"input": REPLY, "response_format": "wav"})
    assert r.status_code == 200 and r.content[4:8] == b"\xff\xff\xff\xff"
    x, sr = sf.read(io.BytesIO(r.content))
    print(f"\n[pcm] {len(chunks)} chunks, {len(pcm)/48000:.2f} s; [wav] {len(x)/sr:.2f} s at {sr} Hz")
    assert sr == 24000 and len(pcm) % 2 == 0
    assert abs(len(pcm)/48000 - len(x)/sr) < 0.25*len(x)/sr  # Piper's timing varies a little from run to run
    assert np.abs(np.frombuffer(pcm, "<i2")).max() > 3000  # speech, not silence


def test_a_client_that_leaves_stops_synthesis(server):
    "Twenty sentences asked for; the client reads the first chunk and hangs up: the server synthesizes a few, not twenty."
    _, http, _ = server
    before = synthesized_seconds(http)
    text = " ".join(f"This is sentence number {i} of a long reply." for i in range(20))
    with http.stream("POST", "/v1/audio/speech", json={"input": text, "response_format": "pcm"}) as r:
        assert r.status_code == 200
        next(r.iter_raw())
    time.sleep(1.0)
    r = http.post("/v1/audio/speech", json={"input": "Done.", "response_format": "pcm"})  # queued behind the abandoned one
    assert r.status_code == 200
    made = synthesized_seconds(http) - before
    print(f"\n[leave] {made:.1f} s of audio synthesized for a 20-sentence reply (about 50 s) left after its first chunk")
    assert made < 15, made


def test_speech_errors_before_the_first_byte_keep_their_status(server):
    sdk, _, _ = server
    with pytest.raises(openai.BadRequestError, match="unknown voice 'zed'"):
        with sdk.audio.speech.with_streaming_response.create(model="tts-1", voice="zed", input="Hello.", stream_format="sse") as r:
            r.read()


def test_speed_is_honored(server):
    "LiveKit sends speed; Piper changes its length scale."
    sdk, _, _ = server
    n = {s: len(sdk.audio.speech.create(model="tts-1", voice="alloy", input=REPLY, response_format="pcm", speed=s).content)
         for s in (1.0, 1.5)}
    print(f"\n[speed] 1.0: {n[1.0]/48000:.2f} s, 1.5: {n[1.5]/48000:.2f} s")
    assert n[1.5] < 0.8*n[1.0]


def test_transcription_segments_words_and_subtitles(server):
    "verbose_json with segments and words, srt, vtt and logprobs, through the SDK, on espeak-ng speech."
    from voice_agent.stt import word_accuracy
    sdk, _, work = server
    wav = speak(SAID, work/"said.wav")
    dur = sf.info(wav).duration
    v = sdk.audio.transcriptions.create(model="whisper-1", file=wav.open("rb"), response_format="verbose_json",
                                        timestamp_granularities=["word", "segment"])
    print(f"\n[verbose] {v.language}, {v.duration} s: {v.text!r}; {len(v.segments)} segments, {len(v.words)} words")
    assert v.language == "en" and abs(v.duration - dur) < 0.01 and word_accuracy(SAID, v.text) >= 0.7
    assert v.segments and all(0 <= s.start < s.end <= dur + 0.1 and s.avg_logprob < 0 and 0 <= s.no_speech_prob <= 1 for s in v.segments)
    assert [w.word for w in v.words] == v.text.split()
    dog = next(w for w in v.words if "dog" in w.word.lower()); call = next(w for w in v.words if "call" in w.word.lower())
    assert 0 < dog.start < dog.end < call.start < dur
    srt = sdk.audio.transcriptions.create(model="whisper-1", file=wav.open("rb"), response_format="srt")
    vtt = sdk.audio.transcriptions.create(model="whisper-1", file=wav.open("rb"), response_format="vtt")
    assert re.match(r"1\n00:00:\d\d,\d{3} --> 00:00:\d\d,\d{3}\n\S", srt), srt
    assert vtt.startswith("WEBVTT\n\n00:00:") and "-->" in vtt, vtt
    j = sdk.audio.transcriptions.create(model="whisper-1", file=wav.open("rb"), include=["logprobs"])
    assert j.logprobs and all(lp.logprob <= 0 for lp in j.logprobs) and " ".join(lp.token for lp in j.logprobs).split() == j.text.split()
    with pytest.raises(openai.BadRequestError, match="English-only"):
        sdk.audio.transcriptions.create(model="whisper-1", file=wav.open("rb"), language="de")
    with pytest.raises(openai.BadRequestError, match="not a language Whisper knows"):
        sdk.audio.transcriptions.create(model="whisper-1", file=wav.open("rb"), language="xx")
