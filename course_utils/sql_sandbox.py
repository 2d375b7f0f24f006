"""Run model-written SQL with hard limits: a child process, killed at the deadline.

A model's query is untrusted text. In-process, SQLite can refuse writes,
PRAGMA and ATTACH (an authorizer) and can cap sizes (`Connection.setlimit`),
but two things it cannot do: interrupt one long function call or a long
compile (the progress handler only runs between VM steps), and cap the memory
of one connection (the heap limit is per process). So `score_sql` sends each
query to a small worker process that:

- imports only the standard library (this file runs as a script; it never
  imports course_utils, torch or transformers, so it starts in ~30 ms);
- builds each database from its CREATE + INSERT text once and keeps it;
- caps its own address space (RLIMIT_AS) and SQLite's heap
  (`PRAGMA hard_heap_limit`), keeps temporary tables in memory (no disk);
- runs `run_readonly_query`: an allowlist of SQL functions, size limits,
  a soft deadline, and caps on rows and result bytes;

and the parent kills it when the deadline plus a short grace has passed (then
starts a new one for the next query). Each outcome is a short reason string.
The round trip costs well under a millisecond a query (measured: 0.1 ms for a
bare query, 0.6 ms per example over a whole evaluation), against seconds to
generate each answer; tests/test_hostile_inputs.py measures it and times
every hostile query.
"""

from __future__ import annotations

import marshal
import os
import re
import sqlite3
import struct
import sys
import time
from typing import Any, BinaryIO

SQL_TIME_LIMIT_S = 2.0
KILL_GRACE_S = 0.1  # the parent kills the worker this long after the deadline
MAX_ROWS = 10_000
MAX_QUERY_CHARS = 100_000  # text-to-SQL answers are well under 1,000 characters
MAX_RESULT_BYTES = 16 * 2**20  # what the worker may send back
HEAP_LIMIT_BYTES = 64 * 2**20  # SQLite's own allocations in the worker
ADDRESS_SPACE_BYTES = 512 * 2**20  # the whole worker process (ignored where RLIMIT_AS is not enforced)

# What a SELECT over small tables needs; everything else (printf with a huge
# width, randomblob, zeroblob, fts3_tokenizer, load_extension, json, ...) is refused.
ALLOWED_FUNCTIONS = frozenset("""
    count sum avg min max total group_concat string_agg
    row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value
    abs round sign ceil ceiling floor trunc mod power pow sqrt exp ln log log2 log10 pi
    length lower upper substr substring trim ltrim rtrim instr replace like glob concat concat_ws
    coalesce ifnull nullif iif typeof
    date time datetime julianday unixepoch strftime current_date current_time current_timestamp
""".split())

# Connection limits while an untrusted query runs (defaults in parentheses).
SQL_LIMITS = {
    "SQLITE_LIMIT_LENGTH": 1_000_000,  # largest string, blob or row, bytes (1e9)
    "SQLITE_LIMIT_SQL_LENGTH": MAX_QUERY_CHARS,  # (1e9)
    "SQLITE_LIMIT_COLUMN": 100,  # (2000)
    "SQLITE_LIMIT_EXPR_DEPTH": 100,  # (1000)
    "SQLITE_LIMIT_COMPOUND_SELECT": 50,  # (500)
    "SQLITE_LIMIT_VDBE_OP": 100_000,  # compiled program size (250e6)
    "SQLITE_LIMIT_FUNCTION_ARG": 16,  # (127)
    "SQLITE_LIMIT_ATTACHED": 0,  # (10)
    "SQLITE_LIMIT_LIKE_PATTERN_LENGTH": 1_000,  # (50000)
    "SQLITE_LIMIT_VARIABLE_NUMBER": 10,  # (250000)
}
_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, getattr(sqlite3, "SQLITE_RECURSIVE", 33)}


class UnsafeQuery(ValueError):
    """The query is not a single read-only SELECT."""


class QueryTooLarge(ValueError):
    """The query text or its result is larger than the scorer accepts."""


_LEADING_COMMENTS = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?(?:\*/|\Z))+", re.S)


def strip_leading_comments(sql: str) -> str:
    """The query without leading whitespace, `-- line` and `/* block */` comments."""
    return _LEADING_COMMENTS.sub("", sql, count=1)


def prepare_query(sql: str) -> str:
    """The query text SQLite will see; raise UnsafeQuery/QueryTooLarge if it cannot be one SELECT."""
    if not isinstance(sql, str):
        raise UnsafeQuery(f"the query is {type(sql).__name__}, not text")
    if len(sql) > MAX_QUERY_CHARS:
        raise QueryTooLarge(f"the query has {len(sql):,} characters (limit {MAX_QUERY_CHARS:,})")
    query = strip_leading_comments(sql).rstrip().rstrip(";").rstrip()
    if not re.match(r"(select|with)\b", query, flags=re.I):
        raise UnsafeQuery("not a SELECT query")
    if "\x00" in query:
        raise UnsafeQuery("the query contains a NUL character")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UnsafeQuery(f"the query is not valid UTF-8 text ({exc.reason} at character {exc.start})") from None
    return query


