"""Experiment and run configuration as frozen, validated dataclasses.

A YAML experiment file is read with :func:`load_yaml` (``yaml.safe_load`` that reads ``1e-6`` as
a number), ``--set key=value`` overrides are applied to the raw mapping, and the result is
converted into :class:`ExperimentConfig`.
Conversion checks every key and every value type and raises :class:`ConfigError` with a
one-line message that names the bad key or value and lists the valid ones.

The grid of an experiment (benchmark x strategy x buffer size x seed) expands into
:class:`RunConfig` objects; a run's identity is the hash of its resolved config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from clbench.errors import ConfigError

T = TypeVar("T")

DEFAULT_SEEDS = (1231, 1232, 1233, 1234, 1235)

OMIT_AT_DEFAULT = "omit_at_default"
"""Field-metadata flag of a component argument added after runs were published: the grid
leaves it out of the resolved arguments (and so of the run id) while it has its default,
so the published runs keep their ids and a re-run still finds them finished."""


MEASUREMENT_ONLY = "measurement_only"
"""Field-metadata flag of a training setting that changes what is measured, never what is
trained (tested for every strategy): left out of the run id, so a run finished with it at
another value still counts, and of the report's protocol, so such runs pool."""


def measurement_only_settings() -> frozenset[str]:
    """Names of the training settings flagged :data:`MEASUREMENT_ONLY`."""
    return frozenset(f.name for f in dataclasses.fields(TrainingConfig) if f.metadata.get(MEASUREMENT_ONLY))


def trained_settings(training: Mapping[str, Any]) -> dict[str, Any]:
    """A run's training settings without the measurement-only ones.

    They decide what is trained; the run id, the report's protocol and ``clbench compare``'s
    pairing all read a run's training through this.
    """
    measured = measurement_only_settings()
    return {key: value for key, value in training.items() if key not in measured}


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def without_omitted_defaults(settings: Any) -> dict[str, Any]:
    """A dataclass as a JSON-ready mapping, fields marked :data:`OMIT_AT_DEFAULT` left out at their default.

    So runs published before those fields existed keep their ids.
    """
    plain = config_to_dict(settings)
    for f in dataclasses.fields(settings):
        if f.metadata.get(OMIT_AT_DEFAULT) and getattr(settings, f.name) == f.default:
            plain.pop(f.name)
    return plain


@dataclass(frozen=True)
class ComponentSpec:
    """A registered component chosen by name, with its own arguments.

    Attributes:
        name: Registered name (see ``clbench list``).
        args: Keyword arguments validated against the component's arguments dataclass.
    """

    name: str = field(metadata=_help("registered name of the component"))
    args: dict[str, Any] = field(default_factory=dict, metadata=_help("the component's own arguments"))


@dataclass(frozen=True)
class Component:
    """A registered component with its validated arguments: what a run carries.

    :func:`clbench.grid.expand_grid` validates a :class:`ComponentSpec`'s raw arguments
    once into the component's frozen arguments dataclass; the runner, the benchmark loader
    and the strategy factory take that typed value as it is. The plain mapping
    (:meth:`plain_args`) is made only at the edges: the run id, the result JSON and the
    hand-off to a worker process.

    Attributes:
        name: Registered name (see ``clbench list``).
        args: An instance of the component's registered arguments dataclass.
    """

    name: str
    args: Any

    def plain_args(self) -> dict[str, Any]:
        """The arguments as a JSON-ready mapping (see :func:`without_omitted_defaults`)."""
        return without_omitted_defaults(self.args)

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., "args": ...}``, the form a run's JSON records."""
        return {"name": self.name, "args": self.plain_args()}


