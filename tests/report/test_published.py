"""Published values beside hand-made runs: matching, gaps, the ± test, Welch's p and bad files."""

import math
import re

import pytest
import yaml
from run_records import ER_SEPARATE, PUBLISHED
from scipy import stats

from clbench.cli import main
from clbench.errors import ConfigError
from clbench.report import build_report, write_report
from clbench.report.published import Source, load_published, published_std, welch_p


def test_ci95_becomes_a_standard_deviation_by_the_t_quantile():
    # 95% interval of the mean over 15 runs: t_{0.975,14} = 2.1448 (tables), std = ci * sqrt(15) / t
    assert published_std(1.0, Source("x", runs=15, spread="ci95")) == pytest.approx(math.sqrt(15) / 2.1448, rel=1e-4)
    assert published_std(1.7, Source("x", runs=10, spread="std")) == 1.7
    assert published_std(1.0, Source("x", runs=16, spread="2se")) == pytest.approx(2.0)
    assert published_std(0.5, Source("x", runs=16, spread="se")) == pytest.approx(2.0)  # ER-ACE: one standard error
    assert published_std(1.7, Source("x", runs=10)) is None
    assert published_std(1.7, Source("x", spread="ci95")) is None


def test_welch_p_is_the_two_sided_welch_test_from_summaries():
    values, mean, std, runs = [30.0, 34.0, 32.0], 33.0, 1.5, 15
    se = math.sqrt(2.0**2 / 3 + std**2 / runs)
    df = se**4 / ((2.0**2 / 3) ** 2 / 2 + (std**2 / runs) ** 2 / (runs - 1))
    expected = 2 * stats.t.sf(abs(32.0 - mean) / se, df)
    assert welch_p(values, mean, std, runs) == pytest.approx(expected, rel=1e-9)
    assert welch_p([32.0], mean, std, runs) is None
    assert welch_p(values, mean, None, runs) is None


def test_values_match_runs_by_strategy_arguments_and_memory(folder, published):
    frame = build_report(folder, reference="er(replay_forward=separate)", published=published).published
    paper_a = frame[(frame["source"] == "paper A") & (frame["buffer_size"] == 500)]
    assert list(paper_a["strategy"]) == ["er(replay_forward=separate)"]  # the joint runs are left out
    row = paper_a.iloc[0]
    assert (row["n"], row["mean"], row["std"]) == (3, pytest.approx(32.0), pytest.approx(2.0))
    assert row["gap"] == pytest.approx(-1.0)
    assert row["inside_plus_minus"]
    std = 1.7 * math.sqrt(15) / stats.t.ppf(0.975, 14)
    assert row["welch_p"] == pytest.approx(welch_p(list(ER_SEPARATE.values()), 33.0, std, 15))
    # a value without arguments stands beside every variant; no runs behind its ± -> no p
    paper_b = frame[frame["source"] == "paper B"].set_index("strategy")
    assert paper_b.loc["er(replay_forward=joint)", "gap"] == pytest.approx(7.0)
    assert not paper_b.loc["er(replay_forward=joint)", "inside_plus_minus"]
    assert math.isnan(paper_b.loc["er(replay_forward=joint)", "welch_p"])
    # values without runs stay in the table, marked as not run
    missing = frame[frame["protocol"] == "—"]
    assert sorted(missing["strategy"]) == ["er", "gem"]
    assert (missing["n"] == 0).all()


def test_report_writes_the_section_and_csv(folder, published, tmp_path, capsys):
    out = tmp_path / "report"
    assert (
        main(
            [
                "report",
                str(folder),
                "--reference",
                "er(replay_forward=separate)",
                "--out",
                str(out),
                "--no-figures",
                "--published",
                str(published),
            ]
        )
        == 0
    )
    text = (out / "report.md").read_text()
    assert "## Published values (class_il Ainf, %)" in text
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in text.splitlines() if "33 ± 1.7" in line]
    assert rows == [
        [
            "er(replay_forward=separate)",
            "500",
            "32.00 ± 2.00 (3 seeds)",
            "33 ± 1.7",
            "-1.00",
            "yes",
            rows[0][6],
            "paper A",
            "",
        ]
    ]
    assert float(rows[0][6]) == pytest.approx(
        welch_p(list(ER_SEPARATE.values()), 33.0, 1.7 * math.sqrt(15) / stats.t.ppf(0.975, 14), 15), abs=5e-4
    )
    assert "- **paper A**: A et al., Table 2 (15 runs; ± = ci95)" in text
    assert (out / "published.csv").is_file()
    assert "Published values" in capsys.readouterr().out


def test_a_report_without_published_values_has_no_section(folder, tmp_path):
    report = build_report(folder, reference="er(replay_forward=separate)")
    written = write_report(report, tmp_path / "report", figures=False)
    assert not any(path.name == "published.csv" for path in written)
    assert "Published values" not in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"values": [{**PUBLISHED["values"][0], "source": "paper C"}]},
            "unknown source 'paper C'; valid choices: paper A, paper B",
        ),
        ({"metric": "Aavg"}, "metric: invalid value 'Aavg'; valid choices: A1, Ainf, Am, BWT"),
        ({"values": [{**PUBLISHED["values"][0], "mean": "high"}]}, "values[0].mean: expected a number, got 'high'"),
        ({"sources": {"paper A": {"citation": "A", "spread": "sem"}}}, "spread: invalid value 'sem'"),
    ],
)
def test_bad_files_fail_in_one_line_naming_the_value(tmp_path, change, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**PUBLISHED, **change}))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_published(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"published-values file '.*nope\.yaml' not found"):
        load_published(tmp_path / "nope.yaml")


def test_a_value_with_benchmark_arguments_stands_beside_runs_of_that_benchmark_only(tmp_path):
    # An augmented paper column must not be read against runs without augmentation, nor the reverse.
    from run_records import run_record

    from clbench.results import write_json_atomic

    folder = tmp_path / "runs"
    for seed, (plain, augmented) in zip((1, 2), ((30.0, 40.0), (32.0, 42.0)), strict=True):
        for augment, final in ((False, plain), (True, augmented)):
            record = run_record("er", 500, seed, final)
            record["config"]["benchmark"]["args"]["augment"] = augment
            record["run_id"] += f"-augment-{augment}"  # hand-made records: the id does not hash the config
            write_json_atomic(folder / f"er-{augment}-{seed}.json", record)
    table = {
        "benchmark": "synthetic",
        "sources": {"T": {"citation": "T"}},
        "values": [
            {"strategy": "er", "buffer_size": 500, "mean": 41.0, "source": "T", "benchmark_args": {"augment": True}},
            {"strategy": "er", "buffer_size": 500, "mean": 31.0, "source": "T", "benchmark_args": {"augment": False}},
        ],
    }
    path = tmp_path / "published.yaml"
    path.write_text(yaml.safe_dump(table))
    frame = build_report(folder, reference="er", published=path).published
    assert sorted(zip(frame["published_mean"], frame["mean"], frame["n"], strict=True)) == [
        (31.0, 31.0, 2),
        (41.0, 41.0, 2),
    ]
