"""Two clbench processes on one output folder share the grid; stale claims are taken over."""

import json
import subprocess
import sys

from clbench.claims import release, try_claim
from clbench.cli import main

GRID = """\
name: shared
benchmarks: [{name: synthetic, args: {n_tasks: 2, n_classes: 4, train_per_class: 16, test_per_class: 4}}]
strategies: [finetune]
seeds: [1, 2, 3, 4, 5, 6]
backbone: {name: mlp, args: {hidden: [8]}}
training: {epochs: 3, batch_size: 4}
device: cpu
"""


def test_two_processes_compute_each_run_once(tmp_path):
    (tmp_path / "c.yaml").write_text(GRID)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "clbench.cli", "run", str(tmp_path / "c.yaml"), "--out", str(out), "--no-progress"]
    both = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in both]
    assert all(p.returncode == 0 for p in both)
    finished = [int(text.split(" run(s) finished")[0].split()[-1]) for text in outputs]
    assert sum(finished) == 6  # each run computed by exactly one of the two
    results = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert len(results) == 6
    assert not list(out.glob("*.lock"))


def test_a_claim_of_a_dead_process_is_taken_over(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    lock = tmp_path / "run.lock"
    lock.write_text(f"{socket.gethostname()} {dead.pid}\n")
    assert try_claim(lock)
    assert not try_claim(lock)  # now held by this (live) process
    release(lock)
    assert not lock.exists()


def test_a_live_claim_skips_the_run(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(GRID.replace("[1, 2, 3, 4, 5, 6]", "[1]"))
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(out), "--dry-run"]) == 0
    (run_id,) = [line.split()[0] for line in capsys.readouterr().out.splitlines()[:-1]]
    out.mkdir()
    assert try_claim(out / f"{run_id}.lock")
    # the grid ends without the run: it says so and exits non-zero (it ended 0 before)
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(out), "--no-progress"]) == 1
    printed = capsys.readouterr()
    assert "claimed or finished by another process" in printed.out
    assert f"the grid ended without 1 result(s), claimed by another process: {run_id}" in printed.err
    assert not (out / f"{run_id}.json").exists()


def test_a_claim_of_another_host_ends_the_grid_incomplete_and_non_zero(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(GRID.replace("[1, 2, 3, 4, 5, 6]", "[1, 2]"))
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(out), "--dry-run"]) == 0
    first = capsys.readouterr().out.splitlines()[0].split()[0]
    out.mkdir()
    (out / f"{first}.lock").write_text("a-compute-node-that-died 4242\n")
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(out), "--no-progress"]) == 1
    printed = capsys.readouterr()
    assert "1 run(s) finished, 1 skipped, 0 failed" in printed.out
    assert "final accuracy of the grid's finished runs:" in printed.out and "next: clbench report" in printed.out
    assert f"the grid ended without 1 result(s), claimed by another process: {first}" in printed.err


def test_a_claim_whose_heartbeat_stopped_is_taken_over_from_any_host(tmp_path):
    import os
    import time

    from clbench.claims import STALE_AFTER_SECONDS, is_claimed

    lock = tmp_path / "run.lock"
    lock.write_text("a-compute-node-that-died 4242 1700000000\n")
    assert is_claimed(lock) and not try_claim(lock)  # a fresh heartbeat of another host: left alone
    old = time.time() - STALE_AFTER_SECONDS - 5
    os.utime(lock, (old, old))
    assert not is_claimed(lock)
    assert try_claim(lock)  # taken over: it stayed forever before
    release(lock)


def test_the_heartbeat_keeps_a_running_claim_fresh(tmp_path):
    import os
    import time

    from clbench.claims import heartbeat, read_claim

    lock = tmp_path / "run.lock"
    assert try_claim(lock)
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with heartbeat(lock, every=0.05):
        time.sleep(0.3)
    info = read_claim(lock)
    assert info is not None and info.heartbeat_age < 5 and info.pid == os.getpid()
    release(lock)


def test_a_claim_in_the_older_two_field_form_is_still_read(tmp_path):
    import socket

    from clbench.claims import read_claim

    lock = tmp_path / "run.lock"
    lock.write_text(f"{socket.gethostname()} 4242\n")
    info = read_claim(lock)
    assert (info.host, info.pid, info.started) == (socket.gethostname(), 4242, None)


def test_the_incomplete_grid_names_the_holder_and_its_heartbeat(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(GRID.replace("[1, 2, 3, 4, 5, 6]", "[1]"))
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(out), "--dry-run"]) == 0
    (run_id,) = [line.split()[0] for line in capsys.readouterr().out.splitlines()[:-1]]
    out.mkdir()
    (out / f"{run_id}.lock").write_text("node7 4242 1700000000\n")
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(out), "--dry-run"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert f"{run_id}  running   for" in line and "(held by node7 pid 4242, heartbeat " in line
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(out), "--no-progress"]) == 1
    assert f"{run_id} (node7 pid 4242, heartbeat " in capsys.readouterr().err
