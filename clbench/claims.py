"""Claiming a run before computing it, so processes that share an output folder share the grid.

A claim is ``<run_id>.lock`` beside the result, created atomically (``O_EXCL``) with the
owner's host and pid, and removed when the run ends. A claim whose owner died on this
host is stale and is taken over (renamed away atomically first, so two processes cannot
both take it). Claims of another host are never judged stale: a lock left by a machine
that died must be removed by hand.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _owner() -> str:
    return f"{socket.gethostname()} {os.getpid()}"


def _is_stale(lock: Path) -> bool:
    try:
        host, pid = lock.read_text().split()
    except (OSError, ValueError):
        return False  # being written, or unreadable: leave it to its owner
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


def held_by_another_local_process(lock: Path) -> bool:
    """Whether a live process of this host other than this one holds ``lock`` (its run will end here)."""
    try:
        host, pid = lock.read_text().split()
    except (OSError, ValueError):
        return False
    return host == socket.gethostname() and int(pid) != os.getpid() and not _is_stale(lock)


def is_claimed(lock: Path) -> bool:
    """Whether a live process (or one on another host) holds ``lock``."""
    return lock.is_file() and not _is_stale(lock)


def try_claim(lock: Path) -> bool:
    """Claim ``lock`` for this process; False if a live process holds it."""
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
            handle.write(_owner() + "\n")
        return True
    return False


def release(lock: Path) -> None:
    """Remove this process's claim (if it still holds it)."""
    try:
        if lock.read_text().strip() == _owner():
            lock.unlink()
    except OSError:
        pass
