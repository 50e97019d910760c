"""The package's import layers: no import circles, nothing imports upward, no module over 450 lines.

The code is read with `ast` (nothing is imported): each module's imports of `voice_agent` modules, at module level (what
runs when it is imported: the top, `if`/`try` blocks, class bodies) and, counted apart, inside functions (the lazy
imports that keep torch and the server out of the light client). `FLOORS` is the house's plan, lowest first; a module
may import from its own floor and the floors below. A new module must be given a floor here: that is the point.
Run with `pytest -s` to see the floors, the lazy imports and the largest modules.
"""
import ast, fnmatch
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1]/"voice_agent"
MAX_LINES = 450

# Lowest first. Patterns are module names without `voice_agent.`; the first floor with a matching pattern is a module's.
FLOORS = [
    ("base", ["config", "formats", "hardware", "audio", "audio_schemas", "vad"]),  # import nothing of ours but config
    ("model files", ["offline", "demo"]),                                        # where models are, the tiny ones we build
    ("loading", ["loading", "profiles"]),                                        # the loading strategies; which models a profile names
    ("chat protocol", ["chat", "tools"]),                                        # messages, options, stop strings, tool calls
    ("light client", ["schemas", "model_client"]),                               # request/response types and the client: no engine below them
    ("engines", ["llama", "llm", "stt", "tts", "turn_model"]),                 # the models (torch, llama.cpp, faster-whisper, Piper)
    ("server basics", ["server.metrics", "server.errors", "server.generation", "server.audio_io", "server.fakes"]),
    ("model slot", ["server.model_slot"]),
    ("slot users", ["server.streaming", "server.state"]),
    ("model names", ["server.model_names"]),
    ("slots face", ["server.slots"]),
    ("server services", ["server.speech", "server.deps"]),
    ("realtime engine", ["server.realtime", "server.realtime.*"]),
    ("routers", ["server.routers", "server.routers.*", "server.wyoming", "server.wyoming_*"]),   # the HTTP routes; Wyoming (Home Assistant) beside them
    ("app", ["server.app", "server", "model_server"]),
    ("deployments and front ends", ["ray", "ray.*", "ray_serve", "panels", "panels.*", "widgets", "realtime_panel", "cli", "testing"]),
]


# %% reading the code
def module_names(pkg: Path=PKG) -> dict[str, Path]:
    "Every module of the package (`server.app`, ...; a package's `__init__.py` is the package), `_modidx.py` left out."
    out = {}
    for p in sorted(pkg.rglob("*.py")):
        if p.name == "_modidx.py": continue
        parts = list(p.relative_to(pkg).with_suffix("").parts)
        if parts[-1] == "__init__": parts = parts[:-1]
        out[".".join(parts) or "__init__"] = p
    return out


def _target(mod: str, is_pkg: bool, node: ast.ImportFrom|ast.Import, known: set[str]) -> list[str]:
    "The modules of ours an import statement in `mod` names."
    if isinstance(node, ast.Import):
        return [a.name.removeprefix("voice_agent.") for a in node.names if a.name.startswith("voice_agent.")]
    if node.level:
        base = mod.split(".") if is_pkg else mod.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
        where = ".".join(base + ([node.module] if node.module else []))
    elif node.module and (node.module == "voice_agent" or node.module.startswith("voice_agent.")):
        where = node.module.removeprefix("voice_agent").lstrip(".")
    else: return []
    subs = [f"{where}.{a.name}" if where else a.name for a in node.names]  # `from .routers import audio`: a module each
    found = [s for s in subs if s in known]
    return found if found else ([where] if where else [])


