"""requirements.txt (what `make install` installs) stays equal to clbench's and Avalanche's requirements."""

import importlib.metadata
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    """The project name of a requirement line, normalised ("tensorboard>=1.15" -> "tensorboard")."""
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _listed() -> set[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return {_name(line) for line in lines if line.strip() and not line.startswith("#")}


def _avalanche_runtime() -> set[str]:
    """Avalanche's requirements outside its own extras (``; extra == ...``)."""
    required = importlib.metadata.requires("avalanche-lib") or []
    return {_name(line) for line in required if "extra ==" not in line}


def test_requirements_hold_clbench_s_and_avalanche_s_dependencies_and_nothing_else():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    clbench = {_name(line) for line in [*project["dependencies"], *project["optional-dependencies"]["dev"]]}
    installed_apart = {"torch", "torchvision", "avalanche-lib"}  # the Makefile's own pip lines
    assert _listed() == (clbench | _avalanche_runtime()) - installed_apart


def test_qpsolvers_comes_without_the_extra_that_brings_jax():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    assert "qpsolvers" in lines
    required = importlib.metadata.requires("avalanche-lib") or []
    assert any(line.startswith("qpsolvers[open_source_solvers]") for line in required)  # why the file exists
