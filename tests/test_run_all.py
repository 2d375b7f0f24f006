"""A lesson and its solution in one kernel (tools/run_all.py): the split copies are exactly the stored notebooks."""

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import run_all  # noqa: E402


def cells_of(notebook):
    return [(c.cell_type, c.source, c.get("id"), c.metadata) for c in notebook.cells]


def test_every_run_splits_back_into_the_stored_lesson_and_solution():
    runs = run_all.group_runs(run_all.notebooks_in([str(ROOT / "notebooks")]))
    lessons = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [lesson for lesson, _ in runs] == lessons  # every solution runs in its lesson's kernel
    assert sum(solution is not None for _, solution in runs) == len(list((ROOT / "notebooks" / "solutions").glob("*.ipynb")))
    for lesson, solution in runs:
        run = run_all.run_notebook(lesson, solution)
        nbformat.validate(run)  # unique cell ids among others
        copies = run_all.split_run(run)
        assert sorted(copies) == sorted(run_all.repository_path(p) for p in (lesson, solution) if p)
        for name, copy in copies.items():
            stored = nbformat.read(ROOT / name, as_version=4)
            assert cells_of(copy) == cells_of(stored) and copy.metadata == stored.metadata, name


def synthetic_pair(folder: Path, after_exercise: str | None = None) -> tuple[Path, Path]:
    """A lesson (x = 20, then an exercise stub) and its solution (the stub solved), as sync_solutions makes them."""
    lesson = nbformat.v4.new_notebook()
    lesson.cells = [nbformat.v4.new_markdown_cell("# A lesson"), nbformat.v4.new_code_cell("x = 20\nprint('lesson', x)"),
                    nbformat.v4.new_code_cell("answer = ...\nprint('not attempted yet')", metadata={"tags": ["exercise-1"]})]
    if after_exercise:
        lesson.cells.append(nbformat.v4.new_code_cell(after_exercise))
    solution = nbformat.from_dict(nbformat.reads(nbformat.writes(lesson), as_version=4))
    solution.cells[2].source = "answer = x + 1\nprint('solved', answer)"
    (folder / "solutions").mkdir(parents=True)
    nbformat.write(lesson, folder / "01_pair.ipynb")
    nbformat.write(solution, folder / "solutions" / "01_pair.ipynb")
    return folder / "01_pair.ipynb", folder / "solutions" / "01_pair.ipynb"


def test_the_solved_cells_run_after_the_lesson_in_its_kernel_and_land_in_the_solution(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setattr(run_all, "ROOT", tmp_path)
    lesson, solution = synthetic_pair(tmp_path / "notebooks")
    run = run_all.run_notebook(lesson, solution)
    assert len(run.cells) == 4  # the lesson, then the solved exercise
    NotebookClient(run, timeout=120, kernel_name="python3").execute()
    copies = run_all.split_run(run)
    printed = {name: [o.get("text", "") for c in copy.cells if c.cell_type == "code" for o in c.outputs]
               for name, copy in copies.items()}
    assert printed == {"notebooks/01_pair.ipynb": ["lesson 20\n", "not attempted yet\n"],
                       "notebooks/solutions/01_pair.ipynb": ["lesson 20\n", "solved 21\n"]}
    counts = [c.execution_count for c in copies["notebooks/solutions/01_pair.ipynb"].cells if c.cell_type == "code"]
    assert counts == [1, 2]  # numbered as one top-to-bottom run


def test_a_solution_out_of_step_or_a_lesson_cell_after_its_exercises_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(run_all, "ROOT", tmp_path)
    lesson, solution = synthetic_pair(tmp_path / "a")
    stale = nbformat.read(solution, as_version=4)
    stale.cells[1].source = "x = 21"
    nbformat.write(stale, solution)
    with pytest.raises(ValueError, match="sync_solutions"):
        run_all.run_notebook(lesson, solution)
    lesson, solution = synthetic_pair(tmp_path / "b", after_exercise="print(x)")
    with pytest.raises(ValueError, match="ends with its exercises"):
        run_all.run_notebook(lesson, solution)
    lesson, solution = synthetic_pair(tmp_path / "c")
    stale = nbformat.read(solution, as_version=4)
    stale.cells[1].metadata["tags"] = ["hidden"]  # the same source, other metadata: not what sync_solutions builds
    nbformat.write(stale, solution)
    with pytest.raises(ValueError, match="sync_solutions"):
        run_all.run_notebook(lesson, solution)
    twice = nbformat.read(lesson, as_version=4)
    twice.cells[1].metadata["tags"] = ["exercise-1"]
    nbformat.write(twice, lesson)
    with pytest.raises(ValueError, match="share an exercise tag"):
        run_all.run_notebook(lesson, solution)


def test_a_solution_asked_for_without_its_lesson_runs_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(run_all, "ROOT", tmp_path)
    lesson, solution = synthetic_pair(tmp_path / "notebooks")
    assert run_all.group_runs([lesson, solution]) == [(lesson, solution)]
    assert run_all.group_runs([solution]) == [(solution, None)]
    assert list(run_all.split_run(run_all.run_notebook(solution, None))) == ["notebooks/solutions/01_pair.ipynb"]
