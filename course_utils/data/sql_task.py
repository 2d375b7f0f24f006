"""The SQL question templates and the generator of the text-to-SQL splits, gold answers checked."""

from __future__ import annotations

import random
import re
import sqlite3
import string
from dataclasses import dataclass

from .splits import SEED, SPLIT_SIZES, SPLITS
from .tables import Column, Database, plural, sql_literal, Table
from .databases import DATABASES
from .schemas import connect, schema_text


# ---------------------------------------------------------------------------
# SQL question templates
# ---------------------------------------------------------------------------
#
# A template's placeholders say what it needs. Table level: {table} {items} {item} {label}
# {label_words}; a number column {num} {num_words} (a date too, in templates marked `dates`) with a
# value {v} (written {v_sql} in SQL: dates are quoted), an operator {op} said as {cmp}, a range
# {lo}..{hi}, an aggregate {agg} said as {agg_words}, an order {dir} said as {sup} and a count {k};
# a category {cat} {cat_words} {cat_plural} with values {c} {c2}; a column with NULLs {opt}
# {opt_words}; a count threshold {m} that splits the groups. Join level: the table's foreign key
# {fk} to {parent} (said {rel}, plural {parents}) with key {pkey}, label {plabel} and category
# {pcat} {pcat_words} = {pc}. Link level: {link} joins {table} (via {lfk}) to {other} (via {lofk}),
# said with the link's {verb}; {other_item}, {okey}, {olabel} = {ol}.

# The operator words are few and fixed ("above" is always >, "highest" always MAX or DESC): the
# phrasings vary the sentence around them. A short run learns a fixed word -> keyword map quickly;
# it does not learn five synonyms of each.
_CMP = {">": ("above", "greater than"), "<": ("below", "less than")}
_WHEN = {">": ("after",), "<": ("before",)}
_AGG = {"AVG": ("average",), "SUM": ("total",), "MIN": ("lowest",), "MAX": ("highest",)}
_SUP = {"DESC": ("highest",), "ASC": ("lowest",)}
_NEEDS = {"num": "num", "cat": "cat", "opt": "opt"}


@dataclass(frozen=True)
class Template:
    name: str
    kind: str  # filter, aggregate, group by, having, order/limit, distinct, range, null, join
    questions: tuple[str, ...]  # phrasings, placeholders filled in (see above)
    sql: str
    heldout: bool = False
    dates: bool = False  # {num} may also be a DATE column (compared and ranged like a number)

    @property
    def slots(self) -> set[str]:
        return {name for text in (self.sql, *self.questions) for _, name, _, _ in string.Formatter().parse(text)
                if name}

    @property
    def level(self) -> str:
        slots = self.slots
        return "link" if "link" in slots else "join" if "parent" in slots else "table"


