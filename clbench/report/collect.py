"""Read a directory of run results into tidy pandas frames.

Runs are grouped by *protocol*: everything in a run's config except the strategy, the
buffer size and the seed (benchmark and its arguments, backbone, training settings).
Runs of different protocols are never pooled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from clbench.config import trained_settings
from clbench.errors import ResultsError
from clbench.results import SETTINGS, RunResult, read_result

METRICS = ("A1", "Ainf", "Am", "BWT")


def protocol_of(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a run config that must match for runs to be compared (not what only changes the measurement)."""
    protocol: dict[str, Any] = {
        key: config[key] for key in ("benchmark", "backbone", "training", "deterministic") if key in config
    }
    if "training" in protocol:
        protocol["training"] = trained_settings(protocol["training"])
    return protocol


def protocol_id(protocol: dict[str, Any]) -> str:
    """Short stable id of a protocol."""
    return hashlib.sha256(json.dumps(protocol, sort_keys=True).encode()).hexdigest()[:8]


def describe_protocol(protocol: dict[str, Any]) -> str:
    """One human line naming what a protocol fixes."""
    bench = protocol["benchmark"]
    backbone = protocol["backbone"]
    training = protocol["training"]

    def args(spec: dict[str, Any]) -> str:
        return ", ".join(f"{k}={v}" for k, v in sorted(spec.get("args", {}).items()))

    schedule = f", lr x{training['lr_gamma']} at {training['lr_milestones']}" if training.get("lr_milestones") else ""
    # older result files predate the data-path settings; they ran on Avalanche's loaders in fp32
    data_path = training.get("data_path", "avalanche")
    precision = training.get("precision", "fp32")
    memory_format = ", channels-last" if training.get("channels_last") else ""
    decay = f" weight decay {training['weight_decay']}" if training.get("weight_decay") else ""
    return (
        f"{bench['name']} ({args(bench)}); {backbone['name']} ({args(backbone)}); "
        f"{training['epochs']} epochs/task, SGD lr {training['lr']} momentum {training['momentum']}{decay}{schedule}, "
        f"batch {training['batch_size']} + replay {training['replay_batch_size']}; "
        f"{data_path} data path, {precision}{memory_format}"
    )


def purification_summary(buffer_purity: list[dict[str, Any]] | None) -> dict[str, float | None]:
    """A run's purifications in two numbers, and its own weighting in one (None without any).

    ``evicted_noisy``: the share of evicted examples that were mislabelled; ``harm_auroc``:
    the mean AUROC of the harm score over the purifications; ``weighting_auroc``: the mean
    over tasks of the AUROC of the strategy's own scores of each task's examples (MetaSP's
    fused influence) for telling the mislabelled ones.
    """
    weightings = [w["auroc"] for t in buffer_purity or [] if (w := t.get("weighting")) and w["auroc"] is not None]
    audits = [a for task in buffer_purity or [] for a in task.get("purifications", [])]
    evicted = sum(a["evicted"] for a in audits)
    aurocs = [a["auroc"] for a in audits if a["auroc"] is not None]
    return {
        "evicted_noisy": sum(a["noisy_evicted"] for a in audits) / evicted if evicted else None,
        "harm_auroc": sum(aurocs) / len(aurocs) if aurocs else None,
        "weighting_auroc": sum(weightings) / len(weightings) if weightings else None,
    }


def _strategy_labels(runs: list[RunResult], effective: list[dict[str, Any]]) -> list[str]:
    """Label each run's strategy by its name plus the arguments that vary among runs of that name.

    ``effective`` holds each run's arguments with its defaults filled in (:func:`effective_arguments`).
    Runs of two revisions of one strategy (a fix that changed its results) are never pooled:
    their labels end in ``@r<revision>`` when one folder holds more than one revision.
    """
    by_name: dict[str, list[dict[str, Any]]] = {}
    revisions: dict[str, set[int]] = {}
    for run, args in zip(runs, effective, strict=True):
        by_name.setdefault(run.strategy_name, []).append(args)
        revisions.setdefault(run.strategy_name, set()).add(run.strategy_revision)
    varying = {
        name: sorted(k for k in set().union(*arg_sets) if len({json.dumps(a.get(k)) for a in arg_sets}) > 1)
        for name, arg_sets in by_name.items()
    }
    labels = []
    for run, args in zip(runs, effective, strict=True):
        name = run.strategy_name
        suffix = ", ".join(f"{k}={args.get(k)}" for k in varying[name])
        label = f"{name}({suffix})" if suffix else name
        labels.append(f"{label}@r{run.strategy_revision}" if len(revisions[name]) > 1 else label)
    return labels


