"""Comparison tables in the paper's layout, rendered from one tidy frame.

Rows: reference strategies without a buffer (Fine-tune, Joint; A-infinity only), then one
row per strategy with a buffer. Columns: one group per buffer size with A1, A-infinity,
Am and BWT as mean±std over seeds. The best value of each column (among strategies with a
buffer) is marked; a • marks the cells where the reference strategy is significantly
better (paired t-test, 95%), a ◦ those where it is significantly worse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

METRIC_NAMES = {"A1": "A1", "Ainf": "A∞", "Am": "Am", "BWT": "BWT"}
METRIC_NAMES_TEX = {"A1": "$A_1$", "Ainf": "$A_\\infty$", "Am": "$A_m$", "BWT": "BWT"}
SETTING_NAMES = {"class_il": "class-IL", "task_il": "task-IL"}


@dataclass
class Table:
    """One table: cells as numbers plus marks, ready to render in any format.

    Attributes:
        title: Benchmark, setting and protocol id.
        protocol: Human description of the protocol.
        benchmark, setting, protocol_id: What the table shows.
        mean, std, n: Frames indexed by strategy, columns (buffer size, metric).
        best, significant, reference_worse: Boolean frames of the same shape (significant:
            the reference is significantly better than this row; reference_worse: this row
            is significantly better than the reference).
        notes: Seed coverage and test caveats, one line each.
    """

    title: str
    protocol: str
    benchmark: str
    setting: str
    protocol_id: str
    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame
    best: pd.DataFrame
    significant: pd.DataFrame
    reference_worse: pd.DataFrame
    notes: list[str] = field(default_factory=list)


REFERENCE_ROWS = ("finetune", "joint")
"""The lower and upper bounds, shown as the paper's reference rows (A∞ only, never ranked)."""


def is_reference_row(label: str) -> bool:
    """Whether a strategy label (``name(args)@rN``) is Fine-tune's or Joint's."""
    return label.split("(")[0].split("@")[0] in REFERENCE_ROWS


def _cell_frames(
    block: pd.DataFrame, order: list[str], columns: pd.MultiIndex, buffers: list[int]
) -> dict[str, pd.DataFrame]:
    """Mean, std and seed count per strategy (rows) and (M, metric) (columns) of one table."""
    frames = {
        k: pd.DataFrame(index=pd.Index(order, name="strategy"), columns=columns, dtype=float)
        for k in ("mean", "std", "n")
    }
    for row in block.itertuples():
        targets = [int(row.buffer_size)] if row.buffer_size > 0 else buffers
        if is_reference_row(row.strategy) and row.metric != "Ainf":
            continue  # the paper's layout: Fine-tune and Joint give A-infinity only
        for b in targets:
            for key in frames:
                frames[key].loc[row.strategy, (b, row.metric)] = getattr(row, key)
    return frames


