"""Run every notebook's tests (nbdev_test), and check that the notebooks, the exported code and the docs pipeline agree.

Cells flagged `#| gpu` run only where CUDA is available; `#| slow` cells run with VOICE_AGENT_SLOW=1.
"""
import hashlib, importlib.util, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NOTEBOOKS = sorted(p for p in (ROOT/"nbs").rglob("*.ipynb")
                   if not any(part.startswith(("_", ".")) for part in p.relative_to(ROOT/"nbs").parts))


def _tools_readme():
    "tools/readme.py as a module: its `proc_nbs` runs nbdev's docs processing without nbdev's Quarto installer."
    spec = importlib.util.spec_from_file_location("voice_agent_tools_readme", ROOT/"tools"/"readme.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def _flags() -> str:
    "The nbdev test flags this machine can run."
    flags = []
    try:
        import torch
        if torch.cuda.is_available(): flags.append("gpu")
    except ImportError: pass
    if os.environ.get("VOICE_AGENT_SLOW"): flags.append("slow")
    return " ".join(flags)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[str(p.relative_to(ROOT/"nbs")) for p in NOTEBOOKS])
def test_notebook(nb):
    "Every cell of the notebook runs without error (its asserts are the tests)."
    cmd = [str(BIN/"nbdev_test"), "--path", str(nb), "--do_print", "--timing"]
    if flags := _flags(): cmd += ["--flags", flags]
    env = {**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200, env=env)
    print(r.stdout[-4000:]); print(r.stderr[-8000:], file=sys.stderr)
    assert r.returncode == 0, f"{nb.name} failed:\n{r.stderr[-6000:]}"


def _tree_hash(root: Path) -> dict:
    "Hash of every file nbdev_export and nbdev_clean may touch."
    files = [*(root/"nbs").rglob("*.ipynb"), *(root/"voice_agent").rglob("*.py"), root/"README.md"]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files
            if ".ipynb_checkpoints" not in p.parts and "__pycache__" not in p.parts}


def test_export_and_clean_leave_tree_unchanged(tmp_path):
    """The committed voice_agent/ is what the notebooks export, and the notebooks are clean.

    Checked on a copy: a failing run must not fix the checkout, or the rerun would pass."""
    import shutil
    copy = tmp_path/"repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".venv", ".git", "_proc", "_docs", "artifacts", "bench", "tests",
                                                              "models", "__pycache__", "*.egg-info"))
    before = _tree_hash(copy)
    for cmd in ("nbdev_export", "nbdev_clean"):
        r = subprocess.run([str(BIN/cmd)], cwd=copy, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    after = _tree_hash(copy)
    assert before == _tree_hash(ROOT), "the copy differs from the checkout"
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"nbdev_export/nbdev_clean changed {changed}: edit the notebooks, export, clean, commit"


def test_docs_pipeline_processes_every_notebook(tmp_path):
    """nbdev_proc_nbs turns every notebook into a docs page (the full nbdev_docs where Quarto is installed).

    Run as tools/readme.py runs it, so the README test after this one only reprocesses what changed in between."""
    r = _tools_readme().proc_nbs(timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "pip install" not in r.stdout, "nbdev tried to install Quarto and the package: see tools/readme.py PROC"
    proc = ROOT/"_proc"
    missing = [str(p) for p in NOTEBOOKS if not (proc/p.relative_to(ROOT/"nbs")).exists()]
    assert not missing, f"not processed for the docs: {missing}"
    assert (proc/"_quarto.yml").exists()
    import shutil
    if shutil.which("quarto"):
        r = subprocess.run([str(BIN/"nbdev_docs")], cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-4000:]
        assert (ROOT/"_docs"/"index.html").exists()


def test_readme_is_generated_from_index():
    "README.md is the rendering of nbs/index.ipynb (tools/readme.py) and states the two commands."
    readme = (ROOT/"README.md").read_text()
    assert "./run serve" in readme and "./run test" in readme
    r = subprocess.run([sys.executable, str(ROOT/"tools"/"readme.py"), "--check"], cwd=ROOT, capture_output=True, timeout=600)
    assert r.returncode == 0, "README.md is out of date: run .venv/bin/python tools/readme.py"


def test_package_imports_without_nbdev():
    "The installed package imports with nbdev and execnb unavailable, and its metadata doesn't require them (fastcore is a runtime dependency: `@patch`)."
    mods = sorted(".".join(p.relative_to(ROOT/"voice_agent").with_suffix("").parts) for p in (ROOT/"voice_agent").rglob("*.py")
                  if not p.stem.startswith("_"))  # subpackages too (server.*, server.realtime.*, ...)
    code = ("import sys\nfor m in ('nbdev', 'execnb'): sys.modules[m] = None\n"
            + "".join(f"import voice_agent.{m}\n" for m in mods))
    r = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    from configparser import ConfigParser
    cfg = ConfigParser(); cfg.read(ROOT/"settings.ini")
    reqs = cfg["DEFAULT"]["requirements"].lower()
    assert "nbdev" not in reqs and "execnb" not in reqs and "fastcore" in reqs


HEAVY = ("torch transformers fastapi uvicorn starlette faster_whisper ctranslate2 bitsandbytes accelerate llama_cpp piper "
         "onnxruntime scipy soundfile huggingface_hub safetensors tokenizers prometheus_client ipywidgets gguf").split()


def test_client_needs_only_the_core_requirements():
    "`pip install voice_agent` gives the client: it imports with every server, model and widget library unavailable,"
    " and the core requirements name none of them (they are the [server], [widgets] and [local] extras)."
    code = ("import sys\nfor m in %r: sys.modules[m] = None\n" % HEAVY
            + "import voice_agent.model_client as mc, voice_agent.schemas, voice_agent.chat, voice_agent.tools\n"
              "assert 'voice_agent.llm' not in sys.modules, 'the client imported the loader'\nprint(mc.ModelClient.__name__)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ModelClient" in r.stdout, r.stderr[-4000:]
    from configparser import ConfigParser
    cfg = ConfigParser(); cfg.read(ROOT/"settings.ini")
    core = cfg["DEFAULT"]["requirements"].lower().split()
    names = {q.split("[")[0].split(">")[0].split("<")[0].split("=")[0].replace("-", "_") for q in core}
    assert not names & {*HEAVY, "faster_whisper", "piper_tts"}, names
    for extra in ("server", "widgets", "local"): assert cfg["DEFAULT"][f"{extra}_requirements"].strip()


def test_notebooks_read_as_documents():
    "Every public function or class a notebook exports is followed by an example before the next one, and no exported cell is over 80 lines (tools/nbshape.py)."
    spec = importlib.util.spec_from_file_location("voice_agent_tools_nbshape", ROOT/"tools"/"nbshape.py")
    shape = importlib.util.module_from_spec(spec); spec.loader.exec_module(shape)
    rows = {p.relative_to(ROOT).as_posix(): shape.shape(p) for p in sorted((ROOT/"nbs").rglob("*.ipynb"))}
    bare = {k: v["bare"] for k, v in rows.items() if v["bare"]}
    long = {k: v["over80"] for k, v in rows.items() if v["over80"]}
    assert not bare and not long, f"exports with no example after them: {bare}; exported cells over 80 lines: {long} (python tools/nbshape.py)"
