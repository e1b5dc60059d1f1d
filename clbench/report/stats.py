"""Aggregation over seeds and paired t-tests, as tidy frames."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
from scipy import stats

ALPHA = 0.05
KEYS = ["protocol", "benchmark", "setting", "buffer_size", "strategy", "metric"]


def aggregate(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample standard deviation and seed count per protocol/setting/buffer/strategy/metric."""
    grouped = metrics.groupby(KEYS, sort=True)["value"]
    summary = grouped.agg(mean="mean", std="std", n="count").reset_index()
    summary["seeds"] = grouped.apply(lambda s: tuple(sorted(metrics.loc[s.index, "seed"]))).to_numpy()
    return summary


def cost(runs: pd.DataFrame) -> pd.DataFrame:
    """Training and evaluation seconds per run, by protocol, strategy and buffer size.

    Median, minimum and maximum over the runs (seeds) of each row: runs that shared a
    machine with others take longer, so the spread says how much the figures can be trusted.
    """
    keys = ["protocol", "benchmark", "strategy", "buffer_size"]
    grouped = runs.groupby(keys, sort=True)
    return grouped.agg(
        runs=("seed", "count"),
        train_median=("train_seconds", "median"),
        train_min=("train_seconds", "min"),
        train_max=("train_seconds", "max"),
        eval_median=("eval_seconds", "median"),
    ).reset_index()


def purity(runs: pd.DataFrame) -> pd.DataFrame:
    """The memory's share of clean labels after each task (runs with label noise), by protocol, strategy, M.

    Columns ``after_task_<k>``: "mean±std" in percent over the seeds that recorded it
    ("–" where the memory is held as tensors and cannot be traced to its examples). Runs
    that purify their memory add ``evicted_noisy`` (% of evicted examples that were
    mislabelled) and ``harm_auroc`` (mean AUROC of the harm score); strategies that score
    their own training examples (MetaSP) add ``weighting_auroc``; "–" for the others.
    """
    if "buffer_purity" not in runs or runs["buffer_purity"].isna().all():
        return pd.DataFrame()
    rows = []
    keys = ["protocol", "benchmark", "strategy", "buffer_size"]
    for key, group in runs[runs["buffer_purity"].notna()].groupby(keys, sort=True):
        curves = list(group["buffer_purity"])
        row: dict[str, Any] = dict(zip(keys, key, strict=True)) | {"runs": len(curves)}
        for task in range(max(len(c) for c in curves)):
            row[f"after_task_{task}"] = _mean_std([c[task] for c in curves if task < len(c)], scale=100, digits=1)
        if "evicted_noisy" in group:
            row["evicted_noisy"] = _mean_std(group["evicted_noisy"], scale=100, digits=1)
            row["harm_auroc"] = _mean_std(group["harm_auroc"], scale=1, digits=3)
        if "weighting_auroc" in group:
            row["weighting_auroc"] = _mean_std(group["weighting_auroc"], scale=1, digits=3)
        rows.append(row)
    frame = pd.DataFrame(rows)
    audits = ("evicted_noisy", "harm_auroc", "weighting_auroc")
    unaudited = [c for c in audits if c in frame and (frame[c] == "–").all()]
    return frame.drop(columns=unaudited)


def _mean_std(values: Iterable[Any], scale: float, digits: int) -> str:
    """Mean±std of the non-missing ``values`` times ``scale`` ("–" if none; no ± for one)."""
    present = [scale * float(v) for v in values if v is not None and not pd.isna(v)]
    if not present:
        return "–"
    spread = f"±{pd.Series(present).std():.{digits}f}" if len(present) > 1 else ""
    return f"{sum(present) / len(present):.{digits}f}{spread}"


def _paired_t(first: Any, second: Any) -> tuple[float, float]:
    """``scipy.stats.ttest_rel``'s t and p over matched values; NaN for fewer than two pairs."""
    if len(first) < 2:
        return math.nan, math.nan
    with warnings.catch_warnings():  # identical pairs: scipy returns nan, as it should
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_rel(first, second)
    return float(result.statistic), float(result.pvalue)


