"""Execute every notebook headlessly and report how long each took.

    python tools/run_all.py notebooks            # lessons and solutions
    python tools/run_all.py notebooks/03_*.ipynb

Executed copies (with outputs) go to build/executed/ (`--out DIR` to change),
which git ignores, so the stored notebooks stay clean; the course website
(`make site`, tools/build_site.py) is built from them.

    python tools/run_all.py --copy-only notebooks

only copies the stored notebooks into a fresh build/executed/ for
`pytest --nbmake --overwrite` to execute in place (that is what `make test`
does, so that CI executes each notebook once and the site reuses the result).

Either way build/executed/run_info.json records, at execution time, the
hardware that runs the notebooks and the git commit they come from; the site
states both on every page.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
EXECUTED = ROOT / "build" / "executed"
RUN_INFO = "run_info.json"
# The kernel's matplotlib backend. ipykernel picks the inline one only when MPLBACKEND is unset,
# and with MPLBACKEND=Agg (as CI sets for the unit tests) plt.show() shows nothing: no plots in
# the executed copies. `make test` sets the same for nbmake.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def notebooks_in(args: list[str]) -> list[Path]:
    paths: list[Path] = []
    for arg in args or ["notebooks"]:
        path = Path(arg)
        paths += sorted(path.rglob("*.ipynb")) if path.is_dir() else [path]
    return [p for p in paths if ".ipynb_checkpoints" not in p.parts]


def _git(*args: str) -> str:
    try:
        result = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, timeout=10).stdout.strip() or platform.machine()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def run_record(runner: str) -> dict:
    """What runs the notebooks now: hardware, software and the git commit."""
    import torch

    from course_utils.hardware import detect

    profile = detect()
    commit = _git("rev-parse", "HEAD")
    return {
        "runner": runner,
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit or "unknown",
        "commit_short": commit[:10] if commit else "unknown",
        "local_changes": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "device": profile.kind,
        "device_name": profile.name,
        "memory_gib": round(profile.memory_gib, 1),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count() or 1,
        "hardware_summary": profile.summary(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def load_run_info(out: Path) -> dict:
    path = out / RUN_INFO
    return json.loads(path.read_text()) if path.exists() else {"runs": {}, "notebooks": {}}


def save_run_info(out: Path, info: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_INFO).write_text(json.dumps(info, indent=1) + "\n")


def start_run(out: Path, runner: str, *, fresh: bool) -> tuple[dict, str]:
    info = {"runs": {}, "notebooks": {}} if fresh else load_run_info(out)
    run_id = str(len(info["runs"]) + 1)
    info["runs"][run_id] = run_record(runner)
    return info, run_id


def copy_path(path: Path, out: Path) -> tuple[str, Path]:
    """The notebook's name relative to the repository, and where its executed copy lives."""
    relative = path.resolve().relative_to(ROOT).as_posix()
    return relative, out / relative


def copy_only(paths: list[Path], out: Path) -> int:
    """A fresh `out` holding copies of the stored notebooks, for `pytest --nbmake --overwrite`."""
    if out.exists():
        shutil.rmtree(out)
    info, run_id = start_run(out, "nbmake", fresh=True)
    for path in paths:
        relative, copy = copy_path(path, out)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
        info["notebooks"][relative] = {"run": run_id}
    save_run_info(out, info)
    record = info["runs"][run_id]
    print(f"copied {len(paths)} notebooks to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} "
          f"(commit {record['commit_short']}, {record['device']}: {record['cpu_model']})")
    return 0


def execute(paths: list[Path], out: Path) -> int:
    from nbclient import NotebookClient

    os.environ["MPLBACKEND"] = INLINE_BACKEND   # inherited by the kernels
    info, run_id = start_run(out, "tools/run_all.py", fresh=False)
    save_run_info(out, info)
    results = []
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        relative, copy = copy_path(path, out)
        start = time.perf_counter()
        try:
            # Runs in the stored notebook's own folder, as nbmake does.
            NotebookClient(notebook, timeout=900, kernel_name="python3",
                           resources={"metadata": {"path": str(path.parent)}}).execute()
            status = "ok"
        except Exception as exc:
            status = f"FAILED: {type(exc).__name__}"
        seconds = time.perf_counter() - start
        copy.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, copy)
        info["notebooks"][relative] = {"run": run_id, "seconds": round(seconds, 1), "status": status}
        save_run_info(out, info)
        results.append((path, seconds, status))
        print(f"{seconds:7.1f} s  {status:8}  {path}", flush=True)
    failed = [r for r in results if r[2] != "ok"]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed; total {sum(r[1] for r in results):.0f} s")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", help="notebooks or folders (default: notebooks)")
    parser.add_argument("--out", type=Path, default=EXECUTED, help="where the executed copies go")
    parser.add_argument("--copy-only", action="store_true",
                        help="start a fresh OUT with copies of the notebooks, for pytest --nbmake --overwrite")
    args = parser.parse_args(argv)
    paths = notebooks_in(args.paths)
    out = args.out.resolve()
    return copy_only(paths, out) if args.copy_only else execute(paths, out)


if __name__ == "__main__":
    sys.exit(main())
