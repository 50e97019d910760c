"""Pipecat and LiveKit Agents, the frameworks most voice agents are built with, plugged into `voice-agent serve --profile local`.

Each framework is used the way its users use it: its own OpenAI services or plugin, `base_url` pointing at the server,
over a real socket. Pipecat runs a real `Pipeline` (Silero VAD -> `OpenAISTTService` -> context aggregator ->
`OpenAILLMService` -> `OpenAITTSService`) under a `PipelineWorker` and `WorkerRunner` (Pipecat 1.3's names for
`PipelineTask` and `PipelineRunner`). LiveKit Agents' OpenAI plugin (`openai.LLM`, `openai.STT`, `openai.TTS`) runs
without a LiveKit room: the agent's model calls, not its transport. The checks are what a user hears and sees: the
transcribed words; a tool call arriving as the framework's own function call (its handler runs with parsed arguments)
and the tool's result reaching the model; the reply; speech frames at 24 kHz that never wrap around (int16 overflow
clicks) and last as long as the same text spoken through /v1/audio/speech.

Every request a framework sends is recorded with the server's answer (`Recorder`) and printed when a check fails: a
request shape the server refuses shows up with its body. Needs the `dev` extra (pipecat-ai[openai], livekit-agents,
livekit-plugins-openai) and espeak-ng. `pytest -s` shows what was heard, said and called, and the timings.
"""
import asyncio, io, json, sys, time
from pathlib import Path
from types import SimpleNamespace

import httpx, numpy as np, pytest, soundfile as sf

from voice_agent.testing import espeak as speak, transcribe

QUESTION = "What is the capital of France?"
SPOKEN = "The weather in Paris is sunny today. Tomorrow it will rain in the afternoon."  # two sentences, ~4 s of speech
RATE = 24000  # what OpenAI's speech endpoint sends and what both frameworks assume for pcm
TIMEOUT = 240  # one framework run, end to end, on a loaded 2-core machine
WEATHER_TOOL = {"name": "get_weather", "description": "Get the current weather for a city.",
                "properties": {"city": {"type": "string", "description": "the city, e.g. Paris"}}, "required": ["city"]}
WEATHER_QUESTION = "What is the weather in Paris right now?"


@pytest.fixture(scope="module")
def local(tmp_path_factory, local_server):
    "`voice-agent serve --profile local` (shared: conftest.py); yields the OpenAI base_url and a client for reference calls."
    work = tmp_path_factory.mktemp("frameworks")
    from loguru import logger  # Pipecat logs every frame hop at DEBUG: keep its warnings and errors only
    logger.remove(); logger.add(sys.stderr, level="WARNING")
    client = httpx.Client(base_url=local_server.url, timeout=TIMEOUT)
    yield SimpleNamespace(base_url=local_server.url + "/v1", client=client, work=work, log=local_server.log)
    client.close()
    logger.remove(); logger.add(sys.stderr)  # loguru's default again, for whatever runs next


@pytest.fixture(scope="module")
def question(local) -> Path:
    "The question spoken by espeak-ng (22.05 kHz WAV)."
    return speak(QUESTION, local.work/"question.wav")


class Recorder:
    "Requests a framework sent (JSON bodies) and the server's answers (status, content type, error text)."
    def __init__(self): self.log = []

    def client(self) -> httpx.AsyncClient:
        "An httpx client for the framework's OpenAI client; create it inside the running event loop."
        return httpx.AsyncClient(timeout=TIMEOUT, event_hooks={"request": [self._request], "response": [self._response]})

    async def _request(self, r: httpx.Request):
        body = json.loads(r.content) if r.headers.get("content-type", "").startswith("application/json") else None
        self.log.append({"path": r.url.path, "body": body, "_req": r})

    async def _response(self, r: httpx.Response):
        e = next(e for e in reversed(self.log) if e["_req"] is r.request)
        e.update(status=r.status_code, content_type=r.headers.get("content-type", ""))
        if r.status_code >= 400: await r.aread(); e["error"] = r.text

    def to(self, path: str) -> list[dict]:
        "The recorded exchanges with a route, e.g. `/chat/completions`."
        return [e for e in self.log if e["path"].endswith(path)]

    def __str__(self):
        return "\nrequests sent by the framework:\n" + "\n".join(
            json.dumps({k: v for k, v in e.items() if k != "_req"})[:3000] for e in self.log)


