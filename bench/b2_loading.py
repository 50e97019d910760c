"""Benchmark 2: loading a local model, `OpenSourceLLM(path)` against plain `from_pretrained` (+ `AutoTokenizer`).

The same generated Qwen2 folder (about 456 MB in float32 in full mode), each load in a fresh process (`probes.py load`),
A and B alternating. Load time is timed after the imports (both sides import the same modules first, the model's own
modeling module included). Peak memory is the process's VmHWM after the load and one generated token (which reads every
weight once); on CUDA the peak of `torch.cuda.max_memory_allocated` is recorded too.
"""
from __future__ import annotations
from common import BENCH, ab_order, child_env, median, models_dir, paired_ratio, row, run_child, scratch


def build_llm(cfg_model: dict, out_root) -> str:
    "The generated Qwen2 chat model of this size and seed (built once, reused)."
    from voice_agent.demo import build_tiny_llm
    h, n, seed = cfg_model["hidden_size"], cfg_model["num_layers"], cfg_model.get("seed", 0)
    return build_tiny_llm(out_root/(f"qwen2_{h}x{n}" + (f"_seed{seed}" if seed else "")), hidden_size=h, num_layers=n, seed=seed)


def run(cfg: dict, device: str, log) -> dict:
    path = build_llm(cfg["load_model"], models_dir())
    from voice_agent.demo import folder_report
    size_mb = folder_report(path)["bytes"]/2**20
    env = child_env(HF_HOME=scratch(), HF_HUB_OFFLINE="1")
    runs, strategy = {"A": [], "B": []}, None
    for side in ab_order(cfg["load_repeats"]):  # starts with A: plain then mirrors the strategy voice_agent chose
        args = ["--kind", "va"] if side == "A" else ["--kind", "plain", "--strategy", strategy]
        res = run_child([BENCH/"probes.py", "load", *args, "--path", path, "--device", device], 600, env, log)
        runs[side].append(res)
        if side == "A": strategy = res["strategy"]
    A, B = runs["A"], runs["B"]
    m = lambda rs, k: median(r.get(k) for r in rs)
    pr = lambda k: paired_ratio([r[k] for r in A], [r[k] for r in B])
    ms = lambda rs, k: f"{1000*m(rs, k):.0f} ms"
    rows = [
        row("2 loading", f"load a {size_mb:.0f} MiB Qwen2 ({strategy}): OpenSourceLLM vs plain from_pretrained + AutoTokenizer",
            m(A, "load_s"), m(B, "load_s"), "s", "OpenSourceLLM", "from_pretrained", "A/B ≤ 1.10", lambda a, b, r: r <= 1.10,
            ratio=pr("load_s"), note=f"{len(A)}+{len(B)} fresh processes, timed after the imports; the from_pretrained call "
            f"itself {ms(A, 'from_pretrained_s')} vs {ms(B, 'from_pretrained_s')}, the rest (voice_agent's steps + tokenizer) "
            f"{ms(A, 'around_s')} vs tokenizer {ms(B, 'around_s')}"),
        row("2 loading", "peak RSS of the process (load + 1 token)", m(A, "peak_mb"), m(B, "peak_mb"), "MiB",
            "OpenSourceLLM", "from_pretrained", "A/B ≤ 1.10", lambda a, b, r: r <= 1.10, ratio=pr("peak_mb"),
            note=f"VmHWM, with the same imports on both sides; growth over them {median(r['peak_mb'] - r['peak_after_imports_mb'] for r in A):.0f} "
                 f"vs {median(r['peak_mb'] - r['peak_after_imports_mb'] for r in B):.0f} MiB"),
    ]
    if all(r.get("cuda_peak_mb") for r in A + B):
        rows.append(row("2 loading", "peak CUDA memory allocated (load + 1 token)", m(A, "cuda_peak_mb"), m(B, "cuda_peak_mb"),
                        "MiB", "OpenSourceLLM", "from_pretrained", "A/B ≤ 1.10", lambda a, b, r: r <= 1.10, ratio=pr("cuda_peak_mb")))
    growth = lambda rs: median(r["peak_mb"] - r["peak_after_imports_mb"] for r in rs)
    details = {"model": path, "model_mib": size_mb, "from_pretrained_s": {"A": m(A, "from_pretrained_s"), "B": m(B, "from_pretrained_s")},
               "around_s": {"A": m(A, "around_s"), "B": m(B, "around_s")}, "strategy": strategy, "device": A[0].get("device"), "dtype": A[0].get("dtype"),
               "peak_growth_over_imports_mib": {"A": growth(A), "B": growth(B)},
               "imports_s": {"A": m(A, "imports_s"), "B": m(B, "imports_s")}, "runs": runs}
    return {"loading": {"rows": rows, "details": details}}
