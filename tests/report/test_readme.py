"""``clbench report --readme``: marked blocks regenerated from the report, prose left alone."""

import pytest
import yaml
from run_records import PUBLISHED

from clbench.cli import main
from clbench.errors import ClbenchError
from clbench.report import build_report
from clbench.report.readme import fill_blocks

REFERENCE = "er(replay_forward=separate)"


def _protocol(report):
    (protocol,) = {t.protocol_id for t in report.tables}
    return protocol


def _readme(protocol):
    return (
        "# Results\n\nProse kept as written.\n\n"
        f"<!-- clbench:published protocol={protocol} -->\nstale rows\n<!-- clbench:end -->\n\n"
        "Not run yet:\n\n<!-- clbench:published protocol=not-run -->\n<!-- clbench:end -->\n\n"
        "<!-- clbench:sources -->\nold sources\n<!-- clbench:end -->\n\n"
        f"<!-- clbench:cost protocol={protocol} -->\nold cost\n<!-- clbench:end -->\n\n"
        f"<!-- clbench:table protocol={protocol} setting=task_il -->\n<!-- clbench:end -->\n\nClosing prose.\n"
    )


def _cells(block):
    return [[cell.strip() for cell in line.split("|")[1:-1]] for line in block.splitlines() if line.startswith("|")]


def _block(text, opening):
    start = text.index(opening) + len(opening)
    return text[start : text.index("<!-- clbench:end -->", start)]


def test_every_block_is_regenerated_and_the_prose_kept(folder, published):
    report = build_report(folder, reference=REFERENCE, published=published)
    protocol = _protocol(report)
    text, count = fill_blocks(_readme(protocol), report)
    assert count == 5
    assert text.startswith("# Results\n\nProse kept as written.\n\n") and text.endswith("\n\nClosing prose.\n")
    assert "stale rows" not in text and "old sources" not in text and "old cost" not in text
    rows = _block(text, f"<!-- clbench:published protocol={protocol} -->\n")
    assert ["er(replay_forward=separate)", "500", "32.00 ± 2.00 (3 seeds)", "33 ± 1.7"] in [r[:4] for r in _cells(rows)]
    assert "gem" not in [r[0] for r in _cells(rows)]  # the value no run matches goes to the not-run block only
    unrun = _cells(_block(text, "<!-- clbench:published protocol=not-run -->\n"))
    assert sorted(r[0] for r in unrun[2:]) == ["er", "gem"] and {r[2] for r in unrun[2:]} == {"—"}
    assert _block(text, "<!-- clbench:sources -->\n").startswith("- **paper A**: A et al., Table 2 (15 runs; ± = ci95)")
    cost = _block(text, f"<!-- clbench:cost protocol={protocol} -->\n")
    assert ["er(replay_forward=separate)", "500", "3"] in [r[:3] for r in _cells(cost)]
    table = _block(text, f"<!-- clbench:table protocol={protocol} setting=task_il -->\n")
    assert table.splitlines()[0].startswith("| strategy ") and "A∞" in table
    # regenerating a filled README changes nothing
    assert fill_blocks(text, report) == (text, 5)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("<!-- clbench:cost protocol=nope -->\n", "cost block: unknown protocol 'nope'; valid choices: "),
        (
            "<!-- clbench:tables -->\n",
            "unknown block kind 'tables'; valid choices: cost, pairs, published, sources, table",
        ),
        ("<!-- clbench:table protocol=PID setting=x -->\n", "unknown setting 'x'; valid choices: class_il, task_il"),
        ("<!-- clbench:cost protocol -->\n", "malformed block '<!-- clbench:cost protocol -->'"),
        ("<!-- clbench:sources -->", "malformed block '<!-- clbench:sources -->'"),
    ],
)
def test_a_bad_block_is_a_one_line_error_naming_it(folder, published, block, message):
    report = build_report(folder, reference=REFERENCE, published=published)
    text = block.replace("PID", _protocol(report)) + "<!-- clbench:end -->\n"
    with pytest.raises(ClbenchError, match=message.replace("(", r"\(")):
        fill_blocks(text, report)


def test_published_blocks_need_the_published_file(folder, published):
    report = build_report(folder, reference=REFERENCE)
    with pytest.raises(ClbenchError, match="a 'sources' block needs --published"):
        fill_blocks("<!-- clbench:sources -->\n<!-- clbench:end -->\n", report)


def test_the_cli_fills_the_file_atomically_and_refuses_one_without_blocks(folder, published, tmp_path, capsys):
    protocol = _protocol(build_report(folder, reference=REFERENCE))
    readme = tmp_path / "README.md"
    readme.write_text(_readme(protocol))
    args = ["report", str(folder), "--reference", REFERENCE, "--no-figures", "--out", str(tmp_path / "r")]
    assert main([*args, "--published", str(published), "--readme", str(readme)]) == 0
    assert "5 block(s) regenerated" in capsys.readouterr().out
    assert "32.00 ± 2.00 (3 seeds)" in readme.read_text()
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no blocks here\n")
    assert main([*args, "--readme", str(plain)]) == 2
    err = capsys.readouterr().err
    assert "has no '<!-- clbench:KIND ... -->' block; valid kinds: cost, pairs, published, sources, table" in err
    assert plain.read_text() == "no blocks here\n"
    assert yaml.safe_load(published.read_text()) == PUBLISHED
