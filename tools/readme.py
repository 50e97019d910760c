"""Write README.md from nbs/index.ipynb without Quarto (nbdev_readme needs Quarto, which CI machines lack).

Uses nbdev's own processing (`nbdev_proc_nbs` -> `_proc/index.ipynb`), then nbconvert to markdown.
`python tools/readme.py --check` exits 1 when README.md is out of date.
"""
import re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def render() -> str:
    "README text from the processed index notebook."
    subprocess.run([str(BIN/"nbdev_proc_nbs")], cwd=ROOT, check=True, capture_output=True)
    md = subprocess.run([str(BIN/"jupyter"), "nbconvert", "--to", "markdown", "--stdout", str(ROOT/"_proc"/"index.ipynb")],
                        check=True, capture_output=True, text=True).stdout
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