def pcm16_16k(wav: Path) -> bytes:
    "A WAV file as 16 kHz mono int16 PCM, what Pipecat's input transports deliver."
    from voice_agent.audio import pcm16, resample
    x, sr = sf.read(wav, dtype="float32")
    return pcm16(resample(x, sr, 16000)).tobytes()


def check_speech(pcm: bytes, # int16 mono samples as the framework received them
                 what: str, # which framework path, for the message
                ) -> float: # the duration at 24 kHz, seconds
    "Speech as the framework will play it: audible, and no int16 wraparound (a sample that overflowed flips sign: a click)."
    x = np.frombuffer(pcm, "<i2").astype(np.int32)
    assert len(x) > RATE//4, f"{what}: only {len(x)} samples of speech"
    assert np.sqrt(np.mean((x/32768.0)**2)) > 0.01, f"{what}: the audio is (nearly) silent"
    jumps = np.abs(np.diff(x))
    # Speech at 24 kHz moves < 1/3 of full scale per sample; a wrapped sample jumps by ~65535 (from near +32767 to near -32768).
    assert jumps.max() < 49152, (f"{what}: {int((jumps >= 49152).sum())} sample-to-sample jumps across most of the int16 range: "
                                 "samples past full scale wrapped around instead of being clipped (audible clicks)")
    return len(x)/RATE


def test_check_speech_catches_wraparound():
    "The wraparound check fails on speech-like audio scaled past full scale without clipping, and passes it clipped."
    from voice_agent.audio import pcm16
    t = np.arange(RATE)/RATE
    x = 1.02*np.sin(2*np.pi*220*t)*np.minimum(1, 4*t)  # a tone that overshoots full scale, as resampled speech can
    check_speech(pcm16(x).tobytes(), "clipped")
    with pytest.raises(AssertionError, match="wrapped around"):
        check_speech((x*32767).astype(np.int64).astype(np.int16).tobytes(), "wrapped")  # the bug: int16 conversion overflows


def reference_seconds(local, text: str) -> float:
    "How long the server's own /v1/audio/speech WAV of `text` lasts (mean of two: Piper's durations vary ~3% run to run)."
    d = []
    for _ in range(2):
        r = local.client.post("/v1/audio/speech", json={"input": text, "response_format": "wav"})
        assert r.status_code == 200, r.text
        d.append(sf.info(io.BytesIO(r.content)).duration)
    return float(np.mean(d))


def heard(local, pcm: bytes) -> str:
    "What the server's Whisper hears in 24 kHz int16 speech."
    return transcribe(local.client, np.frombuffer(pcm, "<i2")/32768.0, RATE)


# ---------------------------------------------------------------- Pipecat

async def run_pipeline(processors: list, # Pipecat processors, in pipeline order
                       frames: list, # frames to queue once the pipeline has started
                       done, # called with the frames pushed so far: True when the run has what it came for
                       rec: Recorder, # shown if the run times out
                       timeout: float=TIMEOUT, # seconds
                      ) -> list: # every frame pushed in the pipeline (first push of each), in order
    "Run a Pipecat `Pipeline` under a `PipelineWorker`/`WorkerRunner`; end it gracefully (EndFrame) once `done` says so."
    from pipecat.frames.frames import EndFrame, ErrorFrame
    from pipecat.observers.base_observer import BaseObserver
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.workers.runner import WorkerRunner
    seen, finished = [], asyncio.Event()

    class Seen(BaseObserver):
        async def on_push_frame(self, data):
            seen.append(data.frame)
            if isinstance(data.frame, ErrorFrame) or done(seen): finished.set()

    worker = PipelineWorker(Pipeline(processors), observers=[Seen(observe_every_push=False)], cancel_on_idle_timeout=False)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(worker, frame): started.set()

    async def drive():
        await asyncio.wait_for(started.wait(), 60)
        for f in frames: await worker.queue_frame(f)
        try: await asyncio.wait_for(finished.wait(), timeout)
        except TimeoutError:
            await worker.cancel()
            pytest.fail(f"the Pipecat pipeline did not finish in {timeout:.0f} s; frames: "
                        f"{[type(f).__name__ for f in seen][-40:]}{rec}")
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.gather(runner.run(), drive())
    return seen


