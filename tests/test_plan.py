"""``clbench run --dry-run``: each run's status, and the time left estimated from finished seeds."""

import json
import re
import time

from tiny_configs import TWO_SEED_GRID

from clbench.claims import try_claim
from clbench.cli import main
from clbench.config import load_experiment
from clbench.grid import expand_grid
from clbench.plan import plan_grid, plan_lines


def _finished_grid(tmp_path, capsys):
    """Seeds 1 and 2 of fine-tuning run, their files set to 600 s and 1200 s of training + evaluation."""
    config = tmp_path / "c.yaml"
    config.write_text(TWO_SEED_GRID)
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 0
    for path, seconds in zip(sorted(out.glob("*.json")), (600.0, 1200.0), strict=True):
        record = json.loads(path.read_text())
        record["train_seconds"] = [seconds - 100.0]
        record["eval_seconds"] = [100.0]
        path.write_text(json.dumps(record))
    capsys.readouterr()
    return config, out


def test_a_run_to_do_is_estimated_by_the_median_of_its_finished_seeds(tmp_path, capsys):
    config, out = _finished_grid(tmp_path, capsys)
    runs = expand_grid(load_experiment(config, ["seeds=[1, 2, 3]"]))
    plan = {item.run_id.split("-")[3]: item for item in plan_grid(runs, out)}
    assert [plan[s].status for s in ("s1", "s2", "s3")] == ["finished", "finished", "to-run"]
    assert (plan["s1"].seconds, plan["s2"].seconds) == (600.0, 1200.0)
    assert (plan["s3"].seconds, plan["s3"].finished_seeds) == (900.0, 2)


def test_another_strategy_is_never_the_estimate_and_a_live_claim_is_running(tmp_path, capsys):
    config, out = _finished_grid(tmp_path, capsys)
    overrides = ["seeds=[1, 2, 3]", "strategies=[finetune, er]", "buffer_sizes=[8]"]
    runs = expand_grid(load_experiment(config, overrides))
    running = next(run for run in runs if run.strategy.name == "finetune" and run.seed == 3)
    lock = out / f"{running.run_id}.lock"
    assert try_claim(lock)
    host, pid, _ = lock.read_text().split()
    lock.write_text(f"{host} {pid} {time.time() - 600:.0f}\n")  # claimed ten minutes ago, heartbeat now
    plan = {(run.strategy.name, run.seed): item for run, item in zip(runs, plan_grid(runs, out), strict=True)}
    assert plan["finetune", 3].status == "running"
    assert 599 <= plan["finetune", 3].running_for < 660  # the start is recorded to the second
    line = plan_lines([plan["finetune", 3]])[0]
    assert re.search(rf"running   for 10 min \(held by {host} pid {pid}, heartbeat \d+ s ago\); ~15 min", line)
    assert line.endswith("(median of 2 finished seed(s))")
    assert all(plan["er", seed].seconds is None for seed in (1, 2, 3))


def test_a_part_of_the_grid_is_estimated_from_the_seeds_outside_it(tmp_path, capsys):
    config, out = _finished_grid(tmp_path, capsys)
    assert main(["run", str(config), "--out", str(out), "--dry-run", "--set", "seeds=[3]"]) == 0
    line, summary = capsys.readouterr().out.splitlines()
    assert line.endswith("to-run    ~15 min (median of 2 finished seed(s))")
    assert summary.startswith("0 finished, 0 running, 1 to run; 1 of those to run take about 15 min")
    other = ["--set", "seeds=[3]", "--set", "strategies=[er]"]
    assert main(["run", str(config), "--out", str(out), "--dry-run", *other]) == 0
    summary = capsys.readouterr().out.splitlines()[-1]
    assert summary == "0 finished, 0 running, 1 to run; none has a finished seed to go by"


def test_the_dry_run_prints_each_estimate_and_the_time_left(tmp_path, capsys):
    config, out = _finished_grid(tmp_path, capsys)
    args = ["run", str(config), "--out", str(out), "--dry-run", "--set", "seeds=[1, 2, 3]"]
    assert main([*args, "--set", "strategies=[finetune, er]", "--set", "buffer_sizes=[8]"]) == 0
    *lines, summary = capsys.readouterr().out.splitlines()
    costs = {}
    for line in lines:
        run_id, _status, cost = line.split(maxsplit=2)
        _benchmark, strategy, _memory, seed, _digest = run_id.split("-")
        costs[strategy, seed] = cost
    assert costs["finetune", "s1"] == "took 10 min"
    assert costs["finetune", "s3"] == "~15 min (median of 2 finished seed(s))"
    assert costs["er", "s3"] == "no finished seed to go by"
    assert summary == (
        "2 finished, 0 running, 4 to run; 1 of those to run take about 15 min of run time at their "
        "finished seeds' pace, 3 have no finished seed to go by"
    )
