"""Benchmark 13: the model server on Ray Serve against the single-process server, on the `local` profile's models.

Side by side, one after the other (never at once: they would share the same cores), same models and settings
(llama.cpp with one thread per LLM replica, so that two replicas on two cores don't fight over them):

- Ingress overhead: `POST /generate` with `max_new_tokens=1`, sequential requests, median latency through Serve's
  HTTP proxy -> the ingress replica (the server's own FastAPI app) -> the LLM replica, against the same route of
  `voice-agent serve`; reported as the difference in ms (goal: at most +10 ms) and as the ratio. Beside it, Ray
  Serve's own floor in the same cluster: a trivial FastAPI ingress answering by itself (1 hop: proxy -> ingress) and
  one awaiting a trivial deployment (2 hops, the shape of ours), against the same trivial app on uvicorn. The four
  servers are asked in turn, one request each per round, so a change of the machine's load hits them alike; what
  ours adds beyond Ray's 2-hop floor is ours, the rest is Ray's.
- Throughput: 16 concurrent `/generate` requests of 24 tokens, requests per second with 2 LLM replicas against 1
  (the same Ray application, scaled in place). On a CPU-only machine expect little gain: the replicas share the
  cores; the point is the mechanism and its cost. On a GPU machine the same rows compare 2 replicas on one GPU.
- Cold start: from the command to `/health/ready` answering 200, for `voice-agent serve --engine ray` (which starts
  a local Ray cluster, then every replica loads its model) against `voice-agent serve`.

    .venv/bin/python bench/run.py --only ray
"""
from __future__ import annotations
import concurrent.futures as cf
import os, signal, subprocess, sys, time
from pathlib import Path

N_LATENCY = 40      # rounds of sequential 1-token requests (one per server a round)
CLIENTS, TOKENS = 16, 24  # the throughput load
MAX_QUEUE = 32  # room for every client in both servers: this measures throughput, not refusals


def wait_ready(url: str, proc: subprocess.Popen|None, timeout: float=900) -> float:
    "Seconds until GET /health/ready answers 200."
    from voice_agent.testing import wait_ready
    return wait_ready(url, proc, timeout=timeout)


def latencies(urls: dict[str, str], n: int=N_LATENCY) -> dict[str, list[float]]:
    "Seconds per sequential 1-token /generate of each server, asked in turn (after 3 warm-up rounds)."
    import httpx
    out, clients = {k: [] for k in urls}, {k: httpx.Client(base_url=u, timeout=120) for k, u in urls.items()}
    try:
        for i in range(n + 3):
            for k, c in clients.items():
                t = time.perf_counter()
                r = c.post("/generate", json={"query": f"Say hi {i}.", "max_new_tokens": 1})
                r.raise_for_status()
                if i >= 3: out[k].append(time.perf_counter() - t)
    finally:
        for c in clients.values(): c.close()
    return out


def bare_app():
    "A trivial FastAPI app: Ray Serve's floor is this behind Serve, against this on uvicorn."
    from fastapi import FastAPI
    app = FastAPI()
    @app.post("/generate")
    async def generate(body: dict) -> dict: return {"response": "hi"}
    return app


def floor_apps() -> dict:
    "Serve applications of trivial work: the ingress answering itself (1 hop), and awaiting a trivial deployment (2 hops)."
    from fastapi import FastAPI
    from ray import serve
    opts = dict(ray_actor_options={"num_cpus": 0}, logging_config={"enable_access_log": False})
    @serve.deployment(**opts)
    class Echo:
        def chat(self, body: dict) -> dict: return {"response": "hi"}
    one, two = FastAPI(), FastAPI()
    @serve.deployment(**opts)
    @serve.ingress(one)
    class OneHop:
        @one.post("/generate")
        async def generate(self, body: dict) -> dict: return {"response": "hi"}
    @serve.deployment(**opts)
    @serve.ingress(two)
    class TwoHops:
        def __init__(self, echo): self.echo = echo
        @two.post("/generate")
        async def generate(self, body: dict) -> dict: return await self.echo.chat.remote(body)
    return {"floor1": OneHop.bind(), "floor2": TwoHops.bind(Echo.bind())}


