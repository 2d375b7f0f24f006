"""The course's running-example data: text-to-SQL and sentence-to-JSON.

Both tasks are generated deterministically from a seed, so the committed
JSONL files in data/ can be rebuilt bit for bit (`python -m course_utils.data`),
and both are scored exactly (see `course_utils.evaluate`).

Task 1, text-to-SQL: small SQLite databases, each a main table and a parent
table. Questions come from templates covering filter, aggregate, group by,
order/limit and join. The test split holds out two whole databases and three
templates (new combinations of seen pieces), so that rank, target modules and
quantization make visible differences on generalisation.

Task 2, sentence-to-JSON: extract the fields of a booking request into a JSON
object, scored field by field; two phrasings are held out for the test split.
"""

from __future__ import annotations

import json
import random
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SEED = 1234
TASKS = ("sql", "json")
SPLITS = ("train", "validation", "test")
SPLIT_SIZES = {"train": 2400, "validation": 240, "test": 240}


# ---------------------------------------------------------------------------
# The SQL databases
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    """A main table of named things with one category and two numbers, plus a parent table."""

    db_id: str
    table: str  # e.g. "employees"
    noun: str  # singular word used in questions, e.g. "employee"
    category: str  # text column, e.g. "department"
    categories: tuple[str, ...]
    numbers: tuple[str, str]  # two numeric columns
    ranges: tuple[tuple[int, int], tuple[int, int]]
    names: tuple[str, ...]
    parent: str  # parent table, e.g. "offices"
    parent_noun: str  # e.g. "office"
    parent_attr: str  # text attribute of the parent, e.g. "city"
    parent_values: tuple[str, ...]
    heldout: bool = False

    @property
    def fk(self) -> str:
        return f"{self.parent_noun}_id"

    def schema_text(self) -> str:
        """The compact schema shown to the model in the prompt."""
        a, b = self.numbers
        return (f"{self.table}(id, name, {self.category}, {a}, {b}, {self.fk})\n"
                f"{self.parent}(id, name, {self.parent_attr})")

    def sql_script(self, seed: int = SEED) -> str:
        """CREATE and INSERT statements for this database's deterministic contents."""
        rng = random.Random(f"{seed}-{self.db_id}")
        a, b = self.numbers
        lines = [
            f"CREATE TABLE {self.parent} (id INTEGER PRIMARY KEY, name TEXT, {self.parent_attr} TEXT);",
            f"CREATE TABLE {self.table} (id INTEGER PRIMARY KEY, name TEXT, {self.category} TEXT, "
            f"{a} INTEGER, {b} INTEGER, {self.fk} INTEGER REFERENCES {self.parent}(id));",
        ]
        n_parents = 8
        for pid in range(1, n_parents + 1):
            value = self.parent_values[(pid - 1) % len(self.parent_values)]
            lines.append(f"INSERT INTO {self.parent} VALUES ({pid}, '{self.parent_noun.title()} {pid}', '{value}');")
        for row_id, name in enumerate(self.names, start=1):
            cat = rng.choice(self.categories)
            x = rng.randint(*self.ranges[0])
            y = rng.randint(*self.ranges[1])
            lines.append(f"INSERT INTO {self.table} VALUES ({row_id}, '{name}', '{cat}', {x}, {y}, "
                         f"{rng.randint(1, n_parents)});")
        return "\n".join(lines) + "\n"


def _names(prefixes: str, suffixes: str) -> tuple[str, ...]:
    return tuple(f"{p} {s}" for p in prefixes.split() for s in suffixes.split())


