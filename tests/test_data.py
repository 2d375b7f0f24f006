"""The generated data is deterministic, sized as promised, and split honestly."""

import json
from collections import Counter

import pytest

from course_utils import data
from course_utils.evaluate import score_sql


@pytest.fixture(scope="module")
def sql_splits():
    return {s: data.load_examples("sql", s) for s in data.SPLITS}


def test_committed_files_equal_a_fresh_generation(tmp_path):
    data.regenerate(tmp_path)
    for task in data.TASKS:
        for split in data.SPLITS:
            fresh = data.data_path(task, split, tmp_path).read_text()
            assert fresh == data.data_path(task, split).read_text(), f"{task}/{split} differs: regenerate data/"


def test_sizes(sql_splits):
    assert len(sql_splits["train"]) >= 2000
    assert len(sql_splits["validation"]) >= 200 and len(sql_splits["test"]) >= 200
    assert len(data.load_examples("json", "train")) >= 2000


def test_at_least_six_databases_and_two_held_out(sql_splits):
    assert len(data.DATABASES) >= 6
    held = {d.db_id for d in data.DATABASES if d.heldout}
    assert len(held) >= 2
    train_dbs = {e["db_id"] for e in sql_splits["train"] + sql_splits["validation"]}
    assert not held & train_dbs
    assert held <= {e["db_id"] for e in sql_splits["test"]}


def test_held_out_templates_only_in_test(sql_splits):
    held = {t.name for t in data.TEMPLATES if t.heldout}
    assert held and not held & {e["template"] for e in sql_splits["train"]}
    assert held <= {e["template"] for e in sql_splits["test"]}
    kinds = {t.kind for t in data.TEMPLATES}
    assert {"filter", "aggregate", "group by", "order/limit", "join"} <= kinds


def test_no_test_question_appears_in_train(sql_splits):
    train = {(e["db_id"], e["question"]) for e in sql_splits["train"]}
    assert not train & {(e["db_id"], e["question"]) for e in sql_splits["test"]}


def test_every_gold_query_runs_and_is_non_empty(sql_splits):
    for example in sql_splits["test"] + sql_splits["validation"][:50]:
        assert score_sql(example["answer"], example["answer"], example["db_id"])[0], example


def test_json_answers_have_all_fields():
    for example in data.load_examples("json", "test"):
        assert set(json.loads(example["answer"])) == set(data.JSON_FIELDS)
    groups = Counter(e["group"] for e in data.load_examples("json", "test"))
    assert groups["heldout_template"] > 0 and groups["seen"] > 0


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ValueError, match="line 2"):
        data.read_jsonl(path)


def test_unknown_task_or_split_is_a_clear_error():
    with pytest.raises(ValueError, match="choose one of"):
        data.load_examples("sqll", "train")
    with pytest.raises(ValueError, match="choose one of"):
        data.load_examples("sql", "dev")


def test_datasets_loader_has_three_splits():
    dataset = data.load_task_dataset("json")
    assert set(dataset) == set(data.SPLITS)
    assert dataset["test"].num_rows == len(data.load_examples("json", "test"))
