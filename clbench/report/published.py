"""Published values beside clbench's runs: the report's line-by-line check against the literature.

A *published table* is a YAML file of values as printed in papers, each with its source
(paper, table, setting, number of runs, what its ± means) and the strategy arguments and
memory size of clbench's runs that reproduce its setting. ``clbench report --published FILE``
matches every value to the runs of the folder and puts, per value, clbench's mean ± std
over seeds, the gap to the published mean, whether clbench's mean lies inside the printed
± interval, and (where the source says how many runs its ± summarises, and whether it is a
standard deviation or a 95% interval) Welch's t-test from both summaries. Values without
runs stay in the table (``—``), so it also says what is left to run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from scipy import stats

from clbench.config import from_mapping, load_yaml
from clbench.errors import ConfigError

Spread = Literal["std", "se", "2se", "ci95", "unknown"]
NOT_RUN = "—"  # the protocol of a published value that no run matches


@dataclass(frozen=True)
class Source:
    """Where published values come from."""

    citation: str = field(metadata={"help": "paper, table and setting, as a reader looks it up"})
    runs: int | None = field(default=None, metadata={"help": "runs behind each mean (None: not stated)"})
    spread: Spread = field(
        default="unknown",
        metadata={
            "help": "what the printed ± is: std, se (one standard error of the mean), 2se (two), "
            "ci95 (t-based 95% interval of the mean) or unknown"
        },
    )


@dataclass(frozen=True)
class PublishedValue:
    """One published value and the clbench runs of its setting."""

    strategy: str = field(metadata={"help": "registered strategy name of the runs that reproduce it"})
    mean: float = field(metadata={"help": "the published mean, in percent"})
    source: str = field(metadata={"help": "key of its source in the file's sources"})
    buffer_size: int = field(default=0, metadata={"help": "memory size M of the runs (0: none)"})
    args: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "strategy arguments the runs must have (others are free)"}
    )
    benchmark_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "benchmark arguments the runs must have, e.g. {augment: true} (others are free)"},
    )
    plus_minus: float | None = field(default=None, metadata={"help": "the printed ± (None: none printed)"})
    note: str = field(default="", metadata={"help": "setting details of this value (recipe, variant)"})


@dataclass(frozen=True)
class PublishedTable:
    """A file of published values for one benchmark."""

    benchmark: str = field(metadata={"help": "benchmark name of the runs (e.g. split_cifar10)"})
    sources: dict[str, Any] = field(metadata={"help": "source key -> Source"})
    values: tuple[PublishedValue, ...] = field(metadata={"help": "the published values"})
    setting: Literal["class_il", "task_il"] = field(default="class_il", metadata={"help": "evaluation setting"})
    metric: Literal["A1", "Ainf", "Am", "BWT"] = field(default="Ainf", metadata={"help": "metric compared"})


def load_published(path: str | Path) -> PublishedTable:
    """Read and validate a published-values file.

    Raises:
        ConfigError: The file is missing, not YAML, or does not validate (one line naming the bad value).
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"published-values file {str(path)!r} not found")
    try:
        raw = load_yaml(file.read_text())
    except yaml.YAMLError:
        raise ConfigError(f"published-values file {str(path)!r} is not valid YAML") from None
    table = from_mapping(PublishedTable, raw, file.name)  # rejects a `sources` that is not a mapping
    sources = {key: from_mapping(Source, value, f"{file.name}.sources.{key}") for key, value in table.sources.items()}
    for i, value in enumerate(table.values):
        if value.source not in sources:
            raise ConfigError(
                f"{file.name}.values[{i}].source: unknown source {value.source!r}; valid choices: {', '.join(sources)}"
            )
    return PublishedTable(table.benchmark, sources, table.values, table.setting, table.metric)


def published_std(plus_minus: float, source: Source) -> float | None:
    """The standard deviation over runs that a printed ± stands for (None if the source does not say).

    One standard error over n runs is std / sqrt(n), two are 2 * std / sqrt(n); a t-based 95% interval of the
    mean is t_{0.975, n-1} * std / sqrt(n).
    """
    if source.spread == "std":
        return plus_minus
    if source.spread in ("se", "2se") and source.runs is not None:
        return plus_minus * math.sqrt(source.runs) / (2 if source.spread == "2se" else 1)
    if source.spread == "ci95" and source.runs is not None and source.runs > 1:
        return plus_minus * math.sqrt(source.runs) / float(stats.t.ppf(0.975, source.runs - 1))
    return None


def welch_p(values: list[float], published_mean: float, std: float | None, runs: int | None) -> float | None:
    """Two-sided Welch t-test of clbench's runs against a published mean ± std over ``runs`` runs."""
    if std is None or runs is None or len(values) < 2:
        return None
    series = pd.Series(values)
    result = stats.ttest_ind_from_stats(
        float(series.mean()), float(series.std()), len(values), published_mean, std, runs, equal_var=False
    )
    return float(result.pvalue)


