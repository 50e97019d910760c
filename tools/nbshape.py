"""The shape of the notebooks as documents: `python tools/nbshape.py [--fail]`.

Per notebook: exported cells, their median length, cells over 80 lines, and exports of a public function or class
not followed by an example (a code cell neither exported nor hidden) before the next such export. nbdev's own notebooks: median 14 lines,
none over 80, every export followed by its example.
"""
import ast, json, re, statistics, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPORT = re.compile(r"^#\|\s*(export|exports|exporti)\b", re.M)


def defines(cell: str) -> bool:
    "Whether an exported cell defines a public function or class (imports and constants need no example of their own)."
    try: tree = ast.parse("\n".join(l for l in cell.splitlines() if not l.startswith("#|")))
    except SyntaxError: return True
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not n.name.startswith("_")
               for n in tree.body)


def is_example(cell: str) -> bool:
    "A code cell a reader sees run: not exported, not hidden, not empty."
    first = cell.lstrip().split("\n", 1)[0]
    return bool(cell.strip()) and not EXPORT.search(first) and not first.startswith(("#| hide", "#| default_exp"))


def shape(nb: Path) -> dict:
    "Export cells, their lengths, the long ones, and the exports with no example after them."
    cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    src = ["".join(c["source"]) for c in cells]
    exp = [i for i, s in enumerate(src) if EXPORT.search(s.split("\n", 1)[0] + "\n" + s)]
    lines = [len(src[i].splitlines()) for i in exp]
    defs = [i for i in exp if defines(src[i])]
    bare = [i for j, i in enumerate(defs)
            if not any(is_example(s) for s in src[i + 1:(defs[j + 1] if j + 1 < len(defs) else len(src))])]
    return {"exports": len(exp), "median": statistics.median(lines) if lines else 0,
            "over80": [n for n in lines if n > 80], "bare": len(bare)}


if __name__ == "__main__":
    rows = {p.relative_to(ROOT).as_posix(): shape(p) for p in sorted((ROOT/"nbs").glob("*.ipynb"))}
    rows = {k: v for k, v in rows.items() if v["exports"]}
    print(f"{'notebook':42} exports median >80 bare")
    for k, v in rows.items(): print(f"{k:42} {v['exports']:7} {v['median']:6} {len(v['over80']):3} {v['bare']:4}")
    allines = [v["median"] for v in rows.values()]
    print(f"notebooks {len(rows)}; cells over 80 lines: {sum(len(v['over80']) for v in rows.values())}; "
          f"exports without an example: {sum(v['bare'] for v in rows.values())}")
    if "--fail" in sys.argv and any(v["over80"] or v["bare"] for v in rows.values()): sys.exit(1)
