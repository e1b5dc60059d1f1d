"""The run-result schema and its atomic JSON I/O.

One JSON file per run, ``<output_dir>/<run_id>.json``. Everything downstream (resume,
reports) reads it through :func:`load_result`. Besides the required keys a result records
``strategy_defaults`` (the strategy's default arguments, so a report names what a run
changed without importing the strategy, or torch) in files written since it was added.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from clbench.errors import ResultsError

SCHEMA_VERSION = 1
REQUIRED_KEYS = ("schema_version", "run_id", "config", "accuracy", "metrics", "evaluated_after_task")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so that readers see either the old file or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=1, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600; results are shared, so give the file the umask's mode as open() would.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_result(path: Path) -> dict[str, Any]:
    """Read and check one run-result file.

    Raises:
        ResultsError: The file is not JSON, misses required keys, or has another schema version.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: not a readable JSON file ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: expected a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ResultsError(f"{path}: missing keys {', '.join(missing)}")
    if data["schema_version"] != SCHEMA_VERSION:
        raise ResultsError(f"{path}: schema version {data['schema_version']!r}, expected {SCHEMA_VERSION}")
    return data


def result_status(path: Path) -> str:
    """``finished``, ``to-run`` (no file) or ``corrupt`` (a file that is not a complete result)."""
    if not path.is_file():
        return "to-run"
    return "finished" if is_finished(path) else "corrupt"


def is_finished(path: Path) -> bool:
    """Whether ``path`` holds a complete, readable run result."""
    if not path.is_file():
        return False
    try:
        load_result(path)
    except ResultsError:
        return False
    return True
