"""The hand-written transfer check (data/transfer/): a real schema no generator made, scored unchanged."""

from collections import Counter

import pytest

from course_utils import data


@pytest.fixture(scope="module")
def transfer():
    return data.load_transfer_examples()


def test_transfer_set_is_a_small_hand_written_sql_test(transfer):
    assert 20 <= len(transfer) <= 40
    assert {e["group"] for e in transfer} == {"transfer"} and {e["task"] for e in transfer} == {"sql"}
    keys = {"task", "split", "db_id", "schema", "question", "answer", "template", "kind", "group", "id"}
    assert all(keys <= set(e) for e in transfer) and len({e["id"] for e in transfer}) == len(transfer)
    assert not {e["db_id"] for e in transfer} & set(data.DATABASE_BY_ID), "a transfer database is not generated"
    assert len(Counter(e["kind"] for e in transfer)) >= 6, "the check should cover most skills of the task"


def test_transfer_database_resolves_like_a_generated_one(transfer):
    for db_id in {e["db_id"] for e in transfer}:
        assert db_id in data.transfer_database_ids()
        assert "CREATE TABLE" in data.database_script(db_id)
        tables = {row[0] for row in data.connect(db_id).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert len(tables) >= 3


def test_every_transfer_gold_query_runs_and_is_non_empty(transfer):
    for example in transfer:
        rows = data.connect(example["db_id"]).execute(example["answer"]).fetchall()
        assert rows and rows[0][-1] not in (None, 0), example["question"]


def test_transfer_schema_is_shown_like_the_generated_ones(transfer):
    for example in transfer:
        assert example["schema"] == data.schema_text(example["db_id"]), "run `python -m course_utils.data`"


def test_the_course_scorer_scores_the_transfer_set_unchanged(transfer):
    from course_utils.evaluate import execution_accuracy

    examples = transfer[:6]
    report = execution_accuracy([e["answer"] for e in examples[:4]] + ["SELECT 1", "not sql"], examples)
    assert report.accuracy == pytest.approx(4 / 6)
    assert set(report.by_group()) == {"transfer"}


def test_transfer_examples_fit_the_prompt_format(transfer):
    messages = data.build_messages(transfer[0], with_answer=True)
    assert messages[0]["content"].endswith(transfer[0]["schema"]) and messages[2]["content"] == transfer[0]["answer"]
