"""Where the course keeps what it computes once and reuses.

The converted offline model and trained adapters live here, keyed by the
settings that produced them, so a second notebook (or a re-run) reuses a
result instead of training again. Nothing in the cache is committed: it is
always produced by the course's own code.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one notebook at a time is then the rule
    fcntl = None

CACHE_ENV = "COURSE_CACHE_DIR"


def cache_dir(*parts: str) -> Path:
    """The course cache (`$COURSE_CACHE_DIR`, default `~/.cache/lora-course`)."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lora-course")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def settings_key(settings: dict[str, Any]) -> str:
    """A short, stable hash of a settings dict (order of keys does not matter)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold a lock next to `path` while computing it, so two notebooks never train the same adapter at once.

    The second one waits, then finds the finished result in the cache (CI runs
    two notebooks side by side). An advisory lock: it guards only code that asks for it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a cache file so that a reader never sees half of it (write aside, then rename)."""
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    partial.write_text(text)
    partial.replace(path)

