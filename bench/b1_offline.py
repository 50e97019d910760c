"""Benchmark 1: how fast an uncached model fails with no route to the Hub, voice_agent against plain transformers.

An empty HF_HOME and LOCAL_MODELS_DIR, the model `Qwen/Qwen2.5-7B-Instruct`; once with no offline variable set (the Hub
is tried: here DNS fails), once with HF_HUB_OFFLINE=1. Each call is the first one in a process forked right after the
imports (`probes.py offline`), so both sides start from the same state and import costs are not timed. In quick mode
the two probe processes run at the same time (`offline_concurrent`): one spends its time waiting on the network, the
other's calls take milliseconds. In full mode they run one after the other.
"""
from __future__ import annotations
from concurrent.futures import ThreadPoolExecutor
from common import BENCH, child_env, median, row, run_child, scratch, ChildFailed

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_OFFLINE", "HF_FORCE_OFFLINE")
CALL_TIMEOUT = 120  # one call; plain transformers gives up after ~23 s here


def order(n_va: int, n_plain: int) -> list[str]:
    "Interleave the three calls, rotating which goes first."
    out = []
    for i in range(max(n_va, n_plain)):
        calls = (["va_ensure", "va_llm"] if i < n_va else []) + (["plain"] if i < n_plain else [])
        k = i % len(calls)
        out += calls[k:] + calls[:k]
    return out


def probe(extra: dict, calls: list[str], device: str, log) -> dict:
    "One probe process: empty caches, no offline variable but those in `extra`, the `calls` in turn, each in a fresh fork."
    env = child_env(**{"HF_HOME": scratch(), "HF_HUB_CACHE": None, "HF_ENDPOINT": None, "LOCAL_MODELS_DIR": scratch(),
                       **{v: None for v in OFFLINE_VARS}, **extra})
    return run_child([BENCH/"probes.py", "offline", "--order", ",".join(calls), "--device", device,
                      "--timeout", CALL_TIMEOUT], timeout=CALL_TIMEOUT*len(calls) + 120, env=env, log=log)


def run(cfg: dict, device: str, log) -> dict:
    n = cfg["offline_repeats"]
    rows, details = [], {}
    modes = (("no offline variable", {}, cfg["offline_plain_online_repeats"]), ("HF_HUB_OFFLINE=1", {"HF_HUB_OFFLINE": "1"}, n))
    with ThreadPoolExecutor(2 if cfg.get("offline_concurrent") else 1) as pool:
        futures = [pool.submit(probe, extra, order(n, n_plain), device, log) for _, extra, n_plain in modes]
    for (mode, _, _), fut in zip(modes, futures):
        res = fut.result()
        by = {k: [r for r in res["results"] if r["kind"] == k] for k in ("va_ensure", "va_llm", "plain")}
        for k, rs in by.items():
            bad = [r for r in rs if r.get("crashed") or not r.get("error")]
            if bad: raise ChildFailed(f"{mode}: {k} did not fail as expected (it should: the model is not cached): {bad[0]}")
        if not all(r["error"].startswith("ModelNotAvailable") for r in by["va_ensure"] + by["va_llm"]):
            raise ChildFailed(f"{mode}: voice_agent failed with something else than ModelNotAvailable: "
                              f"{[r['error'] for r in by['va_ensure'] + by['va_llm']]}")
        med = {k: median(r["seconds"] for r in rs) for k, rs in by.items()}
        details[mode] = {"median_s": med, "calls": res["results"], "imports_s": res["imports_s"],
                         "errors": {k: rs[0]["error"] for k, rs in by.items()}}
        ten_x = lambda a, b, r: r <= 0.1
        note = "" if mode.startswith("no") else "plain transformers also skips the network here, so both are fast"
        for k, label in (("va_ensure", "ensure_model_exists"), ("va_llm", "OpenSourceLLM()")):
            rows.append(row("1 offline", f"fail on an uncached model, {mode}: {label} vs plain from_pretrained",
                            med[k], med["plain"], "s", label, "from_pretrained", "A/B ≤ 0.1 (≥ 10x faster)", ten_x,
                            note=f"medians of {len(by[k])} vs {len(by['plain'])} calls" + (f"; {note}" if note else "")))
    return {"offline": {"rows": rows, "details": details}}