DATABASES: tuple[Database, ...] = (
    Database("company", "employees", "employee", "department",
             ("Sales", "Engineering", "Finance", "Support", "Legal"), ("salary", "age"), ((2000, 9000), (21, 65)),
             _names("Ana Ben Chen Dara Eli Femi", "Smith Okafor Ruiz Novak Park"),
             "offices", "office", "city", ("Berlin", "Lagos", "Lima", "Osaka")),
    Database("library", "books", "book", "genre",
             ("Fantasy", "History", "Poetry", "Science", "Crime"), ("pages", "year"), ((80, 900), (1900, 2023)),
             _names("Silent Lost Red Hidden Last Broken", "River Garden Crown Letter Winter"),
             "publishers", "publisher", "country", ("France", "India", "Canada", "Kenya")),
    Database("cinema", "movies", "movie", "rating",
             ("G", "PG", "R", "NC17"), ("minutes", "budget"), ((70, 200), (1, 250)),
             _names("Night Steel Blue Paper Iron Quiet", "Harbor Signal Empire Orbit Tide"),
             "studios", "studio", "city", ("Mumbai", "Paris", "Austin", "Seoul")),
    Database("shop", "products", "product", "category",
             ("Garden", "Kitchen", "Toys", "Office", "Sports"), ("price", "stock"), ((1, 500), (0, 300)),
             _names("Smart Mini Eco Pro Classic Ultra", "Lamp Kettle Chair Drone Racket"),
             "suppliers", "supplier", "region", ("North", "South", "East", "West")),
    Database("school", "students", "student", "major",
             ("Biology", "Physics", "Art", "Economics", "Music"), ("score", "credits"), ((40, 100), (0, 180)),
             _names("Ines Jomo Kira Liam Maya Noor", "Adams Bello Cruz Diaz Evans"),
             "advisors", "advisor", "building", ("North Hall", "Main Hall", "Annex", "Tower")),
    Database("music", "songs", "song", "style",
             ("Jazz", "Rock", "Folk", "Pop", "Blues"), ("plays", "seconds"), ((100, 99000), (90, 480)),
             _names("Golden Electric Lonely Wild Northern Sweet", "Road Heart Storm Dance Echo"),
             "artists", "artist", "country", ("Brazil", "Ireland", "Japan", "Ghana")),
    # Held out: these two databases appear only in the test split.
    Database("zoo", "animals", "animal", "species",
             ("Lion", "Zebra", "Parrot", "Otter", "Tortoise"), ("weight", "age"), ((1, 900), (1, 60)),
             _names("Sunny Max Luna Coco Kiwi Rex", "One Two Three Four Five"),
             "keepers", "keeper", "shift", ("Morning", "Evening", "Night", "Weekend"), heldout=True),
    Database("airline", "flights", "flight", "status",
             ("OnTime", "Delayed", "Cancelled", "Boarding"), ("distance", "seats"), ((200, 9000), (50, 400)),
             _names("AX BY CZ DW EV FU", "101 202 303 404 505"),
             "airports", "airport", "country", ("Chile", "Egypt", "Norway", "Peru"), heldout=True),
)
DATABASE_BY_ID = {db.db_id: db for db in DATABASES}


def database_script(db_id: str) -> str:
    """The CREATE and INSERT statements that build database `db_id` (what `connect` runs)."""
    if db_id not in DATABASE_BY_ID:
        raise ValueError(f"Unknown database {db_id!r}; choose one of {sorted(DATABASE_BY_ID)}.")
    return DATABASE_BY_ID[db_id].sql_script()


def connect(db_id: str) -> sqlite3.Connection:
    """A fresh in-memory copy of one database (the evaluator never touches a file)."""
    script = database_script(db_id)
    conn = sqlite3.connect(":memory:")
    conn.executescript(script)
    return conn


# ---------------------------------------------------------------------------
# SQL question templates
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    name: str
    kind: str  # filter, aggregate, group by, order/limit, join
    questions: tuple[str, ...]  # phrasings; {plural}, {noun}, {cat}, {num}, ... filled in
    sql: str
    heldout: bool = False