def uvicorn_bare(log_dir: Path) -> tuple[subprocess.Popen, str]:
    "`bare_app` on uvicorn, in a process group of its own; and its URL once it answers."
    from common import child_env, free_port
    from voice_agent.testing import start_server
    port = free_port()
    p = start_server([sys.executable, "-m", "uvicorn", "--factory", "b13_ray:bare_app", "--app-dir", Path(__file__).parent, "--port", port,
                      "--log-level", "warning"], child_env(), port, log_dir/"ray-bare.log", timeout=120, path="/docs", group=True)
    return p, f"http://127.0.0.1:{port}"


def throughput(url: str) -> tuple[float, int]:
    "Requests per second of CLIENTS concurrent /generate of TOKENS tokens; and how many failed."
    import httpx
    def one(i):
        with httpx.Client(base_url=url, timeout=300) as c:
            return c.post("/generate", json={"query": f"Tell me about the number {i}.", "max_new_tokens": TOKENS}).status_code
    t = time.perf_counter()
    with cf.ThreadPoolExecutor(CLIENTS) as ex: codes = list(ex.map(one, range(CLIENTS)))
    return CLIENTS/(time.perf_counter() - t), sum(c != 200 for c in codes)


def single_process(log_dir: Path) -> dict:
    "`voice-agent serve --profile local`: cold start, throughput; it stays up (idle) for the latencies asked in turn with Ray's."
    from common import child_env, free_port
    from voice_agent.testing import start_server, voice_agent_cmd
    port = free_port()
    t = time.perf_counter()
    p = start_server(voice_agent_cmd("serve", "--profile", "local", "--port", port),
                     child_env(HF_HUB_OFFLINE="1", MODEL_SERVER_LLM_THREADS=1, MODEL_SERVER_MAX_QUEUE=MAX_QUEUE), port,
                     log_dir/"ray-single.log", timeout=900, group=True)
    url = f"http://127.0.0.1:{port}"
    return {"proc": p, "url": url, "cold_s": time.perf_counter() - t, "rps": throughput(url)}


def on_ray(log_dir: Path, single_url: str) -> dict:
    "The same through Ray Serve, driven from this process: cold start (cluster + replicas); 1-token latencies in turn with the single process and Ray's floor; 1 vs 2 LLM replicas."
    import httpx
    from common import free_port, kill_group
    from voice_agent.profiles import profile_settings
    from voice_agent.config import Settings
    from voice_agent.ray_serve import APP, NAMESPACE, LocalCluster, build_app, reserved_cpus
    os.environ.update(HF_HUB_OFFLINE="1")
    s = profile_settings("local", Settings.from_env(llm_threads=1, port=free_port(), ray_replicas="1", max_queue=MAX_QUEUE))
    url = f"http://127.0.0.1:{s.port}"
    t = time.perf_counter()
    cluster = LocalCluster(reserved_cpus(s, {"llm": 2}))
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))  # run.py's timeout: still stop the cluster
    try:
        address = cluster.start()
        cluster_s = time.perf_counter() - t
        import ray
        from ray import serve
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": s.port}, proxy_location="HeadOnly")
        serve.run(build_app(s), name=APP, route_prefix="/", blocking=False)
        wait_ready(url, None)
        cold = time.perf_counter() - t
        floors = floor_apps()
        for name, app in floors.items(): serve.run(app, name=name, route_prefix=f"/{name}", blocking=False)
        bare, bare_url = uvicorn_bare(log_dir)
        try: lat = latencies({"ray": url, "single": single_url, "floor1": url + "/floor1", "floor2": url + "/floor2", "bare": bare_url})
        finally: kill_group(bare, 10)
        for name in floors: serve.delete(name)  # idle, but not during the throughput runs
        out = {"cold_s": cold, "cluster_s": cluster_s, "lat": lat, "rps1": throughput(url)}
        serve.run(build_app(s, {"llm": 2}), name=APP, route_prefix="/", blocking=False)  # scale the LLM in place
        deadline = time.monotonic() + 600
        while httpx.get(url + "/health", timeout=10).json()["models"]["llm"].get("ready_replicas", 0) < 2:
            if time.monotonic() > deadline: raise TimeoutError("the second LLM replica did not become ready")
            time.sleep(0.5)
        out["rps2"] = throughput(url)
        return out
    finally:
        try:
            if "ray" in sys.modules and sys.modules["ray"].is_initialized():
                from ray import serve
                serve.delete(APP); sys.modules["ray"].shutdown()
        finally: cluster.stop()


