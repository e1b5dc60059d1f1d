"""`clbench bench all --preset tiny` on CPU: every section runs and the report names the device."""

from clbench.cli import main


def test_bench_all_tiny_writes_one_dated_report(tmp_path, capsys):
    assert main(["bench", "all", "--preset", "tiny", "--set", "device=cpu", "--out", str(tmp_path)]) == 0
    (report,) = tmp_path.glob("*/report.md")
    text = report.read_text()
    for section in (
        "Step: ER vs MetaSP, fp32",
        "Step: ER vs MetaSP, bf16",
        "Loop: online shape",
        "Eval: images",
        "Inverse-HVP",
    ):
        assert section in text
    assert "ewc_fisher_one_backward" in text and "ewc_fisher_vmap" in text
    assert "3 finished, 0 skipped, 0 failed" in text
    assert "failed:" not in text.replace("0 failed", "")
    assert "device `cpu`" in text


def test_bench_all_rejects_an_unknown_preset(tmp_path, capsys):
    assert main(["bench", "all", "--preset", "huge", "--out", str(tmp_path)]) == 2
    assert "unknown bench preset 'huge'; valid choices: tiny, full" in capsys.readouterr().err


def test_bench_eval_times_each_chunk_size(capsys):
    settings = ["device=cpu", "nf=4", "images=12", "chunks=[5, 12]", "repeats=1"]
    assert main(["bench", "eval", *[f"--set={setting}" for setting in settings]]) == 0
    table = capsys.readouterr().out.splitlines()[3:]
    assert [int(line.split("|")[1]) for line in table] == [5, 12]
    assert min(float(line.split("|")[3]) for line in table) == 1.0  # the fastest is the unit


def test_bench_eval_rejects_an_unknown_precision(capsys):
    assert main(["bench", "eval", "--set", "precision=fp16"]) == 2
    assert "bench eval: precision 'fp16'; valid choices: fp32, bf16" in capsys.readouterr().err
