"""Hostile model output against the scorers: hard limits on SQL, and no scorer ever raises.

Every input named in issue 12 is here. The SQL ones are run together by
`test_every_hostile_query_is_scored_zero_fast_and_small`, which measures each
query's wall time and the parent process's memory while it runs (the targets:
under 2.5 s and under 256 MB extra, each). It runs in CI and takes ~5 s: only
the two queries the worker has to be killed for wait for the deadline.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from course_utils.data import connect, database_script
from course_utils.evaluate import (
    SQL_TIME_LIMIT_S,
    extract_sql,
    parse_json_object,
    run_readonly_query,
    score_json,
    score_sql,
)
from course_utils.sql_sandbox import SqlSandbox

GOLD = "SELECT name FROM employees WHERE salary > 5000;"
GOLD_JSON = json.dumps({"name": "Ana", "people": 4, "day": "Friday", "time": "19:00", "place": "Luigi's"})
MIB = 2**20


def cte_tree(levels: int) -> str:
    """Each CTE reads the previous one twice and may not be materialised: 2^levels copies at compile time."""
    parts = ["c0(x) AS NOT MATERIALIZED (SELECT 1)"]
    parts += [f"c{i}(x) AS NOT MATERIALIZED (SELECT a.x + b.x FROM c{i - 1} a, c{i - 1} b)" for i in range(1, levels)]
    return "WITH " + ", ".join(parts) + f" SELECT x FROM c{levels - 1}"


def nested_replace(levels: int) -> str:
    """Each replace() makes the string ten times longer: 10^(levels+1) characters."""
    expr = "'xxxxxxxxxx'"
    for _ in range(levels):
        expr = f"replace({expr}, 'x', 'xxxxxxxxxx')"
    return f"SELECT length({expr})"


MILLION_X = nested_replace(5).removeprefix("SELECT length(")[:-1]  # an expression worth 1,000,000 characters
HALF_MILLION_X = MILLION_X.replace("'xxxxxxxxxx'", "'xxxxx'", 1)
COUNT_TO_400 = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 400) "

# (name, query, reasons it may be scored with). Measured before issue 12 in the comments.
HOSTILE_SQL = [
    ("doubling string in a recursive CTE",  # 11 s, +2.8 GB
     "WITH RECURSIVE r(s) AS (SELECT 'x' UNION ALL SELECT s||s FROM r WHERE length(s) < 400000000) "
     "SELECT max(length(s)) FROM r", ("too large",)),
    ("printf with a huge width", "SELECT length(printf('%.*c', 999999999, 'x'))", ("rejected",)),  # 11 s
    ("randomblob(1e9)", "SELECT randomblob(1000000000)", ("rejected",)),  # 5.8 s, +1.9 GB
    ("10 nested replace()", nested_replace(10), ("too large",)),  # 7 s, +2.4 GB
    ("10 MB IN (...) list", "SELECT 1 WHERE 1 IN (" + ",".join(["1"] * 5_000_000) + ")", ("too large",)),  # 3.6 s
    ("18-level NOT MATERIALIZED CTE tree", cte_tree(18), ("out of memory", "timeout", "too large")),  # 5.8 s
    ("zeroblob(1e8) per row", "SELECT zeroblob(100000000) FROM employees", ("rejected",)),  # MemoryError
    ("fts3_tokenizer pointer leak", "SELECT fts3_tokenizer('simple')", ("rejected",)),
    ("fts3_tokenizer registration", "SELECT fts3_tokenizer('evil', x'0000000000000000')", ("rejected",)),
    ("DISTINCT over 200 MB of text", f"{COUNT_TO_400}SELECT count(DISTINCT i || {HALF_MILLION_X}) FROM r",
     ("out of memory",)),
    ("50 MB result", f"{COUNT_TO_400}SELECT {HALF_MILLION_X} FROM r LIMIT 100", ("too large",)),
    ("one slow function call", f"SELECT instr({MILLION_X}, substr({MILLION_X}, 1, 400000) || 'y')", ("timeout",)),
    ("endless recursive CTE", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c",
     ("timeout",)),
    ("lone surrogate", "SELECT '\ud800'", ("rejected",)),  # UnicodeEncodeError escaped
    ("NUL character", "SELECT 'a\x00b'", ("rejected",)),
    ("None instead of text", None, ("error",)),  # TypeError escaped
]


def _rss_bytes() -> int | None:
    statm = Path("/proc/self/statm")
    if not statm.exists():
        return None
    return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """The parent's largest resident set while the block runs, sampled every 5 ms (Linux only)."""

    def __enter__(self):
        self.start = _rss_bytes()
        self.peak = self.start or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_bytes() or 0)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes() or 0)

    @property
    def extra(self) -> int:
        return self.peak - self.start if self.start is not None else 0


