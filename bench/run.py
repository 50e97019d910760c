"""Run every voice_agent benchmark; print a markdown table and write the results as JSON.

    .venv/bin/python bench/run.py --quick     # CI: small models, few repeats (a few minutes on 2 CPU cores)
    .venv/bin/python bench/run.py --full      # people: the ~456 MB Qwen2, ~30 s of speech, more repeats

Each figure is a ratio of two things measured in the same run (medians of repeated runs). Targets are informational: the
run fails (exit 1) only when a benchmark errors or the server loses a request. Each benchmark runs in a worker process
of its own with a timeout; measurements whose process state matters (imports, peak memory) run in fresh processes. The
benchmarks of the `local` profile's models (gguf, local, tools, speech_stream) share one worker process, so its imports
and models are loaded once (`common.local_model`); each still reports its own rows, error and seconds.
"""
from __future__ import annotations
import argparse, json, os, shutil, sys, time, traceback
from datetime import datetime
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (BENCH, MODES, WORKER_TIMEOUT, ChildFailed, as_dicts, child_env, describe_machine, emit, machine_info,
                    markdown_table, run_child)

# worker name -> (module, the benchmarks it reports)
WORKERS = {"offline": ("b1_offline", ["offline"]), "loading": ("b2_loading", ["loading"]),
           "serving": ("b3_serving", ["serving", "concurrency"]), "stt": ("b5_stt", ["stt"]), "turn": ("b6_turn", ["turn"]),
           "stt_peer": ("b7_stt_peer", ["stt_peer"]), "gguf": ("b8_gguf", ["gguf"]), "local": ("b9_local", ["local"]),
           "tools": ("b10_tools", ["tools"]), "speech_stream": ("b11_speech_stream", ["speech_stream"]),
           "realtime": ("b12_realtime", ["realtime"]), "ray": ("b13_ray", ["ray"]), "pipecat": ("b16_pipecat", ["pipecat"]),
           "wyoming": ("b15_wyoming", ["wyoming"])}
BENCHMARKS = [b for _, bs in WORKERS.values() for b in bs]
# workers that run one after the other in one process, sharing its imports and models
SHARED_PROCESS = {"gguf": "local models", "local": "local models", "tools": "local models", "speech_stream": "local models"}
# run only when named in --only (stt_peer installs a peer server in a venv of its own on its first run)
OPT_IN = {"stt_peer", "realtime", "ray", "wyoming", "pipecat"}  # realtime, pipecat: minutes of questions spoken at real-time pace; ray: a local Ray cluster
MIN_TIMEOUT = {"stt_peer": 900, "realtime": 900, "ray": 1500, "wyoming": 1200, "pipecat": 900}  # seconds: that install, then two servers; realtime: ~40 spoken turns; pipecat: 3 x 12 spoken turns, Pipecat's replies played


def plan(only: list[str]) -> list[list[str]]:
    "The worker processes to start, in order: each a list of workers (those of one `SHARED_PROCESS` group go together)."
    out, groups = [], {}
    for w in only:
        g = SHARED_PROCESS.get(w)
        if g is None: out.append([w])
        elif g in groups: groups[g].append(w)
        else: groups[g] = [w]; out.append(groups[g])
    return out


