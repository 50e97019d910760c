"""What every benchmark shares: the two modes, rows and their targets, medians, child processes with timeouts, the machine.

Nothing here imports torch: the orchestrator (`run.py`) stays light, and every measurement runs in a process of its own.
"""
from __future__ import annotations
import json, os, platform, re, signal, socket, statistics, subprocess, sys, tempfile, time
from dataclasses import dataclass, asdict, field
from pathlib import Path
from typing import Callable

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULT_TAG = "BENCH_RESULT "  # a child process prints its result as one line starting with this

# %% the two modes
MODES = {
    # CI (tests/test_bench.py): proves every benchmark runs and prints its ratios, in about 2-3 minutes on 2 CPU cores.
    # One pair of runs where a pair is enough to form a ratio; the figures worth quoting come from --full.
    "quick": dict(
        offline_repeats=2, offline_plain_online_repeats=1,  # plain transformers retries ~23 s with no route to the Hub
        offline_concurrent=True,  # its two probe processes at once (b1_offline.py)
        load_model=dict(hidden_size=512, num_layers=4), load_repeats=1,  # each repeat is two fresh processes
        serve_model=dict(hidden_size=256, num_layers=4, seed=0), serve_tokens=24, serve_repeats=4, stream_repeats=2,
        clients=16, requests_per_client=1, single_requests=2, load_tokens=4, load_rounds=1,
        stt_sentences=3, stt_repeats=1,
        gguf_tokens=16, gguf_repeats=1, gguf_rounds=3, local_repeats=1, speech_repeats=2, tools_questions=2,
        turn_repeats=1, turn_tokens=24),
    # People: the ~456 MB Qwen2 (hidden 1024, 12 layers), ~30 s of speech, more repeats.
    "full": dict(
        offline_repeats=5, offline_plain_online_repeats=3,
        load_model=dict(hidden_size=1024, num_layers=12), load_repeats=7,
        serve_model=dict(hidden_size=512, num_layers=8, seed=1), serve_tokens=32, serve_repeats=15, stream_repeats=7,
        clients=16, requests_per_client=2, single_requests=6, load_tokens=16, load_rounds=3,
        stt_sentences=None, stt_repeats=3,
        gguf_tokens=64, gguf_repeats=3, gguf_rounds=5, local_repeats=5, speech_repeats=5, tools_questions=20,
        turn_repeats=5, turn_tokens=48),
}

# Timeouts (seconds) of one benchmark's worker process, per mode.
WORKER_TIMEOUT = {"quick": 240, "full": 1800}


@dataclass
class Row:
    "One line of the results table: A (voice_agent's way) against B (the baseline), measured in the same run."
    benchmark: str  # which benchmark
    what: str       # what is compared
    a: float        # measured A (median)
    b: float        # measured B (median)
    unit: str       # unit of A and B: "s", "ms", "MB", "req/s", "requests"
    a_label: str    # what A is
    b_label: str    # what B is
    target: str     # the target, in words
    ok: bool|None   # whether the target is met (informational: never fails the run)
    ratio: float|None = None  # A/B
    note: str = ""  # anything a reader needs to read the row right

    def __post_init__(self):
        if self.ratio is None: self.ratio = self.a/self.b if self.b else None


def row(benchmark, what, a, b, unit, a_label, b_label, target, check: Callable[[float, float, float|None], bool], note="",
        ratio: float|None=None):
    "A `Row` whose `ok` is `check(a, b, ratio)`; `ratio` defaults to a/b (pass `paired_ratio(...)` for alternated runs)."
    if ratio is None: ratio = a/b if b else None
    try:
        ok = check(a, b, ratio)
        ok = None if ok is None else bool(ok)
    except Exception: ok = None
    return Row(benchmark, what, a, b, unit, a_label, b_label, target, ok, ratio, note)


def median(xs) -> float|None:
    "The median, or None for no values."
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def paired_ratio(a: list, b: list) -> float|None:
    "Median of A_i/B_i over runs made side by side (see `ab_order`): a slow drift of the machine cancels out."
    return median([x/y for x, y in zip(a, b) if x is not None and y])


