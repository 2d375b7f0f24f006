"""Regenerating data/ from the generators (`python -m course_utils.data`)."""

from __future__ import annotations

from pathlib import Path

from .splits import DATA_DIR, SEED
from .files import data_path, GENERATORS, refresh_transfer_schemas, transfer_path, write_jsonl


def regenerate(data_dir: Path | None = None, seed: int = SEED) -> dict[str, dict[str, int]]:
    """Write every task and split to data/ and return their sizes.

    The hand-written transfer questions keep their text; only their schema
    field is refreshed (when a copy of them is there), so it always matches
    the prompt format.
    """
    sizes: dict[str, dict[str, int]] = {}
    for task, generator in GENERATORS.items():
        splits = generator(seed)
        sizes[task] = {}
        for split, rows in splits.items():
            write_jsonl(rows, data_path(task, split, data_dir))
            sizes[task][split] = len(rows)
    if transfer_path(data_dir).exists():
        sizes["transfer"] = {"test": refresh_transfer_schemas(data_dir)}
    return sizes


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Regenerate the course data in data/.")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=DATA_DIR)
    args = parser.parse_args(argv)
    for task, sizes in regenerate(args.out, args.seed).items():
        print(task, sizes)
