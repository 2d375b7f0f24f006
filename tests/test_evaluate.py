"""Exact scoring, and model output treated as hostile."""

import json
import time

import pytest

from course_utils.data import connect, load_examples
from course_utils.evaluate import (
    execution_accuracy,
    extract_sql,
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


@pytest.mark.parametrize("answer", [
    f"```sqlite\n{GOLD}\n```",  # used to leave "ite" in front of the query
    f"```SQL\n{GOLD}\n```",
    f"```\n{GOLD}\n```",
    f"Here it is:\n```sql\n{GOLD}\n```\nThis lists the well-paid employees.",
    f"```sql\n{GOLD}",  # cut off by max_new_tokens before the closing fence
    f"```{GOLD}```",
    f"{GOLD}\n```",  # a query, then a closing fence without an opening one (scored 0 before)
    f"```sql\r\n{GOLD}\r\n```",  # CRLF line ends
    f"```sql {GOLD}```",  # a one-line fence with a language name
    f"~~~sql\n{GOLD}\n~~~",  # Markdown's other fence
    f"````sql\n{GOLD}\n````",  # a four-backtick fence
    f"The query is `{GOLD}`.",  # inline code
    f"{GOLD}\n```\n\nThis lists the well-paid employees.",  # a lone closing fence, then prose
    f"````sql\n{GOLD}\n```",  # opened with four backticks, closed with three
    f"With this query:\n```sql\n{GOLD}\n```",  # prose that starts with "With" is not a CTE
    f"{GOLD}\n\nThis lists the well-paid employees; one row each.",  # a query with its `;`, then prose
])
def test_every_usual_code_fence_is_accepted(answer):
    assert score_sql(answer, GOLD, "company") == (True, "match"), extract_sql(answer)


@pytest.mark.parametrize("answer", [
    f"-- employees earning over 5000\n{GOLD}",  # used to be rejected as "not a SELECT"
    f"/* well paid */ {GOLD}",
    f"/* one */\n-- two\n  {GOLD} -- trailing",
    f"```sql\n-- the query\n{GOLD}\n```",
])
def test_leading_comments_are_skipped(answer):
    assert score_sql(answer, GOLD, "company") == (True, "match")


def test_comments_do_not_smuggle_a_write_past_the_check():
    assert score_sql("-- SELECT\nDELETE FROM employees", GOLD, "company")[1].startswith("rejected")
    assert score_sql("/* SELECT */ DROP TABLE employees", GOLD, "company")[1].startswith("rejected")
    assert score_sql("SELECT 1 /* ; */; DROP TABLE employees", GOLD, "company")[1].startswith("rejected")


def test_a_function_outside_the_allowlist_is_named_in_the_reason():
    assert score_sql("SELECT randomblob(8)", GOLD, "company") == (False, "rejected: function randomblob() is not allowed")


@pytest.mark.parametrize("answer", [
    '{"name": "Ana", "people": 4, "day": "Friday", "time": "19:00", "place": "Luigi\'s"} (I used {} for none)',
    '{"name": "Ana", "people": 4, "day": "Friday", "time": "19:00", "place": "Luigi\'s"}\n'
    'Another reading: {"name": "Bo", "people": 2, "day": "Monday", "time": "8:00", "place": "X"}',
    'Sure! The booking {as JSON}: {"name": "Ana", "people": 4, "day": "Friday", "time": "19:00", "place": "Luigi\'s"}',
    '```json\n{"name": "Ana", "people": "4", "day": "friday", "time": "19:00", "place": "Luigi\'s"}\n```',
])
def test_the_first_complete_json_object_is_scored(answer):
    gold = json.dumps({"name": "Ana", "people": 4, "day": "Friday", "time": "19:00", "place": "Luigi's"})
    assert score_json(answer, gold) == (1.0, "match")


def test_a_long_run_of_braces_is_parsed_in_linear_time():
    gold = json.dumps({"name": "Ana", "people": 4, "day": "Friday", "time": "19:00", "place": "Luigi's"})
    start = time.monotonic()
    assert score_json("{" * 200_000 + "x", gold) == (0.0, "error: no JSON object")
    assert time.monotonic() - start < 0.5


@pytest.mark.parametrize("text, query", [
    ("SELECT 'a;b' FROM t; then prose", "SELECT 'a;b' FROM t;"),  # a `;` in a string does not end the query
    ("SELECT 1 -- note; more\nFROM t; prose", "SELECT 1 -- note; more\nFROM t;"),  # nor one in a comment
    ("SELECT 1 /* a;b */ FROM t; prose", "SELECT 1 /* a;b */ FROM t;"),
    ("SELECT 1 FROM t;", "SELECT 1 FROM t;"),  # nothing after it: the text as it is
    ("SELECT 'unclosed; FROM t", "SELECT 'unclosed; FROM t"),  # an unclosed quote: the text as it is
    ("SELECT [a;b] FROM t", "SELECT [a;b] FROM t"),  # SQLite's quoted identifiers
    ("SELECT `a;b` FROM t; prose", "SELECT `a;b` FROM t;"),
    # a second statement keeps the whole text, for the sandbox to refuse as more than one statement
    ("SELECT 1; WITH x AS MATERIALIZED (SELECT 1) DELETE FROM t", "SELECT 1; WITH x AS MATERIALIZED (SELECT 1) DELETE FROM t"),
    ("SELECT 1; with x as not materialized (select 1) select 2", "SELECT 1; with x as not materialized (select 1) select 2"),
    ("SELECT 1;\nDROP TABLE t", "SELECT 1;\nDROP TABLE t"),
])
def test_a_query_is_taken_up_to_its_first_semicolon_outside_quotes_and_comments(text, query):
    assert extract_sql(text) == query
