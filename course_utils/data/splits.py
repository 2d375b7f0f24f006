"""Where the data lives, the seed, the tasks, their splits and sizes, the test groups."""

from __future__ import annotations

from pathlib import Path


DATA_DIR = Path(__file__).resolve().parents[2] / "data"
SEED = 1234
TASKS = ("sql", "json")
SPLITS = ("train", "validation", "test")
# The SQL test split has three groups of 160: enough that a 15-point difference between groups is
# more than twice its noise (binomial standard error at most 4 points per group; see data/README.md).
SPLIT_SIZES = {"train": 2400, "validation": 240, "test": 480}
JSON_SPLIT_SIZES = {"train": 2400, "validation": 240, "test": 240}
GROUPS = ("seen", "heldout_template", "heldout_database")