def errors(frames: list) -> list[str]:
    "What Pipecat reported as errors (ErrorFrames: a refused request, a service marked unusable)."
    from pipecat.frames.frames import ErrorFrame
    return [f.error for f in frames if isinstance(f, ErrorFrame)]


def pipecat_services(local, rec: Recorder, **llm_settings):
    "Pipecat's OpenAI STT, LLM and TTS services on the server, with their defaults (model names, voice) as users leave them."
    from openai import AsyncOpenAI
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.services.openai.stt import OpenAISTTService
    from pipecat.services.openai.tts import OpenAITTSService

    class LLM(OpenAILLMService):  # create_client is Pipecat's hook for a custom client: ours records the requests
        def create_client(self, api_key=None, base_url=None, **kw):
            return AsyncOpenAI(api_key=api_key, base_url=base_url, http_client=rec.client())

    kw = dict(api_key="unused", base_url=local.base_url)
    return (OpenAISTTService(**kw, http_client=rec.client()),
            LLM(**kw, settings=OpenAILLMService.Settings(**llm_settings)),
            OpenAITTSService(**kw, http_client=rec.client()))


def test_pipecat_voice_turn(local, question):
    "A spoken question through a Pipecat voice pipeline: VAD, STT, the LLM's answer, and its speech at 24 kHz."
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.frames.frames import (InputAudioRawFrame, LLMFullResponseEndFrame, LLMTextFrame, TranscriptionFrame,
                                       TTSAudioRawFrame, TTSStoppedFrame)
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
    from pipecat.processors.audio.vad_processor import VADProcessor
    rec = Recorder()

    def done(seen):  # the reply has been said: TTS stopped after the LLM's response ended
        ends = [i for i, f in enumerate(seen) if isinstance(f, LLMFullResponseEndFrame)]
        return bool(ends) and any(isinstance(f, TTSStoppedFrame) for f in seen[ends[0]:])

    async def turn():
        stt, llm, tts = pipecat_services(local, rec, system_instruction="You are a helpful voice assistant. Answer in one short sentence.")
        user, assistant = LLMContextAggregatorPair(LLMContext())
        pcm = bytes(3200) + pcm16_16k(question) + bytes(32000)  # 0.1 s before, 1 s of silence after: the VAD hears the end
        # The frames are queued faster than real time, so the VAD goes first (as in a transport's input): the STT must know
        # the user is speaking while the audio passes through it, or it keeps only its last second.
        audio = [InputAudioRawFrame(audio=pcm[i:i+640], sample_rate=16000, num_channels=1) for i in range(0, len(pcm), 640)]
        t = time.perf_counter()
        seen = await run_pipeline([VADProcessor(vad_analyzer=SileroVADAnalyzer()), stt, user, llm, tts, assistant], audio, done, rec)
        return seen, time.perf_counter() - t

    seen, secs = asyncio.run(turn())
    assert not errors(seen), f"Pipecat reported errors: {errors(seen)}{rec}"
    transcript = " ".join(f.text for f in seen if isinstance(f, TranscriptionFrame))
    reply = "".join(f.text for f in seen if isinstance(f, LLMTextFrame))
    speech = [f for f in seen if isinstance(f, TTSAudioRawFrame)]
    pcm = b"".join(f.audio for f in speech)
    print(f"\n[pipecat] {secs:.1f} s: heard {transcript!r}; replied {reply!r}; {len(speech)} audio frames, {len(pcm)/2/RATE:.2f} s")
    assert "capital" in transcript.lower() and "france" in transcript.lower(), f"transcript {transcript!r}{rec}"
    assert "paris" in reply.lower(), f"reply {reply!r}{rec}"
    assert speech and {(f.sample_rate, f.num_channels) for f in speech} == {(RATE, 1)}, {(f.sample_rate, f.num_channels) for f in speech}
    check_speech(pcm, "Pipecat OpenAITTSService")
    back = heard(local, pcm)
    print(f"[pipecat] its speech heard back: {back!r}")
    assert "paris" in back.lower(), f"the reply's speech, played at {RATE} Hz, was heard as {back!r}"


