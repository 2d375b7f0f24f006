"""Exact scoring, and model output treated as hostile."""

import json
import time

import pytest

from course_utils.data import connect, load_examples
from course_utils.evaluate import (
    execution_accuracy,
    json_field_accuracy,
    run_readonly_query,
    score_json,
    score_sql,
)

GOLD = "SELECT name FROM employees WHERE salary > 5000;"


def test_gold_query_scores_one_and_row_order_does_not_matter_without_order_by():
    assert score_sql(GOLD, GOLD, "company") == (True, "match")
    reordered = "SELECT name FROM employees WHERE 5000 < salary ORDER BY name DESC"
    assert score_sql(reordered, GOLD, "company")[0]


def test_order_matters_when_gold_orders():
    gold = "SELECT name FROM employees ORDER BY salary DESC LIMIT 3;"
    assert score_sql(gold, gold, "company")[0]
    assert not score_sql("SELECT name FROM employees ORDER BY salary ASC LIMIT 3", gold, "company")[0]


def test_wrong_result_is_scored_zero_with_reason():
    ok, reason = score_sql("SELECT name FROM employees WHERE salary > 6000", GOLD, "company")
    assert not ok and reason == "wrong result"


@pytest.mark.parametrize("hostile, reason", [
    ("DROP TABLE employees", "rejected"),
    ("DELETE FROM employees", "rejected"),
    ("SELECT 1; DROP TABLE employees;", "rejected"),
    ("SELECT name FROM employees; SELECT 2", "rejected"),
    ("ATTACH DATABASE 'stolen.db' AS s", "rejected"),
    ("PRAGMA writable_schema = ON", "rejected"),
    ("SELECT * FROM pragma_table_info('employees')", "rejected"),
    ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c", "timeout"),
    ("I think you should ask a database administrator.", "rejected"),
    ("SELEC name FRM employees", "rejected"),
    ("SELECT nme FROM employes", "error"),
    ("", "rejected"),
])
def test_hostile_or_malformed_output_scores_zero_and_never_raises(hostile, reason):
    start = time.monotonic()
    ok, why = score_sql(hostile, GOLD, "company")
    assert not ok and why.startswith(reason), why
    assert time.monotonic() - start < 10


def test_a_rejected_write_leaves_the_database_intact():
    conn = connect("company")
    before = conn.execute("SELECT COUNT(*) FROM employees").fetchone()
    with pytest.raises(Exception):
        run_readonly_query(conn, "WITH x AS (SELECT 1) DELETE FROM employees")
    assert conn.execute("SELECT COUNT(*) FROM employees").fetchone() == before


def test_code_fences_around_sql_are_accepted():
    assert score_sql(f"```sql\n{GOLD}\n```", GOLD, "company")[0]


def test_execution_accuracy_reports_groups_and_rejects_length_mismatch():
    examples = load_examples("sql", "test")[:6]
    predictions = [e["answer"] for e in examples[:3]] + ["DROP TABLE x"] * 3
    report = execution_accuracy(predictions, examples)
    assert report.accuracy == pytest.approx(0.5)
    assert report.reasons()["rejected"] == 3
    with pytest.raises(ValueError, match="one per example"):
        execution_accuracy(predictions[:2], examples)


def test_json_fields_are_scored_one_by_one():
    gold = json.dumps({"name": "Ana", "people": 4, "day": "Friday", "time": "19:00", "place": "Luigi's"})
    assert score_json(gold, gold) == (1.0, "match")
    half = '{"name": "Ana", "people": "4", "day": "Monday", "time": "7pm", "place": "Luigi\'s"}'
    score, reason = score_json(half, gold)
    assert score == pytest.approx(3 / 5) and "day" in reason and "time" in reason
    assert score_json("no json here", gold) == (0.0, "error: no JSON object")
    assert score_json("[1, 2]", gold)[0] == 0.0


def test_json_field_accuracy_on_gold_answers_is_perfect():
    examples = load_examples("json", "test")[:20]
    assert json_field_accuracy([e["answer"] for e in examples], examples).accuracy == 1.0
