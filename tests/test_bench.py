"""The benchmarks (bench/run.py) run end to end in quick mode: exit 0, every benchmark in the JSON, no lost request.

Targets are informational, so this test checks that every benchmark ran and measured, not how fast this machine is.
"""
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ("offline", "loading", "serving", "concurrency", "stt", "turn", "gguf", "local", "tools", "speech_stream")  # stt_peer, realtime and ray are opt-in (--only)
sys.path.insert(0, str(ROOT/"bench"))


def test_helpers():
    "A/B alternation, percentiles, rows and the table."
    from common import ab_order, markdown_table, percentile, row
    assert ab_order(3) == ["A", "B", "B", "A", "A", "B"]
    assert percentile([1, 2, 3, 4, 5], 50) == 3 and percentile([], 99) is None
    r = row("x", "what", 1.0, 4.0, "s", "a", "b", "A/B ≤ 0.5", lambda a, b, r: r <= 0.5)
    assert r.ratio == 0.25 and r.ok is True
    assert "| x | what | a: 1.00 s | b: 4.00 s | 0.250 | A/B ≤ 0.5 | pass |" in markdown_table([r.__dict__])


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
