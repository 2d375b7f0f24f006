"""The course's running-example data: text-to-SQL and sentence-to-JSON.

Both tasks are generated deterministically from a seed, so the committed
JSONL files in data/ can be rebuilt bit for bit (`python -m course_utils.data`),
and both are scored exactly (see `course_utils.evaluate`).

Task 1, text-to-SQL, is built to teach a skill that transfers: reading a schema.
Its 44 small SQLite databases come in many shapes (one to four tables, a link
table for many-to-many, chains and stars of foreign keys), with key and label
columns of many names (id, emp_id, sku, code; name, title, label, full_name),
INTEGER, REAL, TEXT and DATE columns, NULLs, and columns that questions call
by another word (`dept` is "department"). If every database had one shape, an
adapter would learn that shape (`SELECT name FROM ...`) instead of reading the
schema, and a "held-out" database that only renames nouns would not test it.
So the eight held-out databases are structurally new: their domains, column
names and table layouts appear nowhere in training. The test split also holds
out five templates that compose pieces seen in training in new ways.

A hand-written database with its own questions (data/transfer/) is the
course's real-world check: no generator made it, so it shows whether what the
adapter learned carries over to a schema someone actually wrote.

Task 2, sentence-to-JSON: extract the fields of a booking request into a JSON
object, scored field by field; two phrasings are held out for the test split.

The package, one module per concern: `splits` (paths, seed, sizes, groups),
`tables` (the spec language of a database), `databases` (the 44 databases),
`schemas` (connecting, the schema the model sees), `sql_task` (templates and
the SQL generator), `json_task`, `files` (reading and checking JSONL),
`prompts` (chat messages, training features) and `generate` (rewriting data/).
Every name is importable from `course_utils.data`.
"""

from __future__ import annotations

from .splits import DATA_DIR, GROUPS, JSON_SPLIT_SIZES, SEED, SPLITS, SPLIT_SIZES, TASKS
from .tables import Column, Database, SQL_TYPES, Table, plural, sql_literal, table
from .databases import DATABASES, DATABASE_BY_ID
from .schemas import (
    SCHEMA_STYLE, SCHEMA_STYLES, TRANSFER_DIR, connect, database_script, describe_schema, schema_text,
    transfer_database_ids,
)
from .sql_task import TEMPLATES, TEMPLATE_BY_NAME, Template, generate_sql_examples
from .json_task import JSON_FIELDS, JSON_INSTRUCTION, JSON_PHRASINGS, generate_json_examples
from .files import (
    CHAT_FIELDS, CHAT_FORMAT, GENERATORS, REQUIRED_FIELDS, data_path, evenly_spaced, load_examples, load_task_dataset,
    load_transfer_examples, read_chat_rows, read_jsonl, refresh_transfer_schemas, transfer_path, write_jsonl,
)
from .prompts import SQL_INSTRUCTION, build_messages, collate, prompt_text, training_features, trim_to_answers
from .generate import main, regenerate
from .sql_task import _gold_is_informative  # (tests check gold answers with it)

__all__ = [
    'CHAT_FIELDS', 'CHAT_FORMAT', 'Column', 'DATABASES', 'DATABASE_BY_ID', 'DATA_DIR', 'Database', 'GENERATORS', 'GROUPS',
    'JSON_FIELDS', 'JSON_INSTRUCTION', 'JSON_PHRASINGS', 'JSON_SPLIT_SIZES', 'REQUIRED_FIELDS',
    'SCHEMA_STYLE', 'SCHEMA_STYLES', 'SEED', 'SPLITS', 'SPLIT_SIZES', 'SQL_INSTRUCTION', 'SQL_TYPES',
    'TASKS', 'TEMPLATES', 'TEMPLATE_BY_NAME', 'TRANSFER_DIR', 'Table', 'Template', 'build_messages', 'collate',
    'connect', 'data_path', 'database_script', 'describe_schema', 'evenly_spaced',
    'generate_json_examples', 'generate_sql_examples', 'load_examples', 'load_task_dataset',
    'load_transfer_examples', 'main', 'plural', 'prompt_text', 'read_chat_rows', 'read_jsonl', 'refresh_transfer_schemas',
    'regenerate', 'schema_text', 'sql_literal', 'table', 'training_features', 'transfer_database_ids', 'trim_to_answers',
    'transfer_path', 'write_jsonl',
]
