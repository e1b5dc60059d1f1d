"""Fill a results README's marked blocks from a report (``clbench report --readme``).

A results README is prose around tables. The tables are the report's, so they are marked
and regenerated, never copied by hand::

    <!-- clbench:published protocol=9f5377b8 -->
    (replaced by the report's rows for that protocol)
    <!-- clbench:end -->

Block kinds (:data:`BLOCKS`): ``published`` (clbench beside each published value of one
protocol; ``protocol=not-run`` for the published values no run matches), ``sources`` (the
published values' sources), ``cost`` (seconds per run of one protocol) and ``table`` (a
protocol's main table for one setting, ``setting=class_il`` or ``task_il``) and ``pairs``
(the ``--pair`` t-tests of one protocol). Everything outside the blocks is left as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from clbench.errors import ClbenchError
from clbench.report import Report
from clbench.report.published import NOT_RUN, published_rows_markdown, sources_markdown
from clbench.report.tables import cost_rows_markdown, pair_rows_markdown, table_body_markdown
from clbench.results import write_text_atomic

_BLOCK = re.compile(
    r"(?P<open><!-- clbench:(?P<kind>[\w-]+)(?P<params>(?: [\w-]+=\S+)*) -->\n)"
    r"(?P<body>.*?)(?P<close><!-- clbench:end -->)",
    re.DOTALL,
)
_MARKER = re.compile(r"<!-- clbench:.*?-->")
_END = "<!-- clbench:end -->"
NOT_RUN_PROTOCOL = "not-run"

Renderer = Callable[[Report, Mapping[str, str]], str]


def _choose(name: str, value: str | None, choices: list[str], where: str) -> str:
    if value not in choices:
        raise ClbenchError(f"{where}: unknown {name} {value!r}; valid choices: {', '.join(choices) or '(none)'}")
    return value


def _published(report: Report, params: Mapping[str, str]) -> str:
    if report.published_table is None:
        raise ClbenchError("a 'published' block needs --published FILE.yaml; valid choices: add --published")
    frame = report.published
    choices = [NOT_RUN_PROTOCOL if p == NOT_RUN else str(p) for p in sorted(set(frame["protocol"]))]
    protocol = _choose("protocol", params.get("protocol"), choices, "published block")
    return published_rows_markdown(frame[frame["protocol"] == (NOT_RUN if protocol == NOT_RUN_PROTOCOL else protocol)])


def _sources(report: Report, params: Mapping[str, str]) -> str:
    if report.published_table is None:
        raise ClbenchError("a 'sources' block needs --published FILE.yaml; valid choices: add --published")
    return sources_markdown(report.published_table)


def _protocol_rows(frame: pd.DataFrame, params: Mapping[str, str], where: str) -> pd.DataFrame:
    """The rows of ``frame`` of the block's ``protocol=`` (an error naming the protocols it has)."""
    protocols = frame["protocol"].astype(str) if not frame.empty else pd.Series(dtype=str)
    protocol = _choose("protocol", params.get("protocol"), sorted(set(protocols)), where)
    return frame[protocols == protocol]


def _cost(report: Report, params: Mapping[str, str]) -> str:
    return cost_rows_markdown(_protocol_rows(report.cost, params, "cost block"))


def _table(report: Report, params: Mapping[str, str]) -> str:
    tables = {(t.protocol_id, t.setting): t for t in report.tables}
    protocol = _choose("protocol", params.get("protocol"), sorted({p for p, _ in tables}), "table block")
    settings = sorted(s for p, s in tables if p == protocol)
    setting = _choose("setting", params.get("setting"), settings, "table block")
    return table_body_markdown(tables[(protocol, setting)])


def _pairs(report: Report, params: Mapping[str, str]) -> str:
    return pair_rows_markdown(_protocol_rows(report.pairs, params, "pairs block (add --pair FIRST SECOND)"))


BLOCKS: dict[str, Renderer] = {
    "published": _published,
    "sources": _sources,
    "cost": _cost,
    "table": _table,
    "pairs": _pairs,
}


def _params(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split())


def fill_blocks(text: str, report: Report) -> tuple[str, int]:
    """``text`` with every marked block regenerated from ``report``, and the number of blocks.

    Raises:
        ClbenchError: A block names an unknown kind, protocol or setting.
    """

    def render(match: re.Match[str]) -> str:
        kind = _choose("block kind", match["kind"], sorted(BLOCKS), "README")
        body = BLOCKS[kind](report, _params(match["params"]))
        return f"{match['open']}{body.rstrip()}\n{match['close']}"

    _check_markers(text)
    return _BLOCK.subn(render, text)


def _check_markers(text: str) -> None:
    """Every opening marker must start a well-formed block; a malformed one would be skipped silently."""
    opened = {m.start() for m in _BLOCK.finditer(text)}
    for marker in _MARKER.finditer(text):
        if marker.group(0) != _END and marker.start() not in opened:
            line = marker.group(0).strip()
            raise ClbenchError(
                f"README: malformed block {line!r}; valid choices: '<!-- clbench:KIND key=value ... -->', "
                "a newline, then '<!-- clbench:end -->'"
            )


def fill_readme(path: Path, report: Report) -> int:
    """Regenerate the marked blocks of the README at ``path`` in place; return how many.

    Raises:
        ClbenchError: The file is missing or has no block, or a block is invalid.
    """
    if not path.is_file():
        raise ClbenchError(f"--readme {str(path)!r} is not a file; valid choices: an existing markdown file")
    text, count = fill_blocks(path.read_text(), report)
    if count == 0:
        raise ClbenchError(
            f"--readme {str(path)!r} has no '<!-- clbench:KIND ... -->' block; valid kinds: {', '.join(sorted(BLOCKS))}"
        )
    write_text_atomic(path, text)
    return count
