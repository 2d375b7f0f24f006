"""Exact scores for the course's tasks, and perplexity.

Model output is untrusted, and one bad answer must never abort an evaluation:
every scorer returns a score of 0 with the reason instead of raising.

A predicted SQL query runs in `sql_sandbox`: a single read-only SELECT (or
WITH ... SELECT), in a separate worker process, on an in-memory copy of the
database, under an authorizer that refuses ATTACH, PRAGMA, every write and
every SQL function outside a short allowlist, with SQLite's size limits, a
heap limit, and a deadline after which the worker is killed. Reasons start
with "match", "wrong result", "rejected:", "timeout:", "too large:",
"out of memory:" or "error:". The gold query is the course's own and runs
in-process.
"""

from __future__ import annotations

import atexit
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch

from .data import JSON_FIELDS, connect, database_script
from .sql_sandbox import (  # noqa: F401  (re-exported: the public API of this module)
    MAX_ROWS,
    SQL_TIME_LIMIT_S,
    QueryTooLarge,
    SqlSandbox,
    UnsafeQuery,
    run_readonly_query,
)


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


# Fences: a run of three or more backticks or tildes (Markdown's two kinds). Each pattern below is a plain run
# or a negated class, so a search costs time linear in the text, whatever the model wrote (the earlier single
# regex backtracked quadratically: a fence and 100,000 spaces took 10 s).
_OPENING = re.compile(r"`{3,}|~{3,}")
_INFO_STRING = re.compile(r"[ \t]*([A-Za-z][\w+.-]*)?[ \t]*")  # ```sql, ```sqlite, ```SQL: a language name
_SQL_START = re.compile(r"(?:select|with)\b", flags=re.I)  # a query's first word (after a fence)
# A query's start in free text, where "With" may open a sentence: SELECT, or WITH name [(columns)] AS (.
_QUERY_START = re.compile(r"select\b|with\s+(?:recursive\s+)?\w+\s*(?:\([^()]*\)\s*)?as\s*"
                          r"(?:(?:not\s+)?materialized\s*)?\(", flags=re.I)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_QUOTE_COMMENT_OR_END = re.compile(r"['\"`\[;]|--|/\*")
_CLOSING = {"'": "'", '"': '"', "`": "`", "[": "]"}  # quotes and SQLite's quoted identifiers
_OTHER_STATEMENT = re.compile(r"(?:--|/\*|(?:insert|update|delete|drop|create|alter|attach|detach|pragma|replace|vacuum"
                              r"|begin|commit|rollback|end|explain|analyze|reindex|savepoint|release|values|select)\b)",
                              flags=re.I)