def run(cfg: dict, device: str, log) -> dict:
    from common import kill_group, median, paired_diff, row
    log_dir = Path(log).parent
    log_dir.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    one = single_process(log_dir)
    try: r = on_ray(log_dir, one["url"])
    finally: kill_group(one["proc"], 30)
    load1 = os.getloadavg()[0]
    ms = {k: median(v)*1000 for k, v in r["lat"].items()}
    (rps1, bad1), (rps2, bad2), (rps_one, bad_one) = r["rps1"], r["rps2"], one["rps"]
    note = f"load average {load0:.1f} -> {load1:.1f}"
    lat = r["lat"]  # the differences are medians of the differences within each round (the servers were asked in turn)
    extra = lambda a, b: paired_diff(lat[a], lat[b])*1000
    ours, floor, hop = extra("ray", "single"), extra("floor2", "bare"), extra("floor1", "bare")
    beyond = paired_diff([a - b for a, b in zip(lat["ray"], lat["single"])], [a - b for a, b in zip(lat["floor2"], lat["bare"])])*1000
    rows = [
        row("ray", "/generate, 1 token: median latency", ms["ray"], ms["single"], "ms", "Ray Serve (proxy -> ingress -> LLM replica)",
            "single process", "at most +10 ms", lambda a, b, q: ours <= 10,
            note=f"{ours:+.1f} ms, of which Ray's own 2-hop floor (next row) {floor:+.1f} ms, ours beyond it {beyond:+.1f} ms; {note}"),
        row("ray", "Ray Serve's floor: trivial FastAPI ingress awaiting a trivial deployment", ms["floor2"], ms["bare"], "ms",
            "Serve (proxy -> ingress -> deployment)", "the same app on uvicorn", "informational: +10 ms above is out of reach when this exceeds it",
            lambda a, b, q: None, note=f"{floor:+.1f} ms; 1 hop (the ingress answering itself, {ms['floor1']:.1f} ms): {hop:+.1f} ms; {note}"),
        row("ray", f"{CLIENTS} concurrent /generate ({TOKENS} tokens): throughput", rps2, rps1, "req/s", "2 LLM replicas",
            "1 LLM replica", "informational (CPU: the replicas share the cores)", lambda a, b, q: None,
            note=f"single process: {rps_one:.2f} req/s; failed: {bad2}, {bad1}, {bad_one}; {note}"),
        row("ray", "cold start to /health/ready", r["cold_s"], one["cold_s"], "s", "serve --engine ray (local cluster + 3 replicas)",
            "serve", "informational", lambda a, b, q: None, note=f"of which starting Ray: {r['cluster_s']:.0f} s; {note}"),
    ]
    details = {"latency_s": r["lat"], "rps": {"ray_1": rps1, "ray_2": rps2, "single": rps_one},
               "cold_s": {"ray": r["cold_s"], "ray_cluster": r["cluster_s"], "single": one["cold_s"]}, "load": [load0, load1]}
    if bad1 or bad2 or bad_one: raise RuntimeError(f"requests failed under load: {bad1} (1 replica), {bad2} (2), {bad_one} (single)")
    return {"ray": {"rows": rows, "details": details}}
