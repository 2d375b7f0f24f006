"""Connecting to a database (generated or hand-written) and the schema as the model sees it."""

from __future__ import annotations

import functools
import re
import sqlite3

from .splits import DATA_DIR
from .databases import DATABASE_BY_ID


# ---------------------------------------------------------------------------
# Connecting, and the schema as the model sees it
# ---------------------------------------------------------------------------

TRANSFER_DIR = DATA_DIR / "transfer"


def transfer_database_ids() -> tuple[str, ...]:
    """The hand-written databases in data/transfer/ (one <db_id>.sql script each)."""
    return tuple(sorted(p.stem for p in TRANSFER_DIR.glob("*.sql")))


@functools.lru_cache(maxsize=None)
def database_script(db_id: str) -> str:
    """The CREATE and INSERT statements that build database `db_id` (what `connect` runs).

    A generated database's script comes from its spec; a hand-written one
    (data/transfer/<db_id>.sql) is read from its file.
    """
    if db_id in DATABASE_BY_ID:
        return DATABASE_BY_ID[db_id].sql_script()
    path = TRANSFER_DIR / f"{db_id}.sql"
    if re.fullmatch(r"\w+", db_id) and path.is_file():
        return path.read_text(encoding="utf-8")
    raise ValueError(f"Unknown database {db_id!r}; choose one of {sorted(DATABASE_BY_ID)} "
                     f"or a hand-written one in {TRANSFER_DIR} {list(transfer_database_ids())}.")


def connect(db_id: str) -> sqlite3.Connection:
    """A fresh in-memory copy of one database (the evaluator never touches a file)."""
    script = database_script(db_id)
    conn = sqlite3.connect(":memory:")
    conn.executescript(script)
    return conn


# How the prompt shows a schema. "compact" won the measurement in data/README.md: it keeps the
# column types and foreign keys of CREATE TABLE at about two thirds of its tokens.
SCHEMA_STYLES = ("create", "compact", "names")
SCHEMA_STYLE = "compact"


def describe_schema(conn: sqlite3.Connection, style: str = SCHEMA_STYLE) -> str:
    """The schema of a database, read from SQLite itself, one table per line.

    create:  CREATE TABLE offices (office_id INTEGER PRIMARY KEY, city TEXT, ...);
    compact: offices(office_id INTEGER, city TEXT, ...) and foreign keys as `office_id INTEGER -> offices.office_id`
    names:   offices(office_id, city, ...), foreign keys as above, no types

    Read from the database rather than from a spec, so that hand-written and
    generated databases are shown in exactly the same way.
    """
    if style not in SCHEMA_STYLES:
        raise ValueError(f"Unknown schema style {style!r}; choose one of {SCHEMA_STYLES}.")
    tables = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY rowid").fetchall()
    if style == "create":
        return "\n".join(sql.rstrip(";") + ";" for _, sql in tables)
    lines = []
    for name, _ in tables:
        refs = {row[3]: f"{row[2]}.{row[4]}" for row in conn.execute(f"PRAGMA foreign_key_list({name})")}
        parts = []
        for _, column, sql_type, *_ in conn.execute(f"PRAGMA table_info({name})"):
            part = column if style == "names" else f"{column} {sql_type}"
            parts.append(f"{part} -> {refs[column]}" if column in refs else part)
        lines.append(f"{name}({', '.join(parts)})")
    return "\n".join(lines)


@functools.lru_cache(maxsize=None)
def schema_text(db_id: str, style: str = SCHEMA_STYLE) -> str:
    """The schema of database `db_id` as the prompt shows it."""
    conn = connect(db_id)
    try:
        return describe_schema(conn, style)
    finally:
        conn.close()