def ratio_interval(a: list, b: list, level: float=0.95, draws: int=4000, seed: int=0) -> tuple[float, float]|None:
    "A bootstrap interval (`level`) of `paired_ratio(a, b)`: the pairs resampled with replacement. An interval holding 1.0 is a tie at this sample size."
    import random
    r = [x/y for x, y in zip(a, b) if x is not None and y]
    if len(r) < 5: return None
    rng = random.Random(seed)
    meds = sorted(median([rng.choice(r) for _ in r]) for _ in range(draws))
    return meds[int(draws*(1 - level)/2)], meds[int(draws*(1 + level)/2) - 1]


def paired_diff(a: list, b: list) -> float|None:
    "Median of A_i - B_i over runs made side by side."
    return median([x - y for x, y in zip(a, b) if x is not None and y is not None])


def percentile(xs, q: float) -> float|None:
    "The q-th percentile (0..100), linear interpolation; None for no values."
    xs = sorted(x for x in xs if x is not None)
    if not xs: return None
    k = (len(xs) - 1)*q/100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo])*(k - lo)


def ab_order(n: int) -> list[str]:
    "n runs of each side as A, B, B, A, A, B, ...: the i-th A and the i-th B run side by side."
    return [("AB" if i % 2 == 0 else "BA")[j] for i in range(n) for j in range(2)]