def test_pipecat_tts_speech_is_exact(local):
    "Pipecat's OpenAITTSService (pcm, 24 kHz assumed): speech that lasts as long as the server's own WAV of the text, no wraparound."
    from pipecat.frames.frames import TTSAudioRawFrame, TTSSpeakFrame, TTSStoppedFrame
    rec = Recorder()

    async def say():
        _, _, tts = pipecat_services(local, rec)
        return await run_pipeline([tts], [TTSSpeakFrame(SPOKEN)], lambda seen: isinstance(seen[-1], TTSStoppedFrame), rec)

    seen = asyncio.run(say())
    assert not errors(seen), f"Pipecat reported errors: {errors(seen)}{rec}"
    speech = [f for f in seen if isinstance(f, TTSAudioRawFrame)]
    assert speech and {f.sample_rate for f in speech} == {RATE}
    secs, ref = check_speech(b"".join(f.audio for f in speech), "Pipecat OpenAITTSService"), reference_seconds(local, SPOKEN)
    print(f"\n[pipecat tts] {secs:.2f} s of pcm at {RATE} Hz; the server's WAV of the same text: {ref:.2f} s")
    # 22.05 kHz samples played at 24 kHz would be 8% short; Piper's own variation is ~3%
    assert abs(secs/ref - 1) < 0.06, f"Pipecat plays {secs:.2f} s, the text lasts {ref:.2f} s: the pcm is not at {RATE} Hz{rec}"
    r = rec.to("/audio/speech")[0]
    assert r["body"]["response_format"] == "pcm" and r["content_type"].startswith("audio/pcm"), r


def test_pipecat_function_call(local):
    "A Pipecat function tool: the handler runs with parsed arguments, its result goes back to the model, the model answers."
    from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
    from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
    from pipecat.frames.frames import FunctionCallResultFrame, LLMFullResponseEndFrame, LLMRunFrame, LLMTextFrame
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
    rec, calls = Recorder(), []

    async def get_weather(params):  # a Pipecat function handler
        calls.append(dict(params.arguments))
        # The first turn forced a call (SmolLM2-135M rarely calls unprompted); the follow-up may only answer.
        params.context.set_tool_choice("none")
        await params.result_callback({"city": params.arguments.get("city"), "conditions": "sunny", "temperature_c": 18})

    def done(seen):  # the answer after the tool's result has ended
        res = [i for i, f in enumerate(seen) if isinstance(f, FunctionCallResultFrame)]
        return bool(res) and any(isinstance(f, LLMFullResponseEndFrame) for f in seen[res[0]:])

    async def ask():
        _, llm, _ = pipecat_services(local, rec)
        llm.register_function("get_weather", get_weather)
        context = LLMContext([{"role": "user", "content": WEATHER_QUESTION}], tools=ToolsSchema([FunctionSchema(**WEATHER_TOOL)]),
                             tool_choice="required")
        user, assistant = LLMContextAggregatorPair(context)
        seen = await run_pipeline([user, llm, assistant], [LLMRunFrame()], done, rec)
        return seen, context

    seen, context = asyncio.run(ask())
    chats = rec.to("/chat/completions")
    print(f"\n[pipecat tools] handler called with {calls}; {len(chats)} chat requests; "
          f"answer {''.join(f.text for f in seen if isinstance(f, LLMTextFrame))!r}")
    assert chats and chats[0]["body"]["tools"][0]["function"]["name"] == "get_weather", rec
    assert calls and isinstance(calls[0], dict) and "paris" in str(calls[0].get("city", "")).lower(), f"handler calls {calls}{rec}"
    assert not errors(seen), f"Pipecat reported errors: {errors(seen)}{rec}"
    follow = chats[-1]["body"]["messages"]
    assert any(m["role"] == "tool" and "sunny" in str(m["content"]) for m in follow), f"the tool's result never reached the model{rec}"
    assert chats[-1]["status"] == 200, rec
    answer = context.get_messages()[-1]
    assert answer["role"] == "assistant" and str(answer.get("content") or "").strip(), f"no answer after the tool's result: {answer}{rec}"


