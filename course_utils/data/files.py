"""Reading and writing the JSONL files, with errors that name the file, the line and the fix."""

from __future__ import annotations

import json
import operator
from pathlib import Path
from typing import Callable

from .splits import DATA_DIR, SPLITS, TASKS
from .schemas import schema_text
from .sql_task import generate_sql_examples
from .json_task import generate_json_examples


# ---------------------------------------------------------------------------
# Files, loaders and prompts
# ---------------------------------------------------------------------------

GENERATORS = {"sql": generate_sql_examples, "json": generate_json_examples}


def data_path(task: str, split: str, data_dir: Path | None = None) -> Path:
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of {TASKS}.")
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose one of {SPLITS}.")
    return (data_dir or DATA_DIR) / task / f"{split}.jsonl"


# What every row of a task must hold; a data file missing one is an error naming the line and field.
REQUIRED_FIELDS = {"sql": ("task", "question", "answer", "db_id", "schema"), "json": ("task", "question", "answer")}
_FIX = "Fix the file or regenerate it with `python -m course_utils.data`."


def read_jsonl(path: Path, required: tuple[str, ...] = (), fix: str = _FIX,
               check_row: Callable[[dict], str | None] | None = None) -> list[dict]:
    """Read a JSONL file: one JSON object per line (blank lines are skipped).

    Anything wrong is a ValueError that names the file and the line: an empty
    file, bytes that are not UTF-8, a line that is not JSON or not a JSON
    object, a `required` field missing or not a string, or what `check_row`
    says is wrong with a row (it returns None for a good row). `fix` ends each
    message (the course's files are regenerated; a learner's file is edited).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path.resolve()} does not exist (or is not a file). {fix}")
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"{path} is empty: expected one JSON object per line. {fix}")
    rows = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}, line {number}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                             f"{exc.start + 1}); save the file as UTF-8. {fix}") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {number}: not valid JSON ({exc.msg}). {fix}") from None
        except RecursionError:
            raise ValueError(f"{path}, line {number}: JSON nested too deeply to read. {fix}") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}, line {number}: a JSON {type(row).__name__}, not a JSON object "
                             f"({{\"field\": value, ...}}). {fix}")
        for name in required:
            if name not in row:
                raise ValueError(f"{path}, line {number}: missing field {name!r} (every row needs "
                                 f"{', '.join(required)}). {fix}")
            if not isinstance(row[name], str):
                raise ValueError(f"{path}, line {number}: field {name!r} is a {type(row[name]).__name__}, "
                                 f"not a string. {fix}")
        if check_row is not None and (problem := check_row(row)):
            raise ValueError(f"{path}, line {number}: {problem}. {fix}")
        rows.append(row)
    return rows


CHAT_FIELDS = ("question", "answer")  # required; "system" is optional
CHAT_FORMAT = ('one JSON object per line: {"question": "...", "answer": "..."}, optionally with '
               '"system": "..." (instructions the model sees first, e.g. a schema); see docs/your_data.md')


def read_chat_rows(path: str | Path) -> list[dict]:
    """Read a learner's training file: question/answer rows (and an optional system text), checked line by line.

    The format of lesson 04's recipe. Every problem is a ValueError naming the
    file, the line and the fix, raised before any model is loaded: a missing or
    non-string field, an empty question or answer (an empty answer trains the
    model to stop at once), a `system` that is not a string. Other fields are
    kept and ignored.
    """
    def problem(row: dict) -> str | None:
        for name in CHAT_FIELDS:
            if not row[name].strip():
                return f"field {name!r} is empty"
        if row.get("system") is not None and not isinstance(row["system"], str):
            return f"field 'system' is a {type(row['system']).__name__}, not a string"
        return None

    return read_jsonl(Path(path), CHAT_FIELDS, fix=f"Each line must be {CHAT_FORMAT}.", check_row=problem)


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def row_checker(task: str, run_gold: bool = True) -> Callable[[dict], str | None]:
    """What makes a row of `task` unscorable, said before any lesson reads it (`read_jsonl`'s `check_row`):
    another task's row, an SQL row on a database the course does not have or whose gold query does not run
    there (`run_gold`: run each under the sandbox's read-only rules and time limit, about 0.1 ms a query), a
    JSON answer that is not a JSON object with fields (score_json compares the answer's fields one by one)."""
    from ..sql_sandbox import run_readonly_query
    from .databases import DATABASE_BY_ID
    from .schemas import connect, transfer_database_ids

    known = set(DATABASE_BY_ID) | set(transfer_database_ids()) if task == "sql" else set()
    connections: dict = {}  # one in-memory copy of each database, for this file's rows

    def check(row: dict) -> str | None:
        if row["task"] != task:
            return f"field 'task' is {row['task']!r}, expected {task!r}"
        if task == "sql" and row["db_id"] not in known:
            return (f"field 'db_id' is {row['db_id']!r}, not one of the course's databases "
                    f"({', '.join(sorted(known)[:3])}, ...)")
        if task == "sql" and run_gold:
            if row["db_id"] not in connections:
                connections[row["db_id"]] = connect(row["db_id"])
            try:
                run_readonly_query(connections[row["db_id"]], row["answer"])
            except Exception as exc:  # a syntax error, an unknown column, a refused action, the time limit
                return (f"field 'answer' (the gold query) does not run on database {row['db_id']!r} "
                        f"({type(exc).__name__}: {str(exc)[:160]}), so no answer could be scored against it")
        if task == "json":
            try:
                answer = json.loads(row["answer"])
            except (ValueError, RecursionError):
                answer = None
            if not isinstance(answer, dict) or not answer:
                return "field 'answer' is not a JSON object with at least one field (the answer is scored field by field)"
        return None

    return check


def load_examples(task: str = "sql", split: str = "train", limit: int | None = None,
                  data_dir: Path | None = None) -> list[dict]:
    """Examples of one split as dicts (question, answer, and task-specific fields); the first `limit` if given."""
    if limit is not None:
        if isinstance(limit, bool) or not hasattr(limit, "__index__") or operator.index(limit) < 0:
            raise ValueError(f"limit must be a whole number of rows, 0 or more (or None for all), got {limit!r}.")
        limit = operator.index(limit)
    # A missing file is read_jsonl's error: its full path and the fix (regenerate the data).
    path = data_path(task, split, data_dir)
    identity = (str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns) if path.is_file() else None
    rows = read_jsonl(path, REQUIRED_FIELDS[task], check_row=row_checker(task, run_gold=identity not in _GOLD_RAN))
    _GOLD_RAN.add(identity)
    return rows[:limit] if limit is not None else rows


_GOLD_RAN: set = set()  # files whose gold queries all ran, by (path, size, mtime): checked once per process


def transfer_path(data_dir: Path | None = None) -> Path:
    return (data_dir or DATA_DIR) / "transfer" / "questions.jsonl"


def load_transfer_examples(data_dir: Path | None = None) -> list[dict]:
    """The hand-written transfer check: SQL examples (group "transfer") on data/transfer/ databases.

    Same row format as the SQL task, so `execution_accuracy` and the lessons'
    helpers score it unchanged. Its schema field is the database's
    `schema_text`, refreshed by `python -m course_utils.data`.
    """
    path = transfer_path(data_dir)
    return read_jsonl(path, REQUIRED_FIELDS["sql"] + ("group",), check_row=row_checker("sql"))


def refresh_transfer_schemas(data_dir: Path | None = None) -> int:
    """Rewrite the schema field of the transfer questions from their databases (the prompt's format)."""
    path = transfer_path(data_dir)
    rows = read_jsonl(path, REQUIRED_FIELDS["sql"])
    for row in rows:
        row["schema"] = schema_text(row["db_id"])
    write_jsonl(rows, path)
    return len(rows)


def evenly_spaced(examples: list[dict], n: int | None) -> list[dict]:
    """`n` examples spread evenly over the list (so every group of a split is represented).

    Lessons evaluate on such a subset on a CPU and on the whole split on a GPU.
    """
    if n is None or n >= len(examples):
        return list(examples)
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}.")
    step = len(examples) / n
    return [examples[int(i * step)] for i in range(n)]


def load_task_dataset(task: str = "sql", data_dir: Path | None = None):
    """The task as a `datasets.DatasetDict` with train, validation and test splits."""
    from datasets import load_dataset

    files = {split: str(data_path(task, split, data_dir)) for split in SPLITS}
    return load_dataset("json", data_files=files)
