"""The generated data is deterministic, sized as promised, diverse, and split honestly."""

import json
import re
from collections import Counter

import numpy as np
import pytest

from course_utils import data

TRAIN_DBS = [d for d in data.DATABASES if not d.heldout]
HELD_DBS = [d for d in data.DATABASES if d.heldout]


@pytest.fixture(scope="module")
def sql_splits():
    return {s: data.load_examples("sql", s) for s in data.SPLITS}


def test_committed_files_equal_a_fresh_generation(tmp_path):
    data.regenerate(tmp_path)
    for task in data.TASKS:
        for split in data.SPLITS:
            fresh = data.data_path(task, split, tmp_path).read_text()
            assert fresh == data.data_path(task, split).read_text(), f"{task}/{split} differs: regenerate data/"


def test_sizes_and_groups(sql_splits):
    assert len(sql_splits["train"]) == 2400 and len(sql_splits["validation"]) >= 240
    groups = Counter(e["group"] for e in sql_splits["test"])
    assert set(groups) == set(data.GROUPS) and min(groups.values()) >= 120, groups  # noise: see data/README.md
    assert {e["group"] for e in sql_splits["train"] + sql_splits["validation"]} == {"seen"}
    assert [len(data.load_examples("json", s)) for s in data.SPLITS] == [2400, 240, 240]


def test_rows_keep_their_keys(sql_splits):
    keys = {"task", "split", "db_id", "schema", "question", "answer", "template", "kind", "group", "id"}
    for split, rows in sql_splits.items():
        assert all(keys <= set(row) and row["split"] == split for row in rows)
        assert len({row["id"] for row in rows}) == len(rows)


def test_databases_are_many_and_of_many_shapes():
    assert len(TRAIN_DBS) >= 30 and len(HELD_DBS) >= 8
    assert {len(d.tables) for d in TRAIN_DBS} == {1, 2, 3, 4}
    assert {len(d.tables) for d in HELD_DBS} >= {1, 2, 3, 4}
    assert len({d.shape() for d in TRAIN_DBS}) >= 25, "most databases should have a layout of their own"
    entities = [t for d in TRAIN_DBS for t in d.tables if not t.is_link]
    assert len({t.key.name for t in entities}) >= 20 and any(t.key.kind == "code" for t in entities)
    assert {"name", "title", "label", "full_name"} <= {t.label.name for t in entities}
    assert {"INT", "REAL", "TEXT", "DATE"} <= {d.sql_type(c) for d in TRAIN_DBS for t in d.tables for c in t.columns}
    assert sum(c.nullable for d in TRAIN_DBS for t in d.tables for c in t.columns) >= 10
    assert any(t.is_link for d in TRAIN_DBS for t in d.tables)
    renamed_keys = [c for d in TRAIN_DBS for t in d.tables for c in t.fks if c.name != d.table(c.ref).key.name]
    assert len(renamed_keys) >= 5, "some foreign keys should not be named like the key they point to"
    said_otherwise = [c for d in TRAIN_DBS for t in d.tables for c in t.columns[2:] if c.words]
    assert len(said_otherwise) >= 20, "questions should call some columns by other words ('dept' is 'department')"


def test_held_out_databases_are_structurally_new():
    train_signatures = {(len(d.tables), frozenset(d.column_names())) for d in TRAIN_DBS}
    train_shapes = {d.shape() for d in TRAIN_DBS}
    train_columns = set().union(*(d.column_names() for d in TRAIN_DBS))
    train_domains = {t.name for d in TRAIN_DBS for t in d.tables}
    for db in HELD_DBS:
        assert (len(db.tables), frozenset(db.column_names())) not in train_signatures, db.db_id
        assert db.shape() not in train_shapes, f"{db.db_id} has the layout of a training database"
        unseen = db.column_names() - train_columns
        assert len(unseen) >= 0.8 * len(db.column_names()), f"{db.db_id}: most column names should be new"
        assert not {t.name for t in db.tables} & train_domains, f"{db.db_id} reuses a training table"


