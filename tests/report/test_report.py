"""Reports from hand-made run results."""

import math

import numpy as np
import pytest
from run_records import run_record
from scipy import stats

from clbench.cli import main
from clbench.report import build_report, write_report
from clbench.report.tables import to_latex, to_markdown
from clbench.results import write_json_atomic

SEEDS = (1231, 1232, 1233)


ER = {1231: 40.0, 1232: 42.0, 1233: 41.0}
METASP = {1231: 50.0, 1232: 49.0, 1233: 52.0}
TIE = {1231: 50.0, 1232: 49.0, 1233: 52.0}


def _influence():
    entry = {"positive": 3, "negative": 5, "histogram": {"edges": [0, 1, 2, 3, 4, 5], "counts": [1, 2, 3, 1, 1]}}
    return [
        {"task": 0, "meta_steps": 0, "S": entry, "P": entry, "SP": entry},
        {"task": 1, "meta_steps": 4, "S": entry, "P": entry, "SP": entry},
    ]


@pytest.fixture
def results(tmp_path):
    folder = tmp_path / "runs"
    for seed in SEEDS:
        write_json_atomic(folder / f"er{seed}.json", run_record("er", 500, seed, ER[seed]))
        write_json_atomic(
            folder / f"ms{seed}.json", run_record("metasp_rehsel", 500, seed, METASP[seed], influence=_influence())
        )
        write_json_atomic(folder / f"tie{seed}.json", run_record("metasp", 500, seed, TIE[seed]))
        write_json_atomic(folder / f"ft{seed}.json", run_record("finetune", 0, seed, 20.0 + seed % 2))
        write_json_atomic(folder / f"joint{seed}.json", run_record("joint", 0, seed, 80.0, joint=True))
    return folder


def test_t_statistics_equal_scipy(results):
    report = build_report(results)
    assert report.reference == "metasp_rehsel"
    row = report.tests.query("setting == 'class_il' and metric == 'Ainf' and strategy == 'er'").iloc[0]
    expected = stats.ttest_rel([METASP[s] for s in SEEDS], [ER[s] for s in SEEDS])
    assert row["t"] == pytest.approx(expected.statistic)
    assert row["p"] == pytest.approx(expected.pvalue)
    assert row["n_pairs"] == 3 and row["significant"]


def test_known_better_gets_a_bullet_and_a_tie_does_not(results):
    report = build_report(results)
    table = next(t for t in report.tables if t.setting == "class_il")
    assert table.significant.loc["er", (500, "Ainf")]
    assert not table.significant.loc["metasp", (500, "Ainf")]  # identical numbers: no test result
    tie = report.tests.query("setting == 'class_il' and metric == 'Ainf' and strategy == 'metasp'").iloc[0]
    assert math.isnan(tie["p"]) and not tie["significant"]
    markdown = to_markdown(table)
    er_line = next(line for line in markdown.splitlines() if line.startswith("| er "))
    assert "•" in er_line
    assert "•" not in next(line for line in markdown.splitlines() if line.startswith("| metasp "))


def test_a_strategy_significantly_better_than_the_reference_gets_a_circle(results):
    report = build_report(results, reference="er")
    row = report.tests.query("setting == 'class_il' and metric == 'Ainf' and strategy == 'metasp_rehsel'").iloc[0]
    assert row["p"] < 0.05 and row["t"] < 0 and row["reference_worse"] and not row["significant"]
    table = next(t for t in report.tables if t.setting == "class_il")
    assert table.reference_worse.loc["metasp_rehsel", (500, "Ainf")]
    assert not table.significant.loc["metasp_rehsel", (500, "Ainf")]
    markdown = to_markdown(table)
    line = next(line for line in markdown.splitlines() if line.startswith("| metasp_rehsel "))
    assert "◦" in line and "•" not in line
    assert "◦ significantly worse" in markdown
    assert "$^\\circ$" in to_latex(table)


