"""``clbench report``: tables, paired t-tests and figures from a directory of run results.

Everything comes from one tidy frame (:func:`collect`); tables are rendered from it to
markdown, LaTeX (booktabs) and long-form CSV.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from clbench.errors import ClbenchError
from clbench.report.collect import Collection, collect, reference_by_protocol
from clbench.report.published import PublishedTable, compare_published, load_published, published_markdown
from clbench.report.stats import aggregate, cost, pair_tests, paired_tests, purity
from clbench.report.tables import (
    Table,
    build_tables,
    cost_markdown,
    pairs_markdown,
    purity_markdown,
    to_latex,
    to_markdown,
)

FORMATS = ("md", "tex", "csv")
DEFAULT_REFERENCES = ("metasp_rehsel", "metasp")


@dataclass
class Report:
    """Frames and tables of a report.

    Attributes:
        metrics: Tidy per-run metrics (one row per run x setting x metric).
        summary: Mean, std and seed count per strategy/buffer/metric.
        tests: Paired t-tests of the reference against every other strategy.
        tables: Renderable tables, one per protocol and setting.
        reference: The reference strategy (None if there is none).
        skipped: Files that could not be read.
        collection: The loaded runs (for figures).
        cost: Seconds of training and evaluation per run, by protocol/strategy/buffer.
        purity: Clean labels in the memory after each task, by protocol/strategy/buffer
            (empty without label noise).
        published: clbench beside each published value (empty without a published table).
        published_table: The published values compared (None without one).
        pairs: Paired t-tests of the named pairs of strategies (empty without ``pairs``).
    """

    metrics: pd.DataFrame
    summary: pd.DataFrame
    tests: pd.DataFrame
    tables: list[Table]
    reference: str | None
    skipped: list[str] = field(default_factory=list)
    collection: Collection | None = None
    cost: pd.DataFrame = field(default_factory=pd.DataFrame)
    purity: pd.DataFrame = field(default_factory=pd.DataFrame)
    published: pd.DataFrame = field(default_factory=pd.DataFrame)
    published_table: PublishedTable | None = None
    pairs: pd.DataFrame = field(default_factory=pd.DataFrame)


def _choose_reference(strategies: set[str], requested: str | None) -> str | None:
    if requested is not None:
        if requested not in strategies:
            raise ClbenchError(
                f"unknown reference strategy {requested!r}; valid choices: {', '.join(sorted(strategies))}"
            )
        return requested
    return next((name for name in DEFAULT_REFERENCES if name in strategies), None)


def _check_pairs(strategies: set[str], pairs: Sequence[tuple[str, str]]) -> None:
    for pair in pairs:
        if pair[0] == pair[1]:
            raise ClbenchError(
                f"--pair {pair[0]!r} {pair[1]!r} names one strategy twice; valid choices: two different strategies"
            )
        for label in pair:
            if label not in strategies:
                raise ClbenchError(
                    f"unknown strategy {label!r} in --pair; valid choices: {', '.join(sorted(strategies))}"
                )


def build_report(
    results_dir: str | Path,
    reference: str | None = None,
    published: str | Path | None = None,
    pairs: Sequence[tuple[str, str]] = (),
) -> Report:
    """Load runs and build summary, t-tests and tables.

    Args:
        results_dir: Folder searched recursively for run JSON files.
        reference: Strategy label tested against the others; default MetaSP+RehSel, then
            MetaSP, when present.
        published: A published-values YAML file (:mod:`clbench.report.published`) to put
            beside the runs.
        pairs: Pairs of strategy labels (as the tables name them) to test against each
            other, wherever both ran (:func:`clbench.report.stats.pair_tests`).

    Returns:
        The report.
    """
    collection = collect(Path(results_dir))
    metrics = collection.metrics
    strategies = set(metrics["strategy"])
    chosen = _choose_reference(strategies, reference) if strategies else None
    _check_pairs(strategies, pairs)
    summary = aggregate(metrics) if not metrics.empty else pd.DataFrame()
    per_protocol = reference_by_protocol(collection.runs, chosen) if chosen else {}
    tests = paired_tests(metrics, per_protocol) if chosen else paired_tests(metrics.iloc[0:0], "")
    tables = (
        build_tables(summary, tests, collection.protocols, chosen, collection.arguments, per_protocol)
        if not summary.empty
        else []
    )
    costs = cost(collection.runs) if not collection.runs.empty else pd.DataFrame()
    table = load_published(published) if published is not None else None
    beside = compare_published(collection.runs, metrics, table) if table is not None else pd.DataFrame()
    purities = purity(collection.runs) if not collection.runs.empty else pd.DataFrame()
    return Report(
        metrics,
        summary,
        tests,
        tables,
        chosen,
        skipped=collection.skipped,
        collection=collection,
        cost=costs,
        purity=purities,
        published=beside,
        published_table=table,
        pairs=pair_tests(metrics, pairs),
    )


def write_report(report: Report, out: Path, formats: Sequence[str] = FORMATS, figures: bool = True) -> list[Path]:
    """Write tables (and figures) of ``report`` into ``out``; return the files written.

    Raises:
        ClbenchError: An unknown format was asked for.
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ClbenchError(f"unknown report format {bad[0]!r}; valid choices: {', '.join(FORMATS)}")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "md" in formats:
        path = out / "report.md"
        sections = [to_markdown(t) for t in report.tables]
        if not report.cost.empty and report.collection is not None:
            sections.append(cost_markdown(report.cost, report.collection.protocols))
        if not report.purity.empty and report.collection is not None:
            sections.append(purity_markdown(report.purity, report.collection.protocols))
        if report.published_table is not None and report.collection is not None:
            sections.append(published_markdown(report.published, report.published_table, report.collection.protocols))
        if not report.pairs.empty and report.collection is not None:
            sections.append(pairs_markdown(report.pairs, report.collection.protocols))
        path.write_text("\n".join(sections))
        written.append(path)
    if "tex" in formats:
        for table in report.tables:
            path = out / f"{table.benchmark}_{table.protocol_id}_{table.setting}.tex"
            path.write_text(to_latex(table))
            written.append(path)
    if "csv" in formats:
        frames: list[tuple[str, pd.DataFrame]] = [
            ("metrics_long", report.metrics),
            ("summary", report.summary),
            ("ttests", report.tests),
            ("cost", report.cost),
        ]
        if not report.purity.empty:
            frames.append(("purity", report.purity))
        if report.published_table is not None:
            frames.append(("published", report.published))
        if not report.pairs.empty:
            frames.append(("pairs", report.pairs))
        for name, frame in frames:
            path = out / f"{name}.csv"
            frame.to_csv(path, index=False)
            written.append(path)
    if figures and report.collection is not None and not report.collection.runs.empty:
        from clbench.report.figures import heatmaps, influence_counts, learning_curves

        runs = report.collection.runs
        figures_written = learning_curves(runs, out) + heatmaps(runs, out) + influence_counts(runs, out)
        # a rebuild leaves no figure of an earlier build that this one no longer makes
        for stale in set((out / "figures").glob("*")) - set(figures_written):
            if stale.is_file() and stale.suffix in (".png", ".pdf"):
                stale.unlink()
        written += figures_written
    return written


__all__ = ["FORMATS", "Report", "build_report", "write_report"]
