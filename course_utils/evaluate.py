"""Exact scores for the course's tasks, and perplexity.

Model output is untrusted. A predicted SQL query runs only as a single
read-only SELECT (or WITH ... SELECT) on a fresh in-memory copy of the
database, under an authorizer that refuses ATTACH, PRAGMA and every write,
with a time limit. Anything malformed scores 0 with the reason recorded; the
run never crashes because of what a model wrote.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch

from .data import JSON_FIELDS, connect

SQL_TIME_LIMIT_S = 2.0
MAX_ROWS = 10_000

_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}
if hasattr(sqlite3, "SQLITE_RECURSIVE"):
    _ALLOWED_ACTIONS.add(sqlite3.SQLITE_RECURSIVE)


@dataclass
class ScoredExample:
    id: str
    correct: bool
    score: float  # 1/0 for SQL; fraction of fields right for JSON
    reason: str  # "match", or why not
    prediction: str
    group: str = ""


@dataclass
class EvalReport:
    """Per-example results plus the mean score, overall and per group."""

    results: list[ScoredExample] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return sum(r.score for r in self.results) / len(self.results) if self.results else 0.0

    def by_group(self) -> dict[str, float]:
        groups: dict[str, list[float]] = {}
        for r in self.results:
            groups.setdefault(r.group, []).append(r.score)
        return {g: sum(s) / len(s) for g, s in sorted(groups.items())}

    def reasons(self) -> Counter:
        return Counter(r.reason.split(":")[0] for r in self.results)

    def __str__(self) -> str:
        parts = ", ".join(f"{g} {a:.1%}" for g, a in self.by_group().items())
        return f"accuracy {self.accuracy:.1%} on {len(self.results)} examples ({parts})"


class UnsafeQuery(ValueError):
    """The query is not a single read-only SELECT."""


def extract_sql(text: str) -> str:
    """The query inside a model's answer: strips code fences and surrounding prose markers."""
    text = text.strip()
    fenced = re.search(r"```(?:sql|sqlite)?\s*(.*?)```", text, flags=re.S | re.I)
    if fenced:
        text = fenced.group(1).strip()
    return text


def _authorizer(action: int, *_args: Any) -> int:
    return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


def run_readonly_query(conn: sqlite3.Connection, sql: str, time_limit_s: float = SQL_TIME_LIMIT_S) -> list[tuple]:
    """Run one SELECT with an authorizer and a deadline; raise on anything else.

    Raises UnsafeQuery for non-SELECT text or several statements, and
    sqlite3.Error for a denied action, a syntax error or the time limit.
    """
    query = sql.strip()
    if not re.match(r"^(select|with)\b", query, flags=re.I):
        raise UnsafeQuery("not a SELECT query")
    body = query.rstrip().rstrip(";")
    deadline = time.monotonic() + time_limit_s
    conn.set_authorizer(_authorizer)
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
    try:
        # sqlite3 compiles one statement and refuses text after it.
        cursor = conn.execute(body)
        rows = cursor.fetchmany(MAX_ROWS + 1)
    except sqlite3.ProgrammingError as exc:
        if "one statement" in str(exc):
            raise UnsafeQuery("more than one statement") from None
        raise
    finally:
        conn.set_progress_handler(None, 0)
        conn.set_authorizer(None)
    if len(rows) > MAX_ROWS:
        raise UnsafeQuery(f"more than {MAX_ROWS} rows")
    return rows


def _normalise(rows: Iterable[tuple]) -> list[tuple]:
    def cell(value: Any) -> Any:
        if isinstance(value, float):
            return round(value, 6) + 0.0  # +0.0 turns -0.0 into 0.0
        return value

    return [tuple(cell(v) for v in row) for row in rows]


def _gold_is_ordered(sql: str) -> bool:
    return re.search(r"\border\s+by\b", sql, flags=re.I) is not None