def imports(mods: dict[str, Path]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    "(module-level imports, imports inside functions) of each module: {module: {module it imports}}."
    known, top, lazy = set(mods), {m: set() for m in mods}, {m: set() for m in mods}
    def visit(mod, is_pkg, node, in_fn):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for t in _target(mod, is_pkg, child, known):
                    if t != mod: (lazy if in_fn else top)[mod].add(t)
            visit(mod, is_pkg, child, in_fn or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
    for m, p in mods.items(): visit(m, p.name == "__init__.py", ast.parse(p.read_text()), False)
    return top, lazy


# %% the checks
def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    "Each import circle once, as the path that closes it (`[a, b, a]`)."
    out, state, stack = [], {}, []
    def walk(n):
        state[n] = "open"; stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == "open": out.append(stack[stack.index(d):] + [d])
            elif d not in state: walk(d)
        stack.pop(); state[n] = "done"
    for n in sorted(graph):
        if n not in state: walk(n)
    return out


def floor_of(mod: str, floors=FLOORS) -> int|None:
    "The index of `mod`'s floor in `floors` (None: on none)."
    return next((i for i, (_, pats) in enumerate(floors) if any(fnmatch.fnmatchcase(mod, p) for p in pats)), None)


def upward(graph: dict[str, set[str]], floors=FLOORS) -> list[str]:
    "Every import of a module on a higher floor, in words."
    out = []
    for m, deps in sorted(graph.items()):
        for d in sorted(deps):
            fm, fd = floor_of(m, floors), floor_of(d, floors)
            if fm is not None and fd is not None and fd > fm:
                out.append(f"{m} (floor {fm}, {floors[fm][0]}) imports {d} (floor {fd}, {floors[fd][0]})")
    return out


@pytest.fixture(scope="module")
def graph():
    mods = module_names()
    top, lazy = imports(mods)
    return mods, top, lazy


def test_every_module_has_a_floor(graph):
    mods, _, _ = graph
    assert [m for m in mods if m != "__init__" and floor_of(m) is None] == [], "give these modules a floor in FLOORS (tests/test_layers.py)"


def test_no_import_circles(graph):
    mods, top, lazy = graph
    assert circles(top) == [], "module-level import circles"
    n_lazy = sum(map(len, lazy.values()))
    print(f"\n[layers] {len(mods)} modules, {sum(map(len, top.values()))} module-level imports of ours, {n_lazy} inside functions "
          f"(in {sum(bool(v) for v in lazy.values())} modules); circles through the ones inside functions: {circles({m: top[m] | lazy[m] for m in mods})}")
    for m, deps in sorted(lazy.items()):
        if deps: print(f"  inside functions: {m} -> {', '.join(sorted(deps))}")


def test_nothing_imports_upward(graph):
    mods, top, lazy = graph
    assert upward(top) == [], "module-level imports of a higher floor"
    for i, (name, _) in enumerate(FLOORS):
        print(f"  floor {i:2} {name}: {', '.join(m for m in mods if floor_of(m) == i)}")
    up = upward(lazy)
    print(f"[layers] imports inside functions that reach a higher floor ({len(up)}: allowed, listed to be seen):")
    for u in up: print("   ", u)


def test_no_module_over_450_lines(graph):
    "The lead runs this at the end of the reshape: it lists every module of more than MAX_LINES lines."
    mods, _, _ = graph
    sizes = sorted(((len(p.read_text().splitlines()), m) for m, p in mods.items()), reverse=True)
    print("\n[layers] largest modules: " + ", ".join(f"{m} {n}" for n, m in sizes[:6]))
    over = [f"{m} ({n} lines)" for n, m in sizes if n > MAX_LINES]
    assert not over, f"modules over {MAX_LINES} lines (split them; see shared/design/reshape-2026-12.md): {', '.join(over)}"


# %% the checks find what they look for
def test_a_planted_circle_is_found():
    g = {"config": set(), "loading": {"config", "llm"}, "llm": {"tools"}, "tools": {"loading"}, "schemas": {"tools"}}
    test = circles(g)
    assert test == [["llm", "tools", "loading", "llm"]], test
    assert circles({"a": {"b"}, "b": set()}) == []
    assert circles({"a": {"a"}}) == [["a", "a"]]


def test_a_planted_upward_import_is_found():
    g = {"config": {"server.app"}, "server.app": {"config", "server.slots"}, "server.slots": {"server.model_slot"}, "server.model_slot": set()}
    assert upward(g) == ["config (floor 0, base) imports server.app (floor 14, app)"], upward(g)
    assert upward({"schemas": {"llm"}}) == ["schemas (floor 4, light client) imports llm (floor 5, engines)"]


def test_imports_are_read_as_python_resolves_them(tmp_path):
    "Relative imports of every level, a package's `__init__`, `from pkg import submodule`, absolute imports, lazy ones."
    pkg = tmp_path/"voice_agent"
    for f, src in {"__init__.py": "", "config.py": "import os\n", "server/__init__.py": "from .app import create_app\n",
                   "server/app.py": "from ..config import Settings\nfrom .routers import audio\nclass A:\n    from voice_agent.server import deps\n",
                   "server/deps.py": "def f():\n    from voice_agent.llm import x\n", "server/routers/__init__.py": "",
                   "server/routers/audio.py": "from ...config import Settings\nfrom .. import deps\n", "llm.py": "import voice_agent.config\n"}.items():
        (pkg/f).parent.mkdir(parents=True, exist_ok=True); (pkg/f).write_text(src)
    mods = module_names(pkg)
    top, lazy = imports(mods)
    assert top == {"__init__": set(), "config": set(), "llm": {"config"}, "server": {"server.app"},
                   "server.app": {"config", "server.routers.audio", "server.deps"}, "server.deps": set(), "server.routers": set(),
                   "server.routers.audio": {"config", "server.deps"}}, top
    assert lazy["server.deps"] == {"llm"} and not any(v for k, v in lazy.items() if k != "server.deps"), lazy