def _best_marks(mean: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """The best mean of each column among the ranked rows (buffers or not, as LwF and EWC; not the bounds)."""
    best = pd.DataFrame(False, index=mean.index, columns=mean.columns)
    ranked = [s for s in order if not is_reference_row(s)]
    for column in mean.columns:
        values = mean.loc[ranked, column].dropna()
        if len(values) > 1:
            best.loc[values.index[values == values.max()], column] = True
    return best


def _test_notes(block: pd.DataFrame, block_tests: pd.DataFrame, reference: str | None, here: str | None) -> list[str]:
    """What the marks mean, naming the reference (``here``: its label in this table), or why there are no t-tests."""
    if reference is None:
        return ["no t-tests: no reference strategy (name one with --reference)"]
    if here is None or here not in set(block["strategy"]):
        return [f"no t-tests: the reference strategy {reference} has no runs here"]
    named = here if here == reference else f"{here} (= {reference})"
    notes = [
        f"• reference {named} significantly better, ◦ significantly worse (paired t-test over matched seeds, p < 0.05)"
    ]
    # named with M: a strategy may have paired seeds at one memory size and not at another
    untested = sorted({(t.strategy, int(t.buffer_size)) for t in block_tests.itertuples() if t.n_pairs < 2})
    if untested:
        named = ", ".join(f"{strategy} (M={size})" if size else strategy for strategy, size in untested)
        notes.append(f"no t-test (fewer than two paired seeds) for: {named}")
    return notes


def _seed_notes(block: pd.DataFrame) -> list[str]:
    """A note for each row that lacks seeds the table's other rows have."""
    all_seeds: set[int] = set()
    for seeds in block["seeds"]:
        all_seeds |= set(seeds)
    notes = []
    for (strategy, buffer_size), group in block.groupby(["strategy", "buffer_size"]):
        present = set().union(*group["seeds"])
        missing = sorted(all_seeds - present)
        if missing:
            where = f" (M={buffer_size})" if buffer_size else ""
            count = f"{len(present)} seed" + ("s" if len(present) != 1 else "")
            notes.append(f"{strategy}{where}: {count}, missing {', '.join(map(str, missing))}")
    return notes


def build_tables(
    summary: pd.DataFrame,
    tests: pd.DataFrame,
    protocols: dict[str, str],
    reference: str | None,
    arguments: dict[str, dict[str, str]] | None = None,
    reference_labels: dict[str, str] | None = None,
) -> list[Table]:
    """One :class:`Table` per protocol and setting.

    ``arguments`` (protocol id -> strategy -> arguments other than the defaults) becomes a
    note, so a row such as Joint trained for more epochs says so. ``reference_labels`` gives
    the reference's label in each protocol (default: ``reference`` itself everywhere).
    """
    tables = []
    for (protocol, benchmark, setting), block in summary.groupby(["protocol", "benchmark", "setting"], sort=True):
        buffered = block[block["buffer_size"] > 0]
        bufferless = block[block["buffer_size"] == 0]
        buffers = sorted(buffered["buffer_size"].unique()) or [0]
        metrics = [m for m in METRIC_NAMES if m in set(block["metric"])]
        columns = pd.MultiIndex.from_tuples([(int(b), m) for b in buffers for m in metrics], names=["M", "metric"])
        order = sorted(bufferless["strategy"].unique()) + sorted(buffered["strategy"].unique())
        frames = _cell_frames(block, order, columns, buffers)
        block_tests = tests[(tests["protocol"] == protocol) & (tests["setting"] == setting)]
        here = reference_labels.get(str(protocol)) if reference_labels is not None else reference
        notes = _test_notes(block, block_tests, reference, here) + _seed_notes(block)
        changed = (arguments or {}).get(str(protocol), {})
        shown = [f"{strategy} ({changed[strategy]})" for strategy in order if strategy in changed]
        if shown:
            notes.append(f"arguments other than the defaults: {'; '.join(shown)}")
        tables.append(
            Table(
                title=f"{benchmark} — {SETTING_NAMES.get(setting, setting)} — protocol {protocol}",
                protocol=protocols.get(str(protocol), ""),
                benchmark=str(benchmark),
                setting=str(setting),
                protocol_id=str(protocol),
                mean=frames["mean"],
                std=frames["std"],
                n=frames["n"],
                best=_best_marks(frames["mean"], order),
                significant=_test_marks(block_tests, "significant", frames["mean"].index, columns),
                reference_worse=_test_marks(block_tests, "reference_worse", frames["mean"].index, columns),
                notes=notes,
            )
        )
    return tables


def _test_marks(tests: pd.DataFrame, flag: str, index: pd.Index, columns: pd.MultiIndex) -> pd.DataFrame:
    """Where the paired tests set ``flag``, as a Boolean frame of the table's shape."""
    marks = pd.DataFrame(False, index=index, columns=columns)
    for test in tests[tests[flag]].itertuples():
        if test.strategy in index and (test.buffer_size, test.metric) in columns:
            marks.loc[test.strategy, (int(test.buffer_size), test.metric)] = True
    return marks


def _cell(table: Table, strategy: str, column: tuple[int, str], bold: tuple[str, str], marks: tuple[str, str]) -> str:
    mean = table.mean.loc[strategy, column]
    if pd.isna(mean):
        return "–"
    std, n = table.std.loc[strategy, column], table.n.loc[strategy, column]
    text = f"{mean:.2f}" if n < 2 or pd.isna(std) else f"{mean:.2f}±{std:.2f}"
    if table.best.loc[strategy, column]:
        text = f"{bold[0]}{text}{bold[1]}"
    if table.significant.loc[strategy, column]:
        text += marks[0]
    if table.reference_worse.loc[strategy, column]:
        text += marks[1]
    return text


def display_frame(table: Table, tex: bool = False) -> pd.DataFrame:
    """The table as a frame of formatted strings (markdown or LaTeX marks)."""
    bold = ("\\textbf{", "}") if tex else ("**", "**")
    marks = ("$^\\bullet$", "$^\\circ$") if tex else (" •", " ◦")
    names = METRIC_NAMES_TEX if tex else METRIC_NAMES
    data = {
        (f"M={b}" if b else "", names[m]): [_cell(table, s, (b, m), bold, marks) for s in table.mean.index]
        for b, m in table.mean.columns
    }
    index = [s.replace("_", "\\_") if tex else s for s in table.mean.index]
    frame = pd.DataFrame(data, index=pd.Index(index, name="strategy"))
    frame.columns = pd.MultiIndex.from_tuples(list(data), names=["", ""])
    return frame


def table_body_markdown(table: Table) -> str:
    """The table's cells and notes as markdown, without its title and protocol line."""
    frame = display_frame(table)
    flat = frame.copy()
    flat.columns = [f"{b} {m}".strip() for b, m in frame.columns]
    return "\n".join([flat.to_markdown(), "", *[f"- {note}" for note in table.notes]])


def to_markdown(table: Table) -> str:
    """The table as markdown, with its title, protocol and notes."""
    return "\n".join([f"### {table.title}", "", f"Protocol: {table.protocol}", "", table_body_markdown(table)]) + "\n"


def to_latex(table: Table) -> str:
    """The table as a booktabs LaTeX table."""
    frame = display_frame(table, tex=True)
    body: str = frame.style.to_latex(
        hrules=True,
        multicol_align="c",
        column_format="l" + "c" * len(frame.columns),
        caption=f"{table.title.replace('_', chr(92) + '_')}. {table.protocol.replace('_', chr(92) + '_')}",
    )
    notes = "".join(f"% {note}\n" for note in table.notes)
    return notes + body


def cost_rows_markdown(rows: pd.DataFrame) -> str:
    """One protocol's cost rows: seconds of training (median [min-max]) and evaluation per run."""
    frame = pd.DataFrame(
        {
            "strategy": rows["strategy"],
            "M": rows["buffer_size"],
            "runs": rows["runs"],
            "train s": [
                f"{m:.0f} [{lo:.0f}-{hi:.0f}]"
                for m, lo, hi in zip(rows["train_median"], rows["train_min"], rows["train_max"], strict=True)
            ],
            "eval s": [f"{m:.0f}" for m in rows["eval_median"]],
        }
    )
    text: str = frame.to_markdown(index=False)
    return text


def _per_protocol_section(title: str, frame: pd.DataFrame, protocols: dict[str, str], rows_markdown: Any) -> str:
    """A section of ``report.md``: ``title``, then one table a protocol, headed by its description."""
    parts = [title, ""]
    for pid, rows in frame.groupby("protocol", sort=True):
        parts += [f"### {rows['benchmark'].iloc[0]} — protocol {pid}", "", protocols.get(str(pid), ""), ""]
        parts += [rows_markdown(rows), ""]
    return "\n".join(parts)


def cost_markdown(cost: pd.DataFrame, protocols: dict[str, str]) -> str:
    """The cost section of ``report.md``: one table per protocol, seconds per run."""
    title = "## Cost (seconds per run: median [min-max] over seeds)"
    return _per_protocol_section(title, cost, protocols, cost_rows_markdown)


def _purity_rows_markdown(rows: pd.DataFrame) -> str:
    shown = rows.drop(columns=["protocol", "benchmark"]).rename(columns={"buffer_size": "M"})
    shown = shown.rename(columns=lambda c: c.replace("after_task_", "task ") if c.startswith("after_task_") else c)
    names = {
        "evicted_noisy": "evicted mislabelled (%)",
        "harm_auroc": "harm AUROC",
        "weighting_auroc": "weighting AUROC",
    }
    shown = shown.rename(columns=names)
    text: str = shown.to_markdown(index=False)
    return text


def purity_markdown(purity: pd.DataFrame, protocols: dict[str, str]) -> str:
    """The buffer-purity section of ``report.md``: one table per protocol, clean labels after each task."""
    title = "## Buffer purity (% clean labels in the memory after each task: mean±std over seeds)"
    return _per_protocol_section(title, purity, protocols, _purity_rows_markdown)


def pair_rows_markdown(rows: pd.DataFrame) -> str:
    """One protocol's named pairs at A∞: both means, the mean paired difference, p, the better one."""
    shown = rows[rows["metric"] == "Ainf"]
    frame = pd.DataFrame(
        {
            "setting": shown["setting"].map({"class_il": "class-IL", "task_il": "task-IL"}),
            "M": shown["buffer_size"],
            "first": shown["first"],
            "second": shown["second"],
            "seeds": shown["n_pairs"],
            "first A∞": shown["first_mean"].map("{:.2f}".format),
            "second A∞": shown["second_mean"].map("{:.2f}".format),
            "difference": shown["difference"].map("{:+.2f}".format),
            "p": shown["p"].map(lambda p: "—" if pd.isna(p) else f"{p:.3f}"),
            "better (p < 0.05)": [
                better or ("no test" if n < 2 else "neither")
                for better, n in zip(shown["better"], shown["n_pairs"], strict=True)
            ],
        }
    )
    text: str = frame.to_markdown(index=False, disable_numparse=True)  # keep 94.50 and +0.50 as written
    return text


def pairs_markdown(pairs: pd.DataFrame, protocols: dict[str, str]) -> str:
    """The named-pairs section of ``report.md``: one table per protocol (A∞; every metric in pairs.csv)."""
    title = "## Named pairs (paired t-tests over matched seeds, A∞; every metric in pairs.csv)"
    return _per_protocol_section(title, pairs, protocols, pair_rows_markdown)