# ---------------------------------------------------------------- LiveKit Agents' OpenAI plugin

def lk_client(local, rec: Recorder):
    "The OpenAI client LiveKit's plugin is given (`client=`), on the server, recording the requests."
    from openai import AsyncOpenAI
    return AsyncOpenAI(api_key="unused", base_url=local.base_url, http_client=rec.client())


def weather_tool(calls: list):
    "A LiveKit function tool, as agents define them."
    from livekit.agents.llm import function_tool

    @function_tool
    async def get_weather(city: str) -> str:
        """Get the current weather for a city.

        Args:
            city: the city, e.g. Paris
        """
        calls.append(city)
        return f"It is sunny and 18 degrees in {city}."
    return get_weather


async def lk_chat(model, ctx, tools, **kw) -> tuple[str, list]:
    "One streamed LiveKit `LLM.chat`: the text and the `FunctionToolCall`s it delivered."
    text, tool_calls = "", []
    async with model.chat(chat_ctx=ctx, tools=tools, **kw) as stream:
        async for chunk in stream:
            if chunk.delta: text += chunk.delta.content or ""; tool_calls += chunk.delta.tool_calls
    return text, tool_calls


def test_livekit_tool_call_reaches_the_agent(local):
    "LiveKit `openai.LLM` with a strict function tool: the model's call arrives as a FunctionToolCall and LiveKit runs the tool."
    from livekit.agents.llm import ChatContext, ToolContext
    from livekit.agents.llm.utils import execute_function_call
    from livekit.plugins import openai
    rec, calls = Recorder(), []

    async def ask():
        tool = weather_tool(calls)
        ctx = ChatContext(); ctx.add_message(role="user", content=WEATHER_QUESTION)
        text, tool_calls = await lk_chat(openai.LLM(client=lk_client(local, rec), tool_choice="required"), ctx, [tool])
        result = await execute_function_call(tool_calls[0], ToolContext([tool])) if tool_calls else None
        return text, tool_calls, result

    text, tool_calls, result = asyncio.run(ask())
    print(f"\n[livekit tools] {tool_calls}; tool ran with {calls}")
    sent = rec.to("/chat/completions")[0]["body"]
    assert sent["tools"][0]["function"].get("strict") is True and sent["tool_choice"] == "required", sent
    assert len(tool_calls) == 1 and tool_calls[0].name == "get_weather" and tool_calls[0].call_id, f"{tool_calls} {text!r}{rec}"
    assert json.loads(tool_calls[0].arguments).keys() == {"city"}, tool_calls[0].arguments  # strict: exactly the schema's fields
    assert calls and "paris" in calls[0].lower() and not result.fnc_call_out.is_error, (calls, result.fnc_call_out)


def test_livekit_tool_result_round_trip(local):
    "LiveKit's second turn: the assistant's tool call and the tool's output in the history (as LiveKit sends them), then an answer."
    from livekit.agents.llm import ChatContext, ToolContext
    from livekit.agents.llm.utils import execute_function_call
    from livekit.plugins import openai
    rec, calls = Recorder(), []

    async def ask():
        tool = weather_tool(calls)
        model = openai.LLM(client=lk_client(local, rec))
        ctx = ChatContext(); ctx.add_message(role="user", content=WEATHER_QUESTION)
        _, tool_calls = await lk_chat(model, ctx, [tool], tool_choice="required")
        assert tool_calls, f"no tool call{rec}"
        result = await execute_function_call(tool_calls[0], ToolContext([tool]))
        ctx.insert([result.fnc_call, result.fnc_call_out])  # what AgentSession does before it asks again
        return await lk_chat(model, ctx, [tool], tool_choice="none")

    try: text, tool_calls = asyncio.run(ask())
    except Exception as e: pytest.fail(f"LiveKit's follow-up turn failed: {e}{rec}")
    print(f"\n[livekit tools] answer after the tool: {text!r}")
    assert text.strip() and not tool_calls, f"{text!r} {tool_calls}{rec}"


