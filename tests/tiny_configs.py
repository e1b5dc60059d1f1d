"""Experiment configs small enough for a CLI test: fine-tuning over two seeds, one run under label noise."""

import json
from pathlib import Path
from typing import Any

TWO_SEED_GRID = """\
name: tiny
benchmarks: [{name: synthetic, args: {n_tasks: 2, n_classes: 4, train_per_class: 8, test_per_class: 2}}]
strategies: [finetune]
seeds: [1, 2]
backbone: {name: mlp, args: {hidden: [4]}}
training: {epochs: 1, batch_size: 8}
device: cpu
"""


def run_one_noisy(folder: Path, strategy: str, buffer_size: int, epochs: int = 1) -> dict[str, Any]:
    """The result of one run of ``strategy`` (a YAML flow entry) on the synthetic stream with 40 % symmetric noise."""
    from clbench.cli import main

    config = folder / "noisy.yaml"
    config.write_text(
        "name: noisy\n"
        "benchmarks: [{name: synthetic, args: {label_noise: {kind: symmetric, rate: 0.4}}}]\n"
        f"strategies: [{strategy}]\nbuffer_sizes: [{buffer_size}]\nseeds: [1231]\n"
        "backbone: {name: mlp, args: {hidden: [16]}}\n"
        f"training: {{epochs: {epochs}, batch_size: 8, replay_batch_size: 8, lr: 0.05}}\n"
    )
    assert main(["run", str(config), "--out", str(folder / "out"), "--no-progress"]) == 0
    (result,) = [json.loads(p.read_text()) for p in (folder / "out").glob("*.json")]
    return result
