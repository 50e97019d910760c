"""Benchmarks 3 and 4: what serving over HTTP costs, and how the server holds up under 16 concurrent clients.

Benchmark 3 serves one loaded model with `create_app(models={"llm": llm})` and uvicorn on the loopback, on a thread of
this process, and calls the very same model object in-process (on a worker thread, as the server's model slot does): the
only difference between A and B is HTTP, the ASGI app and its queue. Greedy decoding and the same `max_new_tokens` on both
sides, so both produce the same tokens (checked). A and B alternate, with a pause between calls.

Benchmark 4 runs the server as a deployment would, in a process of its own (`server.py`), with the clients here.
"""
from __future__ import annotations
import asyncio, json, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from common import (BENCH, ROOT, ab_order, child_env, free_port, median, models_dir, paired_diff, paired_ratio,
                    percentile, row, scratch)
from b2_loading import build_llm

QUERY = "Tell me a short story about a cat who lived in a small house by the sea."
SYSTEM = "You are a helpful assistant."
PAUSE = 0.25  # seconds between measured calls


class Server:
    "The bench's model server in a child process (a process group of its own)."
    def __init__(self, model: str, device: str, max_queue: int, log_dir, timeout: float=300):
        from voice_agent.testing import start_server
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.p = start_server([sys.executable, BENCH/"server.py", "--model", model, "--port", self.port, "--device", device,
                               "--max-queue", max_queue], child_env(HF_HOME=scratch(), HF_HUB_OFFLINE="1"), self.port,
                              log_dir/"server.log", timeout=timeout, cwd=ROOT, group=True)

    def stop(self):
        from voice_agent.testing import stop_server
        stop_server(self.p, grace=15)


def ThreadServer(llm, settings, timeout: float=60):
    "The model server on a thread of this process, serving a model this process already holds (`create_app(models=)`)."
    from voice_agent.model_server import create_app
    from voice_agent.testing import ThreadServer
    return ThreadServer(create_app(settings, models={"llm": llm}), timeout=timeout, access_log=False, lifespan="on")


def gen_body(tokens: int) -> dict:
    return {"query": QUERY, "system_prompt": SYSTEM, "max_new_tokens": tokens, "temperature": 0}


def chat_body(tokens: int, stream: bool) -> dict:
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUERY}],
            "max_tokens": tokens, "temperature": 0, "stream": stream}


def time_stream(client, url: str, tokens: int) -> tuple[float, float, list[str]]:
    "POST a streamed chat completion: (seconds to the first content, seconds to the end, the content pieces)."
    t, first, text = time.perf_counter(), None, []
    with client.stream("POST", url + "/v1/chat/completions", json=chat_body(tokens, True)) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]": continue
            d = json.loads(line[6:])
            if "error" in d: raise RuntimeError(f"stream error: {d['error']}")
            piece = (d.get("choices") or [{}])[0].get("delta", {}).get("content")
            if piece:
                if first is None: first = time.perf_counter() - t
                text.append(piece)
    total = time.perf_counter() - t
    return (first if first is not None else total), total, text


