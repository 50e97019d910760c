"""Tool calling for real: `voice-agent serve --profile local` (SmolLM2-135M through llama.cpp) and OpenAI's own SDK.

SmolLM2's chat template ignores tools, so the server describes them in the system message (the generic Hermes
format) and, for `tool_choice` `required` or a named function, constrains llama.cpp with a grammar made from the
tools' JSON schemas. Checked here: a call reaches the SDK as `message.tool_calls` with JSON arguments, whole and
streamed (the SDK's own accumulator); a pydantic tool (`openai.pydantic_function_tool`: its enum in `$defs` behind a
`$ref`) is called with arguments the SDK parses back into the model; a `role: "tool"` result then gets a text reply;
`/v1/models` lists readable ids and replies carry the model name asked for. Run with `pytest -s` to see the replies.
"""
import json, time
from enum import Enum

import pytest
from pydantic import BaseModel

WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "the city"}},
                   "required": ["city"], "additionalProperties": False}, "strict": True}},
    {"type": "function", "function": {"name": "hang_up", "description": "End the call", "parameters": {"type": "object", "properties": {}}}}]
ASK = [{"role": "user", "content": "What's the weather in Paris?"}]


@pytest.fixture(scope="module")
def oa(local_server):
    "The local profile (shared: conftest.py), and an OpenAI client for it."
    from openai import OpenAI
    return OpenAI(base_url=local_server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_have_readable_ids(oa):
    assert {m.id: m.model_extra["kind"] for m in oa.models.list().data} == \
        {"SmolLM2-135M-Instruct": "llm", "whisper-tiny.en": "stt", "en_US-joe-medium": "tts"}
    assert oa.models.retrieve("SmolLM2-135M-Instruct").model_extra["kind"] == "llm"


def test_required_call_whole_and_streamed(oa):
    "`required`: the grammar makes the call valid; the SDK gets it whole, and accumulates it from the stream."
    t = time.perf_counter()
    r = oa.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=WEATHER, tool_choice="required", max_tokens=60)
    took = time.perf_counter() - t
    c = r.choices[0]
    print(f"\n[tools] required: {[(x.function.name, x.function.arguments) for x in c.message.tool_calls or []]} in {took:.2f} s")
    assert (r.model, c.finish_reason, c.message.content) == ("gpt-4o-mini", "tool_calls", None)
    (call,) = c.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    with oa.chat.completions.stream(model="SmolLM2-135M-Instruct", messages=ASK, tools=WEATHER, max_tokens=60,
                                    tool_choice={"type": "function", "function": {"name": "get_weather"}}) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.done" in kinds, kinds
    s = final.choices[0]
    assert s.finish_reason == "tool_calls" and final.model == "SmolLM2-135M-Instruct"
    assert [(x.function.name, json.loads(x.function.arguments)) for x in s.message.tool_calls] == [("get_weather", {"city": "Paris"})]


class Unit(str, Enum):
    celsius = "celsius"
    fahrenheit = "fahrenheit"


class GetWeather(BaseModel):
    "Get the current weather in a city"
    city: str
    unit: Unit


def test_pydantic_tool_with_defs(oa):
    "A pydantic tool: the grammar follows its `$ref` into `$defs`, so the call names a unit there and parses into the model."
    import openai
    tool = openai.pydantic_function_tool(GetWeather, name="get_weather")
    assert tool["function"]["parameters"]["properties"]["unit"] == {"$ref": "#/$defs/Unit"}
    r = oa.chat.completions.parse(model="llm", messages=ASK, tools=[tool], tool_choice="required", max_tokens=60)
    c = r.choices[0]
    print(f"\n[tools] pydantic: {[(x.function.name, x.function.arguments) for x in c.message.tool_calls or []]} {c.message.content!r}")
    (call,) = c.message.tool_calls
    args = call.function.parsed_arguments
    assert c.finish_reason == "tool_calls" and isinstance(args, GetWeather) and args.unit in Unit, call
    assert args.city == "Paris", args


def test_tool_result_gets_a_text_reply(oa):
    "The call and its result in the history: SmolLM2 answers in words, with no call and no markup."
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    msgs = ASK + [{"role": "assistant", "content": None, "tool_calls": [call]},
                  {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature_c": 18, "sky": "sunny"}'}]
    r = oa.chat.completions.create(model="llm", messages=msgs, tools=WEATHER, max_tokens=40)
    c = r.choices[0]
    print(f"\n[tools] after the result: {c.message.content!r}")
    assert c.finish_reason == "stop" and not c.message.tool_calls and r.model == "llm"
    assert c.message.content.strip() and "<tool" not in c.message.content
    chunks = list(oa.chat.completions.create(model="llm", messages=msgs, tools=WEATHER, max_tokens=40, stream=True))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices).strip()
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_auto_and_none_answer_in_words(oa):
    "`auto` with SmolLM2 answers in words (greedy, it does not call: see bench 10); `none` never calls; a wrong-kind model is a 400."
    import openai
    for choice in ("auto", "none"):
        c = oa.chat.completions.create(model="llm", messages=ASK, tools=WEATHER, tool_choice=choice, max_tokens=40).choices[0]
        print(f"\n[tools] {choice}: {c.finish_reason} {c.message.content!r}")
        assert not c.message.tool_calls and c.finish_reason in ("stop", "length"), (choice, c)
        assert c.message.content.strip() and "<tool" not in c.message.content and "not passed on" not in c.message.content, (choice, c)
    with pytest.raises(openai.BadRequestError) as e: oa.chat.completions.create(model="whisper-1", messages=ASK)
    assert "is the STT model" in str(e.value)