def _known_defaults(runs: list[RunResult]) -> dict[tuple[str, int], dict[str, Any]]:
    """Each strategy revision's default arguments: the union of what its runs' files record.

    An option added to a strategy without a revision bump (its default keeps the earlier
    behaviour) is missing from the defaults that older files record; a newer file of the
    same revision supplies it.
    """
    known: dict[tuple[str, int], dict[str, Any]] = {}
    for run in runs:
        if run.strategy_defaults:
            known.setdefault((run.strategy_name, run.strategy_revision), {}).update(run.strategy_defaults)
    return known


def effective_arguments(runs: list[RunResult]) -> list[dict[str, Any]]:
    """Each run's strategy arguments, those it left out at their default filled in (:func:`_effective_arguments`)."""
    defaults = _known_defaults(runs)
    # A strategy's own training setting (``training.<key>``) that another run has defaults to the protocol's value.
    own = {key for run in runs for key in run.strategy_args if key.startswith("training.")}
    return [
        {**{key: run.config["training"].get(key.removeprefix("training.")) for key in own}, **args}
        for run, args in ((run, _effective_arguments(run, defaults)) for run in runs)
    ]


def _effective_arguments(run: RunResult, defaults: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
    """The run's strategy arguments, those it left out at their default filled in.

    A run id leaves out arguments added after runs were published while they hold their
    default, so a label names ``memory=class_balanced`` rather than ``memory=None``. The
    defaults come from the run's file and, for options its file predates, from the other
    runs of the same strategy revision, then from those of its other revisions.
    """
    known: dict[str, Any] = {}
    # Options the run's revision never recorded come from the strategy's other revisions,
    # newest last: an option added without a revision bump defaults to the behaviour that
    # earlier revisions had, so their runs ran at that default.
    for (name, _), recorded in sorted(defaults.items(), key=lambda item: item[0][1]):
        if name == run.strategy_name:
            known.update(recorded)
    known.update(defaults.get((run.strategy_name, run.strategy_revision), {}))
    known.update(run.strategy_defaults or {})
    return {**known, **run.strategy_args}


def changed_arguments(args: dict[str, Any], defaults: dict[str, Any] | None) -> str:
    """``k=v, ...`` for the arguments that differ from the strategy's defaults.

    The defaults come from the run's file (``strategy_defaults``, recorded when it ran), so
    the report needs neither torch nor the strategy's code. Files written before it was
    recorded list all their arguments.
    """
    missing = object()
    known = defaults or {}
    changed = {k: v for k, v in args.items() if known.get(k, missing) != v}
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(changed.items()))


