"""Ctrl-C and kill -9 of a `--jobs 2` grid: workers stop with it, finished results stay."""

import os
import signal
import subprocess
import sys
import time

from clbench.results import is_finished

GRID = """\
name: slow
benchmarks: [{name: synthetic, args: {n_tasks: 2, n_classes: 4, train_per_class: 256, test_per_class: 4}}]
strategies: [finetune]
seeds: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
backbone: {name: mlp, args: {hidden: [256]}}
training: {epochs: 20, batch_size: 4}  # about 4 s a run: the grid outlasts the test
device: cpu
"""


def _as_from_a_terminal():
    # A shell's background jobs (`... &`, as CI may run the suite) ignore SIGINT, and children
    # inherit that; a grid started from a terminal has the default handler.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(tmp_path, until="*.json", count=1):
    """Start the grid; return once ``count`` files match ``until`` in its output (a finished run, by default)."""
    (tmp_path / "c.yaml").write_text(GRID)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "clbench.cli", "run", str(tmp_path / "c.yaml"), "--out", str(out)]
    process = subprocess.Popen(
        [*command, "--jobs", "2", "--no-progress"], start_new_session=True, preexec_fn=_as_from_a_terminal
    )
    deadline = time.time() + 300
    while len(list(out.glob(until))) < count and time.time() < deadline:
        time.sleep(0.5)
    assert len(list(out.glob(until))) >= count, f"fewer than {count} {until} in the output"
    return process, out


def _workers_of(pid):
    children = subprocess.run(["pgrep", "-f", "multiprocessing.spawn"], capture_output=True, text=True).stdout
    return [int(p) for p in children.split() if _parent_of(int(p)) == pid]


def _parent_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return _parent_of(pid) != -1


def test_ctrl_c_stops_the_workers_promptly_and_keeps_finished_results(tmp_path):
    process, out = _start(tmp_path)
    workers = _workers_of(process.pid)
    os.killpg(process.pid, signal.SIGINT)  # what the terminal sends to the whole group
    started = time.time()
    assert process.wait(timeout=60) == 130
    assert time.time() - started < 20  # the old parent waited for the workers to finish the grid
    time.sleep(1)
    assert not [w for w in workers if _alive(w)]
    assert all(is_finished(p) for p in out.glob("*.json"))
    assert len(list(out.glob("*.json"))) < 12
    assert not list(out.glob(".*.tmp")) and not list(out.glob("*.lock"))


def test_kill_9_of_the_parent_ends_its_workers(tmp_path):
    process, _ = _start(tmp_path, until="*.lock", count=2)  # both workers are up and running a run
    workers = _workers_of(process.pid)
    assert workers
    process.kill()
    process.wait()
    deadline = time.time() + 20
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.5)
    assert not [w for w in workers if _alive(w)]


def test_a_killed_worker_is_reported_its_runs_queued_again_and_the_grid_ends_complete(tmp_path):
    short = GRID.replace("seeds: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]", "seeds: [1, 2, 3]")
    (tmp_path / "c.yaml").write_text(short.replace("epochs: 20", "epochs: 4"))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "clbench.cli", "run", str(tmp_path / "c.yaml"), "--out", str(out)]
    process = subprocess.Popen(
        [*command, "--jobs", "2", "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + 300
    while not list(out.glob("*.lock")) and time.time() < deadline:
        time.sleep(0.2)
    workers = _workers_of(process.pid)
    assert workers
    os.kill(workers[0], signal.SIGKILL)
    output, _ = process.communicate(timeout=300)
    assert "a worker process died;" in output and "queued again" in output
    assert "Traceback" not in output
    assert process.returncode == 0, output
    assert sorted(p.name.split("-s")[1][0] for p in out.glob("*.json")) == ["1", "2", "3"]


def test_sigterm_of_an_inline_grid_releases_its_claim(tmp_path):
    # `kill` or Slurm's scancel: Python's default ended the process at once and left the claim.
    (tmp_path / "c.yaml").write_text(GRID)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "clbench.cli", "run", str(tmp_path / "c.yaml"), "--out", str(out)]
    process = subprocess.Popen([*command, "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(out.glob("*.lock")) and time.time() < deadline:
        time.sleep(0.2)
    assert list(out.glob("*.lock")), "no run was claimed"
    process.terminate()
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    assert not list(out.glob("*.lock")) and not list(out.glob(".*.tmp"))
    assert all(is_finished(p) for p in out.glob("*.json"))
