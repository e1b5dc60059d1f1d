"""The committed results keep their identities: expanding each run's config again gives its id.

A change that alters how a grid resolves arguments (a new strategy argument without
``omit_at_default``, a renamed training field, a changed default) would silently orphan
every published run: a re-run would no longer find them finished. Runs of an older
strategy revision (``superseded_runs/``) are expected to differ and are skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clbench.config import ExperimentConfig, from_mapping
from clbench.grid import expand_grid

RESULTS = Path(__file__).resolve().parents[1] / "results"
RUN_FILES = sorted(p for p in RESULTS.glob("*/runs/*.json"))
PREDATES_DATA_PATH = ("cifar10_cpu_1ep", "fmnist_cpu", "miniimagenet_cpu_1ep")
"""Result folders written before ``training.data_path`` / ``precision`` / ``channels_last``
existed: their run ids lack those fields, so their configs re-run rather than resume them."""


def _experiment_of(config: dict) -> ExperimentConfig:
    """The one-run experiment whose grid is this run."""
    raw = {
        "name": config["experiment"],
        "benchmarks": [config["benchmark"]],
        "strategies": [config["strategy"]],
        "backbone": config["backbone"],
        # buffer-less strategies record 0 and the grid gives them 0 whatever is listed; a grid's
        # sizes must be positive
        "buffer_sizes": [config["buffer_size"] or 1],
        "seeds": [config["seed"]],
        "training": config["training"],
        "device": config["device"],
        "deterministic": config["deterministic"],
    }
    return from_mapping(ExperimentConfig, raw, "experiment")


def test_most_committed_runs_are_checked():
    checked = [p for p in RUN_FILES if p.parent.parent.name not in PREDATES_DATA_PATH]
    assert len(checked) > 90


@pytest.mark.parametrize("path", RUN_FILES, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_a_committed_run_keeps_its_id(path):
    result = json.loads(path.read_text())
    config = result["config"]
    if path.parent.parent.name in PREDATES_DATA_PATH:
        pytest.skip("written before the data-path fields existed")
    (run,) = expand_grid(_experiment_of(config))
    if config.get("strategy_revision", 1) != run.strategy_revision:
        name, revision = config["strategy"]["name"], config.get("strategy_revision", 1)
        pytest.skip(f"{name} revision {revision}, now {run.strategy_revision}")
    assert run.run_id == result["run_id"] == path.stem
    assert run.to_dict() == {"strategy_revision": 1, **config}  # files before revisions lack it
