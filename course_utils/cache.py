"""Where the course keeps what it computes once and reuses.

The converted offline model and trained adapters live here, keyed by the
settings that produced them, so a second notebook (or a re-run) reuses a
result instead of training again. Nothing in the cache is committed: it is
always produced by the course's own code.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

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


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entries, to the disk: after it, a power cut or a killed VM cannot undo it.

    A folder's flush is what makes a rename durable on Linux and macOS; Windows
    cannot open a folder for it (and NTFS journals renames), and some network
    and FUSE mounts refuse it: there it is skipped. A file is flushed through a
    handle opened for writing, which every platform accepts.
    """
    path = Path(path)
    if path.is_dir():
        if os.name == "nt":
            return
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(descriptor)
        except OSError as error:
            if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EACCES, errno.EBADF, errno.EPERM):
                raise
        finally:
            os.close(descriptor)
        return
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def fsync_tree(folder: Path) -> None:
    """Flush every file under `folder`, then the folder itself."""
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            fsync_path(path)
    fsync_path(folder)


def replace_durably(source: Path, target: Path) -> None:
    """Rename `source` (already flushed) onto `target` and flush the folder, so the rename survives a crash.

    A rename within one folder is atomic: a reader sees the old file or the new
    one, never half of one. Flushing the file first matters: without it, a
    crash soon after can leave the new name pointing at an empty file.
    """
    os.replace(source, target)
    fsync_path(target.parent)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file so that a reader never sees half of it: write aside, flush, rename, flush the folder."""
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    with open(partial, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    replace_durably(partial, path)


def write_text_atomic(path: Path, text: str) -> None:
    """`write_bytes_atomic` for text (UTF-8)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def computed_once(path: Path, compute: Callable[[], Any]) -> Any:
    """`compute()`'s JSON-able result, stored at `path` the first time and read back after.

    Under a lock: a lesson and its solution running side by side (CI runs two
    notebooks at once) compute it once; the second waits and reads the file.
    Written atomically, so a kernel killed mid-write leaves no half file that
    a later call would take for the result.
    """
    with exclusive(path):
        if not path.exists():
            write_text_atomic(path, json.dumps(compute()))
    return json.loads(path.read_text())


def file_damage(path: Path) -> str | None:
    """Why a weights or state file the course wrote cannot be complete (None: no damage found).

    Cheap checks that read no tensor: a safetensors file must be as long as
    its header says (a save cut off by a crash is shorter); a `torch.save`
    file (.pt, .pth, .bin) is a zip archive whose directory sits at its end
    and whose entries carry checksums, all of which must match.
    """
    import struct
    import zipfile

    path = Path(path)
    if not path.is_file():
        return "is missing"
    size = path.stat().st_size
    if path.suffix == ".safetensors":
        try:
            with open(path, "rb") as handle:
                (header_bytes,) = struct.unpack("<Q", handle.read(8))
                if header_bytes > size:
                    return "is cut off (its header is longer than the file)"
                header = json.loads(handle.read(header_bytes))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        except (struct.error, ValueError, KeyError, TypeError, IndexError, AttributeError):
            return "has a damaged header"
        if size != 8 + header_bytes + end:
            return f"is {size:,} bytes where its header says {8 + header_bytes + end:,} (cut off by a crash?)"
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return "is cut off or not a torch.save file"
    return f"fails its checksum ({bad})" if bad is not None else None
