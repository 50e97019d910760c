"""Write README.md from nbs/index.ipynb without Quarto (nbdev_readme needs Quarto, which CI machines lack).

Uses nbdev's own processing (`nbdev_proc_nbs` -> `_proc/index.ipynb`, see `proc_nbs`), then nbconvert to markdown.
`python tools/readme.py --check` exits 1 when README.md is out of date.
"""
import re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


# Without Quarto, nbdev_proc_nbs first tries to install it (sudo, a download) and then runs `pip install -e ".[dev]"` with
# whatever pip is on PATH: tens of seconds and a changed Python environment, each time. Processing needs neither.
PROC = ("import shutil, nbdev.quarto as q\n"
        "if not shutil.which('quarto'):\n"
        "    assert hasattr(q, '_ensure_quarto'), 'nbdev no longer has _ensure_quarto: update tools/readme.py'\n"
        "    q._ensure_quarto = lambda: None\n"
        "q.nbdev_proc_nbs.__wrapped__()\n")


def proc_nbs(timeout: float=900) -> subprocess.CompletedProcess:
    """Run `nbdev_proc_nbs` (notebooks -> `_proc/`, only those changed since the last run) without nbdev's Quarto installer.
    `_proc/index.ipynb` is made again every time: its cells' output comes from the package (the settings table is
    `settings_table()`, read from `voice_agent/config.py`), which changes without the notebook changing."""
    (ROOT/"_proc"/"index.ipynb").unlink(missing_ok=True)
    return subprocess.run([sys.executable, "-c", PROC], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def without_hidden_inputs() -> Path:
    "A copy of `_proc/index.ipynb` whose `#| echo: false` cells show only their output (as Quarto shows them)."
    import json, tempfile
    nb = json.loads((ROOT/"_proc"/"index.ipynb").read_text())
    for c in nb["cells"]:
        if c["cell_type"] == "code" and re.search(r"^#\|\s*echo:\s*false", "".join(c["source"]), re.M):
            c.setdefault("metadata", {}).setdefault("tags", []).append("remove_input")
    out = Path(tempfile.mkdtemp())/"index.ipynb"
    out.write_text(json.dumps(nb))
    return out


def doc_pages() -> dict[str, str]:
    "Each docs page nbdev makes (`llm.html`, `explanations/benchmarks.html`) -> the notebook it comes from."
    from nbdev.doclinks import _nbpath2html
    nbs = ROOT/"nbs"
    return {_nbpath2html(p.relative_to(nbs)).as_posix(): p.relative_to(ROOT).as_posix() for p in nbs.rglob("*.ipynb")
            if not any(part.startswith((".", "_")) for part in p.relative_to(nbs).parts)}


def link_notebooks(md: str) -> str:
    """Point doc links (`https://<doc_host><doc_baseurl>/llm.html#x`) at the notebooks in this repository: no docs host
    serves the site (Quarto builds it where nbdev's GitHub workflow runs), and a notebook reads anywhere the repo does."""
    from configparser import ConfigParser
    cfg = ConfigParser(); cfg.read(ROOT/"settings.ini")
    base = re.escape(cfg["DEFAULT"]["doc_host"].rstrip("/") + cfg["DEFAULT"]["doc_baseurl"].rstrip("/") + "/")
    pages = doc_pages()
    def sub(m):
        if m.group(1) not in pages: sys.exit(f"README links to {m.group(0)}, a page no notebook makes")
        return pages[m.group(1)]
    return re.sub(base + r"([\w/.-]+\.html)(?:#[\w.-]*)?", sub, md)


def render() -> str:
    "README text from the processed index notebook."
    r = proc_nbs()
    if r.returncode: sys.exit(f"nbdev_proc_nbs failed:\n{r.stderr[-4000:]}")
    md = subprocess.run([str(BIN/"jupyter"), "nbconvert", "--to", "markdown", "--stdout", str(without_hidden_inputs()),
                         "--TagRemovePreprocessor.enabled=True", "--TagRemovePreprocessor.remove_input_tags=remove_input"],
                        check=True, capture_output=True, text=True).stdout
    md = link_notebooks(md)
    front = re.match(r"---\n(.*?)\n---\n", md, re.S)
    meta = front.group(1) if front else ""
    title = re.search(r"^title: (.*)$", meta, re.M)
    desc = re.search(r"^description: '?(.*?)'?\n(?=\S|\Z)", meta + "\n", re.M | re.S)
    body = md[front.end():] if front else md
    head = f"# {title.group(1).strip() if title else 'voice_agent'}\n\n"
    if desc: head += "> " + " ".join(desc.group(1).split()) + "\n"
    return (head + body).rstrip() + "\n"


if __name__ == "__main__":
    text, readme = render(), ROOT/"README.md"
    if "--check" in sys.argv:
        sys.exit(0 if readme.exists() and readme.read_text() == text else 1)
    readme.write_text(text)
    print(f"wrote {readme} ({len(text)} chars)")