def test_livekit_stt_recognize(local, question):
    "LiveKit `openai.STT.recognize` on an AudioFrame of espeak speech, with the plugin's default model name."
    from livekit import rtc
    from livekit.plugins import openai
    rec = Recorder()
    x, sr = sf.read(question, dtype="int16")

    async def recognize():
        frame = rtc.AudioFrame(data=x.tobytes(), sample_rate=sr, num_channels=1, samples_per_channel=len(x))
        return await openai.STT(client=lk_client(local, rec)).recognize(buffer=frame)

    event = asyncio.run(recognize())
    text = event.alternatives[0].text
    print(f"\n[livekit stt] {text!r} ({event.alternatives[0].language})")
    assert "capital" in text.lower() and "france" in text.lower(), f"{text!r}{rec}"


def lk_synthesize(local, rec: Recorder, text: str=SPOKEN, **opts) -> tuple[list, list[float]]:
    "LiveKit `openai.TTS.synthesize`: the rtc.AudioFrames an agent would publish, and when each arrived (s after the call)."
    from livekit.plugins import openai

    async def run():
        tts, frames, times = openai.TTS(client=lk_client(local, rec), **opts), [], []
        t = time.perf_counter()
        async for a in tts.synthesize(text): frames.append(a.frame); times.append(time.perf_counter() - t)
        return frames, times
    return asyncio.run(run())


@pytest.mark.parametrize("fmt", ["mp3", "pcm"])
def test_livekit_tts_frames(local, fmt):
    "LiveKit `openai.TTS` (its default mp3, and pcm): 24 kHz frames, no wraparound, as long as the speech."
    rec = Recorder()
    frames, _ = lk_synthesize(local, rec, response_format=fmt)
    assert frames, f"no audio frames{rec}"
    assert {(f.sample_rate, f.num_channels) for f in frames} == {(RATE, 1)}, {(f.sample_rate, f.num_channels) for f in frames}
    secs = check_speech(b"".join(bytes(f.data) for f in frames), f"LiveKit openai.TTS ({fmt})")
    ref = reference_seconds(local, SPOKEN)
    print(f"\n[livekit tts {fmt}] {len(frames)} frames, {secs:.2f} s; the server's WAV: {ref:.2f} s; "
          f"answered as {rec.to('/audio/speech')[0]['content_type']}")
    assert abs(secs/ref - 1) < 0.06, f"LiveKit plays {secs:.2f} s, the text lasts {ref:.2f} s{rec}"


def test_livekit_tts_streams_sse(local):
    "LiveKit asks for `stream_format: sse` (and speed 1.0): speech.audio.delta events, the first before the last sentence is made."
    rec = Recorder()
    text = SPOKEN + " On Sunday the wind will come from the west. Next week will be warm and dry."  # four sentences
    frames, times = lk_synthesize(local, rec, text, response_format="pcm")
    r = rec.to("/audio/speech")[0]
    assert r["body"]["stream_format"] == "sse" and r["body"]["speed"] == 1.0, r["body"]
    assert r["content_type"].startswith("text/event-stream"), (
        f"asked for stream_format 'sse', got {r['content_type']!r}: LiveKit fell back to reading a plain body{rec}")
    check_speech(b"".join(bytes(f.data) for f in frames), "LiveKit openai.TTS (sse)")
    print(f"\n[livekit sse] {len(frames)} frames; first after {times[0]:.2f} s, last after {times[-1]:.2f} s")
    assert times[0] <= 0.6*times[-1], f"the first audio came {times[0]:.2f} s in, the last {times[-1]:.2f} s: the speech was not streamed"