def score_sql(prediction: str, gold_sql: str, db_id: str) -> tuple[bool, str]:
    """Execution match of one predicted query against the gold query."""
    conn = connect(db_id)
    try:
        gold = _normalise(conn.execute(gold_sql).fetchall())
        try:
            predicted = _normalise(run_readonly_query(conn, extract_sql(prediction)))
        except UnsafeQuery as exc:
            return False, f"rejected: {exc}"
        except sqlite3.Error as exc:
            message = str(exc)
            if "interrupted" in message:
                return False, f"timeout: over {SQL_TIME_LIMIT_S} s"
            if "not authorized" in message:
                return False, "rejected: action not allowed"
            return False, f"error: {message}"
        if _gold_is_ordered(gold_sql):
            same = predicted == gold
        else:
            same = Counter(predicted) == Counter(gold)
        return same, "match" if same else "wrong result"
    finally:
        conn.close()


def execution_accuracy(predictions: Sequence[str], examples: Sequence[dict]) -> EvalReport:
    """SQL execution accuracy: same result set on the same database (order only if gold orders)."""
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples; pass one per example.")
    report = EvalReport()
    for prediction, example in zip(predictions, examples):
        ok, reason = score_sql(prediction, example["answer"], example["db_id"])
        report.results.append(ScoredExample(example.get("id", ""), ok, float(ok), reason, prediction,
                                            example.get("group", "")))
    return report


def parse_json_object(text: str) -> dict | None:
    """The first JSON object in a model's answer, or None."""
    match = re.search(r"\{.*\}", text, flags=re.S)
    if not match:
        return None
    try:
        value = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def score_json(prediction: str, gold_json: str) -> tuple[float, str]:
    gold = json.loads(gold_json)
    predicted = parse_json_object(prediction)
    if predicted is None:
        return 0.0, "error: no JSON object"
    right = [k for k in JSON_FIELDS if k in gold and str(predicted.get(k)).strip().lower() == str(gold[k]).lower()]
    wrong = [k for k in JSON_FIELDS if k in gold and k not in right]
    return len(right) / len(gold), "match" if not wrong else "wrong fields: " + ", ".join(wrong)


def json_field_accuracy(predictions: Sequence[str], examples: Sequence[dict]) -> EvalReport:
    """Fraction of fields extracted exactly (people compared as text, so 4 == "4")."""
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples; pass one per example.")
    report = EvalReport()
    for prediction, example in zip(predictions, examples):
        score, reason = score_json(prediction, example["answer"])
        report.results.append(ScoredExample(example.get("id", ""), score == 1.0, score, reason, prediction,
                                            example.get("group", "")))
    return report


def score_task(predictions: Sequence[str], examples: Sequence[dict]) -> EvalReport:
    """Score with the metric of the examples' task."""
    tasks = {e["task"] for e in examples}
    if tasks == {"sql"}:
        return execution_accuracy(predictions, examples)
    if tasks == {"json"}:
        return json_field_accuracy(predictions, examples)
    raise ValueError(f"Examples mix or lack tasks ({tasks}); score one task at a time.")


@torch.no_grad()
def perplexity(model, tokenizer, texts: Sequence[str], max_length: int = 256, batch_size: int = 8) -> float:
    """exp(mean token negative log-likelihood) over `texts`."""
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "right"  # positions start at 0
    try:
        batches = [tokenizer(list(texts[start:start + batch_size]), return_tensors="pt", padding=True,
                             truncation=True, max_length=max_length) for start in range(0, len(texts), batch_size)]
    finally:
        tokenizer.padding_side = padding_side
    for batch in batches:
        batch = batch.to(device)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        logits = model(**batch).logits.float()
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)),
                                                shift_labels.reshape(-1), ignore_index=-100, reduction="sum")
        total_nll += nll.item()
        total_tokens += int((shift_labels != -100).sum())
    return math.exp(total_nll / total_tokens)