def test_held_out_databases_appear_only_in_their_test_group(sql_splits):
    held = {d.db_id for d in HELD_DBS}
    assert not held & {e["db_id"] for e in sql_splits["train"] + sql_splits["validation"]}
    test = sql_splits["test"]
    assert {e["db_id"] for e in test if e["group"] == "heldout_database"} == held
    assert not held & {e["db_id"] for e in test if e["group"] != "heldout_database"}
    assert {e["db_id"] for e in sql_splits["train"]} == {d.db_id for d in TRAIN_DBS}


def test_templates_cover_the_skills_and_held_out_ones_only_in_test(sql_splits):
    held = {t.name for t in data.TEMPLATES if t.heldout}
    assert len(held) >= 4 and not held & {e["template"] for e in sql_splits["train"] + sql_splits["validation"]}
    assert {e["template"] for e in sql_splits["test"] if e["group"] == "heldout_template"} == held
    assert {e["template"] for e in sql_splits["test"] if e["group"] != "heldout_template"} <= {
        t.name for t in data.TEMPLATES if not t.heldout}
    kinds = {t.kind for t in data.TEMPLATES}
    assert {"filter", "aggregate", "group by", "having", "order/limit", "distinct", "range", "null", "join"} <= kinds
    sql = " ".join(t.sql for t in data.TEMPLATES if not t.heldout)
    for piece in ("JOIN", "HAVING", "ORDER BY", "LIMIT", "DISTINCT", "BETWEEN", "IS NULL"):
        assert piece in sql, piece
    assert any("GROUP BY" in t.sql and "COUNT(*)" in t.sql for t in data.TEMPLATES if not t.heldout)
    for t in data.TEMPLATES:
        assert len(t.questions) >= (2 if t.heldout else 3), f"{t.name} needs more phrasings"
    used = Counter(e["template"] for e in sql_splits["train"])
    assert set(used) == {t.name for t in data.TEMPLATES if not t.heldout} and min(used.values()) >= 100
    dated = [e for e in sql_splits["train"] if re.search(r"'\d{4}-\d\d-\d\d'", e["answer"])]
    assert len(dated) >= 100, "DATE columns should be compared and ranged in training"


def test_no_test_question_appears_in_train_or_validation(sql_splits):
    seen = {(e["db_id"], e["question"]) for e in sql_splits["train"] + sql_splits["validation"]}
    test = [(e["db_id"], e["question"]) for e in sql_splits["test"]]
    assert not seen & set(test) and len(set(test)) == len(test)


def test_every_gold_query_is_informative(sql_splits):
    conns = {d.db_id: data.connect(d.db_id) for d in data.DATABASES}
    for example in sql_splits["test"] + sql_splits["validation"] + sql_splits["train"][::10]:
        assert data._gold_is_informative(conns[example["db_id"]], example["answer"]), example


def test_schema_field_is_the_database_schema(sql_splits):
    for example in sql_splits["test"][::7]:
        assert example["schema"] == data.schema_text(example["db_id"])
        for table in data.DATABASE_BY_ID[example["db_id"]].tables:
            assert f"\n{table.name}(" in "\n" + example["schema"]


def test_values_need_no_escaping():
    for db in data.DATABASES:
        for rows in db.rows.values():
            assert not [v for row in rows for v in row if isinstance(v, str) and "'" in v], db.db_id


def test_company_database_keeps_what_the_scorer_tests_use():
    conn = data.connect("company")
    types = {row[1]: row[2] for row in conn.execute("PRAGMA table_info(employees)")}
    assert types["name"] == "TEXT" and types["salary"] in ("INT", "INTEGER", "REAL")
    above = conn.execute("SELECT COUNT(*) FROM employees WHERE salary > 5000").fetchone()[0]
    assert 3 <= above <= conn.execute("SELECT COUNT(*) FROM employees").fetchone()[0] - 3


def test_database_contents_are_deterministic():
    db = data.DATABASES[0]
    fresh = data.Database(db.db_id, db.tables, db.heldout)
    assert fresh.sql_script() == db.sql_script()


def test_every_example_fits_the_training_length(sql_splits):
    from course_utils.models import load_tokenizer

    tokenizer = load_tokenizer()
    examples = [e for rows in sql_splits.values() for e in rows] + data.load_transfer_examples()
    # training_features counts prompt + answer + EOS; the same count, tokenized in two batches (fast)
    prompts = tokenizer([data.prompt_text(tokenizer, e) for e in examples], add_special_tokens=False)["input_ids"]
    answers = tokenizer([e["answer"] for e in examples], add_special_tokens=False)["input_ids"]
    lengths = [len(p) + len(a) + 1 for p, a in zip(prompts, answers)]
    longest = max(range(len(examples)), key=lengths.__getitem__)
    assert len(data.training_features(tokenizer, examples[longest])["input_ids"]) == lengths[longest] <= 256


