"""`--launcher slurm` on a real Slurm: the same results as inline, a cancelled task submitted again.

Runs where a Slurm answers ``sinfo`` (CI starts a single-node cluster with
``tools/slurm_cluster.sh start`` and sets CLBENCH_REQUIRE_SLURM=1, so there a missing
cluster fails instead of skipping); elsewhere skipped. Nothing here installs or starts
a system service.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clbench.results import load_result

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "experiments" / "quick.yaml"
# One CPU and no GPU a task fit any node; fp32 keeps a bf16-emulating CPU fast.
ON_THIS_NODE = ["--set", "slurm.cpus_per_task=1", "--set", "slurm.gpus_per_task=0", "--set", "training.precision=fp32"]


def _slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0


if not _slurm_answers():
    if os.environ.get("CLBENCH_REQUIRE_SLURM") == "1":
        raise RuntimeError("CLBENCH_REQUIRE_SLURM=1 but no Slurm answers sinfo (tools/slurm_cluster.sh start)")
    pytest.skip("no Slurm cluster answers sinfo here", allow_module_level=True)


def _clbench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "clbench", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _accuracies(folder: Path) -> dict[str, object]:
    return {path.name: load_result(path)["accuracy"] for path in folder.glob("*.json")}


def test_a_grid_through_slurm_writes_what_an_inline_run_writes(tmp_path):
    grid = [str(QUICK), "--set", "strategies=[er]", "--set", "seeds=[1231]", *ON_THIS_NODE]
    inline = _clbench("run", *grid, "--out", str(tmp_path / "inline"), "--no-progress")
    assert inline.returncode == 0, inline.stderr
    submitted = _clbench("run", *grid, "--out", str(tmp_path / "slurm"), "--launcher", "slurm")
    assert submitted.returncode == 0, submitted.stderr
    assert "submitted 1 run(s) to slurm" in submitted.stdout
    assert "runs: 0 pending, 0 running, 1 done" in submitted.stdout
    assert _accuracies(tmp_path / "slurm") == _accuracies(tmp_path / "inline")
    assert len(_accuracies(tmp_path / "slurm")) == 1


def _running_task(name: str, deadline: float) -> str:
    """The id of the job array's first task once Slurm runs it (ARRAY_TASK)."""
    while time.time() < deadline:
        listed = subprocess.run(["squeue", "-h", "-n", name, "-t", "R", "-o", "%i"], capture_output=True, text=True)
        if listed.stdout.strip():
            return listed.stdout.split()[0]
        time.sleep(0.2)
    raise AssertionError(f"no task of {name} ran within the deadline")


def test_a_cancelled_task_is_reported_and_the_same_command_submits_it_again(tmp_path):
    name = f"cancel{os.getpid()}"  # the job array's name: clbench-<experiment name>
    grid = [str(QUICK), "--set", f"name={name}", "--set", "strategies=[er]", "--set", "seeds=[1231, 1232]"]
    grid += [*ON_THIS_NODE, "--set", "slurm.array_parallelism=1", "--out", str(tmp_path / "out"), "--launcher", "slurm"]
    waiting = subprocess.Popen(
        [sys.executable, "-m", "clbench", "run", *grid],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    task = _running_task(f"clbench-{name}", time.time() + 120)
    subprocess.run(["scancel", task], check=True)  # the first task, while it runs; the second waits behind it
    stdout, stderr = waiting.communicate(timeout=600)
    assert waiting.returncode == 1, stderr
    assert f"job {task}: cancelled (Slurm state CANCELLED" in stdout + stderr
    assert len(_accuracies(tmp_path / "out")) == 1
    again = _clbench("run", *grid)
    assert again.returncode == 0, again.stderr
    assert "submitted 1 run(s) to slurm" in again.stdout
    assert len(_accuracies(tmp_path / "out")) == 2


def test_a_request_no_node_can_run_is_refused_before_submitting(tmp_path, capsys):
    from clbench.cli import main

    too_many = ["--set", "slurm.cpus_per_task=100000", "--set", "slurm.gpus_per_task=0"]
    assert main(["run", str(QUICK), *too_many, "--launcher", "slurm", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("clbench: error: slurm.cpus_per_task=100000: more than any node of partition")
    assert not list(tmp_path.glob("submitit/*"))  # nothing was submitted
