"""The `openai-agents` SDK's realtime agent on our server, for real: `voice-agent serve --profile local` (SmolLM2 via
llama.cpp, Whisper tiny.en, Silero and Smart Turn, Piper) on a free port; a `RealtimeAgent` with a `@function_tool`, run by
`RealtimeRunner` through the SDK's own `OpenAIRealtimeWebSocketModel`, its `url` pointed at `/v1/realtime`.

The SDK is used the way its users use it: its session configuration as it sends it (its defaults: `semantic_vad`, voice
"ash", transcription by "gpt-4o-mini-transcribe", which the server takes as OpenAI default names; then a second
`session.update` with `tracing: "auto"`, which the server accepts and does not trace), audio through `send_audio`
(PCM16 at 24 kHz, 20 ms every 20 ms), the tool run by the SDK when the model's `function_call` arrives, its output sent
back by the SDK with a `response.create`. A spoken "What's the weather in Paris?" reaches `get_weather` with
`city="Paris"`; the spoken answer's transcript, in the SDK's history, carries what the tool said, and Whisper hears it
in the answer's audio.

SmolLM2-135M under `tool_choice: "auto"` answers in words, so the session forces the call (`tool_choice` naming the
function, in the run config's model settings). The realtime SDK does not reset a forced choice after a call (the text
`Agent`'s `reset_tool_choice` has no realtime twin): the SDK would answer the forced call's output with another forced
call, round after round. So the tool resets it, as that option would, with a `session.update` sent through the SDK's
`RealtimeModelSendRawMessage` before it returns; the SDK sends the tool's output and `response.create` after it.

Every server event the SDK receives is checked against the `openai` package's own types; the SDK reports no error and
no event it could not read. Needs the `dev` extra (openai-agents) and espeak-ng. Run with `pytest -s` to see the SDK's
events, the call and what was heard and said.
"""
import asyncio, base64, json
from types import SimpleNamespace

import numpy as np, pytest
from pydantic import TypeAdapter
from openai.types.realtime import RealtimeServerEvent
from openai.types.responses import ToolChoiceFunction
from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeRunner
from agents.realtime.model_inputs import RealtimeModelSendRawMessage

from suite import local_server
from voice_agent.audio import resample
from voice_agent.testing import REALTIME_RATE as RATE, espeak_pcm, microphone, transcribe

FORECAST = {"temperature_c": 18, "sky": "sunny"}
INSTRUCTIONS = "You are a weather assistant. Answer in one short sentence."
TIMEOUT = 120  # the whole conversation, on a loaded 2-core machine (about 5 s idle)
server_event = TypeAdapter(RealtimeServerEvent)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    "The local profile on a free port."
    yield from local_server(tmp_path_factory.mktemp("realtime_agents"))


def sdk_microphone(session) -> SimpleNamespace:
    "The SDK session as `voice_agent.testing.microphone` sends to a connection: each 20 ms of base64 PCM16 -> `session.send_audio(bytes)`."
    return SimpleNamespace(input_audio_buffer=SimpleNamespace(append=lambda audio: session.send_audio(base64.b64decode(audio))))


async def converse(url: str, question: np.ndarray) -> dict:
    "Ask `question` (24 kHz) aloud through the SDK's realtime session; the SDK's events until the answer after the tool is done."
    calls, out = [], {"events": [], "raw": [], "audio": [], "history": []}
    session = None

    @function_tool
    async def get_weather(city: str) -> str:
        "Get the current weather in a city."
        calls.append(city)
        reset = {"type": "session.update", "other_data": {"session": {"type": "realtime", "tool_choice": "auto"}}}
        await session.model.send_event(RealtimeModelSendRawMessage(message=reset))  # the forced choice has been served
        return json.dumps(FORECAST)

    agent = RealtimeAgent(name="weather", instructions=INSTRUCTIONS, tools=[get_weather])
    runner = RealtimeRunner(agent, config={"model_settings": {"tool_choice": ToolChoiceFunction(type="function", name="get_weather")}})
    session = await runner.run(model_config={"url": url.replace("http", "ws", 1) + "/v1/realtime?model=llm", "api_key": "unused"})
    stop = asyncio.Event()
    async with session:
        mic = asyncio.ensure_future(microphone(sdk_microphone(session), question, stop))
        try:
            async with asyncio.timeout(TIMEOUT):
                async for ev in session:
                    out["events"].append(ev.type)
                    if ev.type == "raw_model_event":
                        if ev.data.type == "raw_server_event": out["raw"].append(ev.data.data)
                        elif ev.data.type in ("error", "exception"): out.setdefault("errors", []).append(ev.data)
                    elif ev.type == "error": out.setdefault("errors", []).append(ev.error)
                    elif ev.type == "audio" and "tool_end" in out["events"]: out["audio"].append(ev.audio.data)
                    elif ev.type == "history_updated": out["history"] = ev.history
                    elif ev.type in ("tool_start", "tool_end"): out[ev.type] = ev
                    elif ev.type == "agent_end" and "tool_end" in out["events"]: break  # the answer's response.done
        finally:
            stop.set(); await mic
    return {**out, "calls": calls}


def test_agents_sdk_spoken_question_reaches_the_tool_and_the_answer_uses_it(server):
    "RealtimeAgent + @function_tool: speech -> get_weather(city='Paris') run by the SDK -> a spoken answer that says what it returned."
    url, proc = server
    got = asyncio.run(converse(url, espeak_pcm("What's the weather in Paris?", RATE)))
    for e in got["raw"]: server_event.validate_python(e)
    raw = [e["type"] for e in got["raw"]]
    user = next(it for it in got["history"] if it.type == "message" and it.role == "user")
    heard = next((c.transcript for c in user.content if c.type == "input_audio"), None)
    answer = [it for it in got["history"] if it.type == "message" and it.role == "assistant"]
    said = " ".join(c.transcript or "" for it in answer for c in it.content if c.type == "audio")
    print(f"\n[agents] SDK events: {[t for t in got['events'] if t not in ('raw_model_event', 'audio')]}\n[agents] heard {heard!r}; "
          f"the call: get_weather({got['tool_start'].arguments}) -> {got['tool_end'].output}\n[agents] said {said!r}")
    assert not got.get("errors"), got.get("errors")
    assert "paris" in (heard or "").lower(), heard
    assert got["calls"] == ["Paris"] and json.loads(got["tool_start"].arguments) == {"city": "Paris"}, (got["calls"], got["tool_start"].arguments)
    assert json.loads(got["tool_end"].output) == FORECAST
    assert raw.count("response.function_call_arguments.done") == 1 and raw.count("response.done") == 2, raw  # one call, then the answer
    session = [e["session"] for e in got["raw"] if e["type"] == "session.updated"]
    assert session[0]["tool_choice"] == {"type": "function", "name": "get_weather"} and session[-1]["tool_choice"] == "auto"
    assert session[0]["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"  # the SDK's default, as it sent it
    audio = np.frombuffer(b"".join(got["audio"]), "<i2").astype(np.float32)/32768
    assert len(audio) > RATE//2, f"{len(audio)/RATE:.2f} s of answer audio"
    back = transcribe(url, resample(audio, RATE, 16000))
    print(f"[agents] its audio heard back: {back!r}")
    assert any(w in f"{said} {back}".lower() for w in ("18", "eighteen", "sunny")), (said, back)
    assert proc.poll() is None
