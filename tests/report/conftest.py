"""Hand-made ER runs and the published values beside them, shared by the report tests."""

import pytest
import yaml
from run_records import ER_JOINT, ER_SEPARATE, PUBLISHED, run_record

from clbench.results import write_json_atomic


@pytest.fixture
def folder(tmp_path):
    runs = tmp_path / "runs"
    for seed in ER_SEPARATE:
        for forward, values in (("separate", ER_SEPARATE), ("joint", ER_JOINT)):
            record = run_record("er", 500, seed, values[seed], args={"replay_forward": forward})
            write_json_atomic(runs / f"er-{forward}-{seed}.json", record)
    return runs


@pytest.fixture
def published(tmp_path):
    path = tmp_path / "published.yaml"
    path.write_text(yaml.safe_dump(PUBLISHED))
    return path
