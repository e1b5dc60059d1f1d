"""What a new user runs into: file modes, --out, dry-run status, empty reports, README code."""

import json
import os
import re
import stat
from pathlib import Path

import pytest
from tiny_configs import TWO_SEED_GRID

from clbench.cli import main
from clbench.results import write_json_atomic


def test_results_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644


def test_out_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(TWO_SEED_GRID)
    (tmp_path / "taken").write_text("")
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "taken")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_dry_run_marks_finished_to_run_and_corrupt(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(TWO_SEED_GRID)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(out), "--no-progress"]) == 0
    first, second = sorted(out.glob("*.json"))
    second.write_text("{not json")
    capsys.readouterr()
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(out), "--dry-run"]) == 0
    *lines, summary = capsys.readouterr().out.splitlines()
    assert {line.split()[0]: line.split()[1] for line in lines} == {first.stem: "finished", second.stem: "corrupt"}
    assert summary.startswith("1 finished, 0 running, 1 to run (1 of them over a corrupt file)")
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(out), "--no-progress"]) == 0
    assert f"re-running {second.stem}: its result file is corrupt" in capsys.readouterr().err
    assert json.loads(second.read_text())["run_id"] == second.stem


def test_report_of_a_folder_without_runs_is_an_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no run results in" in capsys.readouterr().err


def test_readme_strategy_example_runs_as_written(tmp_path, capsys):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "# my_strategy.py" in b]
    (tmp_path / "my_strategy.py").write_text(block)
    (tmp_path / "c.yaml").write_text(TWO_SEED_GRID.replace("strategies: [finetune]", "strategies: [mine]"))
    out = tmp_path / "out"
    args = ["--plugin", str(tmp_path / "my_strategy.py"), "run", str(tmp_path / "c.yaml"), "--out", str(out)]
    assert main([*args, "--no-progress"]) == 0
    assert len(list(out.glob("*mine*.json"))) == 2


def test_er_run_prints_no_deprecation_warning_of_avalanche(tmp_path):
    import warnings

    replay_grid = TWO_SEED_GRID.replace("strategies: [finetune]", "strategies: [er]\nbuffer_sizes: [8]")
    (tmp_path / "c.yaml").write_text(replay_grid)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)
        assert main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert not [w for w in caught if "pre_adapt and post_adapt" in str(w.message)]


def test_dry_run_into_a_closed_pipe_exits_quietly(tmp_path):
    import subprocess
    import sys

    seeds = ", ".join(str(s) for s in range(3000))  # more output than a pipe buffers
    (tmp_path / "c.yaml").write_text(TWO_SEED_GRID.replace("seeds: [1, 2]", f"seeds: [{seeds}]"))
    command = f"{sys.executable} -m clbench.cli run {tmp_path / 'c.yaml'} --out {tmp_path / 'o'} --dry-run | head -1"
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr


PLUGIN_READING_THE_BUDGET = """
from dataclasses import dataclass

from avalanche.training.plugins import ReplayPlugin
from avalanche.training.supervised import Naive

from clbench.training import STRATEGIES


@dataclass(frozen=True)
class Args:
    pass


@STRATEGIES.register("forgot_its_buffer", args=Args, help="replay, registered without uses_buffer")
def build(ctx, args):
    return ctx.recipe(Naive, ReplayPlugin(mem_size=ctx.buffer_size))
"""


def test_a_plugin_reading_the_budget_without_declaring_a_buffer_is_a_one_line_error(tmp_path, capsys):
    # it ran with M = 0 and equalled fine-tuning, with no word
    (tmp_path / "forgot.py").write_text(PLUGIN_READING_THE_BUDGET)
    grid = TWO_SEED_GRID.replace("strategies: [finetune]", "strategies: [forgot_its_buffer]")
    (tmp_path / "c.yaml").write_text(grid)
    args = ["--plugin", str(tmp_path / "forgot.py"), "run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "out")]
    try:
        assert main([*args, "--no-progress"]) == 2
    finally:  # the suite runs every registered strategy: this one must not stay registered
        from clbench.training import STRATEGIES

        STRATEGIES._entries.pop("forgot_its_buffer", None)
    error = capsys.readouterr().err
    assert "forgot_its_buffer reads ctx.buffer_size but is registered without uses_buffer=True" in error
    assert not list((tmp_path / "out").glob("*.json"))


def test_an_out_folder_that_cannot_be_written_is_one_line_before_any_run(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(TWO_SEED_GRID)
    assert main(["run", str(tmp_path / "c.yaml"), "--out", "/proc/clbench-out", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("clbench: error: --out '/proc/clbench-out' cannot be written (") and err.count("\n") == 1


def test_a_full_disk_on_a_result_is_one_line_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    import errno

    from clbench.errors import ResultsError
    from clbench.results import write_text_atomic

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("clbench.results.os.replace", full)
    with pytest.raises(ResultsError, match=r"cannot write .*r\.json: No space left on device; free space"):
        write_text_atomic(tmp_path / "r.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_decode_cache_is_rebuilt(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from clbench.datasets.sources import _cache_file, decode_files

    files = []
    for label in range(2):
        path = tmp_path / f"{label}.png"
        Image.fromarray(np.full((4, 4, 3), 100 * label, np.uint8)).save(path)
        files.append((path, label))
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    _cache_file(files, None, cache_dir).write_bytes(b"not an npz")
    arrays = decode_files(files, ["a", "b"], None, cache_dir)
    assert arrays.labels.tolist() == [0, 1] and int(arrays.images[1].mean()) == 100
    assert "is corrupt; decoding the images again" in capsys.readouterr().err
    assert decode_files(files, ["a", "b"], None, cache_dir).labels.tolist() == [0, 1]  # the rebuilt cache reads
    assert not list(cache_dir.glob("*.tmp.npz"))


def test_a_bad_config_fails_before_torch_is_imported(tmp_path):
    import subprocess
    import sys

    (tmp_path / "bad.yaml").write_text("name: x\n")
    script = (
        "import sys\nfrom clbench.cli import main\n"
        f"code = main(['run', {str(tmp_path / 'bad.yaml')!r}])\n"
        "print(code, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["2", "False"]
    assert "missing required key 'benchmarks'" in done.stderr