@dataclass(frozen=True)
class StrategySpec(ComponentSpec):
    """A strategy of an experiment: a component, optionally with buffer sizes of its own.

    ``buffer_sizes`` belongs to the grid, not to a run: each run's config records only the
    one size it ran with, so giving a strategy its own sizes changes no run id.
    """

    buffer_sizes: tuple[int, ...] | None = field(
        default=None, metadata=_help("buffer sizes of this strategy; default the experiment's buffer_sizes")
    )
    training: dict[str, Any] = field(
        default_factory=dict,
        metadata=_help(
            "training settings this strategy runs with instead of the experiment's (e.g. the lr of its "
            "paper's best arguments); part of the strategy in run ids and reports, not of the protocol"
        ),
    )


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation settings shared by every strategy of an experiment.

    Defaults follow the MetaSP paper's code base: plain SGD, lr 0.1, batch 32, replay
    mini-batch 32, 50 epochs per task; on clbench's fast path (device data path, bf16
    autocast, channels-last), measured faster on CPU and GPU (docs/fast-path.md).
    """

    epochs: int = field(default=50, metadata=_help("training epochs per task"))
    batch_size: int = field(default=32, metadata=_help("mini-batch size of current-task data"))
    replay_batch_size: int = field(default=32, metadata=_help("mini-batch size drawn from the buffer"))
    lr: float = field(default=0.1, metadata=_help("SGD learning rate"))
    momentum: float = field(default=0.0, metadata=_help("SGD momentum"))
    weight_decay: float = field(default=0.0, metadata=_help("SGD weight decay"))
    lr_milestones: tuple[int, ...] = field(
        default=(), metadata=_help("epochs (within each task) at which lr is multiplied by lr_gamma")
    )
    lr_gamma: float = field(default=0.1, metadata=_help("lr decay factor at each milestone"))
    eval_batch_size: int = field(default=256, metadata=_help("mini-batch size for evaluation"))
    eval_tasks: Literal["all", "seen"] = field(
        default="all",
        metadata={
            "help": "all: every task's test set after each task (the whole matrix); seen: the tasks learned so "
            "far only, the rest of each row null (A1, Ainf, Am and BWT are the same; device data path only, "
            "where evaluation draws no random numbers, so training is the same)",
            OMIT_AT_DEFAULT: True,
            MEASUREMENT_ONLY: True,
        },
    )
    eval_chunk: int | None = field(
        default=None,
        metadata={
            "help": "images forwarded at once in evaluation (default: eval_batch_size). In eval mode each image's "
            "output is its own, so only the speed changes: choose it with `clbench bench eval` (a CPU's forward "
            "slows at large batches)",
            OMIT_AT_DEFAULT: True,
            MEASUREMENT_ONLY: True,
        },
    )
    iterations: int = field(
        default=1,
        metadata={
            "help": "updates per incoming mini-batch (the online literature's n_iters): each repeats the whole "
            "step, replay draw included, on the same stream batch",
            OMIT_AT_DEFAULT: True,
        },
    )
    num_workers: int = field(default=0, metadata=_help("data-loader worker processes (avalanche data path)"))
    data_path: Literal["avalanche", "device"] = field(
        default="device",
        metadata=_help(
            "device (default): images kept on the device as uint8, mini-batches gathered and augmented in batch "
            "with the same sampling (faster); avalanche: Avalanche's loaders, per-example transforms"
        ),
    )
    channels_last: bool | None = field(
        default=None,
        metadata=_help("channels-last memory format (device data path); default: true on the device path"),
    )
    precision: Literal["fp32", "bf16"] | None = field(
        default=None,
        metadata=_help(
            "bf16 autocast of the strategy's forward passes, or fp32 (device data path only); "
            "default: bf16 on the device path, fp32 on the avalanche path"
        ),
    )

    def __post_init__(self) -> None:
        """Check every numeric setting's range and resolve the fast-path settings (the one place they are).

        Raises:
            ConfigError: A setting out of its range (one line, naming it and the range), or a
                device-path-only setting asked for on the Avalanche path.
        """
        for name, low, value in (
            ("epochs", 1, self.epochs),
            ("batch_size", 1, self.batch_size),
            ("replay_batch_size", 1, self.replay_batch_size),
            ("eval_batch_size", 1, self.eval_batch_size),
            ("iterations", 1, self.iterations),
            ("eval_chunk", 1, self.eval_chunk if self.eval_chunk is not None else 1),
            ("num_workers", 0, self.num_workers),
        ):
            if value < low:
                raise ConfigError(f"training.{name}: must be at least {low}, got {value}")
        for rate_name, rate in (("lr", self.lr), ("lr_gamma", self.lr_gamma)):
            if not 0 < rate < math.inf:
                raise ConfigError(f"training.{rate_name}: must be positive and finite, got {rate}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"training.momentum: must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ConfigError(f"training.weight_decay: must be at least 0, got {self.weight_decay}")
        if any(m < 1 for m in self.lr_milestones):
            raise ConfigError(f"training.lr_milestones: epochs must be at least 1, got {list(self.lr_milestones)}")
        if self.eval_tasks == "seen" and self.data_path != "device":
            # Avalanche's eval loaders draw from the global generator: fewer of them would change training.
            raise ConfigError("training.eval_tasks: 'seen' needs data_path 'device'; valid with 'avalanche': 'all'")
        # The fast settings follow the data path unless given, and are stored resolved, so a
        # run's config (and id) says what ran; the avalanche path resolves to what it ran before.
        fast = self.data_path == "device"
        if self.channels_last is None:
            object.__setattr__(self, "channels_last", fast)
        if self.precision is None:
            object.__setattr__(self, "precision", "bf16" if fast else "fp32")
        if not fast and (self.channels_last or self.precision != "fp32"):
            raise ConfigError(
                f"training.channels_last={self.channels_last} / training.precision={self.precision} "
                "need training.data_path=device; valid choices on the avalanche path: false / fp32"
            )


@dataclass(frozen=True)
class SlurmConfig:
    """Resources of each run when the grid is submitted with ``--launcher slurm``."""

    partition: str | None = field(default=None, metadata={"help": "Slurm partition; default the cluster's"})
    gpus_per_task: int = field(default=1, metadata={"help": "GPUs of each run"})
    cpus_per_task: int = field(default=8, metadata={"help": "CPU cores of each run"})
    mem_gb: int | None = field(default=None, metadata={"help": "memory of each run; default the cluster's"})
    timeout_min: int = field(default=240, metadata={"help": "time limit of each run in minutes"})
    array_parallelism: int = field(default=64, metadata={"help": "runs of the job array running at once"})


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment file: a grid of runs plus where their results go."""

    name: str = field(metadata=_help("experiment name; also the default output folder name"))
    benchmarks: tuple[ComponentSpec, ...] = field(metadata=_help("benchmarks to run on"))
    strategies: tuple[StrategySpec, ...] = field(metadata=_help("strategies to compare"))
    buffer_sizes: tuple[int, ...] = field(
        default=(500,), metadata=_help("buffer sizes; strategies without a buffer run once")
    )
    seeds: tuple[int, ...] = field(default=DEFAULT_SEEDS, metadata=_help("random seeds"))
    training: TrainingConfig = field(default_factory=TrainingConfig, metadata=_help("optimisation settings"))
    backbone: ComponentSpec | None = field(
        default=None, metadata=_help("network; default: the benchmark's default backbone")
    )
    device: str = field(default="auto", metadata=_help("torch device: auto, cpu, cuda, cuda:1, ..."))
    output_dir: str | None = field(default=None, metadata=_help("where run JSONs go; default runs/<name>"))
    data_root: str | None = field(
        default=None, metadata=_help("root of downloaded/offline data; default ~/.cache/clbench")
    )
    loggers: tuple[str, ...] = field(default=(), metadata=_help("Avalanche loggers to attach (see `clbench list`)"))
    deterministic: bool = field(default=True, metadata=_help("use deterministic kernels where PyTorch has them"))
    slurm: SlurmConfig = field(default_factory=SlurmConfig, metadata=_help("resources for --launcher slurm"))


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines the numbers of one run.

    Paths (data root, output folder) and loggers are deliberately not part of it: they do
    not change results, so moving the data does not invalidate finished runs.
    """

    experiment: str
    benchmark: Component
    strategy: Component
    backbone: Component
    buffer_size: int
    seed: int
    training: TrainingConfig
    device: str
    deterministic: bool
    strategy_revision: int = field(
        default=1, metadata=_help("implementation revision of the strategy (raised when a fix changes its results)")
    )
    strategy_training: dict[str, Any] = field(
        default_factory=dict,
        metadata=_help("the strategy's own training settings, over ``training`` (recorded as strategy.training)"),
    )

    @property
    def trained_with(self) -> TrainingConfig:
        """The training settings the run trains with: the experiment's, the strategy's own over them."""
        return dataclasses.replace(self.training, **self.strategy_training)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready plain mapping of the config (components as ``{name, args}``).

        The strategy's own training settings sit in ``strategy.training`` (left out when it has
        none, so the ids of runs without any are those they always were); ``training`` stays
        the experiment's, which is the protocol a report groups by.
        """
        plain: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "strategy_training":
                continue
            if isinstance(value, Component):
                plain[f.name] = value.to_dict()
            elif dataclasses.is_dataclass(value):
                plain[f.name] = without_omitted_defaults(value)
            else:
                plain[f.name] = _plain(value)
        if self.strategy_training:
            plain["strategy"]["training"] = _plain(self.strategy_training)
        return plain

    @property
    def run_id(self) -> str:
        """Readable, unique file stem: names plus a hash of the resolved config."""
        digest = config_digest(self.to_dict())
        return f"{self.benchmark.name}-{self.strategy.name}-m{self.buffer_size}-s{self.seed}-{digest}"


