"""Stamp the repository address from pyproject.toml into every notebook.

The address lives in one place, `[project.urls] Repository` in pyproject.toml.
Each notebook's first cells hold an "Open in Colab" badge and a Colab install
cell that need it; this script rewrites them (a test checks they agree).

    python tools/set_repo_url.py           # rewrite
    python tools/set_repo_url.py --check   # exit 1 if a notebook disagrees
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
URL_PATTERN = re.compile(r"https://github\.com/[\w.-]+/[\w.-]+?(?=[/\"')\s]|\.git|$)")
COLAB_PATTERN = re.compile(r"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/main/")


def repository_url() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"].rstrip("/")


def stamp(text: str, url: str) -> str:
    owner_repo = url.removeprefix("https://github.com/")
    text = COLAB_PATTERN.sub(f"https://colab.research.google.com/github/{owner_repo}/blob/main/", text)
    return URL_PATTERN.sub(url, text)


def main() -> int:
    url, check, stale = repository_url(), "--check" in sys.argv, []
    for path in sorted((ROOT / "notebooks").rglob("*.ipynb")):
        original = path.read_text()
        notebook = json.loads(original)
        for cell in notebook["cells"][:3]:
            cell["source"] = stamp("".join(cell["source"]), url).splitlines(keepends=True)
        text = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
        if text != original:
            stale.append(path.relative_to(ROOT))
            if not check:
                path.write_text(text)
    for path in stale:
        print(("out of date: " if check else "updated: ") + str(path))
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
