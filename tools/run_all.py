"""Execute every notebook headlessly and report how long each took.

    python tools/run_all.py notebooks            # lessons and solutions
    python tools/run_all.py notebooks/03_*.ipynb

Executed copies (with outputs) go to build/executed/ (`--out DIR` to change),
which git ignores, so the stored notebooks stay clean; the course website
(`make site`, tools/build_site.py) is built from them.

    python tools/run_all.py --copy-only notebooks   # then pytest --nbmake --overwrite build/executed/runs/...
    python tools/run_all.py --split                 # the executed runs -> lesson and solution copies

`--copy-only` writes the notebooks to execute into a fresh build/executed/runs/
for `pytest --nbmake --overwrite` to execute in place, and `--split` turns the
executed runs into the lesson and solution copies; that is what `make test`
does, so that CI executes each notebook once and the site reuses the result.

A lesson and its solution run in one kernel: the run is the lesson, then its
solved exercise cells (the solutions notebook differs from its lesson only in
the cells tagged `exercise-N`, and every lesson ends with its exercises). The
lesson's copy gets the lesson's cells; the solution's copy gets the same
executed cells with each exercise replaced by its solved, executed twin. So a
solution costs only what its exercises compute, not a second run of the
lesson (18.5 of the 76 notebook core-minutes of a CI run at 0e2787d on an AVX2
EPYC; docs/measurements.md §2.1).

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

from sync_solutions import build_solution, exercise_tag

ROOT = Path(__file__).resolve().parent.parent
EXECUTED = ROOT / "build" / "executed"
RUN_INFO = "run_info.json"
# The kernel's matplotlib backend. ipykernel picks the inline one only when MPLBACKEND is unset,
# and with MPLBACKEND=Agg (as CI sets for the unit tests) plt.show() shows nothing: no plots in
# the executed copies. `make test` sets the same for nbmake.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


RUNS = "runs"  # under the output folder: the notebooks as executed, a lesson with its solved exercises appended
RUN_KEY = "course_run"  # notebook and cell metadata of a run: where its cells go when it is split


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


def repository_path(path: Path) -> str:
    """The notebook's path relative to the repository (an absolute path for one outside it, as in tests)."""
    path = path.resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.as_posix().lstrip("/")


def copy_path(path: Path, out: Path) -> tuple[str, Path]:
    """The notebook's name relative to the repository, and where its executed copy lives."""
    relative = repository_path(path)
    return relative, out / relative


# --------------------------------------------------------------------------- a lesson and its solution in one kernel

def group_runs(paths: list[Path]) -> list[tuple[Path, Path | None]]:
    """(notebook, its solution or None) per kernel: a lesson asked for with its solution runs with it."""
    chosen = {p.resolve() for p in paths}
    runs = []
    for path in paths:
        solution = path.parent / "solutions" / path.name
        if path.parent.name == "solutions" and path.parent.parent.joinpath(path.name).resolve() in chosen:
            continue  # runs in its lesson's kernel
        runs.append((path, solution if solution.resolve() in chosen else None))
    return runs


def run_notebook(lesson: Path, solution: Path | None):
    """The notebook one kernel executes: the lesson, then (if given) the solution's solved exercise cells.

    Refused where the solution is not its lesson with the exercise cells replaced
    (what tools/sync_solutions.py builds: run it), where two cells share an
    exercise tag, or where a lesson cell follows its first exercise: the solved
    cells run after the whole lesson, so they must be last.
    """
    notebook = nbformat.read(lesson, as_version=4)
    notebook.metadata[RUN_KEY] = {"lesson": repository_path(lesson),
                                  "solution": repository_path(solution) if solution else None}
    if solution is None:
        return notebook
    solved = nbformat.read(solution, as_version=4)
    tags = [exercise_tag(c) for c in notebook.cells]
    named = [t for t in tags if t]
    if len(set(named)) != len(named):
        raise ValueError(f"{lesson}: two cells share an exercise tag ({named}); each exercise has its own.")
    first = next((i for i, t in enumerate(tags) if t), len(tags))
    if any(t is None and c.cell_type == "code" for t, c in zip(tags[first:], notebook.cells[first:])):
        raise ValueError(f"{lesson}: a code cell follows the first exercise; the solved exercises run after "
                         "the whole lesson, so a lesson ends with its exercises (move the cell above them).")
    plain = nbformat.reads(nbformat.writes(solved), as_version=4)  # build_solution wants plain dicts
    try:
        rebuilt = build_solution(nbformat.reads(nbformat.writes(notebook), as_version=4), plain, lesson.name)
    except SystemExit as missing:  # sync_solutions reports a missing solved cell by exiting
        raise ValueError(str(missing)) from None
    rebuilt["metadata"].pop(RUN_KEY, None)
    if rebuilt != plain:
        raise ValueError(f"{solution} is not {lesson} with its exercise cells solved: run "
                         "`python tools/sync_solutions.py`, then again.")
    for i, tag in enumerate(tags):
        if tag:
            cell = next(c for c in solved.cells if exercise_tag(c) == tag)
            cell.metadata[RUN_KEY] = {"solves": tag, "id": cell.get("id")}
            if "id" in cell:
                cell.id = f"solved-{i}"  # cell ids are unique within a notebook; the solution's own comes back in split
            notebook.cells.append(cell)
    return notebook