def test_json_answers_have_all_fields():
    for example in data.load_examples("json", "test"):
        assert set(json.loads(example["answer"])) == set(data.JSON_FIELDS)
    groups = Counter(e["group"] for e in data.load_examples("json", "test"))
    assert groups["heldout_template"] > 0 and groups["seen"] > 0


# --- data files with errors: the message names the file, the line and the field ----------------------

def _sql_row(**changes) -> str:
    row = {"task": "sql", "question": "q?", "answer": "SELECT 1;", "db_id": "company", "schema": "t(a)"} | changes
    return json.dumps({k: v for k, v in row.items() if v is not None})


def _write(tmp_path, text: str | bytes, task: str = "sql"):
    path = data.data_path(task, "train", tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        data.read_jsonl(path)


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_file_says_it_is_empty(tmp_path, text):
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=re.escape(str(path)) + " is empty"):
        data.load_examples("sql", "train", data_dir=tmp_path)


@pytest.mark.parametrize("line", ['[1, 2]', '"text"', "42", "null"])
def test_a_line_that_is_not_an_object_is_named(tmp_path, line):
    _write(tmp_path, _sql_row() + "\n" + line + "\n")
    with pytest.raises(ValueError, match=r"train\.jsonl, line 2: a JSON \w+, not a JSON object"):
        data.load_examples("sql", "train", data_dir=tmp_path)


@pytest.mark.parametrize("field", ["task", "question", "answer", "db_id", "schema"])
def test_a_missing_sql_field_is_named_with_its_line(tmp_path, field):
    _write(tmp_path, "\n".join([_sql_row(), _sql_row(), _sql_row(**{field: None})]) + "\n")
    with pytest.raises(ValueError, match=rf"line 3: missing field '{field}'"):
        data.load_examples("sql", "train", data_dir=tmp_path)


@pytest.mark.parametrize("field", ["task", "question", "answer"])
def test_a_missing_json_field_is_named_with_its_line(tmp_path, field):
    row = {"task": "json", "question": "Book a table.", "answer": "{}"}
    del row[field]
    _write(tmp_path, json.dumps(row) + "\n", task="json")
    with pytest.raises(ValueError, match=rf"line 1: missing field '{field}'"):
        data.load_examples("json", "train", data_dir=tmp_path)


def test_a_field_of_the_wrong_type_is_named(tmp_path):
    _write(tmp_path, _sql_row(question=["not", "text"]) + "\n")
    with pytest.raises(ValueError, match="line 1: field 'question' is a list"):
        data.load_examples("sql", "train", data_dir=tmp_path)


def test_a_row_of_another_task_is_named(tmp_path):
    _write(tmp_path, _sql_row() + "\n" + _sql_row(task="json") + "\n")
    with pytest.raises(ValueError, match="line 2: field 'task' is 'json', expected 'sql'"):
        data.load_examples("sql", "train", data_dir=tmp_path)


def test_a_file_that_is_not_utf8_names_the_line(tmp_path):
    latin1 = json.dumps({"task": "sql", "question": "caf\u00e9?"}, ensure_ascii=False).encode("latin-1")
    path = _write(tmp_path, (_sql_row() + "\n").encode() + latin1 + b"\n")
    with pytest.raises(ValueError, match=re.escape(str(path)) + r", line 2: not UTF-8 \(byte 0xe9"):
        data.load_examples("sql", "train", data_dir=tmp_path)


def test_unknown_task_or_split_is_a_clear_error():
    with pytest.raises(ValueError, match="choose one of"):
        data.load_examples("sqll", "train")
    with pytest.raises(ValueError, match="choose one of"):
        data.load_examples("sql", "dev")
    with pytest.raises(ValueError, match="Unknown database"):
        data.database_script("../../etc/passwd")


