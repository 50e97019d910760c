"""Benchmark 13: the model server on Ray Serve against the single-process server, on the `local` profile's models.

Side by side, one after the other (never at once: they would share the same cores), same models and settings
(llama.cpp with one thread per LLM replica, so that two replicas on two cores don't fight over them):

- Ingress overhead: `POST /generate` with `max_new_tokens=1`, sequential requests, median latency through Serve's
  HTTP proxy -> the ingress replica (the server's own FastAPI app) -> the LLM replica, against the same route of
  `voice-agent serve`; reported as the difference in ms (goal: at most +10 ms) and as the ratio.
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

N_LATENCY = 20      # sequential 1-token requests per server
CLIENTS, TOKENS = 16, 24  # the throughput load
MAX_QUEUE = 32  # room for every client in both servers: this measures throughput, not refusals


def wait_ready(url: str, proc: subprocess.Popen|None, timeout: float=900) -> float:
    "Seconds until GET /health/ready answers 200."
    import httpx
    t, deadline = time.perf_counter(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None: raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health/ready", timeout=5).status_code == 200: return time.perf_counter() - t
        except httpx.HTTPError: pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready within {timeout:.0f} s")


def latencies(url: str, n: int=N_LATENCY) -> list[float]:
    "Seconds per sequential 1-token /generate (after 3 warm-up requests)."
    import httpx
    out = []
    with httpx.Client(base_url=url, timeout=120) as c:
        for i in range(n + 3):
            t = time.perf_counter()
            r = c.post("/generate", json={"query": f"Say hi {i}.", "max_new_tokens": 1})
            r.raise_for_status()
            if i >= 3: out.append(time.perf_counter() - t)
    return out


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
    "`voice-agent serve --profile local`: cold start, 1-token latencies."
    from common import child_env, free_port, kill_group
    port = free_port()
    with open(log_dir/"ray-single.log", "w") as log:
        t = time.perf_counter()
        p = subprocess.Popen([str(Path(sys.executable).parent/"voice-agent"), "serve", "--profile", "local", "--port", str(port)],
                             env=child_env(HF_HUB_OFFLINE="1", MODEL_SERVER_LLM_THREADS=1, MODEL_SERVER_MAX_QUEUE=MAX_QUEUE), stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, p)
            cold = time.perf_counter() - t
            return {"cold_s": cold, "lat": latencies(url), "rps": throughput(url)}
        finally: kill_group(p, 30)


def on_ray(log_dir: Path) -> dict:
    "The same through Ray Serve, driven from this process: cold start (cluster + replicas), latencies, 1 vs 2 LLM replicas."
    import httpx
    from common import child_env, free_port
    from voice_agent.cli import profile_settings
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
        out = {"cold_s": cold, "cluster_s": cluster_s, "lat": latencies(url), "rps1": throughput(url)}
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
    from common import median, row
    log_dir = Path(log).parent
    log_dir.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    one = single_process(log_dir)
    r = on_ray(log_dir)
    load1 = os.getloadavg()[0]
    ray_ms, one_ms = median(r["lat"])*1000, median(one["lat"])*1000
    (rps1, bad1), (rps2, bad2), (rps_one, bad_one) = r["rps1"], r["rps2"], one["rps"]
    note = f"load average {load0:.1f} -> {load1:.1f}"
    rows = [
        row("ray", "/generate, 1 token: median latency", ray_ms, one_ms, "ms", "Ray Serve (proxy -> ingress -> LLM replica)",
            "single process", "at most +10 ms", lambda a, b, q: a - b <= 10, note=f"+{ray_ms - one_ms:.1f} ms; {note}"),
        row("ray", f"{CLIENTS} concurrent /generate ({TOKENS} tokens): throughput", rps2, rps1, "req/s", "2 LLM replicas",
            "1 LLM replica", "informational (CPU: the replicas share the cores)", lambda a, b, q: None,
            note=f"single process: {rps_one:.2f} req/s; failed: {bad2}, {bad1}, {bad_one}; {note}"),
        row("ray", "cold start to /health/ready", r["cold_s"], one["cold_s"], "s", "serve --engine ray (local cluster + 3 replicas)",
            "serve", "informational", lambda a, b, q: None, note=f"of which starting Ray: {r['cluster_s']:.0f} s; {note}"),
    ]
    details = {"ray_latency_s": r["lat"], "single_latency_s": one["lat"], "rps": {"ray_1": rps1, "ray_2": rps2, "single": rps_one},
               "cold_s": {"ray": r["cold_s"], "ray_cluster": r["cluster_s"], "single": one["cold_s"]}, "load": [load0, load1]}
    if bad1 or bad2 or bad_one: raise RuntimeError(f"requests failed under load: {bad1} (1 replica), {bad2} (2), {bad_one} (single)")
    return {"ray": {"rows": rows, "details": details}}
