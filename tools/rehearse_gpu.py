"""Rehearse the course's CUDA path on a CPU: lessons run along their GPU branches on an emulated GPU.

    python tools/rehearse_gpu.py                          # the rehearsed lessons with their solutions, emulated T4
    python tools/rehearse_gpu.py notebooks/08_*.ipynb --gpu A100
    python tools/rehearse_gpu.py --copy-only              # write build/rehearsal/ for pytest --nbmake (make test)

CI has no GPU, so every `profile.is_gpu` branch is dead code there. A rehearsal
run is a lesson with its solved exercises (as tools/run_all.py builds it) with
one cell put first that makes the kernel a T4 (fp16, no bf16) or an A100 (bf16):
`torch.cuda.is_available()` is true, `detect()` reports the GPU, the model goes
to "cuda", and a tensor left on the CPU next to it or `.numpy()` on a GPU tensor
fails as it would on the card; the lesson computes in the card's 16-bit dtype,
with the CPU kernels' rounding (tools/cuda_emulator.py says how, and what it
cannot show: CUDA's kernels and their rounding, speed, memory, asynchronous
execution). Every kernel underneath
is the CPU's, so the rehearsal runs at quick sizes (COURSE_QUICK=1: the `gpu=`
branches' code with the CPU's step counts) and in 16 bits (its matrix products
as fp32 products of 16-bit values, as a GPU computes them and at the CPU's fp32
speed; the rest in the CPU's 16-bit kernels): CI rehearses the lessons whose
GPU branches differ from the CPU's but which do not train (REHEARSED); the ones
that train would add their whole CPU time again (docs/measurements.md says
what that would cost). The rehearsal's executed notebooks stay in
build/rehearsal/ (not on the site).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_all import group_runs, notebooks_in, repository_path, run_notebook  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "rehearsal"
REHEARSED = ("00", "01", "03", "06", "07", "08")  # lessons (with their solutions) CI runs on an emulated T4
GPUS = ("T4", "A100")
REHEARSAL_KEY = "course_rehearsal"  # notebook metadata: the emulated GPU


def setup_source(gpu: str) -> str:
    """The first cell of a rehearsal: quick sizes, then the emulated GPU, before anything imports the course."""
    return "\n".join([
        f"# CUDA rehearsal (tools/rehearse_gpu.py): this kernel runs as if on one {gpu}, at quick sizes.",
        "import os, sys",
        'os.environ["COURSE_QUICK"] = "1"',
        f"sys.path.insert(0, {str(ROOT)!r})",
        "from tools.cuda_emulator import enable",
        f"enable({gpu!r})",
    ])


def rehearsal_notebook(lesson: Path, solution: Path | None, gpu: str):
    """The run of `lesson` (with `solution`'s solved exercises) with the emulator's cell first."""
    if gpu not in GPUS:
        raise ValueError(f"gpu must be one of {GPUS}, got {gpu!r}")
    notebook = run_notebook(lesson, solution)
    cell = nbformat.v4.new_code_cell(setup_source(gpu))
    cell.id = "cuda-rehearsal"
    notebook.cells.insert(0, cell)
    notebook.metadata[REHEARSAL_KEY] = {"gpu": gpu}
    return notebook


def rehearsal_path(lesson: Path, gpu: str, out: Path = OUT) -> Path:
    return out / gpu / repository_path(lesson)


def default_paths() -> list[Path]:
    return [p for p in notebooks_in([str(ROOT / "notebooks")]) if p.name[:2] in REHEARSED]


def copy_only(paths: list[Path], gpu: str, out: Path) -> int:
    """A fresh `out`/GPU with the rehearsal notebooks, for `pytest --nbmake --overwrite` to execute in place."""
    shutil.rmtree(out / gpu, ignore_errors=True)
    runs = group_runs(paths)
    for lesson, solution in runs:
        path = rehearsal_path(lesson, gpu, out)
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(rehearsal_notebook(lesson, solution, gpu), path)
    print(f"wrote {len(runs)} rehearsal runs ({gpu}) to {(out / gpu).relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


def execute(paths: list[Path], gpu: str, out: Path) -> int:
    from nbclient import NotebookClient

    failed = 0
    for lesson, solution in group_runs(paths):
        notebook = rehearsal_notebook(lesson, solution, gpu)
        path = rehearsal_path(lesson, gpu, out)
        path.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        try:
            NotebookClient(notebook, timeout=1800, kernel_name="python3",
                           resources={"metadata": {"path": str(lesson.parent)}}).execute()
            status = "ok"
        except Exception as exc:  # noqa: BLE001 - a notebook can fail in any way; its copy shows where
            status = f"FAILED: {type(exc).__name__}"
            failed += 1
        nbformat.write(notebook, path)
        print(f"{time.perf_counter() - start:7.1f} s  {status:8}  {lesson} on an emulated {gpu} -> "
              f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", help=f"notebooks or folders (default: lessons {', '.join(REHEARSED)} "
                                                 "and their solutions)")
    parser.add_argument("--gpu", choices=GPUS, default="T4")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--copy-only", action="store_true", help="write the notebooks for pytest --nbmake")
    args = parser.parse_args(argv)
    paths = notebooks_in(args.paths) if args.paths else default_paths()
    os.environ.setdefault("MPLBACKEND", "Agg")
    out = args.out.resolve()
    return copy_only(paths, args.gpu, out) if args.copy_only else execute(paths, args.gpu, out)


if __name__ == "__main__":
    sys.exit(main())
