"""A synthetic grid through the CLI: files, shapes, resume and determinism."""

import json

import pytest
import torch
import yaml
from tiny_configs import TWO_SEED_GRID

from clbench.cli import main
from clbench.results import load_result

GRID = {
    "name": "e2e",
    "benchmarks": [
        {"name": "synthetic", "args": {"n_tasks": 2, "n_classes": 4, "train_per_class": 24, "test_per_class": 8}}
    ],
    "strategies": ["finetune", "er", "joint"],
    "buffer_sizes": [16],
    "seeds": [1231, 1232],
    "backbone": {"name": "mlp", "args": {"hidden": [16]}},
    "training": {"epochs": 2, "batch_size": 8, "replay_batch_size": 8},
    "device": "cpu",
}


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grid")
    config = folder / "grid.yaml"
    config.write_text(yaml.safe_dump(GRID))
    out = folder / "out"
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 0
    return config, out


def _results(out):
    return {p.name: load_result(p) for p in sorted(out.glob("*.json"))}


def test_grid_writes_one_file_per_run_with_both_matrices(grid_run):
    _, out = grid_run
    results = _results(out)
    assert len(results) == 6  # (finetune, joint) x 2 seeds + er x 1 buffer x 2 seeds
    assert (out / "experiment.resolved.yaml").is_file()
    for name, result in results.items():
        strategy = result["config"]["strategy"]["name"]
        assert name == f"{result['run_id']}.json"
        assert result["task_classes"] == [[0, 1], [2, 3]]
        rows = 1 if strategy == "joint" else 2
        for setting in ("class_il", "task_il"):
            matrix = result["accuracy"][setting]
            assert len(matrix) == rows and all(len(row) == 2 for row in matrix)
            assert all(0.0 <= value <= 100.0 for row in matrix for value in row)
            assert set(result["metrics"][setting]) == {"A1", "Ainf", "Am", "BWT"}
        assert result["config"]["buffer_size"] == (16 if strategy == "er" else 0)
        assert result["environment"]["avalanche"] == "0.6.0"
        # the CPU's instruction set is named: a run's last digits depend on it
        assert result["environment"]["device_name"].endswith(f"({torch.backends.cpu.get_cpu_capability()})")
        assert len(result["train_seconds"]) == rows
        if strategy == "er":  # the defaults the report compares arguments with, recorded with the run
            assert result["strategy_defaults"] == {
                "task_balanced": False,
                "replay_forward": "joint",
                "memory_update": "after_task",
                "purify": None,
            }


def test_task_il_is_never_below_class_il(grid_run):
    # Task-IL restricts the argmax to a subset containing the true class.
    for result in _results(grid_run[1]).values():
        for cil_row, til_row in zip(result["accuracy"]["class_il"], result["accuracy"]["task_il"], strict=True):
            for cil, til in zip(cil_row, til_row, strict=True):
                assert til >= cil


def test_unseen_tasks_score_zero_in_class_il(grid_run):
    for result in _results(grid_run[1]).values():
        if result["config"]["strategy"]["name"] != "joint":
            assert result["accuracy"]["class_il"][0][1] == 0.0


def test_rerun_skips_finished_runs_and_resumes_missing_ones(grid_run, capsys):
    config, out = grid_run
    before = {p.name: p.read_text() for p in out.glob("*.json")}
    victim = sorted(before)[0]
    (out / victim).write_text('{"truncated": ')  # an interrupted, partial file
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "1 run(s) finished, 5 skipped" in printed
    after = {p.name: p.read_text() for p in out.glob("*.json")}
    assert set(after) == set(before)
    for name in before:
        if name != victim:
            assert after[name] == before[name]
    assert json.loads(after[victim])["accuracy"] == json.loads(before[victim])["accuracy"]


def test_same_config_and_seed_give_the_same_numbers(grid_run, tmp_path):
    config, out = grid_run
    again = tmp_path / "again"
    assert main(["run", str(config), "--out", str(again), "--no-progress", "--set", "strategies=[er]"]) == 0
    for path in again.glob("*.json"):
        first, second = load_result(out / path.name), load_result(path)
        assert first["accuracy"] == second["accuracy"]


def test_different_seeds_differ(grid_run):
    results = [r for r in _results(grid_run[1]).values() if r["config"]["strategy"]["name"] == "er"]
    assert len(results) == 2
    assert results[0]["run_id"] != results[1]["run_id"]


