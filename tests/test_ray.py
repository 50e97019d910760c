"""The model server on Ray Serve for real: `voice-agent serve --engine ray --profile tiny --llm-replicas 2`, which starts
its own local Ray cluster (loopback only, its own token) with 2 LLM replicas, 1 STT and 1 TTS, all on the tiny profile's
models. Beside it, on the same cluster, a second application whose fake LLM fails on cue (dies, hangs, tells its key).
It must pass with an empty home directory: `HOME=$(mktemp -d) python -m pytest tests/test_ray.py`.

One cluster for the whole module (starting Ray and four replicas costs minutes on 2 busy cores); the tests run in
file order and the last one stops it with SIGTERM, checking that no Ray process of it is left. Marked `ray`:
`pytest -m "not ray"` leaves it out. Needs the `ray` extra (`pip install 'voice_agent[ray]'`, which ./run installs).
"""
import concurrent.futures as cf
import json, os, re, signal, subprocess, sys, threading, time
from pathlib import Path
from types import SimpleNamespace

import httpx, pytest

from suite import BIN, ROOT, server_env, speak
from voice_agent.testing import ServerFailed, free_port, stop_server, wait_ready as server_ready

from voice_agent.ray_serve import LOCAL_RAY_ENV
os.environ.update(LOCAL_RAY_ENV)  # before Ray is imported: this process joins the loopback, token-authenticated cluster
ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'voice_agent[ray]'")
psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.ray
SENTENCE = "The quick brown fox jumps over the lazy dog."  # as tests/test_server_socket.py transcribes
STARTUP_TIMEOUT = float(os.environ.get("VOICE_AGENT_RAY_STARTUP_TIMEOUT", 900))


def get(url: str, path: str, **kw) -> httpx.Response: return httpx.get(url + path, timeout=30, **kw)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The CLI on a free port, with a local Ray cluster; this test process joins the cluster too (to kill a replica).
    Its LLM queue holds 32: the 32-request test sends 18 LLM calls at once, one more than the default bound
    (2 running + MODEL_SERVER_MAX_QUEUE=15 waiting) admits, and it tests Ray's routing, not admission."""
    d = tmp_path_factory.mktemp("ray")
    port, log = free_port(), d/"serve.log"
    t0 = time.perf_counter()
    with open(log, "wb") as f:
        proc = subprocess.Popen([str(BIN/"voice-agent"), "serve", "--engine", "ray", "--profile", "tiny", "--llm-replicas", "2",
                                 "--port", str(port)], cwd=ROOT, env=server_env(MODEL_SERVER_MAX_QUEUE=32), stdout=f, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try: server_ready(url, proc, timeout=STARTUP_TIMEOUT, log=log)
    except ServerFailed as e:  # not start_server: a cluster that is stopping gets 120 s for its Ray processes, not 5
        stop_server(proc, grace=120); pytest.fail(str(e))
    ready_s = time.perf_counter() - t0
    m = re.search(r"Ray: cluster at (\S+), session (\S+)", log.read_text())
    assert m, log.read_text()[-4000:]
    token = re.search(r"its token in (\S+)\)", log.read_text())
    assert token, log.read_text()[-4000:]
    os.environ["RAY_AUTH_TOKEN_PATH"] = token.group(1)  # the cluster's own token: ~/.ray has none
    ray.init(address=m.group(1), log_to_driver=False)
    print(f"\nserve --engine ray: ready after {ready_s:.0f} s (load {os.getloadavg()[0]:.1f})")
    c = SimpleNamespace(url=url, proc=proc, log=log, gcs=m.group(1), session=m.group(2), speech=speak(SENTENCE, d/"fox.wav"),
                        token=Path(token.group(1)))
    yield c
    if ray.is_initialized(): ray.shutdown()
    stop_server(proc, grace=180)
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)  # its file is gone with the cluster


def llm_health(c) -> dict: return get(c.url, "/health").json()["models"]["llm"]


def test_health_lists_every_replica(cluster):
    # ready means one replica of each model; the second LLM replica may still be loading: wait for all of them
    want, deadline = {"llm": 2, "stt": 1, "tts": 1}, time.monotonic() + STARTUP_TIMEOUT
    while True:
        h = get(cluster.url, "/health").json()
        if all(h["models"][k].get("ready_replicas") == n for k, n in want.items()) or time.monotonic() > deadline: break
        time.sleep(1)
    assert h["status"] == "ok", h
    for kind, n in (("llm", 2), ("stt", 1), ("tts", 1)):
        m = h["models"][kind]
        assert m["state"] == "ready" and m["ready_replicas"] == n and len(m["replicas"]) == n, (kind, m)
        for r in m["replicas"]:
            assert r["state"] == "ready" and r["device"] == "cpu" and r["loading_strategy"], r
            assert r["actor"].startswith(f"SERVE_REPLICA::voice_agent#{kind}#") and r["node"] == "127.0.0.1", r
            assert any(a["status"] == "ok" for a in r["attempts"]), r["attempts"]  # the recorded chain, from each replica
    assert get(cluster.url, "/health/ready").json()["models"] == {"llm": "ready", "stt": "ready", "tts": "ready"}