TEMPLATES: tuple[Template, ...] = (
    Template("filter_gt", "filter",
             ("List the names of {plural} with {num} above {v}.", "Which {plural} have a {num} greater than {v}?"),
             "SELECT name FROM {table} WHERE {num} > {v};"),
    Template("filter_category", "filter",
             ("Which {plural} have {cat} {c}?", "Show the names of all {plural} whose {cat} is {c}."),
             "SELECT name FROM {table} WHERE {cat} = '{c}';"),
    Template("count_lt", "aggregate",
             ("How many {plural} have {num} below {v}?", "Count the {plural} with a {num} less than {v}."),
             "SELECT COUNT(*) FROM {table} WHERE {num} < {v};"),
    Template("avg_category", "aggregate",
             ("What is the average {num} of {plural} with {cat} {c}?", "Give the mean {num} for {cat} {c} {plural}."),
             "SELECT AVG({num}) FROM {table} WHERE {cat} = '{c}';"),
    Template("max", "aggregate",
             ("What is the highest {num} of any {noun}?", "Find the maximum {num} among all {plural}."),
             "SELECT MAX({num}) FROM {table};"),
    Template("sum_category", "aggregate",
             ("What is the total {num} of {plural} with {cat} {c}?", "Add up the {num} of all {cat} {c} {plural}."),
             "SELECT SUM({num}) FROM {table} WHERE {cat} = '{c}';"),
    Template("filter_two", "filter",
             ("Which {plural} with {cat} {c} have {num} below {v}?",
              "List the {cat} {c} {plural} whose {num} is less than {v}."),
             "SELECT name FROM {table} WHERE {cat} = '{c}' AND {num} < {v};"),
    Template("group_count", "group by",
             ("How many {plural} are there for each {cat}?", "Count the {plural} per {cat}."),
             "SELECT {cat}, COUNT(*) FROM {table} GROUP BY {cat};"),
    Template("group_avg", "group by",
             ("What is the average {num} for each {cat}?", "Show the mean {num} of {plural} per {cat}."),
             "SELECT {cat}, AVG({num}) FROM {table} GROUP BY {cat};"),
    Template("top_k", "order/limit",
             ("Name the {k} {plural} with the highest {num}.", "Which {k} {plural} have the largest {num}?"),
             "SELECT name FROM {table} ORDER BY {num} DESC LIMIT {k};"),
    Template("bottom_k", "order/limit",
             ("Name the {k} {plural} with the lowest {num}.", "Which {k} {plural} have the smallest {num}?"),
             "SELECT name FROM {table} ORDER BY {num} ASC LIMIT {k};"),
    Template("join_filter", "join",
             ("List the {plural} whose {parent_noun} has {attr} {a}.",
              "Which {plural} belong to a {parent_noun} with {attr} {a}?"),
             "SELECT {table}.name FROM {table} JOIN {parent} ON {table}.{fk} = {parent}.id "
             "WHERE {parent}.{attr} = '{a}';"),
    Template("join_count", "join",
             ("How many {plural} have a {parent_noun} with {attr} {a}?",
              "Count the {plural} whose {parent_noun} has {attr} {a}."),
             "SELECT COUNT(*) FROM {table} JOIN {parent} ON {table}.{fk} = {parent}.id "
             "WHERE {parent}.{attr} = '{a}';"),
    # Held out: new combinations of pieces seen in training (COUNT with two conditions, a
    # GROUP BY ordered by its count, SUM over a join); test split only.
    Template("count_category_gt", "filter",
             ("How many {plural} with {cat} {c} have {num} above {v}?",),
             "SELECT COUNT(*) FROM {table} WHERE {cat} = '{c}' AND {num} > {v};", heldout=True),
    Template("argmax_group", "group by",
             ("Which {cat} has the most {plural}?",),
             "SELECT {cat} FROM {table} GROUP BY {cat} ORDER BY COUNT(*) DESC LIMIT 1;", heldout=True),
    Template("join_sum", "join",
             ("What is the total {num} of {plural} whose {parent_noun} has {attr} {a}?",),
             "SELECT SUM({table}.{num}) FROM {table} JOIN {parent} ON {table}.{fk} = {parent}.id "
             "WHERE {parent}.{attr} = '{a}';", heldout=True),
)
TEMPLATE_BY_NAME = {t.name: t for t in TEMPLATES}