class _Authorizer:
    """Allow reading and the listed functions; remember what was refused, for the reason."""

    def __init__(self) -> None:
        self.refused = ""

    def __call__(self, action: int, arg1: Any, arg2: Any, *_: Any) -> int:
        if action in _ALLOWED_ACTIONS:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION and str(arg2).lower() in ALLOWED_FUNCTIONS:
            return sqlite3.SQLITE_OK
        if not self.refused:
            if action == sqlite3.SQLITE_FUNCTION:
                self.refused = f"function {arg2}() is not allowed"
            elif action == sqlite3.SQLITE_PRAGMA:
                self.refused = "PRAGMA is not allowed"
            elif action == sqlite3.SQLITE_ATTACH:
                self.refused = "ATTACH is not allowed"
            else:
                self.refused = "only reading is allowed"
        return sqlite3.SQLITE_DENY


def _row_bytes(row: tuple) -> int:
    return sys.getsizeof(row) + sum(sys.getsizeof(value) for value in row)


def run_readonly_query(conn: sqlite3.Connection, sql: str, time_limit_s: float = SQL_TIME_LIMIT_S) -> list[tuple]:
    """Run one SELECT under the authorizer, the limits and a deadline; raise on anything else.

    Raises UnsafeQuery (not one SELECT, too many rows), QueryTooLarge,
    sqlite3.Error (a refused action, a syntax error, a limit, the deadline)
    or MemoryError. In-process the deadline is soft: it is checked between
    SQLite's VM steps, so one slow function call or compile can overrun it;
    `SqlSandbox` adds the hard limits.
    """
    query = prepare_query(sql)
    deadline = time.monotonic() + time_limit_s
    authorizer = _Authorizer()
    previous = {}
    if hasattr(conn, "setlimit"):  # Python 3.11+
        for name, value in SQL_LIMITS.items():
            if hasattr(sqlite3, name):
                previous[name] = conn.setlimit(getattr(sqlite3, name), value)
    conn.set_authorizer(authorizer)
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 1_000)
    rows: list[tuple] = []
    size = 0
    try:
        cursor = conn.execute(query)  # sqlite3 compiles one statement and refuses text after it
        while batch := cursor.fetchmany(256):
            for row in batch:
                size += _row_bytes(row)
                if size > MAX_RESULT_BYTES:
                    raise QueryTooLarge(f"the result is over {MAX_RESULT_BYTES // 2**20} MB")
                rows.append(row)
            if len(rows) > MAX_ROWS:
                raise UnsafeQuery(f"more than {MAX_ROWS} rows")
    except sqlite3.ProgrammingError as exc:
        if "one statement" in str(exc):
            raise UnsafeQuery("more than one statement") from None
        raise
    except sqlite3.DatabaseError as exc:
        if authorizer.refused and "not authorized" in str(exc):
            raise UnsafeQuery(authorizer.refused) from None
        raise
    finally:
        conn.set_progress_handler(None, 0)
        conn.set_authorizer(None)
        for name, value in previous.items():
            conn.setlimit(getattr(sqlite3, name), value)
    return rows


def describe_failure(exc: BaseException, time_limit_s: float = SQL_TIME_LIMIT_S) -> str:
    """A short reason for a failed query: "rejected:", "timeout:", "too large:", "out of memory:" or "error:"."""
    message = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, UnsafeQuery):
        return f"rejected: {message}"
    if isinstance(exc, QueryTooLarge):
        return f"too large: {message}"
    if isinstance(exc, MemoryError):
        return f"out of memory: the query needed more than {HEAP_LIMIT_BYTES // 2**20} MB"
    if isinstance(exc, sqlite3.Error):
        if "interrupted" in message:
            return f"timeout: over {time_limit_s} s"
        if "not authorized" in message:
            return "rejected: action not allowed"
        if "too big" in message or "too large" in message or "too many" in message:
            return f"too large: {message}"
        return f"error: {message}"
    return f"error: {type(exc).__name__}: {message}"


# --------------------------------------------------------------------------- the worker (child process)

def _send(stream: BinaryIO, message: Any) -> None:
    data = marshal.dumps(message)  # plain values only: marshal cannot build arbitrary objects
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _receive(stream: BinaryIO) -> Any:
    header = stream.read(8)
    if len(header) < 8:
        return None
    (size,) = struct.unpack("<Q", header)
    data = stream.read(size)
    return marshal.loads(data) if len(data) == size else None


