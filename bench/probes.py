"""Measurements that need a process of their own: failing offline (benchmark 1) and loading (benchmark 2).

Run by `b1_offline.py` and `b2_loading.py` as `python bench/probes.py offline|load ...`; each prints one result line.
Both sides of a comparison import the same modules before the clock starts, so what is timed is the call itself.
"""
from __future__ import annotations
import argparse, json, os, select, sys, time, traceback
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, peak_rss_mb, rss_mb

HUB_MODEL = "Qwen/Qwen2.5-7B-Instruct"


def import_stack():
    "What both sides import before timing: torch, transformers' auto classes and voice_agent's loaders."
    import torch, transformers, huggingface_hub
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
    import voice_agent.offline, voice_agent.llm


# %% benchmark 1: failing offline, each call the first in a process forked after the imports
def offline_call(kind: str, device: str) -> dict:
    "Call one way of loading an uncached model; return how long it took to fail and how."
    from voice_agent.offline import ensure_model_exists
    from voice_agent.llm import OpenSourceLLM
    from transformers import AutoModelForCausalLM
    fn = {"va_ensure": lambda: ensure_model_exists(HUB_MODEL),
          "va_llm": lambda: OpenSourceLLM(HUB_MODEL, device=device),
          "plain": lambda: AutoModelForCausalLM.from_pretrained(HUB_MODEL)}[kind]
    t = time.perf_counter()
    try:
        fn(); err = None
    except Exception as e:
        err = f"{type(e).__name__}: " + (str(e).strip().splitlines() or [""])[0][:200]
    return {"kind": kind, "seconds": time.perf_counter() - t, "error": err}


def forked(fn, timeout: float) -> dict:
    "Run `fn()` in a child forked from this process; its result, or an error after `timeout` seconds."
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, report, leave without running any cleanup of the parent's
        os.close(r)
        try: res = fn()
        except BaseException as e: res = {"error": f"probe crashed: {type(e).__name__}: {e}", "crashed": True}
        os.write(w, json.dumps(res).encode()); os._exit(0)
    os.close(w)
    buf, deadline = b"", time.monotonic() + timeout
    while True:
        ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            os.kill(pid, 9); os.waitpid(pid, 0); os.close(r)
            return {"error": f"timed out after {timeout:.0f} s", "crashed": True}
        chunk = os.read(r, 65536)
        if not chunk: break
        buf += chunk
    os.close(r); os.waitpid(pid, 0)
    return json.loads(buf or b'{"error": "no result", "crashed": true}')


def offline(a):
    t = time.perf_counter(); import_stack()
    imports_s = time.perf_counter() - t
    results = []
    for kind in a.order.split(","):
        res = forked(lambda: offline_call(kind, a.device), a.timeout)
        results.append({**res, "kind": kind})
    emit({"imports_s": imports_s, "results": results})


# %% benchmark 2: loading, each in a fresh process
def plain_kwargs(strategy: str, device: str) -> dict:
    "What plain `from_pretrained` needs to do the same work as voice_agent's winning strategy."
    import torch
    if strategy == "cpu": return {}  # plain from_pretrained: the checkpoint's dtype (float32) on the CPU
    dm = {"": int(device.split(":")[1])} if device.startswith("cuda:") else "auto"
    if strategy == "fp16": return {"dtype": torch.float16, "device_map": dm}
    from transformers import BitsAndBytesConfig
    if strategy == "4bit":
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute,
                               bnb_4bit_use_double_quant=True)
    else: q = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": q, "device_map": dm}


def load(a):
    import importlib
    t0 = time.perf_counter(); import_stack()
    mtype = json.loads((Path(a.path)/"config.json").read_text())["model_type"]
    for m in (f"transformers.models.{mtype}.modeling_{mtype}", f"transformers.models.{mtype}.tokenization_{mtype}"):
        try: importlib.import_module(m)
        except ImportError: pass
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    imports_s, rss0, peak0 = time.perf_counter() - t0, rss_mb(), peak_rss_mb()
    cuda = torch.cuda.is_available() and not a.device.startswith("cpu")
    if cuda: torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    if a.kind == "va":
        from voice_agent.llm import OpenSourceLLM
        llm = OpenSourceLLM(a.path, device=a.device)
        model, tok, strategy = llm.model, llm.tokenizer, llm.strategy.name
        fp_s = next(x.seconds for x in llm.attempts if x.status == "ok")  # its from_pretrained call
    else:
        strategy = a.strategy
        model = AutoModelForCausalLM.from_pretrained(a.path, **plain_kwargs(strategy, a.device))
        fp_s = time.perf_counter() - t
        tok = AutoTokenizer.from_pretrained(a.path)
    if cuda: torch.cuda.synchronize()
    load_s = time.perf_counter() - t
    peak_load = peak_rss_mb()
    # one token, so every weight has been read once: the memory of a model ready to serve
    ids = tok("Hello", return_tensors="pt").to(model.device)
    with torch.inference_mode(): model.generate(**ids, max_new_tokens=1, do_sample=False, pad_token_id=tok.pad_token_id)
    res = {"kind": a.kind, "strategy": strategy, "imports_s": imports_s, "load_s": load_s, "from_pretrained_s": fp_s,
           "around_s": load_s - fp_s, "rss_after_imports_mb": rss0,
           "peak_after_imports_mb": peak0, "peak_load_mb": peak_load, "peak_mb": peak_rss_mb(), "rss_mb": rss_mb(),
           "device": str(model.device), "dtype": str(getattr(model, "dtype", ""))}
    if cuda: res["cuda_peak_mb"] = torch.cuda.max_memory_allocated()/2**20
    emit(res)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("offline"); o.add_argument("--order", required=True); o.add_argument("--device", default="auto")
    o.add_argument("--timeout", type=float, default=120)
    l = sub.add_parser("load"); l.add_argument("--kind", choices=("va", "plain"), required=True); l.add_argument("--path", required=True)
    l.add_argument("--device", default="auto"); l.add_argument("--strategy", default="cpu")
    a = p.parse_args()
    try: {"offline": offline, "load": load}[a.cmd](a)
    except Exception: traceback.print_exc(); sys.exit(1)
