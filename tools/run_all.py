"""Execute every notebook headlessly and report how long each took.

    python tools/run_all.py notebooks            # lessons and solutions
    python tools/run_all.py notebooks/03_*.ipynb

Executed copies (with outputs) go to outputs/, which git ignores, so the
stored notebooks stay clean.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


def notebooks_in(args: list[str]) -> list[Path]:
    paths: list[Path] = []
    for arg in args or ["notebooks"]:
        path = Path(arg)
        paths += sorted(path.rglob("*.ipynb")) if path.is_dir() else [path]
    return [p for p in paths if ".ipynb_checkpoints" not in p.parts]


def main() -> int:
    results = []
    for path in notebooks_in(sys.argv[1:]):
        notebook = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        try:
            NotebookClient(notebook, timeout=900, kernel_name="python3",
                           resources={"metadata": {"path": str(path.parent)}}).execute()
            status = "ok"
        except Exception as exc:
            status = f"FAILED: {type(exc).__name__}"
        seconds = time.perf_counter() - start
        out = ROOT / "outputs" / path.resolve().relative_to(ROOT)
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, out)
        results.append((path, seconds, status))
        print(f"{seconds:7.1f} s  {status:8}  {path}", flush=True)
    failed = [r for r in results if r[2] != "ok"]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed; total {sum(r[1] for r in results):.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