def test_every_hostile_query_is_scored_zero_fast_and_small():
    score_sql(GOLD, GOLD, "company")  # start the worker outside the measurements
    report = []
    for name, query, reasons in HOSTILE_SQL:
        with PeakMemory() as memory:
            start = time.monotonic()
            ok, why = score_sql(query, GOLD, "company")
            seconds = time.monotonic() - start
        report.append(f"{name:38s} {seconds:6.3f} s  +{memory.extra / MIB:6.1f} MB  {why}")
        assert not ok and why.startswith(reasons), (name, why)
        assert seconds < SQL_TIME_LIMIT_S + 0.5, (name, seconds)
        assert memory.extra < 256 * MIB, (name, memory.extra)
        assert len(why) < 200
    print("\n" + "\n".join(report))
    assert score_sql(GOLD, GOLD, "company") == (True, "match")  # the worker came back after each kill


def test_in_process_limits_refuse_the_expensive_functions_too():
    conn = connect("company")
    for name, query, reasons in HOSTILE_SQL:
        if reasons == ("rejected",) and query and "\x00" not in query and "\ud800" not in query:
            with pytest.raises(ValueError, match="not allowed"):
                run_readonly_query(conn, query)
    with pytest.raises(sqlite3.DataError, match="too big"):
        run_readonly_query(conn, nested_replace(10))
    assert run_readonly_query(conn, GOLD) == conn.execute(GOLD).fetchall()
    assert conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH) > 10**6  # the caller's limits are restored


def test_legitimate_functions_still_work():
    queries = [  # only employees(name, salary): other columns may change with the data generator
        "SELECT COUNT(*), AVG(salary), SUM(salary), MIN(name), MAX(salary), TOTAL(salary) FROM employees",
        "SELECT SUBSTR(name, 1, 1) AS initial, COUNT(*) FROM employees GROUP BY initial HAVING COUNT(*) > 1 "
        "ORDER BY 2 DESC, 1",
        "SELECT UPPER(name), LOWER(name), LENGTH(name), TRIM(name), INSTR(name, 'a'), REPLACE(name, 'a', 'b'), "
        "COALESCE(NULL, name), IFNULL(NULL, 1), NULLIF(1, 1), ROUND(salary / 3.0, 2), ABS(-salary), "
        "CAST(salary AS TEXT), typeof(salary), IIF(salary > 5000, 'high', 'low') FROM employees",
        "SELECT name, RANK() OVER (ORDER BY salary DESC), ROW_NUMBER() OVER (ORDER BY name) "
        "FROM employees WHERE name LIKE 'A%' OR name GLOB 'B*'",
        "SELECT GROUP_CONCAT(name, ', '), strftime('%Y', '2024-05-01'), date('2024-05-01', '+1 day'), "
        "julianday('2024-05-02') - julianday('2024-05-01') FROM employees",
        "WITH rich AS (SELECT name, salary FROM employees WHERE salary > (SELECT AVG(salary) FROM employees)) "
        "SELECT a.name FROM rich a JOIN employees b ON a.name = b.name WHERE a.name IN (SELECT name FROM rich)",
    ]
    for query in queries:
        assert score_sql(query, query, "company") == (True, "match"), query


def test_sandbox_overhead_per_query_is_small():
    """An evaluation scores hundreds of answers: the worker may add at most a few ms to each."""
    conn, sandbox, script = connect("company"), SqlSandbox(), database_script("company")
    query, n = "SELECT name, salary FROM employees WHERE salary > 5000 ORDER BY name, salary", 200
    try:
        assert sandbox.run(script, query)[0] == run_readonly_query(conn, query)  # also starts the worker
        start = time.perf_counter()
        for _ in range(n):
            run_readonly_query(conn, query)
        in_process = (time.perf_counter() - start) / n
        start = time.perf_counter()
        for _ in range(n):
            sandbox.run(script, query)
        sandboxed = (time.perf_counter() - start) / n
    finally:
        sandbox.close()
    print(f"\nper query: in-process {in_process * 1e3:.3f} ms, sandboxed {sandboxed * 1e3:.3f} ms, "
          f"overhead {(sandboxed - in_process) * 1e3:.3f} ms")
    assert sandboxed - in_process < 0.005


def test_a_worker_killed_from_outside_is_replaced():
    sandbox, script = SqlSandbox(), database_script("company")
    try:
        assert sandbox.run(script, "SELECT 1")[0] == [(1,)]
        sandbox._process.kill()
        sandbox._process.wait()
        rows, why = sandbox.run(script, "SELECT 2")
        assert rows == [(2,)] or why.startswith("error"), why
        assert sandbox.run(script, "SELECT 3")[0] == [(3,)]
    finally:
        sandbox.close()


# --------------------------------------------------------------------------- JSON