def overhead(cfg, srv, llm, client) -> tuple[list, dict]:
    "Benchmark 3: /generate over HTTP vs in-process generate_reply; streamed first token vs the whole completion."
    n = cfg["serve_tokens"]
    http = lambda: client.post(srv.url + "/generate", json=gen_body(n)).raise_for_status().json()["response"]
    # in-process, on one worker thread as the server's model slot does: the same threading on both sides
    pool = ThreadPoolExecutor(1, thread_name_prefix="bench-llm")
    call = lambda: llm.generate_reply(QUERY, system_prompt=SYSTEM, max_new_tokens=n, temperature=0)
    local = lambda: pool.submit(call).result(timeout=600)
    http(); local()  # warm-up: first calls pay one-off costs on both sides
    floor = []  # the cheapest HTTP round trip, for scale
    for _ in range(20):
        t = time.perf_counter(); client.get(srv.url + "/health/live").raise_for_status(); floor.append(time.perf_counter() - t)
    times, texts = {"A": [], "B": []}, {"A": set(), "B": set()}
    for side in ab_order(cfg["serve_repeats"]):
        time.sleep(PAUSE)
        t = time.perf_counter(); text = (http if side == "A" else local)(); times[side].append(time.perf_counter() - t)
        texts[side].add(text)
    # the fixed cost per request: one generated token, where the model's own time (and its noise) is smallest
    one = {"A": [], "B": []}
    http1 = lambda: client.post(srv.url + "/generate", json=gen_body(1)).raise_for_status().json()["response"]
    local1 = lambda: pool.submit(llm.generate_reply, QUERY, system_prompt=SYSTEM, max_new_tokens=1, temperature=0).result(timeout=600)
    for side in ab_order(2*cfg["serve_repeats"]):
        time.sleep(PAUSE/2)
        t = time.perf_counter(); (http1 if side == "A" else local1)(); one[side].append(time.perf_counter() - t)
    main_thread = []  # the same call from the main thread, for the record
    for _ in range(3):
        time.sleep(PAUSE); t = time.perf_counter(); call(); main_thread.append(time.perf_counter() - t)
    pool.shutdown()
    same = texts["A"] == texts["B"] and len(texts["A"]) == 1
    a, b = median(times["A"]), median(times["B"])
    over, ratio = paired_diff(times["A"], times["B"]), paired_ratio(times["A"], times["B"])
    rows = [row("3 serving", f"/generate over HTTP vs in-process generate_reply ({n} tokens, greedy)", a, b, "s",
                "HTTP", "in-process", "A−B ≤ 5 ms and A/B ≤ 1.10", lambda a, b, r: over <= 0.005 and r <= 1.10, ratio=ratio,
                note=f"overhead (median of paired differences) {1000*over:+.1f} ms; {len(times['A'])} pairs; "
                     f"GET /health/live round trip {1000*median(floor):.1f} ms; "
                     f"same reply both ways: {same}")]
    over1 = paired_diff(one["A"], one["B"])
    rows.append(row("3 serving", "fixed cost per request: /generate of 1 token over HTTP vs in-process", median(one["A"]),
                    median(one["B"]), "s", "HTTP", "in-process", "A−B ≤ 5 ms", lambda a, b, r: over1 <= 0.005,
                    ratio=paired_ratio(one["A"], one["B"]),
                    note=f"overhead (median of paired differences) {1000*over1:+.1f} ms; {len(one['A'])} pairs"))
    # streaming: time to the first content delta vs a whole non-streamed completion, over HTTP both
    chat = lambda: client.post(srv.url + "/v1/chat/completions", json=chat_body(n, False)).raise_for_status().json()
    time_stream(client, srv.url, n)
    ttft, stream_total, whole, stexts, wtexts, npieces = [], [], [], set(), set(), []
    for side in ab_order(cfg["stream_repeats"]):
        time.sleep(PAUSE)
        if side == "A":
            f, tot, pieces = time_stream(client, srv.url, n)
            ttft.append(f); stream_total.append(tot); stexts.add("".join(pieces).strip()); npieces.append(len(pieces))
        else:
            t = time.perf_counter(); c = chat(); whole.append(time.perf_counter() - t)
            wtexts.add(c["choices"][0]["message"]["content"].strip())
    a, b = median(ttft), median(whole)
    words = min(npieces) >= 2  # the streamer sends whole words: a reply without spaces arrives in one piece at the end
    rows.append(row("3 serving", f"/v1/chat/completions: first streamed token vs whole non-streamed reply ({n} tokens)",
                    a, b, "s", "stream TTFT", "non-stream total", "A/B ≤ 0.25", lambda a, b, r: r <= 0.25 if words else None,
                    ratio=paired_ratio(ttft, whole),
                    note=f"streamed reply total {1000*median(stream_total):.0f} ms in {min(npieces)}+ pieces; same text: "
                         f"{stexts == wtexts}" + ("" if words else "; the reply has no word breaks, so no early piece")))
    details = {"tokens": n, "generate": times, "overhead_s": over, "one_token": one, "one_token_overhead_s": over1,
               "http_floor_s": median(floor), "same_reply": same, "reply": next(iter(texts["B"]), ""),
               "in_process_main_thread": main_thread,
               "stream_ttft": ttft, "stream_total": stream_total, "non_stream_total": whole,
               "stream_same_text": stexts == wtexts, "stream_pieces": npieces}
    return rows, details


class HealthPoller:
    "GET /health every 50 ms from a thread of its own (so the load's own client work does not delay it)."
    def __init__(self, url: str):
        import httpx
        self.url, self.polls, self.stop_ = url, [], threading.Event()
        self.client = httpx.Client(timeout=10)
        self.thread = threading.Thread(target=self.poll, daemon=True, name="bench-health")

    def poll(self):
        while not self.stop_.is_set():
            t = time.perf_counter()
            try: ok = self.client.get(self.url + "/health").status_code == 200
            except Exception: ok = False
            self.polls.append({"ok": ok, "s": time.perf_counter() - t})
            self.stop_.wait(0.05)

    def __enter__(self): self.thread.start(); return self
    def __exit__(self, *exc): self.stop_.set(); self.thread.join(15); self.client.close()


async def _load(url: str, clients: int, per_client: int, tokens: int, timeout: float, poll: bool) -> dict:
    "`clients` clients each sending `per_client` /generate requests one after the other; /health polled meanwhile."
    import httpx
    results = []
    conns = [httpx.AsyncClient(timeout=timeout) for _ in range(clients)]  # made before the clock starts
    async def client(c):
        for _ in range(per_client):
            t = time.perf_counter()
            try:
                r = await c.post(url + "/generate", json=gen_body(tokens))
                ok = r.status_code == 200 and isinstance(r.json().get("response"), str)
                results.append({"ok": ok, "status": r.status_code, "s": time.perf_counter() - t,
                                **({} if ok else {"body": r.text[:300]})})
            except Exception as e:
                results.append({"ok": False, "status": None, "s": time.perf_counter() - t, "error": f"{type(e).__name__}: {e}"})
    poller = HealthPoller(url) if poll else None
    try:
        if poller: poller.__enter__()
        t = time.perf_counter()
        await asyncio.gather(*(client(c) for c in conns))
        elapsed = time.perf_counter() - t
    finally:
        if poller: poller.__exit__()
        for c in conns: await c.aclose()
    return {"elapsed": elapsed, "results": results, "health": poller.polls if poller else []}


