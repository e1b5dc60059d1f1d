"""The grid of an experiment: its runs, their ids, and which are finished.

``expand_grid`` turns an experiment into validated, resolved :class:`RunConfig` s (a run id
is the hash of one); ``prepare_grid`` splits them into finished (a complete result file)
and to-run, so an interrupted grid resumes.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clbench.backbones import BACKBONES
from clbench.config import (
    Component,
    ComponentSpec,
    ExperimentConfig,
    RunConfig,
    TrainingConfig,
    config_to_dict,
    from_mapping,
)
from clbench.data_path import slow_precision_warning
from clbench.datasets.base import BENCHMARKS
from clbench.datasets.sources import default_data_root
from clbench.errors import ClbenchError, ConfigError
from clbench.loggers import LOGGERS
from clbench.registry import Registry
from clbench.results import result_status, write_text_atomic
from clbench.training.context import STRATEGIES, revision_of


def _resolved(spec: ComponentSpec, args_type: type, where: str) -> Component:
    """Validate a component's raw arguments once, into its typed arguments dataclass."""
    return Component(spec.name, from_mapping(args_type, spec.args, where))


def expand_grid(experiment: ExperimentConfig) -> list[RunConfig]:
    """All runs of an experiment: benchmark x strategy x buffer size x seed.

    Strategies without a buffer (Fine-tune, Joint) run once per benchmark and seed, with
    ``buffer_size`` 0. Every component's arguments are validated and filled with their
    defaults here, before anything runs, so a typo fails at once.

    Raises:
        UnknownNameError: A benchmark, strategy, backbone or logger name is not registered.
        ConfigError: Some component's arguments do not validate.
    """
    for name in experiment.loggers:
        LOGGERS.get(name)
    check_device_name(experiment.device)
    runs: list[RunConfig] = []
    for bench_spec in experiment.benchmarks:
        bench_entry = BENCHMARKS.get(bench_spec.name)
        benchmark = _resolved(bench_spec, bench_entry.args, f"benchmark {bench_spec.name}")
        backbone_spec = experiment.backbone or ComponentSpec(bench_entry.traits["default_backbone"])
        backbone = _resolved(backbone_spec, BACKBONES.get(backbone_spec.name).args, f"backbone {backbone_spec.name}")
        for strat_spec in experiment.strategies:
            entry = STRATEGIES.get(strat_spec.name)
            strategy = _resolved(
                ComponentSpec(strat_spec.name, strat_spec.args), entry.args, f"strategy {strat_spec.name}"
            )
            own_training = _strategy_training(
                experiment.training, strat_spec.training, f"strategy {strat_spec.name}.training"
            )
            own_sizes = strat_spec.buffer_sizes
            sizes = own_sizes or experiment.buffer_sizes
            if not entry.traits.get("uses_buffer", False):
                sizes = (0,)
            for size in sizes:
                for seed in experiment.seeds:
                    runs.append(
                        RunConfig(
                            experiment=experiment.name,
                            benchmark=benchmark,
                            strategy=strategy,
                            backbone=backbone,
                            buffer_size=size,
                            seed=seed,
                            training=experiment.training,
                            device=experiment.device,
                            deterministic=experiment.deterministic,
                            strategy_revision=revision_of(entry, strategy.args, benchmark.args),
                            strategy_training=own_training,
                        )
                    )
    ids = [run.run_id for run in runs]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise ClbenchError(f"the grid lists run {duplicate} twice (a strategy or seed is repeated)")
    return runs


def check_device_name(name: str) -> None:
    """Refuse a device string torch cannot parse (whether CUDA is there is the running machine's question).

    Raises:
        ConfigError: ``name`` is not ``auto`` nor a torch device.
    """
    import torch

    if name == "auto":
        return
    try:
        torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: invalid device {name!r}; valid choices: auto, cpu, cuda, cuda:N") from None


def _strategy_training(training: TrainingConfig, own: dict[str, Any], where: str) -> dict[str, Any]:
    """A strategy's own training settings, validated over ``training`` as the experiment's are.

    Raises:
        ConfigError: A bad key or value (at grid expansion, before any run).
    """
    if not own:
        return {}
    resolved = from_mapping(TrainingConfig, {**config_to_dict(training), **own}, where)
    return {key: getattr(resolved, key) for key in own}


def run_from_dict(raw: dict[str, Any]) -> RunConfig:
    """Rebuild a :class:`RunConfig` from :meth:`RunConfig.to_dict` (a worker's or a job's hand-off).

    The components' arguments are validated against their registered dataclasses again,
    as they must be on the far side of a process boundary.
    """
    data = dict(raw)
    data["strategy"] = dict(data["strategy"])
    own_training = data["strategy"].pop("training", {})
    registries: dict[str, Registry[Any]] = {"benchmark": BENCHMARKS, "strategy": STRATEGIES, "backbone": BACKBONES}
    for key, registry in registries.items():
        spec = from_mapping(ComponentSpec, data[key], key)
        data[key] = _resolved(spec, registry.get(spec.name).args, f"{key} {spec.name}")
    data["training"] = from_mapping(TrainingConfig, data["training"], "run.training")
    data["strategy_training"] = _strategy_training(data["training"], own_training, "run.strategy.training")
    return RunConfig(**data)


@dataclass
class GridSummary:
    """What a grid run did."""

    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def output_dir_for(experiment: ExperimentConfig, override: str | None = None) -> Path:
    """``--out``, else the config's ``output_dir``, else ``runs/<name>``."""
    return Path(override or experiment.output_dir or Path("runs") / experiment.name)


def save_resolved_experiment(text: str, output_dir: Path) -> Path:
    """Save a grid's resolved experiment beside its runs without replacing another grid's.

    ``experiment.resolved.yaml`` holds the first grid run into the folder; a different one
    (a part of it chosen with ``--set``, or another config writing into the same folder)
    goes to ``experiment.<digest>.resolved.yaml``, so every grid that wrote runs there stays
    on record. Returns the file's path.
    """
    path = output_dir / "experiment.resolved.yaml"
    if path.is_file() and path.read_text() != text:
        path = output_dir / f"experiment.{hashlib.sha256(text.encode()).hexdigest()[:10]}.resolved.yaml"
    if not path.is_file():
        write_text_atomic(path, text)
    return path


def prepare_grid(
    experiment: ExperimentConfig, output_dir: Path, data_root: Path | None
) -> tuple[Path, GridSummary, list[RunConfig]]:
    """Expand the grid, save the resolved config, and split finished from unfinished runs."""
    import yaml

    runs = expand_grid(experiment)
    root = data_root or (Path(experiment.data_root) if experiment.data_root else default_data_root())
    output_dir.mkdir(parents=True, exist_ok=True)
    save_resolved_experiment(yaml.safe_dump(config_to_dict(experiment), sort_keys=False), output_dir)
    summary = GridSummary()
    todo = []
    for run in runs:
        status = result_status(output_dir / f"{run.run_id}.json")
        if status == "finished":
            summary.skipped.append(run.run_id)
            continue
        if status == "corrupt":
            print(f"re-running {run.run_id}: its result file is corrupt", file=sys.stderr)
        todo.append(run)
    warnings = {slow_precision_warning(run.trained_with.precision, run.device) for run in todo}
    for warning in sorted(w for w in warnings if w):
        print(warning, file=sys.stderr)
    return root, summary, todo


__all__ = ["GridSummary", "expand_grid", "output_dir_for", "prepare_grid", "run_from_dict"]
