"""Keep notebooks/solutions/ in step with the lessons.

A lesson marks each exercise cell with a tag `exercise-<id>`. Its solution
notebook holds a cell with the same tag that solves it. This script rebuilds
each solution notebook from its lesson, taking every tagged exercise cell from
the existing solution and every other cell from the lesson, so the lecture
text and code exist once (in the lesson) and the solutions cannot drift.

    python tools/sync_solutions.py          # rewrite solutions
    python tools/sync_solutions.py --check  # exit 1 if any is out of date
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "notebooks"
SOLUTIONS = LESSONS / "solutions"


def exercise_tag(cell: dict) -> str | None:
    for tag in cell.get("metadata", {}).get("tags", []):
        if tag.startswith("exercise-"):
            return tag
    return None


def build_solution(lesson: dict, solution: dict, name: str) -> dict:
    solved = {exercise_tag(c): c for c in solution["cells"] if exercise_tag(c)}
    cells = []
    for cell in lesson["cells"]:
        tag = exercise_tag(cell)
        if tag is None:
            cells.append(copy.deepcopy(cell))
        elif tag in solved:
            cells.append(copy.deepcopy(solved[tag]))
        else:
            raise SystemExit(f"{name}: the solution has no cell tagged {tag!r}; add one to notebooks/solutions/{name}.")
    result = copy.deepcopy(lesson)
    result["cells"] = cells
    return result


def dump(notebook: dict) -> str:
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report solutions that are out of date")
    args = parser.parse_args()
    stale = []
    for lesson_path in sorted(LESSONS.glob("[0-9][0-9]_*.ipynb")):
        lesson = json.loads(lesson_path.read_text())
        if not any(exercise_tag(c) for c in lesson["cells"]):
            continue
        solution_path = SOLUTIONS / lesson_path.name
        if not solution_path.exists():
            stale.append(f"{solution_path.relative_to(ROOT)} is missing")
            continue
        text = dump(build_solution(lesson, json.loads(solution_path.read_text()), lesson_path.name))
        if solution_path.read_text() != text:
            stale.append(str(solution_path.relative_to(ROOT)))
            if not args.check:
                solution_path.write_text(text)
    if args.check and stale:
        print("out of date (run `python tools/sync_solutions.py`):\n  " + "\n  ".join(stale))
        return 1
    for item in stale:
        print(("missing: " if "missing" in item else "updated: ") + item)
    return 0


if __name__ == "__main__":
    sys.exit(main())