def idle_health(url: str, n: int=40) -> list[float]:
    "Latencies of /health with nothing else running."
    import httpx
    out = []
    with httpx.Client(timeout=10) as c:
        for _ in range(n):
            t = time.perf_counter(); c.get(url + "/health").raise_for_status(); out.append(time.perf_counter() - t)
            time.sleep(0.02)
    return out


def concurrency(cfg, srv: Server) -> tuple[list, dict]:
    "Benchmark 4: 16 concurrent clients vs one, in rounds that alternate which goes first."
    k, per, single, tokens = cfg["clients"], cfg["requests_per_client"], cfg["single_requests"], cfg["load_tokens"]
    timeout = 600.0
    idle = idle_health(srv.url)
    ones, manys = [], []
    for i in range(cfg["load_rounds"]):
        for phase in (("one", "many") if i % 2 == 0 else ("many", "one")):
            time.sleep(PAUSE)
            if phase == "one": ones.append(asyncio.run(_load(srv.url, 1, single, tokens, timeout, poll=False)))
            else: manys.append(asyncio.run(_load(srv.url, k, per, tokens, timeout, poll=True)))
    thr = lambda ph: sum(r["ok"] for r in ph["results"])/ph["elapsed"]
    thr1, thrn = [thr(p) for p in ones], [thr(p) for p in manys]
    results = [r for p in ones + manys for r in p["results"]]
    sent, lost = len(results), sum(not r["ok"] for r in results)
    health = [h for p in manys for h in p["health"]]
    hp99, ip99 = percentile([h["s"] for h in health], 99), percentile(idle, 99)
    lat = [r["s"] for p in manys for r in p["results"] if r["ok"]]
    rows = [
        row("4 concurrency", f"throughput, {k} concurrent clients vs 1 ({tokens} tokens each)", median(thrn), median(thr1), "req/s",
            f"{k} clients", "1 client", "A/B ≥ 0.9", lambda a, b, r: r >= 0.9, ratio=paired_ratio(thrn, thr1),
            note=f"{len(manys)} rounds of {k}×{per} and 1×{single} requests; one model thread serves them in turn"),
        row("4 concurrency", "lost requests (no 200 answer), all load phases", lost, sent, "requests", "lost", "sent", "0 lost",
            lambda a, b, r: a == 0, note=f"server MODEL_SERVER_MAX_QUEUE={k}"),
        row("4 concurrency", f"GET /health p99 latency during the {k}-client load vs idle", hp99, ip99, "s", "under load",
            "idle", "A ≤ 100 ms", lambda a, b, r: a <= 0.1,
            note=f"{len(health)} polls under load ({sum(not h['ok'] for h in health)} failed), every 50 ms"),
    ]
    errors = [r for r in results if not r["ok"]][:5]
    details = {"clients": k, "requests_per_client": per, "single_requests": single, "tokens": tokens, "rounds": len(manys),
               "throughput_rps": {"one": thr1, "many": thrn}, "elapsed_s": {"one": [p["elapsed"] for p in ones],
               "many": [p["elapsed"] for p in manys]}, "lost": lost, "sent": sent, "errors": errors,
               "request_latency_s": {"p50": percentile(lat, 50), "p99": percentile(lat, 99), "max": max(lat, default=None)},
               "health_s": {"load_p50": percentile([h["s"] for h in health], 50), "load_p99": hp99,
                            "load_max": max((h["s"] for h in health), default=None), "idle_p50": percentile(idle, 50),
                            "idle_p99": ip99, "load_failed": sum(not h["ok"] for h in health)}}
    return rows, details


def run(cfg: dict, device: str, log) -> dict:
    import httpx
    from voice_agent.config import Settings
    from voice_agent.llm import OpenSourceLLM
    path = build_llm(cfg["serve_model"], models_dir())
    settings = Settings.from_env(llm_model=path, stt_model="none", tts_model="none", llm_device=device,
                                 max_queue=cfg["clients"], host="127.0.0.1")
    llm = OpenSourceLLM(path, settings=settings, device=device)
    srv = ThreadServer(llm, settings)
    try:
        with httpx.Client(timeout=600) as client:
            r3, d3 = overhead(cfg, srv, llm, client)
    finally: srv.stop()
    d3["model"] = path
    del llm
    srv = Server(path, device, cfg["clients"], log.parent)
    try: r4, d4 = concurrency(cfg, srv)
    finally: srv.stop()
    return {"serving": {"rows": r3, "details": d3}, "concurrency": {"rows": r4, "details": d4, "lost_requests": d4["lost"]}}
