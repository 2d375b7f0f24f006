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
from pathlib import Path
from typing import Any

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
