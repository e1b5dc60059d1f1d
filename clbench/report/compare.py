"""Paired comparison of one config setting: the same runs but for one key, matched by seed.

``clbench compare DIR --by training.precision`` groups the run files under ``DIR`` by their
whole config except the seed, the settings that change only what is measured (as the run id
and the report's protocol do: ``training.eval_tasks``) and the ``--by`` key (or
comma-separated keys that vary together, e.g. ``training.precision,training.channels_last``),
pairs the runs of each group that
differ only in that key by seed, and reports for every metric (A1, A∞, Am, BWT and the
first task's accuracy right after it was learned) each value's mean ± std and the paired
t-test of the difference. Reads JSON only; no torch.
"""

from __future__ import annotations

import json
import math
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from clbench.config import trained_settings
from clbench.errors import ClbenchError
from clbench.report.collect import read_runs
from clbench.results import SETTINGS, RunResult

METRICS = ("A1", "Ainf", "Am", "BWT")


UNSET = "(default)"
"""The value shown for a key that a run's config does not record: an option left at a default
that is omitted from run files (so that runs made before the option existed keep their ids)."""


def _get(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return UNSET
        node = node[part]
    return node


def _without(config: dict[str, Any], dotted: str) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(config))
    parts = dotted.split(".")
    node = copy
    for part in parts[:-1]:
        node = node.get(part, {})
    node.pop(parts[-1], None)
    for key in ("seed", "experiment", "device"):
        copy.pop(key, None)
    copy.setdefault("strategy_revision", 1)  # runs from before revisions existed are revision 1
    return copy


def _group_key(config: dict[str, Any], keys: list[str]) -> str:
    """The config but for the compared keys, the seed and the measurement-only settings.

    Runs apart only in a measurement-only setting trained the same, so they pair; when such a
    setting is itself compared, its values are read from the run's config, not from this key.
    """
    rest = config
    for k in keys:
        rest = _without(rest, k)
    return json.dumps({**rest, "training": trained_settings(rest.get("training", {}))}, sort_keys=True)


def _values(result: RunResult) -> dict[str, float]:
    out: dict[str, float] = {}
    for setting in SETTINGS:
        for metric in METRICS:
            value = result.metrics[setting].get(metric)
            if value is not None:
                out[f"{setting} {metric}"] = float(value)
        first = result.accuracy[setting][0][0] if result.accuracy[setting] else None
        if first is not None and len(result.accuracy[setting]) > 1:
            out[f"{setting} task-1 after task 1"] = float(first)
    return out


def compare_setting(folder: Path, key: str) -> pd.DataFrame:
    """One row per group, pair of values of ``key`` and metric; ``M`` is the group's memory size.

    Raises:
        ClbenchError: No run pairs differ only in ``key``.
    """
    loaded, _ = read_runs(folder)  # files that are not run results (error notes, resolved configs) are skipped
    groups: dict[str, dict[str, dict[int, dict[str, float]]]] = {}
    keys = [k.strip() for k in key.split(",") if k.strip()]
    if not keys:
        raise ClbenchError(f"--by {key!r}: name a dotted config key, e.g. training.precision")
    for _, result in loaded:
        config = result.config
        group = _group_key(config, keys)
        value = json.dumps([_get(config, k) for k in keys] if len(keys) > 1 else _get(config, keys[0]))
        groups.setdefault(group, {}).setdefault(value, {})[int(config["seed"])] = _values(result)
    rows = []
    for group, by_value in groups.items():
        rest = json.loads(group)
        strategy, buffer_size = rest["strategy"]["name"], rest.get("buffer_size")
        for a, b in combinations(sorted(by_value), 2):
            seeds = sorted(set(by_value[a]) & set(by_value[b]))
            if len(seeds) < 2:
                continue
            for metric in by_value[a][seeds[0]]:
                x = np.array([by_value[a][s][metric] for s in seeds])
                y = np.array([by_value[b][s][metric] for s in seeds])
                test = stats.ttest_rel(x, y) if np.any(x != y) else None
                rows.append(
                    {
                        "strategy": strategy,
                        "M": buffer_size,
                        "metric": metric,
                        f"{key}=A": json.loads(a),
                        "A mean±std": f"{x.mean():.2f}±{x.std(ddof=1):.2f}",
                        f"{key}=B": json.loads(b),
                        "B mean±std": f"{y.mean():.2f}±{y.std(ddof=1):.2f}",
                        "mean A-B": float((x - y).mean()),
                        "A<B seeds": int((x < y).sum()),
                        "n": len(seeds),
                        "p": math.nan if test is None else float(test.pvalue),
                    }
                )
    if not rows:
        raise ClbenchError(f"no runs in {str(folder)!r} differ only in {key!r} (with two or more common seeds)")
    return pd.DataFrame(rows)
