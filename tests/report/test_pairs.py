"""``clbench report --pair``: named pairs of strategies t-tested against each other."""

import math

import pytest
from run_records import run_record
from scipy import stats

from clbench.cli import main
from clbench.errors import ClbenchError
from clbench.report import build_report
from clbench.report.readme import fill_blocks
from clbench.results import write_json_atomic

SEEDS = (1231, 1232, 1233)
EXACT = {1231: 32.0, 1232: 35.0, 1233: 33.5}
LASTLAYER = {1231: 37.7, 1232: 38.1, 1233: 39.0}
ER = {1231: 33.9, 1232: 36.0, 1233: 31.0}


@pytest.fixture
def runs(tmp_path):
    folder = tmp_path / "runs"
    for seed in SEEDS:
        for name, values in (("exact", EXACT), ("lastlayer", LASTLAYER)):
            record = run_record("metasp", 500, seed, values[seed], args={"influence": name})
            write_json_atomic(folder / f"metasp-{name}-{seed}.json", record)
        write_json_atomic(folder / f"er-{seed}.json", run_record("er", 500, seed, ER[seed]))
        write_json_atomic(folder / f"er200-{seed}.json", run_record("er", 200, seed, ER[seed] - 5))
        write_json_atomic(folder / f"lwf-{seed}.json", run_record("lwf", 0, seed, 18.0 + seed % 3))
    return folder


def _row(report, first, buffer_size=500):
    rows = report.pairs.query("setting == 'class_il' and metric == 'Ainf' and first == @first")
    return rows[rows["buffer_size"] == buffer_size].iloc[0]


def test_a_pair_is_tested_like_scipy_and_names_the_better_one(runs):
    exact, lastlayer = "metasp(influence=exact)", "metasp(influence=lastlayer)"
    report = build_report(runs, reference="er", pairs=[(exact, lastlayer)])
    row = _row(report, exact)
    first, second = [EXACT[s] for s in SEEDS], [LASTLAYER[s] for s in SEEDS]
    expected = stats.ttest_rel(first, second)
    assert row["t"] == pytest.approx(expected.statistic) and row["p"] == pytest.approx(expected.pvalue)
    assert row["difference"] == pytest.approx(sum(first) / 3 - sum(second) / 3)
    assert row["n_pairs"] == 3 and row["second"] == lastlayer
    assert row["p"] < 0.05 and row["better"] == lastlayer


def test_no_difference_names_neither_and_one_seed_is_no_test(runs):
    report = build_report(runs, reference="er", pairs=[("metasp(influence=exact)", "er")])
    assert _row(report, "metasp(influence=exact)")["better"] == ""
    for seed in (1232, 1233):
        (runs / f"er-{seed}.json").unlink()
    lone = _row(
        build_report(runs, reference="er", pairs=[("metasp(influence=exact)", "er")]), "metasp(influence=exact)"
    )
    assert lone["n_pairs"] == 1 and math.isnan(lone["p"]) and lone["better"] == ""


def test_a_strategy_without_memory_is_paired_at_every_buffer_size(runs):
    report = build_report(runs, reference="er", pairs=[("lwf", "er")])
    tested = report.pairs.query("setting == 'class_il' and metric == 'Ainf'")
    assert sorted(tested["buffer_size"]) == [200, 500]
    at_200 = tested[tested["buffer_size"] == 200].iloc[0]
    assert at_200["second_mean"] == pytest.approx(sum(ER.values()) / 3 - 5) and at_200["n_pairs"] == 3


def test_unknown_or_repeated_labels_are_one_line_errors(runs):
    with pytest.raises(ClbenchError, match=r"unknown strategy 'metasp' in --pair; valid choices: er, lwf, metasp\("):
        build_report(runs, reference="er", pairs=[("metasp", "er")])
    with pytest.raises(ClbenchError, match="names one strategy twice"):
        build_report(runs, reference="er", pairs=[("er", "er")])


def test_the_cli_writes_the_section_the_csv_and_a_readme_block(runs, tmp_path):
    out = tmp_path / "report"
    pair = ["--pair", "metasp(influence=exact)", "metasp(influence=lastlayer)"]
    assert main(["report", str(runs), "--reference", "er", "--out", str(out), "--no-figures", *pair]) == 0
    section = (out / "report.md").read_text().split("## Named pairs")[1]
    assert "| class-IL  | 500 | metasp(influence=exact) | metasp(influence=lastlayer) |" in section
    assert (out / "pairs.csv").read_text().count("metasp(influence=exact)") == 8  # 2 settings x 4 metrics at M = 500
    report = build_report(runs, reference="er", pairs=[("metasp(influence=exact)", "metasp(influence=lastlayer)")])
    protocol = str(report.pairs["protocol"].iloc[0])
    text, count = fill_blocks(f"<!-- clbench:pairs protocol={protocol} -->\nold\n<!-- clbench:end -->\n", report)
    assert count == 1 and "old" not in text and "metasp(influence=lastlayer)" in text
    with pytest.raises(ClbenchError, match="pairs block"):
        fill_blocks("<!-- clbench:pairs protocol=nope -->\n<!-- clbench:end -->\n", report)
