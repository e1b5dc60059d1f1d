"""`clbench influence-agreement` end to end on the synthetic benchmark."""

import pandas as pd

from clbench.cli import main


def test_agreement_reports_every_metasp_task_and_saves_checkpoints(tmp_path):
    out = tmp_path / "agree"
    args = [
        "influence-agreement",
        "--set=benchmark=synthetic",
        "--set=benchmark_args={n_tasks: 3, n_classes: 6, train_per_class: 16, test_per_class: 4}",
        "--set=backbone=mlp",
        "--set=backbone_args={hidden: [16]}",
        "--set=buffer_size=12",
        "--set=batch_size=4",
        "--set=batches_per_task=2",
        "--set=epochs=2",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    table = pd.read_csv(out / "agreement.csv")
    assert table["task"].tolist() == [2, 3]  # every task with MetaSP steps
    assert table.filter(like="sign_agreement").to_numpy().min() >= 0.0
    assert table.filter(like="sign_agreement").to_numpy().max() <= 1.0
    assert sorted(p.name for p in out.glob("checkpoint_task*.pt")) == ["checkpoint_task2.pt", "checkpoint_task3.pt"]
