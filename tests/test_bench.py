"""The benchmarks (bench/run.py) run end to end in quick mode: exit 0, every benchmark in the JSON, no lost request.

Targets are informational, so this test checks that every benchmark ran and measured, not how fast this machine is.
"""
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ("offline", "loading", "serving", "concurrency", "stt", "turn", "gguf", "local", "tools", "speech_stream")  # stt_peer, realtime, ray and pipecat are opt-in (--only)
sys.path.insert(0, str(ROOT/"bench"))


def test_helpers():
    "A/B alternation, percentiles, rows and the table."
    from common import ab_order, markdown_table, percentile, row
    assert ab_order(3) == ["A", "B", "B", "A", "A", "B"]
    assert percentile([1, 2, 3, 4, 5], 50) == 3 and percentile([], 99) is None
    r = row("x", "what", 1.0, 4.0, "s", "a", "b", "A/B ≤ 0.5", lambda a, b, r: r <= 0.5)
    assert r.ratio == 0.25 and r.ok is True
    assert "| x | what | a: 1.00 s | b: 4.00 s | 0.250 | A/B ≤ 0.5 | pass |" in markdown_table([r.__dict__])


def test_plan_shares_a_process_between_local_profile_benchmarks():
    "The local-profile benchmarks go to one worker process (at the first one's place); the others each get their own."
    from run import plan
    assert plan(["offline", "gguf", "local", "serving", "tools", "speech_stream"]) == \
        [["offline"], ["gguf", "local", "tools", "speech_stream"], ["serving"]]
    assert plan(["tools"]) == [["tools"]] and plan([]) == []


def test_worker_reports_each_benchmark_even_when_one_fails(monkeypatch, capsys, tmp_path):
    "In a shared worker process a failing benchmark reports its error, and the next one still runs and reports its rows."
    import types, run
    from common import RESULT_TAG, row
    bad = types.SimpleNamespace(run=lambda cfg, device, log: 1/0)
    good = types.SimpleNamespace(run=lambda cfg, device, log: {"g": {"rows": [row("g", "x", 1.0, 2.0, "s", "a", "b", "t", lambda a, b, r: True)],
                                                                     "details": {"repeats": cfg["local_repeats"]}}})
    monkeypatch.setitem(sys.modules, "fake_bad", bad); monkeypatch.setitem(sys.modules, "fake_good", good)
    monkeypatch.setattr(run, "WORKERS", {"bad": ("fake_bad", ["b"]), "good": ("fake_good", ["g"])})
    run.worker(types.SimpleNamespace(worker="bad,good", mode="quick", device="cpu", log=str(tmp_path/"log")))
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith(RESULT_TAG)][-1]
    res = json.loads(line[len(RESULT_TAG):])
    assert res["b"]["rows"] == [] and res["b"]["error"].startswith("ZeroDivisionError")
    assert res["g"]["error"] is None and res["g"]["rows"][0]["ratio"] == 0.5 and res["g"]["details"] == {"repeats": 1}
    assert all(r["seconds"] >= 0 for r in res.values())


def test_quick_run(tmp_path):
    "`bench/run.py --quick` exits 0, prints the table, and writes JSON with every benchmark measured and 0 lost requests."
    out = tmp_path/"quick.json"
    r = subprocess.run([sys.executable, str(ROOT/"bench"/"run.py"), "--quick", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=1200)
    print(r.stdout[-6000:]); print(r.stderr[-6000:], file=sys.stderr)
    assert r.returncode == 0, f"bench/run.py --quick failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "| benchmark | what | A | B | A/B | target | result |" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["mode"] == "quick" and doc["ok"] is True and doc["errors"] == {}
    for b in BENCHMARKS:
        res = doc["benchmarks"].get(b)
        assert res is not None, f"benchmark {b} missing from the JSON"
        assert res["error"] is None, f"{b}: {res['error']}"
        assert res["rows"], f"{b} has no rows"
        for row in res["rows"]:
            assert row["a"] is not None and row["b"] is not None and row["target"], row
    assert doc["lost_requests"] == 0
    assert doc["benchmarks"]["concurrency"]["details"]["sent"] >= 16
    assert doc["machine"].get("cpu") and doc["machine"].get("torch", {}).get("version")