def _fill(template: Template, db: Database, rng: random.Random) -> tuple[str, str]:
    num_index = rng.randrange(2)
    low, high = db.ranges[num_index]
    slots = {
        "table": db.table, "plural": db.table, "noun": db.noun, "cat": db.category,
        "num": db.numbers[num_index], "v": rng.randint(low + (high - low) // 5, high - (high - low) // 5),
        "c": rng.choice(db.categories), "k": rng.randint(2, 5), "parent": db.parent,
        "parent_noun": db.parent_noun, "attr": db.parent_attr, "a": rng.choice(db.parent_values), "fk": db.fk,
    }
    question = rng.choice(template.questions).format(**slots)
    return question, template.sql.format(**slots)


def _gold_is_informative(db_id: str, sql: str, conn_cache: dict[str, sqlite3.Connection]) -> bool:
    """Reject questions whose gold answer is empty or NULL: they would reward an empty guess."""
    conn = conn_cache.setdefault(db_id, connect(db_id))
    rows = conn.execute(sql).fetchall()
    return bool(rows) and rows[0][0] not in (None, 0)


def generate_sql_examples(seed: int = SEED, sizes: dict[str, int] | None = None) -> dict[str, list[dict]]:
    """Generate the three splits of the SQL task.

    train/validation: seen databases x seen templates. test: one third seen
    databases with seen templates (new values), one third held-out templates,
    one third held-out databases (any template).
    """
    sizes = sizes or SPLIT_SIZES
    rng = random.Random(seed)
    seen_dbs = [d for d in DATABASES if not d.heldout]
    new_dbs = [d for d in DATABASES if d.heldout]
    seen_t = [t for t in TEMPLATES if not t.heldout]
    new_t = [t for t in TEMPLATES if t.heldout]
    conns: dict[str, sqlite3.Connection] = {}
    test_keys: set[str] = set()

    def draw(dbs: list[Database], templates: list[Template], split: str, group: str) -> dict:
        # Template and database are drawn uniformly, so rare templates are as frequent as common
        # ones. A test question is unique within the test split and never appears in train or
        # validation; train may repeat a question (templates with few slots have few questions).
        while True:
            db, template = rng.choice(dbs), rng.choice(templates)
            for _attempt in range(50):
                question, sql = _fill(template, db, rng)
                key = f"{db.db_id}|{question}"
                if key not in test_keys and _gold_is_informative(db.db_id, sql, conns):
                    if split == "test":
                        test_keys.add(key)
                    return {"task": "sql", "split": split, "db_id": db.db_id, "schema": db.schema_text(),
                            "question": question, "answer": sql, "template": template.name,
                            "kind": template.kind, "group": group}

    splits: dict[str, list[dict]] = {}
    for split in ("test", "validation", "train"):  # test first, so train never repeats a test question
        n = sizes[split]
        if split == "test":
            third = n // 3
            rows = ([draw(seen_dbs, seen_t, split, "seen") for _ in range(n - 2 * third)]
                    + [draw(seen_dbs, new_t, split, "heldout_template") for _ in range(third)]
                    + [draw(new_dbs, seen_t + new_t, split, "heldout_database") for _ in range(third)])
        else:
            rows = [draw(seen_dbs, seen_t, split, "seen") for _ in range(n)]
        for i, row in enumerate(rows):
            row["id"] = f"sql-{split}-{i:04d}"
        splits[split] = rows
    return {s: splits[s] for s in SPLITS}


# ---------------------------------------------------------------------------
# Task 2: sentence -> JSON fields
# ---------------------------------------------------------------------------

JSON_FIELDS = ("name", "people", "day", "time", "place")
_PEOPLE_NAMES = ("Amara", "Bruno", "Chloe", "Dev", "Elena", "Farah", "Goran", "Hana", "Ivan", "Jade", "Kofi", "Lena")
_PLACES = ("Luigi's", "The Blue Door", "Casa Verde", "Saffron House", "Harbour Grill", "Noodle Bar", "Old Mill")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_NUMBER_WORDS = ("two", "three", "four", "five", "six", "seven", "eight")
JSON_PHRASINGS = (
    ("Hi, this is {name}. Could I book a table for {people_text} at {place} on {day} at {time_text}?", False),
    ("{name} here: table at {place}, {day}, {time_text}, {people_text} people please.", False),
    ("Please reserve {place} for {people_text} on {day} at {time_text}. The booking is under {name}.", False),
    ("We are {people_text}. {name} would like {place} at {time_text} this {day}.", False),
    ("Booking request from {name} for {day}: {people_text} guests, {time_text}, at {place}.", False),
    # Held out (test only).
    ("On {day} at {time_text}, {people_text} of us want to eat at {place}; the name is {name}.", True),
    ("{place}, {time_text}, {day}. Party of {people_text}. Contact: {name}.", True),
)
JSON_INSTRUCTION = ("Extract the booking as JSON with keys name, people (a number), day, "
                    "time (24-hour HH:MM) and place.")


def _time_text(hour: int, minute: int) -> str:
    suffix = "am" if hour < 12 else "pm"
    h12 = hour % 12 or 12
    return f"{h12}{suffix}" if minute == 0 else f"{h12}:{minute:02d}{suffix}"


def generate_json_examples(seed: int = SEED, sizes: dict[str, int] | None = None) -> dict[str, list[dict]]:
    """Generate the three splits of the booking-extraction task."""
    sizes = sizes or SPLIT_SIZES
    rng = random.Random(seed + 1)
    seen = [p for p, held in JSON_PHRASINGS if not held]
    new = [p for p, held in JSON_PHRASINGS if held]
    used: set[str] = set()

    def draw(phrasings: list[str], split: str, group: str) -> dict:
        while True:
            people = rng.randint(2, 8)
            hour, minute = rng.choice(range(11, 23)), rng.choice((0, 15, 30, 45))
            fields = {"name": rng.choice(_PEOPLE_NAMES), "people": people, "day": rng.choice(_DAYS),
                      "time": f"{hour:02d}:{minute:02d}", "place": rng.choice(_PLACES)}
            people_text = _NUMBER_WORDS[people - 2] if rng.random() < 0.5 else str(people)
            phrasing = rng.choice(phrasings)
            sentence = phrasing.format(people_text=people_text, time_text=_time_text(hour, minute),
                                       **{k: v for k, v in fields.items() if k != "people"})
            if sentence in used:
                continue
            used.add(sentence)
            index = [p for p, _ in JSON_PHRASINGS].index(phrasing)
            return {"task": "json", "split": split, "question": sentence,
                    "answer": json.dumps(fields, ensure_ascii=False), "template": f"phrasing_{index}",
                    "group": group}

    splits: dict[str, list[dict]] = {}
    for split in ("test", "validation", "train"):
        n = sizes[split]
        if split == "test":
            rows = [draw(seen, split, "seen") for _ in range(n - n // 2)] + [draw(new, split, "heldout_template")
                                                                             for _ in range(n // 2)]
        else:
            rows = [draw(seen, split, "seen") for _ in range(n)]
        for i, row in enumerate(rows):
            row["id"] = f"json-{split}-{i:04d}"
        splits[split] = rows
    return {s: splits[s] for s in SPLITS}


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


def read_jsonl(path: Path) -> list[dict]:
    """Read a JSONL file; a malformed line is an error that names its line number."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}, line {number}: not valid JSON ({exc.msg}). "
                                 "Fix the line or regenerate with `python -m course_utils.data`.") from None
    return rows


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def load_examples(task: str = "sql", split: str = "train", limit: int | None = None,
                  data_dir: Path | None = None) -> list[dict]:
    """Examples of one split as dicts (question, answer, and task-specific fields)."""
    path = data_path(task, split, data_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; regenerate the data with `python -m course_utils.data`.")
    rows = read_jsonl(path)
    return rows[:limit] if limit is not None else rows


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


SQL_INSTRUCTION = "Write one SQLite query that answers the question. Tables:"


def build_messages(example: dict, with_answer: bool = False) -> list[dict[str, str]]:
    """Chat messages for one example: instructions (and schema) as system, question as user."""
    if example["task"] == "sql":
        system = f"{SQL_INSTRUCTION}\n{example['schema']}"
    elif example["task"] == "json":
        system = JSON_INSTRUCTION
    else:
        raise ValueError(f"Unknown task {example['task']!r}; choose one of {TASKS}.")
    messages = [{"role": "system", "content": system}, {"role": "user", "content": example["question"]}]
    if with_answer:
        messages.append({"role": "assistant", "content": example["answer"]})
    return messages


def prompt_text(tokenizer, example: dict) -> str:
    """The chat-formatted prompt, ending where the assistant's answer starts."""
    return tokenizer.apply_chat_template(build_messages(example), tokenize=False, add_generation_prompt=True)


def training_features(tokenizer, example: dict, max_length: int = 256) -> dict[str, list[int]]:
    """Token ids and labels for one example: loss only on the answer and its EOS.

    The prompt tokens get label -100 (ignored by the loss), so the model learns
    to write the answer, not to repeat the question. The EOS token teaches it
    to stop. Too-long examples are an error, never silently truncated.
    """
    prompt_ids = tokenizer(prompt_text(tokenizer, example), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(example["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    input_ids = prompt_ids + answer_ids
    if len(input_ids) > max_length:
        raise ValueError(f"Example {example.get('id')} has {len(input_ids)} tokens, more than max_length="
                         f"{max_length}; raise max_length.")
    return {"input_ids": input_ids, "labels": [-100] * len(prompt_ids) + answer_ids}


def regenerate(data_dir: Path | None = None, seed: int = SEED) -> dict[str, dict[str, int]]:
    """Write every task and split to data/ and return their sizes."""
    sizes: dict[str, dict[str, int]] = {}
    for task, generator in GENERATORS.items():
        splits = generator(seed)
        sizes[task] = {}
        for split, rows in splits.items():
            write_jsonl(rows, data_path(task, split, data_dir))
            sizes[task][split] = len(rows)
    return sizes


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Regenerate the course data in data/.")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=DATA_DIR)
    args = parser.parse_args(argv)
    for task, sizes in regenerate(args.out, args.seed).items():
        print(task, sizes)


if __name__ == "__main__":
    main()
