"""Failpoints: named places where a test may kill the flow-run process. Inert unless armed.

A test arms failpoints by writing their names, one per line, to the file named by
``DELIVERY_FAILPOINTS_FILE`` (the workers inherit it). :func:`hit` is called at each named place;
when the name is armed it is disarmed first (written back before anything dies, so the resumed
run passes), then the process is killed with SIGKILL, as a host crash would. A name is a stage of
:mod:`delivery.stages` (hit after the stage's outside effect, before its result is persisted),
optionally with a suffix: ``:worker`` kills the parent worker too, so that only heartbeats can
tell the run died; ``:transient`` raises a :class:`~delivery.errors.TransientError` instead of
killing anything (arm it once more than the stage's retries to exhaust them and raise an incident).
"""

from __future__ import annotations

import fcntl
import os
import signal
from pathlib import Path

SETTING = "DELIVERY_FAILPOINTS_FILE"
WITH_WORKER = ":worker"
TRANSIENT = ":transient"
SUFFIXES = (WITH_WORKER, TRANSIENT)


def _file() -> Path | None:
    value = os.environ.get(SETTING)
    return Path(value) if value else None


def arm(path: Path, *names: str) -> None:
    """Arm failpoints in the file ``path`` (appends; each fires once)."""
    from delivery.stages import stage_named

    for name in names:
        stage_named(_stage(name))
    with path.open("a") as handle:
        handle.writelines(f"{name}\n" for name in names)


def armed(path: Path) -> list[str]:
    """The failpoints still armed in ``path``."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _stage(entry: str) -> str:
    for suffix in SUFFIXES:
        entry = entry.removesuffix(suffix)
    return entry


def _take(path: Path, name: str) -> str | None:
    """Disarm the first armed entry for ``name``; return it (with its suffix) or None."""
    with path.open("r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        lines = [line.strip() for line in handle.read().splitlines() if line.strip()]
        for index, line in enumerate(lines):
            if _stage(line) == name:
                del lines[index]
                handle.seek(0)
                handle.truncate()
                handle.write("".join(f"{entry}\n" for entry in lines))
                handle.flush()
                os.fsync(handle.fileno())
                return line
    return None


def hit(name: str) -> None:
    """Die here if the failpoint ``name`` is armed; otherwise do nothing."""
    path = _file()
    if path is None or not path.exists():
        return
    taken = _take(path, name)
    if taken is None:
        return
    if taken.endswith(TRANSIENT):
        from delivery.errors import TransientError

        raise TransientError(f"failpoint {taken}: an injected transient fault")
    if taken.endswith(WITH_WORKER):
        parent = os.getppid()
        if not _is_worker(parent):
            raise RuntimeError(f"failpoint {taken}: the parent process {parent} is not a Prefect worker; "
                               "refusing to kill it (arm the name without ':worker')")
        os.kill(parent, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _is_worker(pid: int) -> bool:
    """Whether the process ``pid`` is a Prefect worker (``prefect worker start``), by its command line."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"prefect" in b" ".join(words) and b"worker" in words and b"start" in words


__all__ = ["SETTING", "TRANSIENT", "WITH_WORKER", "arm", "armed", "hit"]