def one_request(c, kind: str, i: int, max_tokens: int=4) -> tuple[str, int, str]:
    "One request of `kind`: (kind, status, what came back or the error)."
    with httpx.Client(base_url=c.url, timeout=300) as h:
        if kind == "generate":
            r = h.post("/generate", json={"query": f"Say something about {i}.", "max_new_tokens": max_tokens})
            return kind, r.status_code, r.text
        if kind == "stream":
            with h.stream("POST", "/v1/chat/completions", json={"messages": [{"role": "user", "content": f"Count to {i}."}],
                                                                "stream": True, "max_tokens": max_tokens}) as r:
                body = r.read().decode()
            ok = r.status_code == 200 and body.rstrip().endswith("data: [DONE]") and '"error"' not in body
            return kind, r.status_code if ok or r.status_code != 200 else 599, body
        if kind == "stt":
            r = h.post("/stt", files={"audio": ("fox.wav", c.speech.read_bytes(), "audio/wav")})
            return kind, r.status_code, r.text
        r = h.post("/tts", json={"text": f"Number {i}."})
        ok = r.status_code != 200 or (r.headers["content-type"] == "audio/wav" and r.content[:4] == b"RIFF")
        return kind, r.status_code if ok else 598, r.text[:200] if r.status_code != 200 else f"{len(r.content)} bytes"


def test_32_concurrent_mixed_requests(cluster):
    before = {r["replica"]: r["served"] for r in llm_health(cluster)["replicas"]}
    kinds = ["generate"]*10 + ["stream"]*8 + ["stt"]*7 + ["tts"]*7
    t = time.perf_counter()
    with cf.ThreadPoolExecutor(32) as ex: results = list(ex.map(lambda a: one_request(cluster, *a), [(k, i) for i, k in enumerate(kinds)]))
    bad = [r for r in results if r[1] != 200]
    print(f"\n32 mixed requests through the Ray ingress: {time.perf_counter() - t:.1f} s (load {os.getloadavg()[0]:.1f})")
    assert not bad, bad[:5]
    assert all("fox" in json.loads(r[2])["text"].lower() for r in results if r[0] == "stt"), [r[2] for r in results if r[0] == "stt"]
    after = {r["replica"]: r["served"] for r in llm_health(cluster)["replicas"]}
    assert all(after[k] > before.get(k, 0) for k in after), (before, after)  # both LLM replicas took a share


def test_openai_client_streams_through_the_ingress(cluster):
    from openai import OpenAI
    client = OpenAI(base_url=cluster.url + "/v1", api_key="unused")
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello!"}],
                                                 stream=True, max_tokens=6))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert sum(bool(c.choices and c.choices[0].delta.content) for c in chunks) >= 1
    assert chunks[-1].choices[0].finish_reason in ("length", "stop"), chunks[-1]


def test_llm_replica_killed_mid_load(cluster):
    "Kill one LLM replica's actor while 16 requests are in flight: each is answered (by the other replica) or refused clearly (those the victim held); then Serve replaces it."
    victim = llm_health(cluster)["replicas"][0]
    kinds = ["generate", "stream"]*8
    with cf.ThreadPoolExecutor(16) as ex:
        futs = [ex.submit(one_request, cluster, k, i, 128) for i, k in enumerate(kinds)]
        deadline = time.monotonic() + 30
        while (seen := {r["replica"]: r["in_flight"] for r in llm_health(cluster)["replicas"]}).get(victim["replica"], 0) < 2 \
                and time.monotonic() < deadline: time.sleep(0.05)
        t_kill = time.perf_counter()
        ray.kill(ray.get_actor(victim["actor"], namespace="serve"), no_restart=True)
        results = [f.result() for f in futs]
    answered = [r for r in results if r[1] == 200]
    # a clear refusal: a 500 saying the replica died while it held the call (not retried: it may be what killed it),
    # or the same in an error event of a stream; a 503 naming the replicas when none could take it
    refused = [r for r in results if (r[1] in (500, 503) and "replica" in json.loads(r[2])["error"]["message"])
               or (r[1] == 599 and "died while it ran" in r[2])]
    print(f"\nkilled {victim['replica']} with {seen.get(victim['replica'])} calls in it: {len(answered)} answered, {len(refused)} clear refusals, "
          f"{len(results) - len(answered) - len(refused)} lost (load {os.getloadavg()[0]:.1f})")
    assert len(answered) + len(refused) == len(results), [r for r in results if r not in answered + refused][:3]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        h = llm_health(cluster)
        ready = [r["replica"] for r in h["replicas"] if r["state"] == "ready"]
        if len(ready) == 2 and victim["replica"] not in ready: break
        time.sleep(1)
    else: pytest.fail(f"the killed replica was not replaced: {json.dumps(h, indent=1)[:3000]}")
    print(f"replaced in {time.perf_counter() - t_kill:.0f} s; /health: "
          + ", ".join(f"{r['replica']}={r['state']}" for r in h["replicas"]))
    assert {r["state"] for r in h["replicas"] if r["replica"] == victim["replica"]} <= {"lost"}  # shown as lost, or already dropped
    assert one_request(cluster, "generate", 0)[1] == 200


