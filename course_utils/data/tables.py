"""The spec language of the SQL databases: a column per line, expanded into deterministic rows."""

from __future__ import annotations

import datetime
import functools
import random
import re
from dataclasses import dataclass


# ---------------------------------------------------------------------------
# SQL databases: a compact spec per table, expanded into deterministic rows
# ---------------------------------------------------------------------------
#
# A column is written "name kind[?] [values] [(words)]":
#   kind    key (INTEGER PRIMARY KEY), code (TEXT PRIMARY KEY), label (TEXT: what a row is called),
#           cat (TEXT, a few repeated values), int, real, date, text (free TEXT), fk (INTEGER or TEXT
#           REFERENCES the named table's key)
#   ?       the column holds NULLs (about a third of the rows)
#   values  "A|B|C" a list; "W1 W2/X1 X2" every "W X" combination; "person" a person's name;
#           "P-{n}" numbered codes (101, 102, ...); "lo..hi" a range (years for dates; a real range's
#           decimals give its precision)
#   words   what a question calls the column, when that differs from its name
# Numbers and dates are distinct within a table, so ORDER BY ... LIMIT never depends on ties.

_FIRST = "Ana Ben Chen Dara Eli Femi Gus Hana Ivo Jana Kofi Lena Mira Nils Omar Pia Raj Sara Timo Uma".split()
_LAST = "Smith Okafor Ruiz Novak Park Silva Berg Khan Costa Meyer".split()
_COLUMN_SPEC = re.compile(r"^(\w+) (key|code|label|cat|int|real|date|text|fk)(\?)?(?: ([^()]+?))?(?: \(([^)]+)\))?$")
# INT rather than INTEGER: the same affinity in SQLite, one token instead of two in every prompt.
SQL_TYPES = {"key": "INT", "code": "TEXT", "label": "TEXT", "cat": "TEXT", "int": "INT", "real": "REAL",
             "date": "DATE", "text": "TEXT"}


def plural(words: str) -> str:
    """English plural of the last word: 'blood type' -> 'blood types', 'city' -> 'cities'."""
    head, _, last = words.rpartition(" ")
    if last.endswith("y") and last[-2:-1] not in tuple("aeiou"):
        last = last[:-1] + "ies"
    elif last.endswith(("s", "x", "ch", "sh")):
        last += "es"
    else:
        last += "s"
    return f"{head} {last}".strip()


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    values: str = ""  # the spec's value text (see above)
    words: str = ""  # what questions call it, when that is not its name
    nullable: bool = False

    @classmethod
    def parse(cls, spec: str) -> "Column":
        match = _COLUMN_SPEC.match(spec.strip())
        if not match:
            raise ValueError(f"Bad column spec {spec!r}: write 'name kind[?] [values] [(words)]'.")
        name, kind, null, values, words = match.groups()
        return cls(name, kind, values or "", words or "", bool(null))

    @property
    def said(self) -> str:
        """The words a question uses for this column: its own words, else its name ('birth_date' -> 'birth date')."""
        return self.words or self.name.replace("_", " ")

    @property
    def ref(self) -> str:
        """The table a foreign key points to."""
        return self.values if self.kind == "fk" else ""


@dataclass(frozen=True)
class Table:
    """One table: an entity (a key, then its label, then attributes) or a link table (two foreign keys)."""

    name: str
    noun: str  # a question's word for one row: "employee"
    rows: int
    columns: tuple[Column, ...]
    nouns: str = ""  # plural, when the English rule gets it wrong
    verb: str = ""  # link tables: how the first key's rows relate to the second's ("are enrolled in")

    @property
    def items(self) -> str:
        return self.nouns or plural(self.noun)

    @property
    def is_link(self) -> bool:
        return self.columns[0].kind == "fk"

    @property
    def key(self) -> Column:
        return self.columns[0]

    @property
    def label(self) -> Column | None:
        return None if self.is_link else self.columns[1]

    def of_kind(self, *kinds: str) -> list[Column]:
        """Non-NULL columns of these kinds (the attributes questions filter, group and order by)."""
        return [c for c in self.columns[2:] if c.kind in kinds and not c.nullable]

    @property
    def optional(self) -> list[Column]:
        return [c for c in self.columns if c.nullable]

    @property
    def fks(self) -> list[Column]:
        return [c for c in self.columns if c.kind == "fk"]


def table(name: str, noun: str, rows: int, columns: str, nouns: str = "", verb: str = "") -> Table:
    """A table from a ';'-separated column spec (see the format above)."""
    return Table(name, noun, rows, tuple(Column.parse(c) for c in columns.split(";")), nouns, verb)


def _expand(values: str) -> list[str]:
    """The candidate strings of a label/code/text/cat spec."""
    if values == "person":
        return [f"{a} {b}" for a in _FIRST for b in _LAST]
    if "{n}" in values:
        return [values.format(n=n) for n in range(101, 1000)]
    if "/" in values:
        first, second = (part.split() for part in values.split("/"))
        return [f"{a} {b}" for a in first for b in second]
    return values.split("|")