def _limit_memory() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_BYTES, ADDRESS_SPACE_BYTES))
    except (ImportError, ValueError, OSError):  # Windows; macOS may refuse: the heap limit still holds
        pass
    sqlite3.connect(":memory:").execute(f"PRAGMA hard_heap_limit = {HEAP_LIMIT_BYTES}")  # process-wide


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """The worker loop: (database script, query, time limit) in, ("ok", rows) or ("fail", reason) out."""
    _limit_memory()
    databases: dict[str, sqlite3.Connection] = {}
    _send(replies, ("ready", sqlite3.sqlite_version))
    while (request := _receive(requests)) is not None:
        script, sql, time_limit_s = request
        try:
            if script not in databases:
                if len(databases) >= 16:
                    databases.pop(next(iter(databases))).close()
                conn = sqlite3.connect(":memory:")
                conn.executescript(script)  # trusted: the course's own CREATE + INSERT text
                conn.execute("PRAGMA temp_store = MEMORY")  # sorts and temp tables never touch the disk
                databases[script] = conn
            reply = ("ok", run_readonly_query(databases[script], sql, time_limit_s))
        except Exception as exc:  # MemoryError and RecursionError included
            reply = ("fail", describe_failure(exc, time_limit_s))
        _send(replies, reply)


# --------------------------------------------------------------------------- the parent side

class SandboxUnavailable(RuntimeError):
    """The worker process could not start (not the query's fault)."""


class SqlSandbox:
    """One worker process, started on first use, killed and restarted after a timeout."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._process = None
        self._replies = None
        self._owner = os.getpid()

    def _start(self) -> None:
        import queue
        import subprocess
        import threading

        # -I: ignore PYTHON* variables and user site; -S: no site-packages. Only the stdlib is needed.
        self._process = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._owner = os.getpid()
        self._replies = queue.Queue()
        # A thread reads replies so the parent can wait with a timeout on any OS (select() needs POSIX).
        threading.Thread(target=_pump, args=(self._process.stdout, self._replies), daemon=True).start()
        ready = self._wait(10.0)
        if not ready or ready[0] != "ready":
            self.close()
            raise SandboxUnavailable(f"The SQL sandbox ({sys.executable} {__file__}) did not start; "
                                     "check that this Python can run scripts (see the error printed above).")

    def _wait(self, timeout_s: float) -> Any:
        import queue

        try:
            return self._replies.get(timeout=timeout_s)
        except queue.Empty:
            return False

    def close(self) -> None:
        """Stop the worker (a later query starts a new one)."""
        process, self._process = self._process, None
        if process is not None and self._owner == os.getpid():
            process.kill()
            process.wait()
            for stream in (process.stdin, process.stdout):
                try:
                    stream.close()
                except OSError:  # a dead worker's pipe: what was left unsent has nowhere to go
                    pass

    def run(self, script: str, sql: str, time_limit_s: float = SQL_TIME_LIMIT_S) -> tuple[list[tuple] | None, str]:
        """(rows, "") when the query ran, else (None, reason)."""
        try:
            prepare_query(sql)  # refuse the obvious here, before sending anything
        except Exception as exc:
            return None, describe_failure(exc, time_limit_s)
        with self._lock:
            if self._process is not None and self._owner != os.getpid():
                self._process = None  # inherited through fork: that worker belongs to the parent process
            # A worker that died before this query (killed, out of memory, its death not yet seen) refuses the
            # query at the pipe: that is not the query's fault, so it goes once more to a fresh worker. A worker
            # that took the query and then died was ended by it: that is not retried.
            for attempt in (1, 2):
                if self._process is None or self._process.poll() is not None:
                    self._start()
                try:
                    _send(self._process.stdin, (script, sql, float(time_limit_s)))
                except OSError:
                    self.close()
                    if attempt == 1:
                        continue
                    return None, "error: the SQL sandbox stopped; it restarts for the next query"
                reply = self._wait(time_limit_s + KILL_GRACE_S)
                if reply is False:  # past the deadline: only killing it stops a long compile or function call
                    self.close()
                    return None, f"timeout: over {time_limit_s} s"
                if reply is None:
                    self.close()
                    return None, "error: the query crashed the SQL sandbox; it restarts for the next query"
                kind, payload = reply
                return (payload, "") if kind == "ok" else (None, payload)


def _pump(stream: BinaryIO, replies: Any) -> None:
    try:
        while (message := _receive(stream)) is not None:
            replies.put(message)
    except (OSError, ValueError, EOFError):
        pass
    replies.put(None)  # end of stream: the worker exited


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