def worker(a):
    "Inside a worker process: run its benchmark modules in turn and print their results (a failing one reports its error)."
    import importlib, logging
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s - %(levelname)s - %(message)s")
    results = {}
    for name in a.worker.split(","):
        t = time.perf_counter()
        try:
            out = importlib.import_module(WORKERS[name][0]).run(MODES[a.mode], a.device, Path(a.log))
            for b in out.values(): b.update(rows=as_dicts(b["rows"]), error=None)
        except Exception as e:
            traceback.print_exc()
            err = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
            out = {b: {"rows": [], "details": {}, "error": err} for b in WORKERS[name][1]}
        for b in out.values(): b["seconds"] = round(time.perf_counter() - t, 1)
        results.update(out)
    emit(results)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_mutually_exclusive_group()
    m.add_argument("--quick", dest="mode", action="store_const", const="quick", help="small sizes, few repeats (CI; the default)")
    m.add_argument("--full", dest="mode", action="store_const", const="full", help="the ~456 MB model, ~30 s of speech, more repeats")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--only", default="", help=f"comma-separated workers to run, of: {', '.join(WORKERS)} "
                   f"(default: all but {', '.join(sorted(OPT_IN))})")
    p.add_argument("--out", default=None, help="the JSON file to write (default: bench/results/<mode>-<time>.json, "
                   "copied to bench/results/<mode>.json)")
    p.add_argument("--models-dir", default=None, help="where generated models are built and reused "
                   "(default: bench/results/models)")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # comma-separated workers, run in this process
    p.add_argument("--log", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker and (bad := [w for w in a.worker.split(",") if w not in WORKERS]):
        p.error(f"unknown --worker {bad}: use {', '.join(WORKERS)}")
    a.mode = a.mode or "quick"
    return a


def main(argv=None) -> int:
    a = parse(argv)
    if a.worker:
        worker(a); return 0
    started, t0 = datetime.now(), time.perf_counter()
    stamp = started.strftime("%Y%m%d-%H%M%S")
    out = Path(a.out) if a.out else BENCH/"results"/f"{a.mode}-{stamp}.json"
    logs = out.parent/"logs"/out.stem
    shutil.rmtree(logs, ignore_errors=True); logs.mkdir(parents=True, exist_ok=True)
    if a.models_dir: os.environ["VOICE_AGENT_BENCH_MODELS"] = str(Path(a.models_dir).resolve())
    only = [w.strip() for w in a.only.split(",") if w.strip()] or [w for w in WORKERS if w not in OPT_IN]
    if unknown := [w for w in only if w not in WORKERS]:
        print(f"unknown --only {unknown}: use {', '.join(WORKERS)}", file=sys.stderr); return 2
    say = lambda msg: print(msg, file=sys.stderr, flush=True)
    say(f"voice_agent benchmarks, {a.mode} mode, device {a.device}; logs in {logs}")
    machine = machine_info()
    say("machine: " + describe_machine(machine))
    results, steps = {}, plan(only)
    for i, names in enumerate(steps, 1):
        t, label = time.perf_counter(), ",".join(names)
        say(f"[{i}/{len(steps)}] {label} ...")
        log = logs/f"{'+'.join(names)}.log"
        try:
            res = run_child([BENCH/"run.py", "--worker", label, "--" + a.mode, "--device", a.device, "--log", log],
                            sum(max(WORKER_TIMEOUT[a.mode], MIN_TIMEOUT.get(n, 0)) for n in names), child_env(), log)
            if len(names) == 1:  # the whole process, imports included
                for r in res.values(): r["seconds"] = round(time.perf_counter() - t, 1)
            else: say("    " + ", ".join(f"{b} {r['seconds']:.1f} s" for b, r in res.items()))
            results.update(res)
            for b, r in res.items():
                if r["error"]: say(f"    {b} failed: {r['error'].splitlines()[0]}")
        except (ChildFailed, OSError, ValueError) as e:
            for n in names:
                for b in WORKERS[n][1]:
                    results[b] = {"rows": [], "details": {}, "error": str(e), "seconds": round(time.perf_counter() - t, 1)}
            say(f"    failed: {str(e).splitlines()[0]}")
        say(f"    {time.perf_counter() - t:.1f} s")
    rows = [r for b in BENCHMARKS if b in results for r in results[b]["rows"]]
    errors = {b: r["error"] for b, r in results.items() if r["error"]}
    lost = results.get("concurrency", {}).get("lost_requests")
    elapsed = time.perf_counter() - t0
    doc = {"mode": a.mode, "device": a.device, "started": started.isoformat(timespec="seconds"), "seconds": round(elapsed, 1),
           "machine": machine, "load_average_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
           "machine_line": describe_machine(machine), "rows": rows, "benchmarks": results,
           "errors": errors, "lost_requests": lost, "ok": not errors and not lost}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    if not a.out: shutil.copyfile(out, out.parent/f"{a.mode}.json")
    print(f"## voice_agent benchmarks ({a.mode}, {started:%Y-%m-%d %H:%M})\n")
    print(f"Machine: {describe_machine(machine)}\n")
    print(markdown_table(rows))
    if errors:
        print("\nErrors:")
        for b, e in errors.items(): print(f"- {b}: {e.splitlines()[0]}")
    missed = [r for r in rows if r["ok"] is False]
    print(f"\n{len(rows)} rows, {sum(bool(r['ok']) for r in rows)} on target, {len(missed)} missed (informational); "
          f"lost requests: {lost}; {len(errors)} errors; {elapsed:.0f} s. JSON: {out}")
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    try: sys.exit(main())
    except KeyboardInterrupt: sys.exit(130)
