"""The report reads run files only: no torch, no strategy code, revisions kept apart."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from clbench.report.collect import changed_arguments, collect

RUNS = Path(__file__).resolve().parents[2] / "results" / "online_cifar10" / "runs"


def _copy_runs(folder: Path, pattern: str, replay_forward: str | None = None) -> list[Path]:
    """Copy committed bf16 runs; ``replay_forward`` keeps only ER runs with that forward (and MIR's memory update)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [p for p in sorted(RUNS.glob(pattern)) if _precision(p) == "bf16"]
    if replay_forward is not None:
        wanted = {"replay_forward": replay_forward, "memory_update": "after_task"}
        defaults = {"replay_forward": "joint", "memory_update": "after_task"}
        paths = [p for p in paths if _er_args(p, defaults) == wanted]
    return [Path(shutil.copy(p, folder)) for p in paths]


def _precision(path: Path) -> str:
    return str(json.loads(path.read_text())["config"]["training"].get("precision"))


def _er_args(path: Path, defaults: dict[str, str]) -> dict[str, str]:
    args = json.loads(path.read_text())["config"]["strategy"]["args"]
    return {key: args.get(key, default) for key, default in defaults.items()}


def test_clbench_report_imports_no_torch(tmp_path):
    for strategy in ("finetune", "er", "mir", "der"):  # rows with and without a buffer, figures included
        _copy_runs(tmp_path / "runs", f"split_cifar10-{strategy}-*-s123[12]-*.json")
    script = (
        "import sys\nfrom clbench.cli import main\n"
        f"code = main(['report', {str(tmp_path / 'runs')!r}, '--reference', 'finetune',"
        f" '--out', {str(tmp_path / 'r')!r}])\n"
        "assert code == 0, code\nprint(sorted(m for m in ('torch', 'avalanche') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "r" / "report.md").is_file()


def test_two_revisions_of_one_strategy_are_two_rows(tmp_path):
    (old,) = _copy_runs(tmp_path, "split_cifar10-er-m500-s1231-*.json", replay_forward="separate")
    newer = json.loads(old.read_text())
    newer["config"]["strategy_revision"] = 2
    newer["run_id"] = "split_cifar10-er-m500-s1231-newer"
    (tmp_path / "newer.json").write_text(json.dumps(newer))
    strategies = set(collect(tmp_path).runs["strategy"])
    assert strategies == {"er@r1", "er@r2"}


def test_one_revision_keeps_the_plain_name(tmp_path):
    _copy_runs(tmp_path, "split_cifar10-er-m500-*.json", replay_forward="separate")
    assert set(collect(tmp_path).runs["strategy"]) == {"er"}


def test_changed_arguments_come_from_the_recorded_defaults():
    defaults = {"task_balanced": False, "replay_forward": "joint"}
    assert changed_arguments({"task_balanced": False, "replay_forward": "separate"}, defaults) == (
        'replay_forward="separate"'
    )
    assert changed_arguments({"task_balanced": False}, None) == "task_balanced=false"