def split_run(run) -> dict[str, object]:
    """{repository path: executed notebook} for the lesson, and its solution if the run holds one."""
    import copy as copying

    where = run.metadata.get(RUN_KEY)
    if not where:
        raise ValueError("not a notebook written by `run_all.py --copy-only` (no course_run metadata)")
    solved = {c.metadata[RUN_KEY]["solves"]: c for c in run.cells if RUN_KEY in c.get("metadata", {})}
    lesson = copying.deepcopy(run)
    del lesson.metadata[RUN_KEY]
    lesson.cells = [c for c in lesson.cells if RUN_KEY not in c.get("metadata", {})]
    copies = {where["lesson"]: lesson}
    if where["solution"]:
        solution = copying.deepcopy(lesson)
        solution.cells = [copying.deepcopy(solved[exercise_tag(c)]) if exercise_tag(c) else c for c in solution.cells]
        count = 0
        for cell in solution.cells:
            original = cell.metadata.pop(RUN_KEY, {}).get("id")
            if original:
                cell.id = original
            if cell.cell_type == "code" and cell.get("execution_count"):
                count += 1  # numbered as one top-to-bottom run; its exercises ran after the lesson's
                cell.execution_count = count
                for output in cell.outputs:
                    if "execution_count" in output:
                        output.execution_count = count
        copies[where["solution"]] = solution
    return copies


def split_runs(out: Path) -> int:
    """Write the lesson and solution copies of every executed run in `out`/runs."""
    written = 0
    for path in sorted((out / RUNS).rglob("*.ipynb")):
        for relative, notebook in split_run(nbformat.read(path, as_version=4)).items():
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, target)
            written += 1
    print(f"split {len(list((out / RUNS).rglob('*.ipynb')))} executed runs into {written} lesson and solution copies")
    return 0


def copy_only(paths: list[Path], out: Path) -> int:
    """A fresh `out`/runs holding the notebooks to execute, for `pytest --nbmake --overwrite`, then `--split`."""
    if out.exists():
        shutil.rmtree(out)
    info, run_id = start_run(out, "nbmake", fresh=True)
    runs = group_runs(paths)
    for lesson, solution in runs:
        relative, copy = copy_path(lesson, out / RUNS)
        copy.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(run_notebook(lesson, solution), copy)
        for path in (lesson, solution) if solution else (lesson,):
            info["notebooks"][repository_path(path)] = {"run": run_id, "kernel": f"{RUNS}/{relative}"}
    save_run_info(out, info)
    record = info["runs"][run_id]
    print(f"wrote {len(runs)} runs of {len(paths)} notebooks to "
          f"{(out / RUNS).relative_to(ROOT) if out.is_relative_to(ROOT) else out / RUNS} "
          f"(commit {record['commit_short']}, {record['device']}: {record['cpu_model']})")
    return 0


def execute(paths: list[Path], out: Path) -> int:
    from nbclient import NotebookClient

    os.environ["MPLBACKEND"] = INLINE_BACKEND   # inherited by the kernels
    info, run_id = start_run(out, "tools/run_all.py", fresh=False)
    save_run_info(out, info)
    results = []
    for lesson, solution in group_runs(paths):
        notebook = run_notebook(lesson, solution)
        start = time.perf_counter()
        try:
            # Runs in the stored notebook's own folder, as nbmake does.
            NotebookClient(notebook, timeout=900, kernel_name="python3",
                           resources={"metadata": {"path": str(lesson.parent)}}).execute()
            status = "ok"
        except Exception as exc:
            status = f"FAILED: {type(exc).__name__}"
        seconds = time.perf_counter() - start
        for relative, copy in split_run(notebook).items():
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(copy, out / relative)
            info["notebooks"][relative] = {"run": run_id, "seconds": round(seconds, 1), "status": status}
        save_run_info(out, info)
        results.append((lesson, seconds, status))
        print(f"{seconds:7.1f} s  {status:8}  {lesson}{' with its solution' if solution else ''}", flush=True)
    failed = [r for r in results if r[2] != "ok"]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed; total {sum(r[1] for r in results):.0f} s")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", help="notebooks or folders (default: notebooks)")
    parser.add_argument("--out", type=Path, default=EXECUTED, help="where the executed copies go")
    parser.add_argument("--copy-only", action="store_true",
                        help="start a fresh OUT with the runs to execute (OUT/runs), for pytest --nbmake --overwrite")
    parser.add_argument("--split", action="store_true",
                        help="write the lesson and solution copies of the executed runs in OUT/runs")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if args.split:
        return split_runs(out)
    paths = notebooks_in(args.paths)
    return copy_only(paths, out) if args.copy_only else execute(paths, out)


if __name__ == "__main__":
    sys.exit(main())