def paired_tests(metrics: pd.DataFrame, reference: str | Mapping[str, str]) -> pd.DataFrame:
    """Paired t-tests (``scipy.stats.ttest_rel``) of ``reference`` against every other strategy.

    ``reference`` is a strategy label, or each protocol's label of the reference
    (:func:`clbench.report.collect.reference_by_protocol`).

    Seeds are matched by value within each protocol, setting, buffer size and metric.
    ``significant`` is true where the reference is better (higher) at the 95% level,
    ``reference_worse`` where the other strategy is: a table must show both directions.
    Fewer than two paired seeds: no test (t and p are NaN).
    """
    rows = []
    for (protocol, benchmark, setting, buffer_size, metric), block in metrics.groupby(
        ["protocol", "benchmark", "setting", "buffer_size", "metric"], sort=True
    ):
        label = reference.get(str(protocol), "") if isinstance(reference, Mapping) else reference
        ref = block[block["strategy"] == label].set_index("seed")["value"]
        if ref.empty:
            continue
        for strategy, other_block in block[block["strategy"] != label].groupby("strategy"):
            other = other_block.set_index("seed")["value"]
            seeds = sorted(set(ref.index) & set(other.index))
            t_stat, p_value = _paired_t(ref.loc[seeds].to_numpy(), other.loc[seeds].to_numpy())
            rows.append(
                {
                    "protocol": protocol,
                    "benchmark": benchmark,
                    "setting": setting,
                    "buffer_size": buffer_size,
                    "metric": metric,
                    "reference": label,
                    "strategy": strategy,
                    "n_pairs": len(seeds),
                    "t": t_stat,
                    "p": p_value,
                    "significant": bool(p_value < ALPHA and t_stat > 0),
                    "reference_worse": bool(p_value < ALPHA and t_stat < 0),
                }
            )
    columns = [
        "protocol",
        "benchmark",
        "setting",
        "buffer_size",
        "metric",
        "reference",
        "strategy",
        "n_pairs",
        "t",
        "p",
    ]
    return pd.DataFrame(rows, columns=[*columns, "significant", "reference_worse"])


PAIR_COLUMNS = [
    "protocol",
    "benchmark",
    "setting",
    "buffer_size",
    "metric",
    "first",
    "second",
    "n_pairs",
    "first_mean",
    "second_mean",
    "difference",
    "t",
    "p",
    "better",
]


def pair_tests(metrics: pd.DataFrame, pairs: Iterable[tuple[str, str]]) -> pd.DataFrame:
    """Paired t-tests of named pairs of strategies, first against second, over matched seeds.

    Tested wherever both ran: in each protocol, setting, metric and buffer size. A strategy
    without memory (M = 0: fine-tuning, LwF, EWC) is paired with the other's every buffer
    size, as the tables show it in every column. ``difference`` is the mean of the paired
    differences (first − second) over the matched seeds; ``better`` names the higher one at
    the 95% level ("" otherwise). Fewer than two matched seeds: no test (t and p are NaN).
    """
    rows: list[dict[str, Any]] = []
    for first, second in pairs:
        for (protocol, benchmark, setting, metric), block in metrics.groupby(
            ["protocol", "benchmark", "setting", "metric"], sort=True
        ):
            a, b = block[block["strategy"] == first], block[block["strategy"] == second]
            if a.empty or b.empty:
                continue
            for buffer_size in _shared_buffer_sizes(set(a["buffer_size"]), set(b["buffer_size"])):
                key = {"protocol": protocol, "benchmark": benchmark, "setting": setting, "metric": metric}
                rows.append(key | _one_pair(_at(a, buffer_size), _at(b, buffer_size), first, second, buffer_size))
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def _shared_buffer_sizes(first: set[int], second: set[int]) -> list[int]:
    if first == {0} or second == {0}:
        return sorted((first | second) - {0}) or [0]
    return sorted(first & second)


def _at(block: pd.DataFrame, buffer_size: int) -> pd.Series:
    """One strategy's values by seed at ``buffer_size`` (its memory-free runs stand for every size)."""
    rows = block[block["buffer_size"].isin([buffer_size, 0])]
    return rows.set_index("seed")["value"]


def _one_pair(a: pd.Series, b: pd.Series, first: str, second: str, buffer_size: int) -> dict[str, Any]:
    seeds = sorted(set(a.index) & set(b.index))
    first_values, second_values = a.loc[seeds].to_numpy(), b.loc[seeds].to_numpy()
    t_stat, p_value = _paired_t(first_values, second_values)
    better = (first if t_stat > 0 else second) if p_value < ALPHA else ""
    return {
        "buffer_size": buffer_size,
        "first": first,
        "second": second,
        "n_pairs": len(seeds),
        "first_mean": float(first_values.mean()) if seeds else math.nan,
        "second_mean": float(second_values.mean()) if seeds else math.nan,
        "difference": float((first_values - second_values).mean()) if seeds else math.nan,
        "t": t_stat,
        "p": p_value,
        "better": better,
    }