def config_digest(plain: Mapping[str, Any]) -> str:
    """The hash a run id ends with, of a run's plain config (:meth:`RunConfig.to_dict`, or a result file's)."""
    identity = {key: value for key, value in plain.items() if key not in ("experiment", "device")}
    identity["training"] = trained_settings(identity["training"])
    if identity.get("strategy_revision", 1) == 1:
        # Revision 1 is implicit, so runs finished before revisions existed keep their ids.
        identity.pop("strategy_revision", None)
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; lists become tuples, mappings dataclasses."""
    # Long on purpose: one short branch per supported annotation, in one place, so the
    # accepted types of every config field can be read at once.
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} is not a {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            choices = ", ".join(str(a) for a in args)
            raise ConfigError(f"{where}: invalid value {value!r}; valid choices: {choices}")
        return value
    if origin in (tuple, Sequence, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_type = args[0] if args else Any
        items = [_convert(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is not list else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_mapping(tp, value, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported field type {_type_name(tp)}")


def from_mapping(cls: type[T], data: Any, where: str) -> T:
    """Build the frozen dataclass ``cls`` from a mapping, validating keys and types.

    Args:
        cls: The dataclass type.
        data: A mapping (or ``None`` for all defaults).
        where: Where the mapping comes from, used as the prefix of error messages.

    Returns:
        The validated instance.

    Raises:
        ConfigError: An unknown key, a missing required key or a value of the wrong type.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        valid = ", ".join(sorted(fields)) or "(none)"
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {valid}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{where}.{name}" if where else name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key {name!r}")
    return cls(**kwargs)