@pytest.mark.parametrize("text, reason", [
    ("{" * 1000 + "}" * 1000, "error"),  # not an object with string keys
    ('{"a": ' * 1000 + "1" + "}" * 1000, "wrong fields"),  # RecursionError escaped
    ('{"a": ' * 100_000, "error"),  # unterminated and deep
    ('{"a": "' * 20_000, "error"),  # unterminated strings, one inside the other: quadratic without a cap
    ("{" * 1_000_000, "error"),  # quadratic for the old greedy pattern
    ('{"name": "Ana", "people": ' + "9" * 5001 + ', "day": "Friday", "time": "19:00", "place": "Luigi\'s"}',
     "wrong fields: people"),  # ValueError escaped; the other fields still count
    ('{"name": "\ud800"}', "wrong fields"),
    (None, "error"),
    (42, "error"),
])
def test_score_json_never_raises_on_hostile_text(text, reason):
    start = time.monotonic()
    score, why = score_json(text, GOLD_JSON)
    assert why.startswith(reason), why
    assert time.monotonic() - start < 1.0


def test_a_five_thousand_digit_number_keeps_the_other_fields():
    text = '{"name": "Ana", "people": ' + "9" * 5001 + ', "day": "Friday", "time": "19:00", "place": "Luigi\'s"}'
    assert score_json(text, GOLD_JSON)[0] == pytest.approx(4 / 5)


# --------------------------------------------------------------------------- fuzzing

FRAGMENTS = [
    "SELECT", "select", "FROM", "employees", "WHERE", "salary", "name", "WITH", "RECURSIVE", "UNION ALL", "*", ",",
    "(", ")", "'", '"', ";", "--", "/*", "*/", "```", "```sql\n", "```sqlite\n", "\n", " ", "{", "}", "[", "]", ":",
    '"name"', '"people"', "4", "9" * 50, "-1e999", "NaN", "true", "null", "\\", "\\u0000", "\ud800", "\udfff",
    "\x00", "\x1b", "é", "漢", "😀", "\u202e", "ORDER BY", "LIMIT", "1", "0x", "x'00'", "||", "printf(", "randomblob(",
    "COUNT(", "AVG(", "pragma", "ATTACH", "DROP TABLE employees", "{" * 50, '{"a":' * 50,
]


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 40)))


def test_random_and_adversarial_text_never_raises_and_is_scored_in_bounded_time():
    """A seeded fuzzer: 400 texts through both scorers, each bounded in time; about 2 s in all."""
    rng = random.Random(12)
    texts = [_random_text(rng) for _ in range(400)]
    texts += [GOLD, f"```sql\n{GOLD}\n```", GOLD_JSON, "", " ", "```", "```sql", "{", "}"]
    slowest_sql = slowest_json = 0.0
    for text in texts:
        start = time.monotonic()
        ok, why = score_sql(text, GOLD, "company")
        slowest_sql = max(slowest_sql, time.monotonic() - start)
        assert isinstance(ok, bool) and isinstance(why, str) and why
        start = time.monotonic()
        score, why = score_json(text, GOLD_JSON)
        slowest_json = max(slowest_json, time.monotonic() - start)
        assert 0.0 <= score <= 1.0 and isinstance(why, str)
        assert isinstance(extract_sql(text), str)
        assert parse_json_object(text) is None or isinstance(parse_json_object(text), dict)
    print(f"\nslowest: score_sql {slowest_sql:.3f} s, score_json {slowest_json:.4f} s")
    assert slowest_sql < SQL_TIME_LIMIT_S + 0.5 and slowest_json < 0.5



@pytest.mark.parametrize("text", ["```" + " " * 10**6 + "a", "```sql" + "\n" * 10**6, "`" * 10**6, "~" * 10**6 + "x",
                                  "`a" * 500_000, "```sql\n" + "SELECT 1 " * 100_000])
def test_sql_extraction_takes_linear_time_at_a_megabyte(text):
    """The earlier fence regex backtracked: ``` then 100,000 spaces and a letter took 10.4 s (about 1,000 s
    at 1 MB). A megabyte of any shape now takes well under a second."""
    start = time.monotonic()
    extract_sql(text)
    assert time.monotonic() - start < 1.0


def test_a_valid_query_right_after_the_worker_died_is_run_on_a_fresh_one():
    """The worker killed between two queries (out of memory, a stray signal): the next valid query used to be
    scored "the query crashed the SQL sandbox". It is retried once on a fresh worker and scored on its merits."""
    conn, sandbox, script = connect("company"), SqlSandbox(), database_script("company")
    try:
        assert sandbox.run(script, GOLD)[1] == ""  # starts the worker
        dead = sandbox._process
        dead.kill()
        dead.wait()
        dead.poll = lambda: None  # its death not yet seen when the next query comes (a race in real use)
        rows, reason = sandbox.run(script, GOLD)
        assert reason == "" and rows == run_readonly_query(conn, GOLD)
    finally:
        sandbox.close()
