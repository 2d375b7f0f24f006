"""The CUDA rehearsal (tools/rehearse_gpu.py): a lesson's run with an emulated GPU's cell first, and a real
kernel that fails on a GPU-only bug the CPU run does not see."""

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import rehearse_gpu  # noqa: E402
from run_all import run_notebook  # noqa: E402


def test_a_rehearsal_is_the_lessons_run_with_the_emulator_first():
    lesson = ROOT / "notebooks" / "03_lora_from_scratch.ipynb"
    solution = ROOT / "notebooks" / "solutions" / lesson.name
    rehearsal = rehearse_gpu.rehearsal_notebook(lesson, solution, "A100")
    run = run_notebook(lesson, solution)
    first = rehearsal.cells[0].source
    assert 'os.environ["COURSE_QUICK"] = "1"' in first and "enable('A100')" in first
    assert first.index("COURSE_QUICK") < first.index("enable(")  # quick sizes before anything reads them
    assert [c.source for c in rehearsal.cells[1:]] == [c.source for c in run.cells]
    assert rehearsal.metadata[rehearse_gpu.REHEARSAL_KEY] == {"gpu": "A100"}
    with pytest.raises(ValueError, match="gpu must be one of"):
        rehearse_gpu.rehearsal_notebook(lesson, solution, "H100")


def test_copy_only_writes_the_rehearsed_lessons_each_with_its_solution(tmp_path):
    assert rehearse_gpu.copy_only(rehearse_gpu.default_paths(), "T4", tmp_path) == 0
    written = sorted(p.name[:2] for p in (tmp_path / "T4" / "notebooks").glob("*.ipynb"))
    assert written == sorted(rehearse_gpu.REHEARSED)
    run = nbformat.read(tmp_path / "T4" / "notebooks" / "08_qlora_storage_and_compute.ipynb", as_version=4)
    assert run.metadata["course_run"]["solution"] == "notebooks/solutions/08_qlora_storage_and_compute.ipynb"


PROBE = """import torch
from course_utils.hardware import detect
profile = detect()
model = torch.nn.Linear(4, 2).to(profile.device)
x = torch.ones(3, 4{device})
print(profile.device, model(x).sum().item())"""


def probe_notebook(path: Path, device: str) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("# probe"),
                      nbformat.v4.new_code_cell(PROBE.format(device=device))]
    nbformat.write(notebook, path)
    return path


def test_the_rehearsal_fails_on_a_tensor_left_on_the_cpu_and_passes_without_it(tmp_path):
    """The defect class the rehearsal exists for: invisible on a CPU, an error on a GPU."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    buggy = probe_notebook(tmp_path / "buggy.ipynb", "")
    fixed = probe_notebook(tmp_path / "fixed.ipynb", ", device=profile.device")
    plain = nbformat.read(buggy, as_version=4)
    NotebookClient(plain, timeout=120, kernel_name="python3").execute()  # the CPU run: fine
    assert plain.cells[1].outputs[0]["text"].startswith("cpu ")
    rehearsed = rehearse_gpu.rehearsal_notebook(buggy, None, "T4")
    with pytest.raises(CellExecutionError, match="Expected all tensors to be on the same device"):
        NotebookClient(rehearsed, timeout=120, kernel_name="python3").execute()
    rehearsed = rehearse_gpu.rehearsal_notebook(fixed, None, "T4")
    NotebookClient(rehearsed, timeout=120, kernel_name="python3").execute()
    assert rehearsed.cells[2].outputs[-1]["text"].startswith("cuda ")
