"""The GPU checks, as one script for a lent CUDA machine: `python tools/gpu_check.py [NBS_DIR]`.

1. Diagnostics: torch, CUDA, bitsandbytes' native libraries, as `voice-agent doctor` reads them.
2. The `#| gpu` cells of the notebooks (nbdev skips them without `--flags gpu`): each notebook's hidden import
   cells, then its gpu cells, in one namespace with `from voice_agent.<module> import *`.
3. The seed's chain under a GPU budget: a ballast tensor leaves N MiB of the card free, and `OpenSourceLLM` (every
   strategy, device auto) loads a generated 456 MB Qwen2. With room, 4-bit wins on the GPU; with too little room,
   4-bit, 8-bit and fp16 must fail (accelerate would spread them to the CPU) and `offload` must win with part of the
   model on the CPU, and still answer.
4. STT and TTS on CUDA: the tiny generated Whisper and Dia loaded by hand on the GPU (random weights: code paths).

Prints one line per finding and ends with `GPU CHECK: n passed, m failed`; exit status 1 if any failed.
"""
import gc, json, sys, tempfile, time, traceback
from pathlib import Path

results: list[tuple[str, bool, str]] = []

def check(name):
    "Run the decorated function now, recording pass/fail with its one-line result."
    def run(f):
        t = time.perf_counter()
        try: ok, msg = True, f() or ""
        except Exception as e:
            ok, msg = False, f"{type(e).__name__}: {e}"
            traceback.print_exc()
        results.append((name, ok, msg))
        print(f"[{'PASS' if ok else 'FAIL'}] {name} ({time.perf_counter()-t:.1f} s) {msg}", flush=True)
    return run

def gpu_cells(nb: Path) -> tuple[str, list[str], list[str]]:
    "A notebook's module (default_exp), its hidden import cells and its `#| gpu` cells."
    cells = [''.join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    mod = next((c.split("default_exp", 1)[1].split()[0] for c in cells if c.startswith("#| default_exp")), None)
    def imports_only(c):
        body = [l for l in c.splitlines()[1:] if l.strip() and not l.lstrip().startswith("#")]
        return body and all(l.startswith(("import ", "from ")) for l in body)
    hidden = [c for c in cells if c.startswith("#| hide") and imports_only(c)]
    return mod, hidden, [c for c in cells if c.startswith("#| gpu")]

nbs = Path(sys.argv[1] if len(sys.argv) > 1 else "nbs")
import torch
from voice_agent.hardware import torch_info, bnb_info

@check("diagnostics")
def _():
    t, b = torch_info(), bnb_info()
    print(json.dumps({"torch": t, "bitsandbytes": b}, indent=1, default=str))
    assert t.get("cuda_available"), "torch sees no CUDA"
    return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, bitsandbytes libs {b.get('libs')}"

for nb in sorted(nbs.rglob("*.ipynb")):
    mod, hidden, gpu = gpu_cells(nb)
    if not gpu: continue
    @check(f"{nb.name}: {len(gpu)} #| gpu cell(s)")
    def _():
        ns = {"__name__": "__gpu_check__"}
        if mod: exec(f"from voice_agent.{mod} import *", ns)
        for c in hidden + gpu: exec(compile(c, str(nb), "exec"), ns)

from voice_agent.demo import build_tiny_llm, build_tiny_whisper, build_tiny_dia
from voice_agent.llm import OpenSourceLLM
big = build_tiny_llm(Path(tempfile.gettempdir())/"voice_agent_gpu_llm", hidden_size=1024, num_layers=12)

def chain_with_free(free_mib: int):
    "Load with every strategy while a ballast tensor leaves `free_mib` MiB of the card free."
    gc.collect(); torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    ballast = torch.empty(max(free - free_mib * 2**20, 0), dtype=torch.uint8, device="cuda")
    try:
        m = OpenSourceLLM(big)
        reply = m.generate_reply("hi", max_new_tokens=4)
        tried = [(a.strategy, a.status, a.reason[:160]) for a in m.attempts]
        out = (m.loading_strategy, m.strategy.name, dict(m.placement), reply, tried)
        del m
        return out
    finally:
        del ballast; gc.collect(); torch.cuda.empty_cache()

budgets = {}
for free_mib in (2048, 160, 110, 80, 40):
    @check(f"chain with {free_mib} MiB of the GPU free")
    def _():
        label, name, where, reply, tried = budgets[free_mib] = chain_with_free(free_mib)
        for t in tried: print("   ", t)
        return f"won: {name} ({label}), placement {where}, reply {reply!r}"

@check("chain: 4-bit wins with room; offload wins, part on the CPU, when nothing fits")
def _():
    roomy = budgets.get(2048)
    assert roomy and roomy[1] == "4bit" and all(k.startswith("cuda") for k in roomy[2]), roomy
    tight = [b for b in budgets.values() if b[1] == "offload"]
    assert tight, f"no budget made offload win: {[(k, v[1]) for k, v in budgets.items()]}"
    label, name, where, reply, tried = tight[0]
    assert any(k.startswith("cuda") for k in where) and "cpu" in where or "disk" in where, where
    failed = {s for s, st, _ in tried if st == "failed"}
    assert {"4bit", "8bit", "fp16"} <= failed, tried
    return f"offload placement {where}; 4bit/8bit/fp16 failed: " + " | ".join(r for s, st, r in tried if st == "failed")

tmp = Path(tempfile.mkdtemp())
@check("WhisperSTT on CUDA (tiny generated Whisper, manual load)")
def _():
    import numpy as np
    from voice_agent.stt import WhisperSTT
    stt = WhisperSTT(build_tiny_whisper(tmp/"stt"), device="cuda")
    text = stt.transcribe(np.zeros(16000, dtype=np.float32), sample_rate=16000)
    assert stt.device.startswith("cuda"), stt.device
    return f"{stt.loading_strategy} on {stt.device}: {text!r}"

@check("Dia2TTS on CUDA (tiny generated Dia, manual load)")
def _():
    from voice_agent.tts import Dia2TTS
    tts = Dia2TTS(build_tiny_dia(tmp/"dia"), device="cuda")
    audio, rate = tts.synthesize_array("[S1] Hello there.")
    assert str(tts.device).startswith("cuda"), tts.device
    return f"{tts.loading_strategy} on {tts.device}: {len(audio)/rate:.2f} s at {rate} Hz"

ok = sum(r[1] for r in results)
print(f"GPU CHECK: {ok} passed, {len(results) - ok} failed")
sys.exit(0 if ok == len(results) else 1)