FAULT_KEY, FAULT_TIMEOUT = "fault-key-5b1e", 6.0  # the faults application's API key, and its model call timeout in seconds


def fault_llm(settings):
    "The faults application's LLM (pickled by value: the replicas can't import this file): FakeLLM, but the message `die` ends its replica's process at once (as the kernel's OOM killer would), `hang` never answers, and `key?` is answered with the API key the replica was given."
    from voice_agent.server.fakes import FakeLLM
    class FaultLLM(FakeLLM):
        model_name = "fault-llm"
        def _cue(self, messages):
            text = messages[-1]["content"]
            if text == "die": os._exit(137)
            if text == "hang": time.sleep(3600)
            return [*messages[:-1], {"role": "user", "content": f"key={settings.api_key!r}"}] if text == "key?" else messages
        def chat(self, messages, **kw): return super().chat(self._cue(messages), **kw)
        def stream_chat(self, messages, **kw): return super().stream_chat(self._cue(messages), **kw)
    return FaultLLM()


def fault_replicas(f) -> list[dict]:
    return get(f.url, "/health", headers=f.auth).json()["models"]["llm"].get("replicas") or []


def wait_ready(f, n: int=2, timeout: float=300) -> list[dict]:
    "The faults application's LLM replicas once `n` are ready."
    deadline = time.monotonic() + timeout
    while len(ready := [r for r in fault_replicas(f) if r["state"] == "ready"]) < n:
        if time.monotonic() > deadline: pytest.fail(f"{len(ready)} of {n} fault-llm replicas ready after {timeout:.0f} s: {fault_replicas(f)}")
        time.sleep(1)
    return ready


def alive(pid: int) -> bool:
    try: return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess: return False


@pytest.fixture(scope="module")
def faults(cluster):
    """A second application on the cluster, at /faults: 2 replicas of `fault_llm` (no STT, no TTS, no CPU reserved), an
    API key, and a call timeout of FAULT_TIMEOUT seconds."""
    from ray import cloudpickle, serve
    from voice_agent.config import Settings
    from voice_agent.ray_serve import build_app
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    s = Settings(llm_model="fault-llm", stt_model="none", tts_model="none", ray_cpus="0", api_key=FAULT_KEY)
    t = time.perf_counter()
    serve.run(build_app(s, {"llm": 2}, loaders={"llm": fault_llm}, timeout=FAULT_TIMEOUT), name="faults", route_prefix="/faults",
              blocking=False)
    f = SimpleNamespace(url=cluster.url + "/faults", auth={"Authorization": f"Bearer {FAULT_KEY}"}, serve=serve)
    wait_ready(f)
    print(f"\nthe faults application: 2 replicas ready after {time.perf_counter() - t:.0f} s")
    yield f
    if ray.is_initialized(): serve.delete("faults")  # (after the last test, the cluster is gone)


def ask(f, text: str, timeout: float=60, **kw) -> httpx.Response:
    return httpx.post(f.url + "/generate", json={"query": text, "max_new_tokens": 8}, headers=kw.pop("headers", f.auth), timeout=timeout)


def test_model_replicas_never_get_the_api_key(faults):
    assert ask(faults, "key?", headers={}).status_code == 401  # the ingress holds the key, and checks it
    r = ask(faults, "key?")
    assert r.status_code == 200 and r.json()["response"] == "echo: key=None", r.text  # the replica's settings have none


def test_a_replica_that_dies_in_a_call_is_not_retried(faults):
    "A request that kills its replica (os._exit: what the OOM killer does) is answered 500 at once, not sent on to kill the next one."
    pids = {r["pid"] for r in wait_ready(faults)}
    t = time.perf_counter()
    r = ask(faults, "die")
    took = time.perf_counter() - t
    time.sleep(3)  # a retry would be under way by now
    dead = {p for p in pids if not alive(p)}
    print(f"\n'die': {r.status_code} after {took:.1f} s; {len(dead)} of {len(pids)} replicas died")
    assert r.status_code == 500, r.text
    err = r.json()["error"]
    assert err["code"] == "replica_died" and "died while it ran" in err["message"] and "not retried" in err["message"], err
    assert len(dead) == 1, (pids, dead)
    r = ask(faults, "still here?")  # the other replica serves at once
    assert r.status_code == 200 and r.json()["response"] == "echo: still here?", r.text