@dataclass
class Collection:
    """Everything a report is built from.

    Attributes:
        metrics: Tidy frame, one row per run x setting x metric.
        runs: One row per run: ids, protocol, strategy label, name and effective arguments,
            buffer, seed, matrices, extras.
        protocols: Protocol id -> human description.
        arguments: Protocol id -> strategy label -> its arguments other than the defaults.
        skipped: One message per file that could not be used.
    """

    metrics: pd.DataFrame
    runs: pd.DataFrame
    protocols: dict[str, str] = field(default_factory=dict)
    arguments: dict[str, dict[str, str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def read_runs(results_dir: Path) -> tuple[list[tuple[Path, RunResult]], list[str]]:
    """Every readable run result under ``results_dir``, and one message per file that is not one."""
    loaded: list[tuple[Path, RunResult]] = []
    skipped: list[str] = []
    for path in sorted(results_dir.rglob("*.json")):
        try:
            loaded.append((path, read_result(path)))
        except ResultsError as exc:
            skipped.append(str(exc))
    return loaded, skipped


def _rows(
    pid: str, path: Path, run: RunResult, label: str, arguments: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One run's row of the runs frame (``arguments``: its effective strategy arguments) and its metric rows."""
    base = {
        "protocol": pid,
        "benchmark": run.config["benchmark"]["name"],
        "strategy": label,
        "buffer_size": int(run.config["buffer_size"]),
        "seed": int(run.config["seed"]),
        "run_id": run.run_id,
    }
    run_row = {
        **base,
        "strategy_name": run.strategy_name,
        "arguments": arguments,
        "benchmark_args": run.config["benchmark"].get("args", {}),
        "strategy_revision": run.strategy_revision,
        "file": str(path),
        "evaluated_after_task": run.evaluated_after_task,
        "class_il": run.accuracy["class_il"],
        "task_il": run.accuracy["task_il"],
        "extras": run.extras,
        "train_seconds": float(sum(run.train_seconds)),
        "eval_seconds": float(sum(run.eval_seconds)),
        "buffer_purity": [t["purity"] for t in run.buffer_purity] if run.buffer_purity else None,
        **purification_summary(run.buffer_purity),
    }
    metric_rows = [
        {**base, "setting": setting, "metric": metric, "value": float(value)}
        for setting in SETTINGS
        for metric in METRICS
        if (value := run.metrics[setting].get(metric)) is not None
    ]
    return run_row, metric_rows


def _same_strategy(a: tuple[str, int, dict[str, Any]], b: tuple[str, int, dict[str, Any]]) -> bool:
    """Same name and revision, and equal on every argument both records know (newer files know more options)."""
    return a[0] == b[0] and a[1] == b[1] and all(a[2][k] == b[2][k] for k in set(a[2]) & set(b[2]))


def reference_by_protocol(runs: pd.DataFrame, reference: str) -> dict[str, str]:
    """The reference strategy's label in each protocol where it ran.

    A label names only the arguments that vary among a protocol's runs of that strategy, so
    the same strategy can be ``er(replay_forward=separate)`` in one protocol and ``er`` in
    another; the reference is found by what it is (name, revision, arguments).
    """
    if runs.empty:
        return {}

    def identity(row: Any) -> tuple[str, int, dict[str, Any]]:
        return (row.strategy_name, int(row.strategy_revision), dict(row.arguments))

    wanted = [identity(row) for row in runs[runs["strategy"] == reference].itertuples()]
    labels: dict[str, str] = {}
    for row in runs.itertuples():
        if str(row.protocol) not in labels and any(_same_strategy(identity(row), w) for w in wanted):
            labels[str(row.protocol)] = str(row.strategy)
    return labels


def collect(results_dir: Path) -> Collection:
    """Load every ``*.json`` run result under ``results_dir`` (recursively).

    Malformed or partial files are skipped and reported by name.

    Raises:
        ResultsError: The directory does not exist.
    """
    if not results_dir.is_dir():
        raise ResultsError(f"results directory {results_dir} not found")
    loaded, skipped = read_runs(results_dir)
    protocols: dict[str, str] = {}
    groups: dict[str, list[tuple[Path, RunResult]]] = {}
    for path, result in loaded:
        protocol = protocol_of(result.config)
        pid = protocol_id(protocol)
        protocols[pid] = describe_protocol(protocol)
        groups.setdefault(pid, []).append((path, result))

    metric_rows, run_rows = [], []
    arguments: dict[str, dict[str, str]] = {}
    for pid, members in groups.items():
        runs = [run for _, run in members]
        effective = effective_arguments(runs)
        labels = _strategy_labels(runs, effective)
        for (path, run), label, args in zip(members, labels, effective, strict=True):
            changed = changed_arguments(run.strategy_args, run.strategy_defaults)
            if changed:
                arguments.setdefault(pid, {})[label] = changed
            run_row, rows = _rows(pid, path, run, label, args)
            run_rows.append(run_row)
            metric_rows.extend(rows)
    columns = ["protocol", "benchmark", "strategy", "buffer_size", "seed", "run_id", "setting", "metric", "value"]
    return Collection(
        metrics=pd.DataFrame(metric_rows, columns=columns),
        runs=pd.DataFrame(run_rows),
        protocols=protocols,
        arguments=arguments,
        skipped=skipped,
    )