def extract_sql(text: str) -> str:
    """The query inside a model's answer; the whole text when it is not wrapped.

    Takes the query before a first fence when the text starts with one (a query,
    then a lone ```); else the first fenced block (``` or ~~~, three or more, with
    or without a language name, on its own line or on the fence's: ```sql
    SELECT ...```, up to a closing fence of the same kind or the end of the text,
    since an answer cut off by max_new_tokens has none); without a fence, the
    text if it starts with SELECT or WITH, else the first inline code span that
    holds a query. A query that ends with `;` and is followed by prose ("SELECT
    ...;\n\nThis lists ...") is taken up to that `;`. Line ends are normalised
    first (CRLF). Linear time in the text's length.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    opening = _OPENING.search(text)
    if opening is None:
        if _QUERY_START.match(text):
            return _through_first_semicolon(text)
        for span in _INLINE_CODE.finditer(text):  # a query in inline code, not a keyword named in prose
            code = span.group(1).strip()
            if _QUERY_START.match(code) and len(code.split()) > 1:
                return code
        return text
    before = text[:opening.start()].strip()
    if _QUERY_START.match(before):  # SELECT ...\n``` (then perhaps prose): a query closed by a lone fence
        return before
    fence = opening.group(0)
    start = opening.end()
    info = _INFO_STRING.match(text, start)
    if info.group(1) and not _SQL_START.match(info.group(1)):  # a language name, not the query's first word
        start = info.end()
    end = text.find(fence[0] * len(fence), start)  # the closing fence: the same character, at least as long
    if end < 0 and len(fence) > 3:  # opened with four, closed with three: taken as closed
        end = text.find(fence[0] * 3, start)
    return (text[start:] if end < 0 else text[start:end]).strip()


def _through_first_semicolon(text: str) -> str:
    """`text` up to its first `;` outside quotes and comments, when more text follows; else `text`.

    One pass over the text: quotes ('...', "...", `...`, [...]) and comments
    (-- to the end of the line, /* ... */) are skipped, so a `;` inside them does not end the
    query. What follows must read as prose: a second statement (or a comment)
    keeps the whole text, which the sandbox refuses as more than one statement.
    """
    i = 0
    while (found := _QUOTE_COMMENT_OR_END.search(text, i)) is not None:  # jumps between interesting places in C
        token, i = found.group(0), found.start()
        if token in _CLOSING:
            end = text.find(_CLOSING[token], i + 1)  # SQL doubles a quote inside a string: '' closes and reopens
            i = end + 1
        elif token == "--":
            end = text.find("\n", i)
            i = end + 1
        elif token == "/*":
            end = text.find("*/", i + 2)
            i = end + 2
        else:  # ";"
            rest = text[i + 1:].strip()
            if not rest or _QUERY_START.match(rest) or _OTHER_STATEMENT.match(rest):
                return text  # a second statement is the sandbox's to refuse, as a whole ("rejected: ...")
            return text[:i + 1]
        if end < 0:  # an unclosed quote or comment: no `;` ends the query
            return text
    return text


_SANDBOX = SqlSandbox()  # one worker process, started on the first query
atexit.register(_SANDBOX.close)


def _normalise(rows: Iterable[tuple]) -> list[tuple]:
    def cell(value: Any) -> Any:
        if isinstance(value, float):
            return round(value, 6) + 0.0  # +0.0 turns -0.0 into 0.0
        return value

    return [tuple(cell(v) for v in row) for row in rows]


def _gold_is_ordered(sql: str) -> bool:
    return re.search(r"\border\s+by\b", sql, flags=re.I) is not None


def _not_text(prediction: Any) -> str | None:
    """The reason a prediction cannot be scored as text, or None when it is text."""
    if isinstance(prediction, str):
        return None
    return f"error: the prediction is {type(prediction).__name__}, not text"


def score_sql(prediction: str, gold_sql: str, db_id: str) -> tuple[bool, str]:
    """Execution match of one predicted query against the gold query; never raises on the prediction.

    The gold query is trusted and runs in-process (an error there is a bug in
    the data, and raises). The prediction runs in the sandbox's worker process.
    """
    conn = connect(db_id)
    try:
        gold = _normalise(conn.execute(gold_sql).fetchall())
    finally:
        conn.close()
    if (why := _not_text(prediction)) is not None:
        return False, why
    try:
        rows, reason = _SANDBOX.run(database_script(db_id), extract_sql(prediction), SQL_TIME_LIMIT_S)
        if rows is None:
            return False, reason
        predicted = _normalise(rows)
        same = predicted == gold if _gold_is_ordered(gold_sql) else Counter(predicted) == Counter(gold)
    except Exception as exc:  # whatever a model wrote, one answer must not abort the evaluation
        return False, f"error: {type(exc).__name__}: {str(exc)[:160]}"
    return same, "match" if same else "wrong result"


def execution_accuracy(predictions: Sequence[str], examples: Sequence[dict]) -> EvalReport:
    """SQL execution accuracy: same result set on the same database (order only if gold orders)."""
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples; pass one per example.")
    report = EvalReport()
    for prediction, example in zip(predictions, examples):
        ok, reason = score_sql(prediction, example["answer"], example["db_id"])
        report.results.append(ScoredExample(example.get("id", ""), ok, float(ok), reason, _as_text(prediction),
                                            example.get("group", "")))
    return report


def _as_text(prediction: Any) -> str:
    return prediction if isinstance(prediction, str) else ""


# Where to look for the object: a model's answer is a few hundred tokens; these caps
# keep an adversarial text (nested or unterminated objects) from costing more than milliseconds.
MAX_JSON_CHARS = 100_000
MAX_JSON_STARTS = 64
MAX_INT_DIGITS = 100


def _bounded_int(digits: str) -> int | str:
    """A JSON integer; one too long for int() (Python refuses over 4,300 digits) stays text."""
    return int(digits) if len(digits) <= MAX_INT_DIGITS else digits


_JSON = json.JSONDecoder(parse_int=_bounded_int)


def parse_json_object(text: str) -> dict | None:
    """The first complete JSON object in a model's answer, or None.

    Tries each "{" in turn with `raw_decode`, which stops at the end of the
    object, so prose after it (even with braces) or a second object does not
    matter. Never raises: a nesting too deep for the decoder counts as no object.
    """
    if not isinstance(text, str):
        return None
    text = text[:MAX_JSON_CHARS]
    start = text.find("{")
    for _ in range(MAX_JSON_STARTS):
        if start < 0:
            break
        try:
            value, _end = _JSON.raw_decode(text, start)
            if isinstance(value, dict):
                return value
        except (ValueError, RecursionError):
            pass
        start = text.find("{", start + 1)
    return None


def _field_text(value: Any) -> str | None:
    """A predicted field as comparable text; None for lists and objects (never a right answer)."""
    if isinstance(value, (dict, list)):
        return None
    return str(value).strip().lower()


def score_json(prediction: str, gold_json: str) -> tuple[float, str]:
    """Fraction of the gold fields the first JSON object in `prediction` gets right; never raises on it."""
    gold = json.loads(gold_json)
    if (why := _not_text(prediction)) is not None:
        return 0.0, why
    predicted = parse_json_object(prediction)
    if predicted is None:
        return 0.0, "error: no JSON object"
    right = [k for k in JSON_FIELDS if k in gold and _field_text(predicted.get(k)) == str(gold[k]).lower()]
    wrong = [k for k in JSON_FIELDS if k in gold and k not in right]
    return len(right) / len(gold), "match" if not wrong else "wrong fields: " + ", ".join(wrong)


def json_field_accuracy(predictions: Sequence[str], examples: Sequence[dict]) -> EvalReport:
    """Fraction of fields extracted exactly (people compared as text, so 4 == "4")."""
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples; pass one per example.")
    report = EvalReport()
    for prediction, example in zip(predictions, examples):
        score, reason = score_json(prediction, example["answer"])
        report.results.append(ScoredExample(example.get("id", ""), score == 1.0, score, reason, _as_text(prediction),
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
