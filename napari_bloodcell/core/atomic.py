"""Atomic, non-destructive writes.

Every file the plugin writes goes through here: data lands in a temporary file in the target folder and is moved
into place in one step, so a crash never leaves a half-written file. Nothing a user made is lost: a target that
already exists is either refused (``exist="refuse"``) or kept as a timestamped backup (``exist="backup"``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from .errors import BloodcellInputError

ExistPolicy = Literal["refuse", "backup", "replace"]
"""``replace`` is only for files the running job itself made earlier (a training run's best checkpoint)."""


def backup_path(path: Path) -> Path:
    """A free ``name.YYYYmmdd-HHMMSS[.N].bak`` path beside ``path``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = path.with_name(f"{path.name}.{stamp}.bak")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.{stamp}.{n}.bak")
        n += 1
    return candidate


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: str | Path, path: str | Path) -> Path:
    """Move the finished temporary file ``tmp`` (in ``path``'s folder) to ``path``, never overwriting: its data
    is synced to disk, then it is hard-linked into place, which fails if ``path`` exists, so there is no race
    between a check and the write (file systems without hard links: checked, then renamed). The caller removes
    ``tmp`` (a link leaves it behind)."""
    tmp, path = Path(tmp), Path(path)
    _fsync(tmp)
    os.chmod(tmp, 0o644)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise BloodcellInputError(
            "already exists; refusing to overwrite it (choose another name or move the file away)", path
        ) from None
    except OSError:  # file systems without hard links
        if path.exists():
            raise BloodcellInputError("already exists; refusing to overwrite it", path) from None
        os.replace(tmp, path)
    return path


def atomic_write_bytes(path: str | Path, data: bytes, exist: ExistPolicy = "refuse") -> Path:
    """Write ``data`` to ``path`` atomically; return the backup made of an earlier file, or ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if exist == "refuse":
            publish(tmp, path)
        else:
            _fsync(tmp)
            os.chmod(tmp, 0o644)
            if exist == "backup" and path.exists():
                shutil.copy2(path, backup_path(path))
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def atomic_write_text(path: str | Path, text: str, exist: ExistPolicy = "refuse") -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), exist=exist)


@contextlib.contextmanager
def staged_directory(out: str | Path) -> Iterator[Path]:
    """Build a whole output folder in a hidden sibling and move it into place only when everything succeeded.

    ``out`` must not exist or must be an empty folder; on any error the staging folder is removed, so the user
    never sees a half-written result.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BloodcellInputError("output already exists and is not an empty folder; refusing to overwrite it", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield staging
        if out.exists():
            out.rmdir()  # empty, checked above
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (its ``.lock`` file) while its manifest changes; a second holder, in
    this process or another, is refused at once with a message naming ``what``. The lock is ``filelock``'s: an OS
    lock (``flock`` on POSIX, ``msvcrt.locking`` on Windows), which the OS drops if the process dies, so a killed
    export or training never leaves the folder locked."""
    from filelock import FileLock, Timeout

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise BloodcellInputError(f"{what} is being changed by another process; try again when it finishes",
                                  folder) from None
    try:
        yield
    finally:
        lock.release()


STALE_PATTERN = re.compile(r"^\..+\.(partial|tmp|part)$")
"""What :func:`staged_directory`, :func:`atomic_write_bytes` and the pyramid converter leave behind when their
process is killed (``.part``: the converter's suffix before it used ``.tmp``)."""


def remove_stale_partials(folder: str | Path, subfolders: tuple[str, ...] = ("",), before: float | None = None
                          ) -> list[Path]:
    """Remove staging folders and temporary files that killed writers left in ``folder`` (and its
    ``subfolders``); returns what was removed.

    Call it only while holding :func:`folder_lock` on ``folder``: every writer of the folder holds that lock, so
    nothing matching there belongs to a live process. As a second guard only entries last changed before
    ``before`` (default: now) are touched, so a writer that started after the caller took the lock is never hit.
    """
    cutoff = time.time() if before is None else before
    removed = []
    for sub in subfolders:
        base = Path(folder) / sub
        try:
            entries = list(base.iterdir())
        except OSError:
            continue
        for entry in entries:
            if not STALE_PATTERN.match(entry.name):
                continue
            try:
                if entry.lstat().st_mtime >= cutoff:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                removed.append(entry)
            except OSError:
                continue  # left for the next export; never a reason to fail this one
    return removed