# Fifteen seen templates, three phrasings each. Fewer, broader templates beat many narrow ones here:
# a CPU adapter sees about 640 examples (80 steps of 8), and it has to learn to read 30 schemas too.
TEMPLATES: tuple[Template, ...] = (
    Template("filter_cmp", "filter",
             ("Which {items} have {num_words} {cmp} {v}?", "List the {items} whose {num_words} is {cmp} {v}.",
              "Show the {items} with a {num_words} {cmp} {v}."),
             "SELECT {label} FROM {table} WHERE {num} {op} {v_sql};", dates=True),
    Template("filter_cat", "filter",
             ("Which {items} have {cat_words} {c}?", "List the {items} whose {cat_words} is {c}.",
              "Show the {label_words} of the {items} with {cat_words} {c}."),
             "SELECT {label} FROM {table} WHERE {cat} = '{c}';"),
    Template("filter_two", "filter",
             ("Which {items} with {cat_words} {c} have {num_words} {cmp} {v}?",
              "List the {items} whose {cat_words} is {c} and whose {num_words} is {cmp} {v}.",
              "Which {items} have {cat_words} {c} and a {num_words} {cmp} {v}?"),
             "SELECT {label} FROM {table} WHERE {cat} = '{c}' AND {num} {op} {v_sql};"),
    Template("count_filter", "aggregate",
             ("How many {items} have {num_words} {cmp} {v}?", "Count the {items} with a {num_words} {cmp} {v}.",
              "What is the number of {items} whose {num_words} is {cmp} {v}?"),
             "SELECT COUNT(*) FROM {table} WHERE {num} {op} {v_sql};", dates=True),
    Template("agg_cat", "aggregate",
             ("What is the {agg_words} {num_words} of {items} with {cat_words} {c}?",
              "Give the {agg_words} {num_words} among {items} whose {cat_words} is {c}.",
              "For {items} with {cat_words} {c}, what is the {agg_words} {num_words}?"),
             "SELECT {agg}({num}) FROM {table} WHERE {cat} = '{c}';"),
    Template("group_count", "group by",
             ("How many {items} are there for each {cat_words}?", "Count the {items} per {cat_words}.",
              "For every {cat_words}, give the number of {items}."),
             "SELECT {cat}, COUNT(*) FROM {table} GROUP BY {cat};"),
    Template("group_agg", "group by",
             ("What is the {agg_words} {num_words} for each {cat_words}?",
              "Show the {agg_words} {num_words} of {items} per {cat_words}.",
              "For every {cat_words}, give the {agg_words} {num_words} of its {items}."),
             "SELECT {cat}, {agg}({num}) FROM {table} GROUP BY {cat};"),
    Template("having", "having",
             ("Which {cat_plural} have more than {m} {items}?", "List the {cat_plural} shared by more than {m} {items}.",
              "Which {cat_plural} appear in more than {m} {items}?"),
             "SELECT {cat} FROM {table} GROUP BY {cat} HAVING COUNT(*) > {m};"),
    Template("top_k", "order/limit",
             ("Which {k} {items} have the {sup} {num_words}?", "Name the {k} {items} with the {sup} {num_words}.",
              "List the {k} {items} with the {sup} {num_words}, in order."),
             "SELECT {label} FROM {table} ORDER BY {num} {dir} LIMIT {k};"),
    Template("distinct", "distinct",
             ("Which distinct {cat_plural} do {items} with {num_words} {cmp} {v} have?",
              "List the distinct {cat_plural} of {items} whose {num_words} is {cmp} {v}.",
              "Give the distinct {cat_plural} among {items} with a {num_words} {cmp} {v}."),
             "SELECT DISTINCT {cat} FROM {table} WHERE {num} {op} {v_sql};"),
    Template("between", "range",
             ("Which {items} have {num_words} between {lo} and {hi}?",
              "List the {items} whose {num_words} is between {lo} and {hi}.",
              "Show the {items} with a {num_words} between {lo} and {hi}, inclusive."),
             "SELECT {label} FROM {table} WHERE {num} BETWEEN {lo_sql} AND {hi_sql};", dates=True),
    Template("null_missing", "null",
             ("Which {items} have no {opt_words}?", "List the {items} whose {opt_words} is missing.",
              "Show the {items} without a recorded {opt_words}."),
             "SELECT {label} FROM {table} WHERE {opt} IS NULL;"),
    Template("join_filter", "join",
             ("Which {items} have a {rel} with {pcat_words} {pc}?", "List the {items} whose {rel} has {pcat_words} {pc}.",
              "Show the {items} whose {rel}'s {pcat_words} is {pc}."),
             "SELECT {table}.{label} FROM {table} JOIN {parent} ON {table}.{fk} = {parent}.{pkey} "
             "WHERE {parent}.{pcat} = '{pc}';"),
    Template("join_count", "join",
             ("How many {items} does each {rel} have?", "Count the {items} per {rel}.",
              "For every {rel}, give the number of {items}."),
             "SELECT {parent}.{plabel}, COUNT(*) FROM {table} JOIN {parent} ON {table}.{fk} = {parent}.{pkey} "
             "GROUP BY {parent}.{plabel};"),
    Template("link_filter", "join",
             ("Which {items} {verb} the {other_item} {ol}?", "List the {items} that {verb} the {other_item} {ol}.",
              "Name the {items} who {verb} {other_item} {ol}."),
             "SELECT {table}.{label} FROM {table} JOIN {link} ON {table}.{key} = {link}.{lfk} "
             "JOIN {other} ON {link}.{lofk} = {other}.{okey} WHERE {other}.{olabel} = '{ol}';"),
    # Held out (test split only): new combinations of pieces that training shows separately.
    Template("count_two", "aggregate",
             ("How many {items} with {cat_words} {c} have {num_words} {cmp} {v}?",
              "Count the {items} whose {cat_words} is {c} and whose {num_words} is {cmp} {v}."),
             "SELECT COUNT(*) FROM {table} WHERE {cat} = '{c}' AND {num} {op} {v_sql};", heldout=True),
    Template("count_null", "null",
             ("How many {items} have no {opt_words}?", "Count the {items} whose {opt_words} is missing.",
              "What is the number of {items} without a recorded {opt_words}?"),
             "SELECT COUNT(*) FROM {table} WHERE {opt} IS NULL;", heldout=True),
    Template("top_k_filtered", "order/limit",
             ("Which {k} {items} with {cat_words} {c} have the {sup} {num_words}?",
              "Among {items} whose {cat_words} is {c}, name the {k} with the {sup} {num_words}."),
             "SELECT {label} FROM {table} WHERE {cat} = '{c}' ORDER BY {num} {dir} LIMIT {k};", heldout=True),
    Template("count_between", "range",
             ("How many {items} have {num_words} between {lo} and {hi}?",
              "Count the {items} whose {num_words} is between {lo} and {hi}."),
             "SELECT COUNT(*) FROM {table} WHERE {num} BETWEEN {lo_sql} AND {hi_sql};", heldout=True, dates=True),
    Template("argmax_group", "group by",
             ("Which {cat_words} has the most {items}?", "What is the most common {cat_words} among {items}?"),
             "SELECT {cat} FROM {table} GROUP BY {cat} ORDER BY COUNT(*) DESC LIMIT 1;", heldout=True),
)
TEMPLATE_BY_NAME = {t.name: t for t in TEMPLATES}


