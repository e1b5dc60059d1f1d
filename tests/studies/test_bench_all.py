"""`clbench bench all --preset tiny` on CPU: every section runs and the report names the device."""

from clbench.cli import main


def test_bench_all_tiny_writes_one_dated_report(tmp_path, capsys):
    assert main(["bench", "all", "--preset", "tiny", "--set", "device=cpu", "--out", str(tmp_path)]) == 0
    (report,) = tmp_path.glob("*/report.md")
    text = report.read_text()
    for section in ("Step: ER vs MetaSP, fp32", "Step: ER vs MetaSP, bf16", "Loop: online shape", "Inverse-HVP"):
        assert section in text
    assert "3 finished, 0 skipped, 0 failed" in text
    assert "failed:" not in text.replace("0 failed", "")
    assert "device `cpu`" in text


def test_bench_all_rejects_an_unknown_preset(tmp_path, capsys):
    assert main(["bench", "all", "--preset", "huge", "--out", str(tmp_path)]) == 2
    assert "unknown bench preset 'huge'; valid choices: tiny, full" in capsys.readouterr().err
