"""Claiming a run before computing it, so processes that share an output folder share the grid.

A claim is ``<run_id>.lock`` beside the result, created atomically (``O_EXCL``) with the
owner's host, pid and start time, and removed when the run ends. While the run goes on,
its process refreshes the lock's modification time every :data:`HEARTBEAT_SECONDS`
(:func:`heartbeat`). A claim is stale, and is taken over (renamed away atomically first, so
two processes cannot both take it), when its heartbeat is older than
:data:`STALE_AFTER_SECONDS` wherever it was made (a compute node that died mid-run), or at
once when its owner is a dead process of this host.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HEARTBEAT_SECONDS = 60.0
"""How often a running run refreshes its claim."""

STALE_AFTER_SECONDS = 15 * 60.0
"""A claim not refreshed for this long is stale on any host (fifteen missed heartbeats: room
for clock skew between the hosts of a shared file system and for a loaded machine)."""


@dataclass(frozen=True)
class ClaimInfo:
    """Who holds a claim and how recently it was refreshed."""

    host: str | None
    pid: int | None
    started: float | None
    heartbeat_age: float

    def describe(self) -> str:
        """``host pid N, heartbeat S s ago``, for messages (``an unreadable claim`` if the file names no owner)."""
        owner = f"{self.host} pid {self.pid}" if self.host else "an unreadable claim"
        return f"{owner}, heartbeat {self.heartbeat_age:.0f} s ago"


def read_claim(lock: Path) -> ClaimInfo | None:
    """The claim's owner and heartbeat age; None if there is no claim."""
    try:
        age = max(0.0, time.time() - lock.stat().st_mtime)
        fields = lock.read_text().split()
    except FileNotFoundError:
        return None
    except OSError:
        fields = []
    try:
        host, pid = fields[0], int(fields[1])
    except (IndexError, ValueError):
        return ClaimInfo(None, None, None, age)  # being written, or unreadable: only its age says anything
    started = float(fields[2]) if len(fields) > 2 else None  # claims before heartbeats had two fields
    return ClaimInfo(host, pid, started, age)


def _stale(info: ClaimInfo) -> bool:
    """No heartbeat for :data:`STALE_AFTER_SECONDS`, or a dead owner on this host."""
    if info.heartbeat_age > STALE_AFTER_SECONDS:
        return True
    if info.host != socket.gethostname() or info.pid is None:
        return False
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _is_stale(lock: Path) -> bool:
    info = read_claim(lock)
    return info is not None and _stale(info)


def held_by_another_local_process(lock: Path) -> bool:
    """Whether a live process of this host other than this one holds ``lock`` (its run will end here)."""
    info = read_claim(lock)
    return info is not None and info.host == socket.gethostname() and info.pid != os.getpid() and not _stale(info)


def is_claimed(lock: Path) -> bool:
    """Whether a live claim (this host's live process, or another host's fresh heartbeat) holds ``lock``."""
    info = read_claim(lock) if lock.is_file() else None
    return info is not None and not _stale(info)


def try_claim(lock: Path) -> bool:
    """Claim ``lock`` for this process; False if a live claim holds it."""
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            if not _is_stale(lock):
                return False
            try:
                os.rename(lock, lock.with_name(f"{lock.name}.stale.{os.getpid()}"))
            except FileNotFoundError:
                pass  # another process took the stale claim over first; try to create ours
            else:
                lock.with_name(f"{lock.name}.stale.{os.getpid()}").unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{socket.gethostname()} {os.getpid()} {time.time():.0f}\n")
        return True
    return False


def _is_mine(lock: Path) -> bool:
    info = read_claim(lock)
    return info is not None and info.host == socket.gethostname() and info.pid == os.getpid()


@contextmanager
def heartbeat(lock: Path, every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """Refresh this process's claim ``lock`` every ``every`` seconds while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                os.utime(lock)
            except OSError:
                return  # released or taken away: nothing left to refresh

    thread = threading.Thread(target=beat, name=f"heartbeat {lock.name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def release(lock: Path) -> None:
    """Remove this process's claim (if it still holds it)."""
    try:
        if _is_mine(lock):
            lock.unlink()
    except OSError:
        pass