def test_cells_are_mean_plus_minus_sample_std_and_best_is_bold(results):
    table = next(t for t in build_report(results).tables if t.setting == "class_il")
    markdown = to_markdown(table)
    values = [METASP[s] for s in SEEDS]
    expected = f"{np.mean(values):.2f}±{np.std(values, ddof=1):.2f}"
    assert f"**{expected}**" in markdown  # MetaSP+RehSel ties metasp on A-infinity; both best
    assert table.best.loc["metasp_rehsel", (500, "Ainf")] and not table.best.loc["er", (500, "Ainf")]


def test_reference_rows_show_a_final_only_and_are_not_ranked(results):
    table = next(t for t in build_report(results).tables if t.setting == "class_il")
    assert list(table.mean.index[:2]) == ["finetune", "joint"]
    assert table.mean.loc["joint", (500, "Ainf")] == 80.0
    assert math.isnan(table.mean.loc["finetune", (500, "A1")])
    assert not table.best.loc["joint", (500, "Ainf")]  # the upper bound is not a competitor


def test_a_strategy_without_buffer_other_than_the_bounds_shows_every_metric_and_is_ranked(results):
    # LwF and EWC have no buffer: they were shown like Fine-tune (A-infinity only) and never ranked.
    for seed in SEEDS:
        write_json_atomic(results / f"lwf{seed}.json", run_record("lwf", 0, seed, 60.0 + seed % 2))
    table = next(t for t in build_report(results).tables if t.setting == "class_il")
    assert table.mean.loc["lwf", (500, "A1")] == pytest.approx((90 + 60.5 + 5) / 2, abs=0.6)
    assert table.best.loc["lwf", (500, "Ainf")]  # above every buffered row here
    assert math.isnan(table.mean.loc["finetune", (500, "A1")])


def test_latex_is_booktabs_and_balanced(results):
    tex = to_latex(build_report(results).tables[0])
    for rule in ("\\toprule", "\\midrule", "\\bottomrule"):
        assert tex.count(rule) == 1
    assert tex.count("{") == tex.count("}")
    assert tex.count("\\begin{") == tex.count("\\end{")
    assert "$^\\bullet$" in tex and "\\textbf{" in tex
    body = tex[tex.index("\\midrule") : tex.index("\\bottomrule")]
    columns = {line.count("&") for line in body.splitlines() if "&" in line}
    assert columns == {4}


def test_different_protocols_are_never_pooled(results):
    write_json_atomic(results / "long.json", run_record("er", 500, 1231, 99.0, epochs=50))
    report = build_report(results)
    protocols = {t.protocol_id for t in report.tables}
    assert len(protocols) == 2
    main_table = next(
        t
        for t in report.tables
        if t.setting == "class_il" and "er" in t.mean.index and t.n.loc["er", (500, "Ainf")] == 3
    )
    assert main_table.mean.loc["er", (500, "Ainf")] == pytest.approx(np.mean(list(ER.values())))
    assert "5 epochs/task" in main_table.protocol
    assert "avalanche data path, fp32" in main_table.protocol


def test_protocols_that_differ_in_weight_decay_say_so(results):
    decayed = run_record("er", 500, 1231, 45.0)
    decayed["config"]["training"]["weight_decay"] = 1e-4
    decayed["run_id"] += "-wd"
    write_json_atomic(results / "er_wd.json", decayed)
    lines = {t.protocol for t in build_report(results).tables}
    assert len(lines) == 2
    assert sum("weight decay 0.0001" in line for line in lines) == 1


def test_missing_seeds_are_reported(results):
    (results / "er1233.json").unlink()
    table = next(t for t in build_report(results).tables if t.setting == "class_il")
    assert any(note.startswith("er (M=500): 2 seeds, missing 1233") for note in table.notes)
    assert table.n.loc["er", (500, "Ainf")] == 2


def test_untested_strategies_are_named_with_their_memory_size(results):
    write_json_atomic(results / "er1231_m200.json", run_record("er", 200, 1231, 30.0))
    write_json_atomic(results / "ms1231_m200.json", run_record("metasp_rehsel", 200, 1231, 35.0))
    table = next(t for t in build_report(results).tables if t.setting == "class_il")
    assert "no t-test (fewer than two paired seeds) for: er (M=200)" in table.notes
    assert any(note.startswith("er (M=200): 1 seed, missing 1232, 1233") for note in table.notes)


