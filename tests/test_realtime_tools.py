"""Function calling in a spoken realtime conversation, for real: `voice-agent serve --profile local` (SmolLM2 via
llama.cpp, Whisper tiny.en, Piper) on a free port, the official `openai` client's realtime connection over a socket.

A question in espeak-ng speech, streamed like a microphone, reaches the tool: the session forces the call
(`tool_choice` naming the function: SmolLM2 under `auto` answers in words), so llama.cpp writes it under the tool's
grammar and the server checks it as `/v1/chat/completions` does. The test answers with a `function_call_output` and
`response.create` (`tool_choice: "none"`), and the spoken reply says what the tool said. Then the bad inputs, each an
`error` event that says what to send, after which the session still answers. Every event is checked against the
`openai` package's own types. Run with `pytest -s` to see the events in order, what was heard and what was said.

The `openai-agents` SDK's realtime agent asks the same question in tests/test_realtime_agents.py.
"""
import asyncio, json

import numpy as np, pytest
from pydantic import TypeAdapter
from openai.types.realtime import RealtimeServerEvent

from suite import checked, local_server
from voice_agent.audio import resample
from voice_agent.testing import (REALTIME_RATE as RATE, espeak_pcm, events_until, pcm, realtime_connect, spoken_turn,
                                 transcribe)

WEATHER = {"type": "function", "name": "get_weather", "description": "Get the current weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city, e.g. Paris"}},
                          "required": ["city"]}}
FORECAST = {"temperature_c": 18, "sky": "sunny"}
server_event = TypeAdapter(RealtimeServerEvent)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    "The local profile on a free port."
    yield from local_server(tmp_path_factory.mktemp("realtime_tools"))



def test_spoken_question_reaches_the_tool_and_the_answer_uses_it(server):
    "Speech -> a function_call item with {'city': 'Paris'} (no audio); its output -> a spoken answer that says it."
    url, proc = server
    async def go():
        async with realtime_connect(url) as conn:
            await events_until(conn, "session.created", 30)
            await conn.session.update(session={"type": "realtime", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_weather"},
                                               "instructions": "You are a weather assistant. Answer in one short sentence.",
                                               "audio": {"input": {"turn_detection": {"type": "server_vad"}}}})
            updated = (await events_until(conn, "session.updated", 30))[-1][1]
            turn = await spoken_turn(conn, espeak_pcm("What's the weather in Paris?", RATE), timeout=120)
            call = next(o for o in turn["events"][-1][1].response.output if o.type == "function_call")
            await conn.conversation.item.create(item={"type": "function_call_output", "call_id": call.call_id, "output": json.dumps(FORECAST)})
            await conn.response.create(response={"tool_choice": "none"})
            answer = await events_until(conn, "response.done", 120)
            return updated, turn, call, answer
    updated, turn, call, answer = asyncio.run(go())
    kinds, after = checked(turn["events"]), checked(answer)
    print(f"\n[tools] heard {turn['heard']!r}; the call: {call.name}({call.arguments}) {call.call_id}\n[tools] turn: {kinds}\n[tools] answer: {after}")
    assert updated.session.tools[0].name == "get_weather" and updated.session.tool_choice.name == "get_weather"
    assert "paris" in (turn["heard"] or "").lower(), turn["heard"]
    assert (turn["status"], call.name, json.loads(call.arguments)) == ("completed", "get_weather", {"city": "Paris"}), call
    assert "response.output_audio.delta" not in kinds and "response.content_part.added" not in kinds  # a call: no audio, no message
    order = [k for k in kinds if k.startswith(("response.output_item", "response.function_call"))]
    assert order == ["response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.done",
                     "response.output_item.done"], order
    args = next(e for _, e in turn["events"] if e.type == "response.function_call_arguments.done")
    assert (args.call_id, args.name, args.arguments) == (call.call_id, "get_weather", call.arguments)
    done = answer[-1][1].response
    said = "".join(e.delta for _, e in answer if e.type == "response.output_audio_transcript.delta")
    audio = [e.delta for _, e in answer if e.type == "response.output_audio.delta"]
    assert "conversation.item.added" in after and done.status == "completed" and audio, (after, done.status)
    back = transcribe(url, resample(np.concatenate([pcm(d) for d in audio]), RATE, 16000))
    print(f"[tools] said {said!r}; its audio heard back: {back!r}")
    assert any(w in f"{said} {back}".lower() for w in ("18", "eighteen", "sunny")), (said, back)
    assert proc.poll() is None


def test_bad_tool_inputs_say_what_to_send(server):
    "A tool_choice naming no tool, a tool whose schema is not one, an output for a call there is not: errors naming the field; the session goes on."
    url, proc = server
    async def go():
        async with realtime_connect(url) as conn:
            await events_until(conn, "session.created", 30)
            out = []
            async def error(send):
                await send
                e = (await events_until(conn, "error", 30))[-1][1]
                server_event.validate_python(e.to_dict()); out.append(e.error)
            await error(conn.session.update(session={"type": "realtime", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_time"}}))
            bad = {**WEATHER, "parameters": {"type": "object", "properties": {"city": {"type": "town"}}}}
            await error(conn.session.update(session={"type": "realtime", "tools": [bad]}))
            await error(conn.conversation.item.create(item={"type": "function_call_output", "call_id": "call_nope", "output": "{}"}))
            await error(conn.response.create(response={"tool_choice": "required"}))
            await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello."}]})
            await conn.response.create(response={"output_modalities": ["text"]})
            done = (await events_until(conn, "response.done", 60))[-1][1].response
            return out, done
    errors, done = asyncio.run(go())
    for e in errors: print(f"\n[tools] {e.code} ({e.param}): {e.message}", end="")
    unknown, schema, call, required = errors
    assert unknown.param == "session.tool_choice" and "not one of the tools (get_weather)" in unknown.message, unknown
    assert schema.param == "session.tools" and "session.tools[0].parameters (get_weather) is not a valid JSON Schema" in schema.message, schema
    assert (call.code, call.param) == ("call_not_found", "item.call_id") and "send the call_id of a function_call" in call.message, call
    assert required.param == "response.tool_choice" and "needs tools" in required.message and "send the tool" in required.message, required
    assert done.status == "completed" and done.output[0].type == "message"  # the bad inputs changed nothing
    assert proc.poll() is None