# %% child processes
def child_env(**extra) -> dict:
    "The environment for a child: this one, quiet, with `extra` applied (a None value removes the variable)."
    env = {**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
           "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PYTHONPATH": os.pathsep.join(
               p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    for k, v in extra.items():
        if v is None: env.pop(k, None)
        else: env[k] = str(v)
    return env


class ChildFailed(RuntimeError):
    "A child process failed, timed out or printed no result."


def run_child(args: list[str], timeout: float, env: dict|None=None, log: Path|None=None) -> dict:
    "Run `python args...`, wait at most `timeout` s (then kill its process group), return the JSON it printed last."
    cmd = [sys.executable, *map(str, args)]
    t = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, env=env or child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try: out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(p)
        out, err = p.communicate()
        raise ChildFailed(f"timed out after {timeout:.0f} s: {' '.join(cmd[1:])}\n{tail(err)}") from None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f: f.write(f"$ {' '.join(cmd)}\n{out}\n{err}\n")
    res = [json.loads(l[len(RESULT_TAG):]) for l in out.splitlines() if l.startswith(RESULT_TAG)]
    if p.returncode != 0 or not res:
        raise ChildFailed(f"exit {p.returncode} after {time.perf_counter()-t:.1f} s: {' '.join(cmd[1:])}\n{tail(err or out)}")
    return res[-1]


def kill_group(p: subprocess.Popen, grace: float=10.0):
    "SIGTERM the child's process group, then SIGKILL it after `grace` seconds."
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        if p.poll() is not None: return
        try: os.killpg(p.pid, sig)
        except (ProcessLookupError, PermissionError): return
        try: p.wait(wait); return
        except subprocess.TimeoutExpired: pass


def tail(s: str|None, n: int=2500) -> str:
    "The last `n` characters of `s`."
    s = s or ""
    return s if len(s) <= n else "…" + s[-n:]


def emit(result: dict):
    "Print a child's result for `run_child`."
    print(RESULT_TAG + json.dumps(result, default=str), flush=True)


from voice_agent.testing import free_port  # noqa: E402,F401  (the benchmarks' children import it from here)


def peak_rss_mb() -> float|None:
    "This process's peak resident memory (VmHWM), in MB."
    try:
        m = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
        if m: return int(m.group(1))/1024
    except OSError: pass
    import resource  # not Linux: ru_maxrss is kB on Linux, bytes on macOS
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r/2**20 if sys.platform == "darwin" else r/1024


def rss_mb() -> float|None:
    "This process's resident memory now (VmRSS), in MB."
    try:
        m = re.search(r"^VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
        return int(m.group(1))/1024 if m else None
    except OSError: return None


# %% the machine
def cpu_model() -> str:
    "The CPU's model name."
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"): return line.split(":", 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()


def machine_info(timeout: float=120) -> dict:
    "CPU, cores, RAM, OS, Python, torch and CUDA devices (torch is asked in a child process)."
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    try: info["cores_usable"] = len(os.sched_getaffinity(0))
    except AttributeError: info["cores_usable"] = os.cpu_count()
    code = ("import json, voice_agent.hardware as h, transformers\n"
            "t = h.torch_info(); import torch\n"
            "print('" + RESULT_TAG + "' + json.dumps({'torch': t, 'memory': h.memory_info(), 'transformers': transformers.__version__,"
            " 'torch_threads': torch.get_num_threads()}))")
    try: info.update(run_child(["-c", code], timeout))
    except Exception as e: info["error"] = f"{type(e).__name__}: {e}"
    return info


def describe_machine(m: dict) -> str:
    "One line about the machine."
    t, mem = m.get("torch") or {}, m.get("memory") or {}
    gpus = ", ".join(f"cuda:{d['index']} {d['name']} ({d['total_gb']} GB)" for d in t.get("devices", [])) or "no CUDA device"
    return (f"{m.get('cpu')}, {m.get('cores_usable')} cores usable ({m.get('cores')} online), {mem.get('total_gb')} GB RAM; "
            f"torch {t.get('version')} ({t.get('torch_threads', m.get('torch_threads'))} threads), "
            f"transformers {m.get('transformers')}; {gpus}; Python {m.get('python')}; "
            f"load average at start {', '.join(f'{x:.2f}' for x in (m.get('load_average') or []))}")


# %% the table
def fmt(v: float|None, unit: str) -> str:
    "A value with its unit, with sensible precision."
    if v is None: return "–"
    if unit == "s":
        return f"{v*1000:.1f} ms" if abs(v) < 1 else f"{v:.2f} s"
    if unit in ("requests",): return f"{v:g}"
    return f"{v:.3g} {unit}" if abs(v) < 100 else f"{v:.0f} {unit}"


def fmt_ratio(r: float|None) -> str:
    "A ratio, with 'x faster' where it is small."
    if r is None: return "–"
    if r == 0: return "0"
    if r < 0.1: return f"{r:.4f} (1/{1/r:.0f})"
    return f"{r:.3f}"


def markdown_table(rows: list[dict]) -> str:
    "The results as a markdown table."
    lines = ["| benchmark | what | A | B | A/B | target | result |", "|---|---|---|---|---|---|---|"]  # A, B: medians
    for r in rows:
        res = "pass" if r["ok"] else ("–" if r["ok"] is None else "**miss**")
        a = f"{r['a_label']}: {fmt(r['a'], r['unit'])}"
        b = f"{r['b_label']}: {fmt(r['b'], r['unit'])}"
        lines.append(f"| {r['benchmark']} | {r['what']} | {a} | {b} | {fmt_ratio(r['ratio'])} | {r['target']} | {res} |")
    return "\n".join(lines)


def as_dicts(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]


def models_dir(default: Path|None=None) -> Path:
    "Where the benchmarks build their models (reused between runs: each build is checked by its marker)."
    return Path(os.environ.get("VOICE_AGENT_BENCH_MODELS") or default or BENCH/"results"/"models")


_LOCAL: dict = {}  # the `local` profile's settings and models, per process

def local_settings():
    "The `local` profile's settings (those `./run serve` serves), made once per process."
    if "settings" not in _LOCAL:
        from voice_agent.profiles import profile_settings
        from voice_agent.config import Settings
        _LOCAL["settings"] = profile_settings("local", Settings.from_env())
    return _LOCAL["settings"]


def local_model(kind: str):
    "The `local` profile's model of `kind` (stt, llm or tts), loaded on first use and shared by the benchmarks of this process."
    if kind not in _LOCAL:
        if kind == "stt": from voice_agent.stt import WhisperSTT as cls
        elif kind == "llm": from voice_agent.llm import OpenSourceLLM as cls
        elif kind == "tts": from voice_agent.tts import Dia2TTS as cls
        else: raise ValueError(f"unknown model kind {kind!r}: use stt, llm or tts")
        _LOCAL[kind] = cls(settings=local_settings())
    return _LOCAL[kind]


_SCRATCH: list[Path] = []

def scratch() -> Path:
    "A fresh temporary folder, removed when this process exits."
    if not _SCRATCH:
        import atexit, shutil
        atexit.register(lambda: [shutil.rmtree(p, ignore_errors=True) for p in _SCRATCH])
    _SCRATCH.append(Path(tempfile.mkdtemp(prefix="voice_agent_bench_")))
    return _SCRATCH[-1]