def test_datasets_loader_has_three_splits():
    dataset = data.load_task_dataset("json")
    assert set(dataset) == set(data.SPLITS)
    assert dataset["test"].num_rows == len(data.load_examples("json", "test"))


def test_bad_column_spec_is_a_clear_error():
    with pytest.raises(ValueError, match="Bad column spec"):
        data.Column.parse("salary money 1..2")


# --- a learner's own file (lesson 04's recipe): question/answer rows, checked before any model loads ---

def _chat_file(tmp_path, *rows) -> "Path":
    path = tmp_path / "mine.jsonl"
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def test_chat_rows_read_with_and_without_system(tmp_path):
    path = _chat_file(tmp_path, {"question": "q1", "answer": "a1"}, {"question": "q2", "answer": "a2", "system": "s"},
                      {"question": "q3", "answer": "a3", "system": None, "id": 7})
    assert [(r["question"], r.get("system")) for r in data.read_chat_rows(path)] == [("q1", None), ("q2", "s"), ("q3", None)]


@pytest.mark.parametrize("bad, message", [
    ({"question": "q"}, "line 2: missing field 'answer'"),
    ({"answer": "a"}, "line 2: missing field 'question'"),
    ({"question": "q", "answer": "  "}, "line 2: field 'answer' is empty"),
    ({"question": "", "answer": "a"}, "line 2: field 'question' is empty"),
    ({"question": "q", "answer": 42}, "line 2: field 'answer' is a int, not a string"),
    ({"question": "q", "answer": "a", "system": ["s"]}, "line 2: field 'system' is a list, not a string"),
    ('{"question": "q", "answer": ', "line 2: not valid JSON"),
])
def test_a_bad_chat_row_names_file_line_and_the_format(tmp_path, bad, message):
    path = _chat_file(tmp_path, {"question": "ok", "answer": "ok"}, bad)
    with pytest.raises(ValueError, match=re.escape(f"{path}, {message}")) as error:
        data.read_chat_rows(path)
    assert "docs/your_data.md" in str(error.value) and "regenerate" not in str(error.value)


def test_a_missing_chat_file_names_the_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*docs/your_data.md"):
        data.read_chat_rows(tmp_path / "nowhere.jsonl")


@pytest.mark.parametrize("text, task, named", [
    (_sql_row(db_id="nowhere") + "\n", "sql", "line 1: field 'db_id' is 'nowhere', not one of the course's databases"),
    (json.dumps({"task": "json", "question": "q", "answer": "not json"}) + "\n", "json", "line 1: field 'answer' is not a JSON object"),
    (json.dumps({"task": "json", "question": "q", "answer": "{}"}) + "\n", "json", "line 1: field 'answer' is not a JSON object"),
    ("[" * 100_000 + "]" * 100_000 + "\n", "sql", "line 1: JSON nested too deeply"),
    (_sql_row() + "\n" + _sql_row(answer="SELECT nonexistent_column FROM offices") + "\n", "sql",
     "line 2: field 'answer' \\(the gold query\\) does not run on database"),
    (_sql_row(answer="SELEC 1") + "\n", "sql", "line 1: field 'answer' \\(the gold query\\) does not run"),
    (_sql_row(answer="DELETE FROM offices") + "\n", "sql", "line 1: field 'answer' \\(the gold query\\) does not run"),
], ids=["unknown db_id", "answer not JSON", "empty JSON answer", "deep nesting", "gold names no column",
        "gold not SQL", "gold writes"])
def test_rows_that_would_break_scoring_are_refused_on_load(tmp_path, text, task, named):
    """Each used to load and then fail in evaluation with no file or line (KeyError, JSONDecodeError,
    ZeroDivisionError, RecursionError)."""
    path = _write(tmp_path, text, task=task)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ", " + named):
        data.load_examples(task, "train", data_dir=tmp_path)


def test_limit_is_a_whole_number_of_rows():
    assert len(data.load_examples("sql", "test", limit=3)) == 3
    assert len(data.load_examples("sql", "test", limit=np.int64(2))) == 2
    assert data.load_examples("sql", "test", limit=0) == []
    for bad in (-1, "5", 2.5, True):  # -1 used to drop the last row silently; "5" raised a TypeError
        with pytest.raises(ValueError, match="limit must be"):
            data.load_examples("sql", "test", limit=bad)
