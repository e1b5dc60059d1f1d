"""The run-result schema (:class:`RunResult`) and its atomic JSON I/O.

One JSON file per run, ``<output_dir>/<run_id>.json``: the runner fills a
:class:`RunResult` and writes ``result.to_json()``; the report reads it back with
:func:`read_result`; resume only asks :func:`result_status`. Besides the required keys a
result records ``strategy_defaults`` (the strategy's default arguments, so a report names
what a run changed without importing the strategy, or torch) in files written since it
was added.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clbench.errors import ResultsError

SCHEMA_VERSION = 1
REQUIRED_KEYS = ("schema_version", "run_id", "config", "accuracy", "metrics", "evaluated_after_task")
SETTINGS = ("class_il", "task_il")
_OPTIONAL_IF_ABSENT = (
    "task_classes",
    "strategy_defaults",
    "started_at",
    "finished_at",
    "training_loss",
    "buffer_purity",
)
"""Keys that files of older versions may lack: a record read from such a file writes them back absent."""


@dataclass(frozen=True)
class RunResult:
    """One run's result, as its JSON file holds it (schema version :data:`SCHEMA_VERSION`).

    Attributes:
        run_id: ``<benchmark>-<strategy>-m<buffer>-s<seed>-<hash>``.
        config: The resolved run config (:meth:`clbench.config.RunConfig.to_dict`).
        accuracy: ``class_il`` and ``task_il`` accuracy matrices, one row per evaluation (``None``: not evaluated).
        metrics: ``class_il`` and ``task_il`` summaries (A1, Ainf, Am, BWT; None where undefined).
        evaluated_after_task: The task after which each matrix row was evaluated.
        task_classes: The classes of each task, in stream order.
        train_seconds: Training time of each ``train`` call.
        eval_seconds: Time of each evaluation pass.
        environment: Versions and hardware (:func:`clbench.runner.environment_info`).
        extras: What the strategy's ``clbench_extras()`` returned.
        training_loss: Per task trained: its index, the mean and last training loss and a
            curve of up to 20 per-interval means (:mod:`clbench.loss_trace`).
        buffer_purity: With label noise: per task, the examples the memory holds and the
            share with a clean label (null for memories held as tensors;
            :mod:`clbench.buffer_purity`); absent without label noise.
        strategy_defaults: The strategy's default arguments when it ran.
        started_at: ISO time the run started (UTC).
        finished_at: ISO time the run finished (UTC).
        schema_version: The file's schema version.
    """

    run_id: str
    config: dict[str, Any]
    accuracy: dict[str, list[list[float | None]]]
    metrics: dict[str, Any]
    evaluated_after_task: list[int]
    task_classes: list[list[int]] | None = None
    train_seconds: list[float] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    strategy_defaults: dict[str, Any] | None = None
    training_loss: list[dict[str, Any]] | None = None
    buffer_purity: list[dict[str, Any]] | None = None
    started_at: str | None = None
    finished_at: str | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def strategy_name(self) -> str:
        """The strategy's registered name."""
        return str(self.config["strategy"]["name"])

    @property
    def strategy_args(self) -> dict[str, Any]:
        """The strategy's resolved arguments, and its own training settings as ``training.<key>``."""
        own_training = self.config["strategy"].get("training", {})
        return {**self.config["strategy"]["args"], **{f"training.{k}": v for k, v in own_training.items()}}

    @property
    def strategy_revision(self) -> int:
        """The strategy's implementation revision (files from before revisions existed: 1)."""
        return int(self.config.get("strategy_revision", 1))

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the result file."""
        data = asdict(self)
        for key in _OPTIONAL_IF_ABSENT:
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "result") -> RunResult:
        """The record of a result file's JSON object.

        Raises:
            ResultsError: Required keys, or the class-IL / task-IL parts, are missing, or a
                metric is neither a number nor null.
        """
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise ResultsError(f"{source}: missing keys {', '.join(missing)}")
        for part in ("accuracy", "metrics"):
            if not isinstance(data[part], dict) or any(s not in data[part] for s in SETTINGS):
                raise ResultsError(f"{source}: {part} lacks one of {', '.join(SETTINGS)}")
        for setting in SETTINGS:
            summary = data["metrics"][setting]
            values = summary.items() if isinstance(summary, dict) else [("", summary)]
            for name, value in values:
                if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                    raise ResultsError(f"{source}: metrics.{setting}.{name} is {value!r}, not a number or null")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_WRITE_HINT = "free space there or choose another folder (--out); runs already written are kept"


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` so that readers see either the old file or the complete new one.

    Raises:
        ResultsError: The file cannot be written (a full disk, a read-only folder): one line
            naming it; no temporary file is left behind.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ResultsError(f"cannot write {path}: {exc.strerror or exc}; {_WRITE_HINT}") from None
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600; results are shared, so give the file the umask's mode as open() would.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ResultsError(f"cannot write {path}: {exc.strerror or exc}; {_WRITE_HINT}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON atomically (see :func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(payload, indent=1, sort_keys=True) + "\n")


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


def read_result(path: Path) -> RunResult:
    """Read one run-result file as a :class:`RunResult`.

    Raises:
        ResultsError: As :func:`load_result`, or the file lacks its class-IL / task-IL parts.
    """
    return RunResult.from_json(load_result(path), str(path))


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