def _orderable(t: Table, template: Template) -> list[Column]:
    return t.of_kind("int", "real", "date") if template.dates else t.of_kind("int", "real")


def _table_fits(t: Table, template: Template) -> bool:
    slots = template.slots
    kinds = {"num": _orderable(t, template), "cat": t.of_kind("cat"), "opt": t.optional}
    return not t.is_link and all(kinds[need] for slot, need in _NEEDS.items() if slot in slots)


def _frames(template: Template, db: Database) -> list[tuple]:
    """Where a template can be asked in a database: (table,), (table, fk, parent) or (table, link, other)."""
    slots = template.slots
    if template.level == "table":
        return [(t,) for t in db.tables if _table_fits(t, template)]
    if template.level == "join":
        return [(t, c, db.table(c.ref)) for t in db.tables if _table_fits(t, template) for c in t.fks
                if not db.table(c.ref).is_link and ("pcat" not in slots or db.table(c.ref).of_kind("cat"))]
    return [(db.table(t.fks[0].ref), t, db.table(t.fks[1].ref)) for t in db.tables if t.is_link and t.verb]


def _column_values(db: Database, t: Table, column: Column) -> list:
    index = t.columns.index(column)
    return [row[index] for row in db.rows[t.name]]


def _split_count(counts: list[int], rng: random.Random) -> int | None:
    """A threshold m with some groups above it and some not (so `HAVING COUNT(*) > m` filters)."""
    options = sorted(set(counts))[:-1]
    options = [m for m in options if m >= 2] or options  # "more than 1 airports" reads badly
    return rng.choice(options) if options else None