class _Yaml12FloatLoader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads ``1e-6`` as a number.

    PyYAML follows YAML 1.1, where a float needs a dot (``1.0e-6``) and ``1e-6`` is the
    string '1e-6'; researchers write the latter (YAML 1.2 and Python read it as a float).
    """


_Yaml12FloatLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text as ``yaml.safe_load`` does, with exponent floats such as ``1e-6`` read as numbers."""
    return yaml.load(text, Loader=_Yaml12FloatLoader)  # a SafeLoader subclass: as safe as safe_load


def _component(value: Any, where: str) -> Any:
    """Allow the short form ``- er`` for ``- {name: er}``."""
    return {"name": value} if isinstance(value, str) else value


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and YAML-parsed value."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    try:
        value = load_yaml(raw) if raw else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc.__class__.__name__})") from None
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``--set key.path=value`` overrides to a raw config mapping (a copy is returned).

    Integer path parts index lists, e.g. ``strategies.0.args.alpha=0.5``.
    """
    result: dict[str, Any] = json.loads(json.dumps(raw))
    for text in overrides:
        path, value = parse_override(text)
        node: Any = result
        for i, part in enumerate(path[:-1]):
            where = ".".join(path[: i + 1])
            slot: Any
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"override {text!r}: {where} is not an index of a {len(node)}-item list")
                slot = int(part)
            elif isinstance(node, dict):
                slot = part
                node.setdefault(part, {})
            else:
                raise ConfigError(f"override {text!r}: {where} is not a mapping or list")
            if isinstance(node[slot], str) and path[i + 1] in ("name", "args"):
                node[slot] = {"name": node[slot]}  # the short form `- er` of a component
            node = node[slot]
        last = path[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError(f"override {text!r}: {last} is not an index of a {len(node)}-item list")
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"override {text!r}: cannot set a key inside {node!r}")
    return result


def experiment_from_mapping(raw: Any, where: str = "config") -> ExperimentConfig:
    """Validate a raw mapping into an :class:`ExperimentConfig`."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(raw).__name__}")
    data = dict(raw)
    for key in ("benchmarks", "strategies"):
        if key in data:
            if not isinstance(data[key], list):
                data[key] = [data[key]]
            data[key] = [_component(v, f"{where}.{key}") for v in data[key]]
    if isinstance(data.get("backbone"), str):
        data["backbone"] = {"name": data["backbone"]}
    config = from_mapping(ExperimentConfig, data, where)
    if not config.benchmarks:
        raise ConfigError(f"{where}.benchmarks: at least one benchmark is required")
    if not config.strategies:
        raise ConfigError(f"{where}.strategies: at least one strategy is required")
    if not config.seeds:
        raise ConfigError(f"{where}.seeds: at least one seed is required")
    if any(size <= 0 for size in config.buffer_sizes):
        raise ConfigError(f"{where}.buffer_sizes: sizes must be positive, got {list(config.buffer_sizes)}")
    for i, strategy in enumerate(config.strategies):
        own = strategy.buffer_sizes
        if own is not None and (not own or any(size <= 0 for size in own)):
            raise ConfigError(f"{where}.strategies[{i}].buffer_sizes: sizes must be positive, got {list(own)}")
    return config


def read_yaml_file(path: str | Path) -> Any:
    """The parsed YAML of a config file (None for an empty one).

    Raises:
        ConfigError: The path is a folder or missing, or the file is not UTF-8 or not YAML.
    """
    file = Path(path)
    if file.is_dir():
        raise ConfigError(
            f"config file {str(path)!r} is a folder; valid choices: a YAML file, e.g. experiments/quick.yaml"
        )
    if not file.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    try:
        return load_yaml(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{line}") from None


def load_experiment(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read, override and validate an experiment YAML file.

    Raises:
        ConfigError: The file is missing, is not YAML, or does not validate.
    """
    raw = read_yaml_file(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r}: expected a mapping at the top level")
    raw = apply_overrides(raw, overrides)
    return experiment_from_mapping(raw, where=Path(path).name)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready mapping of any config dataclass."""
    plain: dict[str, Any] = _plain(dataclasses.asdict(config))
    return plain