def test_user_errors_exit_2_with_one_line(grid_run, capsys):
    config, out = grid_run
    assert main(["run", str(config), "--out", str(out), "--set", "strategies=[err]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "unknown strategy 'err'; valid choices:" in err and "er, " in err
    assert main(["run", str(config), "--set", "training.epoch=1"]) == 2
    assert "unknown key 'epoch'" in capsys.readouterr().err
    assert main(["run", str(config), "--set", "benchmarks.0.args.class_order=random"]) == 2
    assert "invalid value 'random'; valid choices: fixed, shuffle" in capsys.readouterr().err


def test_list_shows_registered_components(capsys):
    assert main(["list"]) == 0
    printed = capsys.readouterr().out
    for name in ("finetune", "er", "joint", "split_cifar10", "split_cifar100", "split_miniimagenet", "resnet18"):
        assert name in printed


def test_parallel_jobs_give_the_same_files(grid_run, tmp_path):
    config, out = grid_run
    parallel = tmp_path / "parallel"
    assert main(["run", str(config), "--out", str(parallel), "--no-progress", "--jobs", "2"]) == 0
    inline = {p.name: load_result(p) for p in out.glob("*.json")}
    jobs = {p.name: load_result(p) for p in parallel.glob("*.json")}
    assert set(jobs) == set(inline)
    for name, result in jobs.items():
        assert result["accuracy"] == inline[name]["accuracy"], name


CRASHY = """
from clbench.training import STRATEGIES
from clbench.strategies.finetune import build_finetune


@STRATEGIES.register("crashy", help="fails on seed 2")
def build(ctx, args):
    if ctx.seed == 2:
        raise RuntimeError("boom on seed 2")
    return build_finetune(ctx, args)
"""


@pytest.fixture(scope="module")
def crashy_plugin(tmp_path_factory):
    # one file for the whole module: a plugin imported once per process registers once
    plugin = tmp_path_factory.mktemp("plugin") / "crashy.py"
    plugin.write_text(CRASHY)
    return plugin


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_crashing_run_is_reported_and_the_grid_goes_on(tmp_path, capsys, jobs, crashy_plugin):
    plugin = crashy_plugin
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump({**GRID, "strategies": ["crashy"], "seeds": [1, 2, 3]}))
    out = tmp_path / "out"
    assert main(["--plugin", str(plugin), "run", str(config), "--out", str(out), "--no-progress", "--jobs", jobs]) == 1
    captured = capsys.readouterr()
    assert "2 run(s) finished, 0 skipped, 1 failed" in captured.out
    assert "boom on seed 2" in captured.err
    assert len(list(out.glob("*.json"))) == 2
    assert len(list(out.glob("*.error.txt"))) == 1


@pytest.mark.parametrize("eval_tasks", ["all", "seen"])
def test_avalanche_csv_logger_sees_the_same_evaluation(tmp_path, eval_tasks):
    config = tmp_path / "grid.yaml"
    training = {**GRID["training"], "eval_tasks": eval_tasks}
    grid = {**GRID, "strategies": ["finetune"], "seeds": [1231], "loggers": ["csv"], "training": training}
    config.write_text(yaml.safe_dump(grid))
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 0
    (result_file,) = out.glob("*.json")
    result = load_result(result_file)
    rows = (out / "logs" / result["run_id"] / "eval_results.csv").read_text().splitlines()[1:]
    # Avalanche's own accuracy takes the argmax over all classes: class-IL on learned tasks
    first = next(r.split(",") for r in rows if r.startswith("0,0,"))
    assert float(first[2]) * 100 == pytest.approx(result["accuracy"]["class_il"][0][0], abs=1e-6)
    after_first_task = {r.split(",")[0] for r in rows if r.split(",")[1] == "0"}  # eval_exp, training_exp
    assert after_first_task == ({"0"} if eval_tasks == "seen" else {"0", "1"})
    assert (result["accuracy"]["task_il"][0][1] is None) == (eval_tasks == "seen")


def test_submitit_local_launcher_writes_the_same_files(grid_run, tmp_path, capsys):
    config, out = grid_run
    submitted = tmp_path / "submitted"
    assert main(["run", str(config), "--out", str(submitted), "--launcher", "local", "--set", "strategies=[er]"]) == 0
    assert "submitted 2 run(s) to local" in capsys.readouterr().out
    files = sorted(submitted.glob("*.json"))
    assert len(files) == 2
    for path in files:
        assert load_result(path)["accuracy"] == load_result(out / path.name)["accuracy"]
    # a second submission finds nothing to do
    assert main(["run", str(config), "--out", str(submitted), "--launcher", "local", "--set", "strategies=[er]"]) == 0
    assert "0 run(s) finished, 2 skipped" in capsys.readouterr().out


def test_a_second_grid_into_the_same_folder_keeps_the_first_resolved_experiment(tmp_path):
    from clbench.grid import save_resolved_experiment

    first = save_resolved_experiment("strategies: [er, mir]\n", tmp_path)
    same = save_resolved_experiment("strategies: [er, mir]\n", tmp_path)
    part = save_resolved_experiment("strategies: [mir]\n", tmp_path)
    assert first == same == tmp_path / "experiment.resolved.yaml"
    assert first.read_text() == "strategies: [er, mir]\n"
    assert part != first and part.name.startswith("experiment.") and part.read_text() == "strategies: [mir]\n"
    assert save_resolved_experiment("strategies: [mir]\n", tmp_path) == part
    assert len(list(tmp_path.glob("*.yaml"))) == 2


def test_an_inline_run_reports_every_step_and_a_running_loss_to_its_progress(tmp_path):
    from clbench.config import load_experiment
    from clbench.grid import expand_grid
    from clbench.runner import LOSS_EVERY, execute_run

    class Recorder:
        def __init__(self):
            self.epochs, self.steps, self.losses, self.totals = 0, 0, [], []

        def epoch_started(self, iterations):
            self.totals.append(iterations)

        def iteration_done(self, loss):
            self.steps += 1
            if loss is not None:
                self.losses.append(loss)

        def epoch_done(self):
            self.epochs += 1

    config = tmp_path / "c.yaml"
    config.write_text(TWO_SEED_GRID.replace("train_per_class: 8", "train_per_class: 40"))
    run = expand_grid(load_experiment(config))[0]
    recorder = Recorder()
    execute_run(run, tmp_path, progress=recorder)
    assert recorder.epochs == 2 and recorder.totals == [10, 10]  # 2 tasks x 80 examples / batch 8
    assert recorder.steps == 20 and len(recorder.losses) == 20 // LOSS_EVERY
    assert all(loss > 0 for loss in recorder.losses)


def test_a_cancelled_or_dead_slurm_task_is_named_in_one_line():
    from submitit.core.utils import UncompletedJobError

    from clbench.launch import job_failure

    cancelled = UncompletedJobError(
        "Job 42_3 (task: 0) with path /x/42_3_0_result.pkl\nhas not produced any output (state: CANCELLED by 0)"
    )
    assert job_failure(cancelled) == (
        "cancelled (Slurm state CANCELLED by 0); run the same command again to submit it again"
    )
    timeout = UncompletedJobError("Job 42_4 (task: 0) with path /x\nhas not produced any output (state: TIMEOUT)")
    assert job_failure(timeout).startswith("ended without a result (Slurm state TIMEOUT)")


def test_a_job_array_that_sbatch_refuses_is_one_line_naming_the_setting(tmp_path, monkeypatch, capsys):
    import submitit
    from submitit.core.utils import FailedJobError

    class Refusing:
        """An executor whose sbatch refuses the array (no Slurm needed)."""

        def __init__(self, folder, cluster):
            pass

        def update_parameters(self, **parameters):
            pass

        def map_array(self, *args):
            raise FailedJobError(
                "sbatch: error: invalid partition specified: gpu\nsbatch: error: Batch job submission failed"
            )

    monkeypatch.setattr(submitit, "AutoExecutor", Refusing)
    monkeypatch.setattr("clbench.launch.read_nodes", lambda: None)  # no sinfo to check against (a real one may answer)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(GRID))
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "out"), "--launcher", "slurm"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after a slow-bf16 warning on CPUs without native bf16
    assert "Traceback" not in err and last.startswith("clbench: error: sbatch refused the job array: ")
    assert "sbatch: error: invalid partition specified: gpu; name one of" in last
    assert last.endswith("--set slurm.partition=NAME")


def test_the_slurm_launcher_without_slurm_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun, no sbatch
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(GRID))
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "out"), "--launcher", "slurm"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("clbench: error: --launcher slurm: ")
    assert last.endswith("valid choices here: --launcher inline (or --jobs N), local")


def test_a_run_without_bars_logs_a_line_an_epoch(tmp_path, capsys):
    """``--no-progress`` (a grid under nohup) still says how far each run is: one line a trained epoch."""
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(GRID))
    args = ["run", str(config), "--out", str(tmp_path / "out"), "--no-progress"]
    assert main([*args, "--set", "seeds=[1231]", "--set", "strategies=[finetune, joint]"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if ": epoch " in line]
    finetune = [line for line in lines if "-finetune-" in line]
    joint = [line for line in lines if "-joint-" in line]
    assert [line.split(": epoch ")[1].split(" trained")[0] for line in finetune] == ["1/4", "2/4", "3/4", "4/4"]
    assert [line.split(": epoch ")[1].split(" trained")[0] for line in joint] == ["1/2", "2/2"]
    assert all(", 6 steps in " in line for line in finetune)  # 48 examples a task, batch 8