def _fill(template: Template, db: Database, rng: random.Random) -> tuple[str, str] | None:
    """One question and its gold query, or None when this draw cannot make one."""
    frames = _frames(template, db)
    frame = rng.choice(frames)
    t = frame[0]
    slots = template.slots
    s: dict[str, object] = {"table": t.name, "items": t.items, "item": t.noun, "key": t.key.name,
                            "label": t.label.name, "label_words": plural(t.label.said)}
    if "num" in slots:
        column = rng.choice(_orderable(t, template))
        values = sorted(_column_values(db, t, column))
        cut = len(values) // 5
        i = rng.randrange(0, max(1, len(values) - 3))
        v, lo, hi = rng.choice(values[cut:len(values) - cut]), values[i], values[min(len(values) - 1, i + rng.randint(2, 8))]
        op, direction, agg = rng.choice("><"), rng.choice(("DESC", "ASC")), rng.choice(tuple(_AGG))
        s |= {"num": column.name, "num_words": column.said, "v": v, "lo": lo, "hi": hi, "v_sql": sql_literal(v),
              "lo_sql": sql_literal(lo), "hi_sql": sql_literal(hi), "op": op,
              "cmp": rng.choice((_WHEN if column.kind == "date" else _CMP)[op]), "agg": agg,
              "agg_words": rng.choice(_AGG[agg]), "dir": direction, "sup": rng.choice(_SUP[direction]),
              "k": rng.randint(2, 5)}
    if "cat" in slots:
        column = rng.choice(t.of_kind("cat"))
        present = sorted(set(_column_values(db, t, column)))
        if len(present) < 2:
            return None
        c, c2 = rng.sample(present, 2)
        s |= {"cat": column.name, "cat_words": column.said, "cat_plural": plural(column.said), "c": c, "c2": c2}
    if "opt" in slots:
        column = rng.choice(t.optional)
        s |= {"opt": column.name, "opt_words": column.said}
    if template.level == "join":
        _, fk, parent = frame
        s |= {"fk": fk.name, "parent": parent.name, "rel": fk.words or parent.noun, "parents": parent.items,
              "pkey": parent.key.name, "plabel": parent.label.name}
        if "pcat" in slots:
            column = rng.choice(parent.of_kind("cat"))
            s |= {"pcat": column.name, "pcat_words": column.said,
                  "pc": rng.choice(sorted(set(_column_values(db, parent, column))))}
    if template.level == "link":
        _, link, other = frame
        s |= {"link": link.name, "lfk": link.fks[0].name, "lofk": link.fks[1].name, "verb": link.verb,
              "other": other.name, "other_item": other.noun, "okey": other.key.name, "olabel": other.label.name,
              "ol": rng.choice(_column_values(db, other, other.label))}
    if "m" in slots:
        group_by = s["fk"] if template.level == "join" else s["cat"]
        column = next(c for c in t.columns if c.name == group_by)
        values = _column_values(db, t, column)
        m = _split_count([values.count(v) for v in set(values)], rng)
        if m is None:
            return None
        s["m"] = m
    question = rng.choice(template.questions).format(**s)
    question = re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", question)  # "a elevation" -> "an elevation"
    return question[0].upper() + question[1:], template.sql.format(**s)


def _without(sql: str, clause: str) -> str:
    """The query with one clause (WHERE or HAVING) removed."""
    return re.sub(rf" {clause} .*?(?= GROUP BY | ORDER BY |;)", "", sql)