def test_a_hung_replica_answers_504_and_is_replaced(faults):
    "A call no replica answers within the timeout: 504, awaited (/generate), blocking a thread (RemoteModel._call) and streamed; then Serve replaces the hung replica."
    from voice_agent.ray_serve import RemoteModel
    from voice_agent.server.errors import ApiError
    wait_ready(faults)
    t = time.perf_counter()
    r = ask(faults, "hang", timeout=FAULT_TIMEOUT + 60)
    took = time.perf_counter() - t
    print(f"\n'hang' through /generate: {r.status_code} after {took:.1f} s")
    assert r.status_code == 504 and r.json()["error"]["code"] == "replica_timeout", r.text
    assert f"did not answer within {FAULT_TIMEOUT:g} s" in r.json()["error"]["message"], r.text
    assert took < FAULT_TIMEOUT + 30, took
    m = RemoteModel("llm", faults.serve.get_deployment_handle("llm", app_name="faults"), timeout=FAULT_TIMEOUT)
    with pytest.raises(ApiError) as e: m.chat([{"role": "user", "content": "hang"}])  # the blocking path the realtime route uses
    assert e.value.status == 504, e.value.message
    with httpx.stream("POST", faults.url + "/v1/chat/completions", headers=faults.auth, timeout=FAULT_TIMEOUT + 60,
                      json={"messages": [{"role": "user", "content": "hang"}], "stream": True}) as s: body = s.read().decode()
    assert f"did not answer within {FAULT_TIMEOUT:g} s" in body, (s.status_code, body[:500])
    # each replica hung in a call fails Serve's health check (every 10 s, 3 times) once the call has run FAULT_TIMEOUT s, and is replaced
    hung = {r["replica"]: r["pid"] for r in fault_replicas(faults) if r["state"] == "ready" and r["in_flight"]}
    assert hung, fault_replicas(faults)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        ready = {r["replica"] for r in fault_replicas(faults) if r["state"] == "ready"}
        if len(ready) == 2 and not ready & set(hung) and not any(alive(p) for p in hung.values()): break
        time.sleep(1)
    else: pytest.fail(f"the hung replicas {sorted(hung)} were not replaced: {fault_replicas(faults)}")
    print(f"replaced {len(hung)} hung replica(s) {time.perf_counter() - t:.0f} s after the first hang")
    r = ask(faults, "after")
    assert r.status_code == 200 and r.json()["response"] == "echo: after", r.text


def test_joining_a_cluster_without_its_token_says_how(cluster, tmp_path):
    "`serve --engine ray` with RAY_ADDRESS of a cluster that wants a token, and none given (an empty home): exit 3 with what to set."
    env = {k: v for k, v in server_env(RAY_ADDRESS=cluster.gcs, HOME=str(tmp_path)).items() if not k.startswith("RAY_AUTH")}
    t = time.perf_counter()
    r = subprocess.run([str(BIN/"voice-agent"), "serve", "--engine", "ray", "--profile", "tiny", "--port", str(free_port())],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    print(f"\nwithout the token: exit {r.returncode} after {time.perf_counter() - t:.0f} s")
    assert r.returncode == 3, out[-3000:]
    assert "wants its authentication token" in out and "RAY_AUTH_TOKEN_PATH" in out and "RAY_AUTH_MODE=token" in out, out[-3000:]
    assert not (tmp_path/".ray").exists()


def test_sigterm_stops_everything_it_started(cluster):
    ours = [p for p in psutil.Process(cluster.proc.pid).children(recursive=True)]
    assert any("gcs_server" in " ".join(p.cmdline()) for p in ours if p.is_running())  # the cluster is its own
    assert cluster.token.exists() and cluster.token.stat().st_mode & 0o777 == 0o600, cluster.token  # its token, this user's only
    if ray.is_initialized(): ray.shutdown()
    t = time.perf_counter()
    cluster.proc.send_signal(signal.SIGTERM)
    assert cluster.proc.wait(180) == 0, cluster.log.read_text()[-4000:]
    deadline = time.monotonic() + 30
    while (left := [p for p in ours if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]) and time.monotonic() < deadline: time.sleep(0.5)
    print(f"\nstopped in {time.perf_counter() - t:.1f} s, {len(ours)} Ray processes ended")
    assert not left, [(p.pid, p.name()) for p in left]
    with pytest.raises(httpx.HTTPError): get(cluster.url, "/health/live")
    assert not cluster.token.parent.exists(), list(cluster.token.parent.iterdir())  # its temp dir, token included, is gone
