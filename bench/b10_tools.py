"""Benchmark 10: tool calling on the `local` profile's LLM (SmolLM2-135M-Instruct, GGUF, llama.cpp), as the server serves it.

One `get_weather(city)` tool and 20 spoken-style weather questions (2 in quick mode), each naming a
city; greedy decoding, the `local` profile's system message. A call counts as valid when it passes the server's checks (JSON, a given function, arguments
matching the schema) and as right when its `city` is the one asked about.

- `auto`: the model chooses. SmolLM2's chat template ignores tools, so they are described in the system message
  (the generic Hermes format); how often a 135M model calls on its own is what this row shows.
- `required`: a llama.cpp grammar made from the tool's JSON schema forces the call; A is the valid-call rate under
  `auto`, B under `required`.
- The cost of forcing: seconds per `required` call against seconds per plain reply (no tools) to the same questions.
"""
from __future__ import annotations
import json, time
from common import local_model, local_settings, median, row

WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "the city"}},
                   "required": ["city"], "additionalProperties": False}}}]
QUESTIONS = [  # (question, the city it names)
    ("What's the weather in Paris?", "Paris"), ("Is it raining in London right now?", "London"),
    ("How hot is it in Cairo today?", "Cairo"), ("Weather for Tokyo, please.", "Tokyo"),
    ("Do I need an umbrella in Seattle?", "Seattle"), ("What is the temperature in Berlin?", "Berlin"),
    ("Is it snowing in Oslo?", "Oslo"), ("Tell me the weather in Madrid.", "Madrid"),
    ("How windy is it in Chicago?", "Chicago"), ("Will it be sunny in Rome today?", "Rome"),
    ("What's it like outside in Sydney?", "Sydney"), ("Check the weather in Toronto for me.", "Toronto"),
    ("Is it cold in Moscow?", "Moscow"), ("Can you get me the forecast for Lisbon?", "Lisbon"),
    ("How humid is it in Singapore?", "Singapore"), ("Should I wear a coat in Dublin today?", "Dublin"),
    ("What's the weather like in Mumbai?", "Mumbai"), ("Is there a storm in Miami?", "Miami"),
    ("Give me the current weather in Vienna.", "Vienna"), ("How warm is it in Athens?", "Athens"),
]


def judge(reply, city: str) -> tuple[bool, bool]:
    "Whether the reply holds exactly one valid get_weather call, and whether its city is the one asked about."
    ok = [c for c in reply.tool_calls if not c.error and c.name == "get_weather"]
    valid = len(ok) == 1 and len(reply.tool_calls) == 1
    return valid, valid and city.lower() in str(json.loads(ok[0].arguments).get("city", "")).lower()


def run(cfg: dict, device: str, log) -> dict:
    s, llm = local_settings(), local_model("llm")
    ask = lambda q: [{"role": "user", "content": q}]
    llm.chat(ask("Hi"), max_new_tokens=4, temperature=0)  # warm up
    res = {"auto": [], "required": []}
    secs = {"auto": [], "required": [], "plain": []}
    n = cfg.get("tools_questions", len(QUESTIONS))
    questions = QUESTIONS[::max(1, len(QUESTIONS)//n)][:n]
    for q, city in questions:
        for mode in ("auto", "required"):
            t = time.perf_counter()
            r = llm.chat(ask(q), tools=WEATHER, tool_choice=mode, max_new_tokens=32, temperature=0)
            secs[mode].append(time.perf_counter() - t)
            valid, right = judge(r, city)
            res[mode].append({"question": q, "valid": valid, "right_city": right, "text": r.text[:120],
                              "calls": [(c.name, c.arguments, c.error) for c in r.tool_calls]})
        t = time.perf_counter(); llm.chat(ask(q), max_new_tokens=32, temperature=0); secs["plain"].append(time.perf_counter() - t)
    rate = lambda mode, key: 100.0*sum(x[key] for x in res[mode])/len(res[mode])
    rates = {m: {"valid_pct": rate(m, "valid"), "right_city_pct": rate(m, "right_city"),
                 "any_call_pct": 100.0*sum(bool(x["calls"]) for x in res[m])/len(res[m])} for m in res}
    print(f"tools: auto {rates['auto']}, required {rates['required']}", flush=True)
    rows = [
        row("10 tools", f"SmolLM2-135M, one get_weather tool, {n} weather questions: valid calls, auto vs required",
            rates["auto"]["valid_pct"], rates["required"]["valid_pct"], "%", "auto", "required (grammar)",
            "B = 100% (required is constrained)", lambda a, b, r: b == 100.0,
            note=f"right city: auto {rates['auto']['right_city_pct']:.0f}%, required {rates['required']['right_city_pct']:.0f}%; "
                 f"auto replied with any call {rates['auto']['any_call_pct']:.0f}% of the time"),
        row("10 tools", "seconds per forced (required) call vs a plain reply to the same question (no tools)",
            median(secs["required"]), median(secs["plain"]), "s", "required call", "plain reply", "informational",
            lambda a, b, r: None),
    ]
    details = {"model": s.llm_model, "rates_pct": rates, "medians_s": {k: median(v) for k, v in secs.items()},
               "replies": res, "strategy": llm.loading_strategy}
    return {"tools": {"rows": rows, "details": details}}