def _gold_is_informative(conn: sqlite3.Connection, sql: str) -> bool:
    """Keep a question only if its gold answer says something.

    Not empty, NULL or 0 (they would reward an empty guess); a WHERE or HAVING
    must change the answer (a filter that keeps everything tests nothing);
    and an ORDER BY ... LIMIT must not depend on how ties are broken (the
    scorer compares ordered answers in order).
    """
    rows = conn.execute(sql).fetchall()
    if not rows or rows[0][-1] in (None, 0):
        return False
    for clause in ("WHERE", "HAVING"):
        if f" {clause} " in sql and conn.execute(_without(sql, clause)).fetchall() == rows:
            return False
    if " LIMIT " in sql:
        if len(rows) != int(sql.rsplit(" LIMIT ", 1)[1].rstrip(";")):
            return False  # fewer rows than asked for: the LIMIT says nothing
        tie_breaks = [conn.execute(sql.replace(" LIMIT ", f", 1 {order} LIMIT ")).fetchall() for order in ("ASC", "DESC")]
        if tie_breaks[0] != tie_breaks[1]:
            return False
    return True


def generate_sql_examples(seed: int = SEED, sizes: dict[str, int] | None = None) -> dict[str, list[dict]]:
    """Generate the three splits of the SQL task.

    train/validation: training databases x seen templates. test: one third
    training databases with seen templates (new questions), one third held-out
    templates on training databases, one third held-out databases with seen
    templates, so each held-out group changes one thing only.
    """
    sizes = sizes or SPLIT_SIZES
    rng = random.Random(seed)
    train_dbs = [d for d in DATABASES if not d.heldout]
    new_dbs = [d for d in DATABASES if d.heldout]
    seen_t = [t for t in TEMPLATES if not t.heldout]
    new_t = [t for t in TEMPLATES if t.heldout]
    conns = {d.db_id: connect(d.db_id) for d in DATABASES}
    test_keys: set[str] = set()

    def draw(dbs: list[Database], template: Template, split: str, group: str) -> dict:
        # A database that can ask the template, then a question. A test question is unique within the
        # test split and never appears in train or validation; train may repeat a question, as real
        # instruction data does.
        for _round in range(100):
            db = rng.choice([d for d in dbs if _frames(template, d)])
            for _attempt in range(50):  # then another database: some cannot ask some questions well
                filled = _fill(template, db, rng)
                if filled is None:
                    continue
                question, sql = filled
                key = f"{db.db_id}|{question}"
                if key not in test_keys and _gold_is_informative(conns[db.db_id], sql):
                    if split == "test":
                        test_keys.add(key)
                    return {"task": "sql", "split": split, "db_id": db.db_id, "schema": schema_text(db.db_id),
                            "question": question, "answer": sql, "template": template.name,
                            "kind": template.kind, "group": group}
        raise RuntimeError(f"Cannot draw another {split} question of template {template.name!r} for group {group!r}: "
                           "its databases offer too few distinct informative questions; add columns or databases.")

    def balanced(templates: list[Template], n: int) -> list[Template]:
        """Every template equally often (to within one), in a seeded order: a test group's mean is
        then an average over templates, not over the luck of the draw."""
        order = [templates[i % len(templates)] for i in range(n)]
        rng.shuffle(order)
        return order

    splits: dict[str, list[dict]] = {}
    for split in ("test", "validation", "train"):  # test first, so train never repeats a test question
        n = sizes[split]
        if split == "test":
            third = n // 3
            rows = ([draw(train_dbs, t, split, "seen") for t in balanced(seen_t, n - 2 * third)]
                    + [draw(train_dbs, t, split, "heldout_template") for t in balanced(new_t, third)]
                    + [draw(new_dbs, t, split, "heldout_database") for t in balanced(seen_t, third)])
        else:
            rows = [draw(train_dbs, rng.choice(seen_t), split, "seen") for _ in range(n)]
        for i, row in enumerate(rows):
            row["id"] = f"sql-{split}-{i:04d}"
        splits[split] = rows
    for conn in conns.values():
        conn.close()
    return {s: splits[s] for s in SPLITS}