def test_malformed_files_are_skipped_by_name(results, capsys):
    (results / "broken.json").write_text("{not json")
    (results / "partial.json").write_text('{"schema_version": 1, "run_id": "x"}')
    out = results.parent / "report"
    assert main(["report", str(results), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "broken.json" in captured.err and "partial.json" in captured.err
    assert "metasp_rehsel" in captured.out
    assert (out / "report.md").is_file() and (out / "ttests.csv").is_file()


def test_figures_and_files_are_written(results, tmp_path):
    written = write_report(build_report(results), tmp_path / "out")
    names = {p.name for p in written}
    assert any(n.endswith("_curve.png") for n in names) and any(n.endswith("_curve.pdf") for n in names)
    assert any(n.endswith("_matrix.png") for n in names)
    assert any(n.endswith("_influence.png") for n in names)
    assert {"metrics_long.csv", "summary.csv", "ttests.csv", "report.md"} <= names
    assert all(p.stat().st_size > 0 for p in written)


def test_curves_are_titled_by_setting_and_a_rebuild_removes_figures_it_no_longer_makes(results, tmp_path):
    from clbench.report.figures import curve_title

    assert curve_title("split_cifar10", "class_il", 500) != curve_title("split_cifar10", "task_il", 500)
    assert curve_title("split_cifar10", "task_il", 500) == "split_cifar10, task-IL, M=500"
    out = tmp_path / "out"
    write_report(build_report(results), out)
    leftover = out / "figures" / "split_cifar10_gone_class_il_M500_curve.png"
    leftover.write_bytes(b"an earlier build's figure")
    written = write_report(build_report(results), out)
    assert not leftover.exists()
    assert all(p.exists() for p in written)


def test_a_rebuilt_report_writes_the_same_figure_bytes(results, tmp_path):
    from clbench.report import figures

    runs = build_report(results).collection.runs
    first, second = (figures.learning_curves(runs, tmp_path / name) for name in ("a", "b"))
    pdfs = [(a.read_bytes(), b.read_bytes()) for a, b in zip(first, second, strict=True) if a.suffix == ".pdf"]
    assert pdfs and all(a == b for a, b in pdfs)


def test_runs_that_evaluated_the_seen_tasks_only_pool_with_the_others_and_plot(tmp_path):
    folder = tmp_path / "runs"
    for seed in SEEDS:
        record = run_record("er", 500, seed, ER[seed])
        if seed == SEEDS[0]:
            record["config"]["training"]["eval_tasks"] = "seen"
            for setting in ("class_il", "task_il"):
                record["accuracy"][setting][0][1] = None
        write_json_atomic(folder / f"er{seed}.json", record)
    report = build_report(folder)
    (table,) = [t for t in report.tables if t.setting == "class_il"]
    assert table.n.loc["er", (500, "Ainf")] == len(SEEDS)
    written = write_report(report, tmp_path / "out")
    assert any(p.name.endswith("_matrix.png") for p in written)


def test_varying_strategy_arguments_give_separate_rows(tmp_path):
    folder = tmp_path / "runs"
    for seed in SEEDS:
        for selection, value in (("random", 45.0), ("rehsel", 50.0)):
            record = run_record("metasp_rehsel", 500, seed, value + seed % 3, args={"selection": selection})
            record["run_id"] += selection
            write_json_atomic(folder / f"{selection}{seed}.json", record)
    report = build_report(folder, reference="metasp_rehsel(selection=rehsel)")
    assert set(report.tables[0].mean.index) == {"metasp_rehsel(selection=random)", "metasp_rehsel(selection=rehsel)"}


def test_an_argument_left_out_at_its_default_is_labelled_by_its_default(tmp_path):
    folder = tmp_path / "runs"
    defaults = {"memory": "class_balanced", "subsample": 50}
    for seed in SEEDS:
        for args, value in (({"subsample": 50}, 45.0), ({"memory": "reservoir", "subsample": 50}, 50.0)):
            record = run_record("mir", 500, seed, value + seed % 3, args=args)
            if seed != SEEDS[0]:  # the first seed's files predate recorded defaults
                record["strategy_defaults"] = defaults
            write_json_atomic(folder / f"{len(args)}{seed}.json", record)
    report = build_report(folder, reference="mir(memory=reservoir)")
    assert set(report.tables[0].mean.index) == {"mir(memory=class_balanced)", "mir(memory=reservoir)"}


def test_an_argument_added_after_a_file_was_written_is_labelled_by_its_default(tmp_path):
    # The older files record the defaults of their day, without the option added since at
    # its default (so their run ids did not change); a newer file records it.
    folder = tmp_path / "runs"
    for seed in SEEDS:
        old = run_record("er", 500, seed, 40.0 + seed % 3, args={"replay_forward": "separate"})
        old["strategy_defaults"] = {"replay_forward": "joint"}
        new = run_record(
            "er", 500, seed, 42.0 + seed % 3, args={"replay_forward": "separate", "memory_update": "every_batch"}
        )
        new["strategy_defaults"] = {"replay_forward": "joint", "memory_update": "after_task"}
        write_json_atomic(folder / f"old{seed}.json", old)
        write_json_atomic(folder / f"new{seed}.json", new)
    report = build_report(folder, reference="er(memory_update=every_batch)")
    assert set(report.tables[0].mean.index) == {"er(memory_update=after_task)", "er(memory_update=every_batch)"}
    assert all(args["memory_update"] in ("after_task", "every_batch") for args in report.collection.runs["arguments"])


def test_an_argument_added_after_an_older_revision_ran_is_labelled_by_its_default(tmp_path):
    # Revision 1 ran before the option existed; revision 2's files record it at its default
    # and one variant sets it. Revision 1's runs ran that default, and are labelled so.
    folder = tmp_path / "runs"
    for seed in SEEDS:
        old = run_record("gem", 500, seed, 19.0 + seed % 3)
        old["config"]["strategy_revision"], old["strategy_defaults"] = 1, {"memory_strength": 0.5}
        new = run_record("gem", 500, seed, 20.0 + seed % 3)
        new["config"]["strategy_revision"] = 2
        new["strategy_defaults"] = {"memory_strength": 0.5, "reference_bn_stats": "update"}
        variant = run_record("gem", 500, seed, 18.0 + seed % 3, args={"reference_bn_stats": "frozen"})
        variant["config"]["strategy_revision"], variant["strategy_defaults"] = 2, new["strategy_defaults"]
        for name, record in (("old", old), ("new", new), ("variant", variant)):
            record["run_id"] = f"{name}{seed}"
            write_json_atomic(folder / f"{name}{seed}.json", record)
    labels = set(build_report(folder, reference="gem(reference_bn_stats=frozen)@r2").tables[0].mean.index)
    assert labels == {
        "gem(reference_bn_stats=update)@r1",
        "gem(reference_bn_stats=update)@r2",
        "gem(reference_bn_stats=frozen)@r2",
    }


def test_the_cost_of_each_strategy_is_the_median_and_range_of_its_runs_seconds(tmp_path):
    folder = tmp_path / "runs"
    for seed, seconds in zip(SEEDS, (100.0, 300.0, 200.0), strict=True):
        record = run_record("er", 500, seed, 40.0)
        record["train_seconds"], record["eval_seconds"] = [seconds / 2, seconds / 2], [5.0, 6.0]
        write_json_atomic(folder / f"er{seed}.json", record)
    report = build_report(folder)
    (row,) = report.cost.to_dict("records")
    assert (row["strategy"], row["runs"], row["train_median"], row["train_min"], row["train_max"]) == (
        "er",
        3,
        200.0,
        100.0,
        300.0,
    )
    assert row["eval_median"] == 11.0
    write_report(report, tmp_path / "out", figures=False)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## Cost" in text and "200 [100-300]" in text
    assert (tmp_path / "out" / "cost.csv").is_file()


def test_unknown_reference_and_format_are_one_line_errors(results, capsys):
    assert main(["report", str(results), "--reference", "nope"]) == 2
    assert "unknown reference strategy 'nope'; valid choices: er, finetune" in capsys.readouterr().err
    assert main(["report", str(results), "--format", "html"]) == 2
    assert "unknown report format 'html'; valid choices: md, tex, csv" in capsys.readouterr().err


def test_arguments_other_than_the_defaults_are_noted_under_each_table(tmp_path):
    from clbench.config import config_to_dict
    from clbench.training import STRATEGIES

    folder = tmp_path / "runs"
    er_defaults = config_to_dict(STRATEGIES.get("er").args())
    joint_defaults = config_to_dict(STRATEGIES.get("joint").args())
    for seed in SEEDS:
        er = run_record("er", 500, seed, ER[seed], args=er_defaults)
        joint = run_record("joint", 0, seed, 80.0, args={"epochs": 5}, joint=True)
        er["strategy_defaults"], joint["strategy_defaults"] = er_defaults, joint_defaults
        write_json_atomic(folder / f"er{seed}.json", er)
        write_json_atomic(folder / f"j{seed}.json", joint)
        # a file without recorded defaults (written before they were) lists all its arguments
        write_json_atomic(folder / f"x{seed}.json", run_record("mystery", 500, seed, 30.0, args={"depth": 2}))
    report = build_report(folder, reference="er")
    note = next(n for n in report.tables[0].notes if n.startswith("arguments"))
    assert note == "arguments other than the defaults: joint (epochs=5); mystery (depth=2)"
    assert note in to_markdown(report.tables[0])


def test_heatmaps_number_tasks_from_one_with_readable_annotations(results, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from clbench.report import figures

    seen = []
    real_close = plt.close

    def keep_axes(figure):
        seen.append(figure.axes[0])
        real_close(figure)

    monkeypatch.setattr(plt, "close", keep_axes)
    figures.heatmaps(build_report(results).collection.runs, results.parent / "heat")
    axis = seen[0]
    n = len(axis.get_yticks())
    assert [t.get_text() for t in axis.get_yticklabels()] == [str(k) for k in range(1, n + 1)]
    assert [t.get_text() for t in axis.get_xticklabels()] == [str(k) for k in range(1, n + 1)]
    for text in axis.texts:  # dark text on the light (high) end of viridis
        assert (text.get_color() == "black") == (float(text.get_text()) >= 60)


def test_a_protocol_without_the_reference_s_runs_names_it_instead_of_the_marks(results):
    decayed = run_record("er", 500, 1231, 45.0)
    decayed["config"]["training"]["weight_decay"] = 1e-4
    decayed["run_id"] += "-wd"
    write_json_atomic(results / "er_wd.json", decayed)
    tables = build_report(results, reference="metasp_rehsel").tables
    lone = next(t for t in tables if "weight decay" in t.protocol and t.setting == "class_il")
    assert lone.notes[0] == "no t-tests: the reference strategy metasp_rehsel has no runs here"
    assert not any(note.startswith("• reference") for note in lone.notes)


def test_buffer_purity_gets_its_section_and_csv(tmp_path):
    from clbench.report import write_report

    folder = tmp_path / "runs"
    for seed, purities in ((1231, [0.6, 0.8]), (1232, [0.8, 0.6])):
        record = run_record("er", 500, seed, 40.0)
        record["buffer_purity"] = [{"task": t, "held": 500, "purity": p} for t, p in enumerate(purities)]
        write_json_atomic(folder / f"er{seed}.json", record)
        tensors = run_record("der", 500, seed, 41.0)
        tensors["buffer_purity"] = [{"task": t, "held": None, "purity": None} for t in range(2)]
        write_json_atomic(folder / f"der{seed}.json", tensors)
    write_report(build_report(folder, reference="er"), tmp_path / "r", formats=("md", "csv"), figures=False)
    text = (tmp_path / "r" / "report.md").read_text().split("## Buffer purity")[1]
    er_line = next(line for line in text.splitlines() if line.startswith("| er "))
    assert "70.0±14.1" in er_line
    der_line = next(line for line in text.splitlines() if line.startswith("| der "))
    assert der_line.count("–") == 2
    assert (tmp_path / "r" / "purity.csv").is_file()


def test_a_strategy_s_own_weighting_audit_gets_its_purity_column(tmp_path):
    from clbench.report import write_report

    folder = tmp_path / "runs"
    for seed, aurocs in ((1231, [None, 0.6, 0.8]), (1232, [None, 0.7, 0.7])):
        record = run_record("metasp", 500, seed, 40.0)
        record["buffer_purity"] = [
            {"task": t, "held": 500, "purity": 0.6, "weighting": {"scored": 0 if a is None else 9, "auroc": a}}
            for t, a in enumerate(aurocs)
        ]
        write_json_atomic(folder / f"metasp{seed}.json", record)
        plain = run_record("er", 500, seed, 41.0)
        plain["buffer_purity"] = [{"task": t, "held": 500, "purity": 0.6} for t in range(3)]
        write_json_atomic(folder / f"er{seed}.json", plain)
    write_report(build_report(folder, reference="er"), tmp_path / "r", formats=("md", "csv"), figures=False)
    text = (tmp_path / "r" / "report.md").read_text().split("## Buffer purity")[1]
    assert "weighting AUROC" in text
    metasp_line = next(line for line in text.splitlines() if line.startswith("| metasp "))
    assert metasp_line.rstrip(" |").endswith("0.700±0.000")  # each run's mean over its scored tasks
    er_line = next(line for line in text.splitlines() if line.startswith("| er "))
    assert er_line.rstrip(" |").endswith("–")


SEPARATE = {"replay_forward": "separate"}


def test_the_reference_is_found_by_what_it_is_in_a_protocol_that_labels_it_otherwise(tmp_path):
    folder = tmp_path / "runs"
    values = [(40.0, 30.0, 45.0), (42.0, 31.0, 46.0), (41.0, 29.0, 47.5)]
    for seed, (separate, joint, other) in zip(SEEDS, values, strict=True):
        write_json_atomic(folder / f"a{seed}.json", run_record("er", 500, seed, separate, args=SEPARATE))
        write_json_atomic(
            folder / f"b{seed}.json", run_record("er", 500, seed, joint, args={"replay_forward": "joint"})
        )
        for name, value in (("er", separate), ("er_ace", other)):  # another protocol: one ER only, labelled "er"
            record = run_record(name, 500, seed, value, args=SEPARATE if name == "er" else {})
            record["config"]["training"]["weight_decay"] = 1e-4
            record["run_id"] += "-wd"
            write_json_atomic(folder / f"{name}{seed}-wd.json", record)
    report = build_report(folder, reference="er(replay_forward=separate)")
    decayed = next(t for t in report.tables if "weight decay" in t.protocol and t.setting == "class_il")
    assert decayed.notes[0].startswith("• reference er (= er(replay_forward=separate)) significantly better")
    assert decayed.reference_worse.loc["er_ace", (500, "Ainf")]  # paired over the three seeds: er_ace is ahead


def test_a_strategy_without_its_own_lr_is_labelled_with_the_protocol_s(tmp_path):
    folder = tmp_path / "runs"
    for seed in SEEDS:
        write_json_atomic(folder / f"plain{seed}.json", run_record("icarl", 200, seed, 35.0))
        own = run_record("icarl", 200, seed, 36.0)
        own["config"]["strategy"]["training"] = {"lr": 0.01}
        own["run_id"] += "-lr"
        write_json_atomic(folder / f"own{seed}.json", own)
    labels = set(build_report(folder, reference="icarl(training.lr=0.1)").metrics["strategy"])
    assert labels == {"icarl(training.lr=0.01)", "icarl(training.lr=0.1)"}  # was training.lr=None