def _range_values(column: Column, n: int, rng: random.Random) -> list:
    """n distinct numbers or dates drawn from the column's range."""
    low, high = column.values.split("..")
    if column.kind == "int":
        return rng.sample(range(int(low), int(high) + 1), n)
    if column.kind == "real":
        decimals = len(low.partition(".")[2])
        scale = 10 ** decimals
        return [round(v / scale, decimals) for v in rng.sample(range(round(float(low) * scale),
                                                                     round(float(high) * scale) + 1), n)]
    start, end = datetime.date(int(low), 1, 1), datetime.date(int(high), 12, 31)
    days = rng.sample(range((end - start).days + 1), n)
    return [(start + datetime.timedelta(days=d)).isoformat() for d in days]


@dataclass(frozen=True)
class Database:
    """A small SQLite database: its tables' specs, and contents drawn from them deterministically."""

    db_id: str
    tables: tuple[Table, ...]
    heldout: bool = False

    def __post_init__(self) -> None:
        names = {t.name for t in self.tables}
        for t in self.tables:
            for c in t.fks:
                if c.ref not in names:
                    raise ValueError(f"{self.db_id}.{t.name}.{c.name} references unknown table {c.ref!r}.")

    def table(self, name: str) -> Table:
        return next(t for t in self.tables if t.name == name)

    def sql_type(self, column: Column) -> str:
        return self.sql_type(self.table(column.ref).key) if column.kind == "fk" else SQL_TYPES[column.kind]

    @functools.cached_property
    def rows(self) -> dict[str, list[tuple]]:
        """Every table's rows, parents drawn before the children that point to them."""
        rows: dict[str, list[tuple]] = {}

        def build(t: Table) -> list[tuple]:
            if t.name not in rows:
                rows[t.name] = self._draw_rows(t, {c.ref: [r[0] for r in build(self.table(c.ref))] for c in t.fks})
            return rows[t.name]

        for t in self.tables:
            build(t)
        return rows

    def _draw_rows(self, t: Table, parent_keys: dict[str, list]) -> list[tuple]:
        rng = random.Random(f"{self.db_id}.{t.name}")  # contents depend on the database only, never on the split seed
        n = t.rows
        columns: list[list] = []
        if t.is_link:  # distinct pairs of the two parents' keys
            a, b = t.fks[0], t.fks[1]
            pairs = rng.sample([(x, y) for x in parent_keys[a.ref] for y in parent_keys[b.ref]], n)
            columns += [[p[0] for p in pairs], [p[1] for p in pairs]]
        for c in t.columns[2 if t.is_link else 0:]:
            if c.kind == "key":
                values = list(range(1, n + 1))
            elif c.kind in ("code", "label"):
                pool = _expand(c.values)  # a written list keeps its order, so codes and names stay paired
                if len(pool) < n or len(set(pool)) < len(pool):
                    raise ValueError(f"{self.db_id}.{t.name}.{c.name}: fewer than {n} distinct values.")
                values = pool[:n] if "|" in c.values or c.kind == "code" else rng.sample(pool, n)
                if len(set(values)) < n:
                    raise ValueError(f"{self.db_id}.{t.name}.{c.name}: fewer than {n} distinct values.")
            elif c.kind in ("cat", "text"):
                pool = _expand(c.values)
                values = [rng.choice(pool) for _ in range(n)]
            elif c.kind == "fk":
                values = [rng.choice(parent_keys[c.ref]) for _ in range(n)]
            else:
                values = _range_values(c, n, rng)
            if c.nullable:
                for i in rng.sample(range(n), max(1, round(n / 3))):
                    values[i] = None
            columns.append(values)
        return list(zip(*columns))

    def create_statement(self, t: Table) -> str:
        parts = []
        for c in t.columns:
            text = f"{c.name} {self.sql_type(c)}"
            if c.kind in ("key", "code"):
                text += " PRIMARY KEY"
            if c.kind == "fk":
                text += f" REFERENCES {c.ref}({self.table(c.ref).key.name})"
            parts.append(text)
        if t.is_link:
            parts.append(f"PRIMARY KEY ({t.columns[0].name}, {t.columns[1].name})")
        return f"CREATE TABLE {t.name} ({', '.join(parts)});"

    def sql_script(self) -> str:
        """CREATE and INSERT statements for this database's deterministic contents."""
        lines = [self.create_statement(t) for t in self.tables]
        for t in self.tables:
            lines += [f"INSERT INTO {t.name} VALUES ({', '.join(map(sql_literal, row))});" for row in self.rows[t.name]]
        return "\n".join(lines) + "\n"

    def shape(self) -> tuple:
        """The layout, names aside: per table the column types in order and which tables it points to."""
        index = {t.name: i for i, t in enumerate(self.tables)}
        return tuple(sorted((tuple(self.sql_type(c) for c in t.columns), tuple(sorted(index[c.ref] for c in t.fks)))
                            for t in self.tables))

    def column_names(self) -> set[str]:
        return {c.name for t in self.tables for c in t.columns}


def sql_literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def _db(db_id: str, *tables: Table, heldout: bool = False) -> Database:
    return Database(db_id, tables, heldout)