def _matches(run: pd.Series, value: PublishedValue) -> bool:
    return (
        run["strategy_name"] == value.strategy
        and int(run["buffer_size"]) == value.buffer_size
        and all(run["arguments"].get(key) == wanted for key, wanted in value.args.items())
        and all(run["benchmark_args"].get(key) == wanted for key, wanted in value.benchmark_args.items())
    )


def _printed(value: PublishedValue) -> str:
    return f"{value.mean:g} ± {value.plus_minus:g}" if value.plus_minus is not None else f"{value.mean:g}"


def _label(value: PublishedValue) -> str:
    args = ", ".join(f"{k}={v}" for k, v in value.args.items())
    return f"{value.strategy}({args})" if args else value.strategy


def _row(value: PublishedValue, source: Source, protocol: str, strategy: str, values: list[float]) -> dict[str, Any]:
    mean = float(pd.Series(values).mean()) if values else math.nan
    gap = mean - value.mean if values else math.nan
    inside = None if value.plus_minus is None or not values else abs(gap) <= value.plus_minus
    std = published_std(value.plus_minus, source) if value.plus_minus is not None else None
    return {
        "protocol": protocol,
        "strategy": strategy,
        "buffer_size": value.buffer_size,
        "n": len(values),
        "mean": mean,
        "std": float(pd.Series(values).std()) if len(values) > 1 else math.nan,
        "published": _printed(value),
        "published_mean": value.mean,
        "gap": gap,
        "inside_plus_minus": inside,
        "welch_p": welch_p(values, value.mean, std, source.runs),
        "source": value.source,
        "note": value.note,
    }


def compare_published(runs: pd.DataFrame, metrics: pd.DataFrame, table: PublishedTable) -> pd.DataFrame:
    """One row per published value and clbench strategy variant (protocol, label) that matches it.

    Args:
        runs: The collection's runs frame (``strategy_name``, ``arguments``, ``buffer_size``, ...).
        metrics: The collection's tidy metrics frame.
        table: The published values.
    """
    chosen = metrics[(metrics["setting"] == table.setting) & (metrics["metric"] == table.metric)]
    by_run = dict(zip(chosen["run_id"], chosen["value"], strict=True))
    candidates = runs[runs["benchmark"] == table.benchmark] if not runs.empty else runs
    rows = []
    for value in table.values:
        source = table.sources[value.source]
        matched = candidates[candidates.apply(_matches, axis=1, value=value)] if not candidates.empty else candidates
        if matched.empty:
            rows.append(_row(value, source, NOT_RUN, _label(value), []))
            continue
        for (protocol, strategy), group in matched.groupby(["protocol", "strategy"], sort=True):
            values = [by_run[run_id] for run_id in group["run_id"] if run_id in by_run]
            rows.append(_row(value, source, str(protocol), str(strategy), values))
    return pd.DataFrame(rows)


def _clbench_cell(row: pd.Series) -> str:
    if row["n"] == 0:
        return "—"
    if row["n"] == 1:
        return f"{row['mean']:.2f} (1 seed)"
    return f"{row['mean']:.2f} ± {row['std']:.2f} ({row['n']} seeds)"


def published_rows_markdown(rows: pd.DataFrame) -> str:
    """The rows of one protocol (from :func:`compare_published`): clbench beside each published value."""
    shown = pd.DataFrame(
        {
            "strategy": rows["strategy"],
            "M": rows["buffer_size"],
            "clbench": rows.apply(_clbench_cell, axis=1),
            "published": rows["published"],
            "gap": [f"{g:+.2f}" if not math.isnan(g) else "—" for g in rows["gap"]],
            "inside ±": [{True: "yes", False: "no"}.get(v, "—") for v in rows["inside_plus_minus"]],
            "Welch p": [f"{p:.3f}" if p is not None and not math.isnan(p) else "—" for p in rows["welch_p"]],
            "source": rows["source"],
            "note": rows["note"],
        }
    )
    text: str = shown.to_markdown(index=False, disable_numparse=True)
    return text


def sources_markdown(table: PublishedTable) -> str:
    """The published table's sources, one bullet each, with run count and what its ± means."""
    lines = []
    for key, source in table.sources.items():
        runs = f"{source.runs} runs" if source.runs else "runs not stated"
        lines.append(f"- **{key}**: {source.citation} ({runs}; ± = {source.spread})")
    return "\n".join(lines)


def published_markdown(frame: pd.DataFrame, table: PublishedTable, protocols: dict[str, str]) -> str:
    """The report section: per protocol, clbench beside each published value, then the sources."""
    title = f"## Published values ({table.setting} {table.metric}, %): clbench beside the literature"
    parts = [title, ""]
    for protocol, rows in frame.groupby("protocol", sort=True):
        heading = "not run yet" if protocol == NOT_RUN else f"protocol {protocol}"
        described = protocols.get(str(protocol), "no run of this benchmark has these arguments and memory size")
        parts += [f"### {table.benchmark} — {heading}", "", described, ""]
        parts += [published_rows_markdown(rows), ""]
    parts += ["Sources:", "", sources_markdown(table)]
    return "\n".join(parts) + "\n"
