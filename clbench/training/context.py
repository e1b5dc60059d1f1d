"""The strategy contract.

A strategy module holds three things: a frozen dataclass of its own arguments (with help
text), a factory that turns a :class:`StrategyContext` and those arguments into a
:class:`Recipe` (an Avalanche template class and its keyword arguments), and the
registration line::

    @STRATEGIES.register("er", args=ERArgs, help="...", uses_buffer=True)
    def build_er(ctx: StrategyContext, args: ERArgs) -> Recipe:
        return ctx.recipe(Naive, ReplayPlugin(...))

:func:`build_strategy` instantiates the recipe with the run's data path in front of its
template (:func:`clbench.data_path.with_data_path`), so every strategy gets the data path
and its ``fetch_examples`` without its factory doing anything for it.

Traits of an entry:
    ``uses_buffer``: the strategy keeps a rehearsal buffer of ``ctx.buffer_size``
    examples; strategies without one run once per grid point, not once per buffer size.
    ``trains_jointly``: the strategy is trained once on the whole stream (Joint) and is
    evaluated once, after it.
    ``revision``: the implementation's revision (default 1). Raise it with a fix that
    changes results: it is part of the run id, so a re-run does not skip, as finished,
    runs of the older implementation. A fix that changes only some runs' results (only
    those whose training data is augmented) gives a function of the run's resolved
    arguments instead (:class:`AugmentedRunsRevision`), so the runs it leaves unchanged
    keep their ids; :func:`revision_of` reads either.

A built strategy may define ``clbench_extras() -> dict`` whose result is stored under
``extras`` in the run's results file (e.g. influence statistics).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from clbench.config import TrainingConfig
from clbench.data_path import DevicePathOptions, device_path_options, with_data_path
from clbench.datasets.base import Benchmark
from clbench.errors import ConfigError
from clbench.registry import Entry, Registry

CHANNELS_LAST_MIN_WIDTH = 8
"""Narrowest convolution (output channels) that channels-last training accepts on a CPU.

With torch 2.14.1 (oneDNN 3.12) the fp32 backward pass of a channels-last ResNet-18 whose
stem has fewer than 7 channels (nf <= 6) corrupts the heap on CPU: the process aborts a
few steps in ("corrupted double-linked list", SIGSEGV), wherever an fp32 backward runs
(A-GEM's reference gradient, GSS's scores). nf = 7 and wider never crashed here."""


@dataclass(frozen=True)
class AugmentedRunsRevision:
    """A ``revision`` trait for a fix that changed the results of augmented runs only.

    Runs whose benchmark augments its training data (``augment: true``) and whose strategy
    arguments satisfy ``applies`` carry ``revision``; every other run keeps ``base``, the
    revision its results still are, and so its id.
    """

    revision: int
    base: int = 1
    applies: Callable[[Any], bool] = field(default=lambda strategy_args: True)

    def __call__(self, strategy_args: Any, benchmark_args: Any) -> int:
        """The revision of a run with these resolved strategy and benchmark arguments."""
        augmented = bool(getattr(benchmark_args, "augment", False))
        return self.revision if augmented and self.applies(strategy_args) else self.base


def revision_of(entry: Entry[Any], strategy_args: Any, benchmark_args: Any) -> int:
    """The revision a run of the strategy ``entry`` carries (its ``revision`` trait, see the module doc)."""
    revision = entry.traits.get("revision", 1)
    return int(revision(strategy_args, benchmark_args) if callable(revision) else revision)


def _check_channels_last_width(model: nn.Module, device: torch.device) -> None:
    """Refuse channels-last on a CPU for convolutions narrower than oneDNN survives.

    Raises:
        ConfigError: ``model`` has a convolution of fewer than :data:`CHANNELS_LAST_MIN_WIDTH` channels.
    """
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    if device.type == "cpu" and widths and min(widths) < CHANNELS_LAST_MIN_WIDTH:
        raise ConfigError(
            f"training.channels_last=true with a convolution of {min(widths)} channels crashes oneDNN's CPU "
            f"backward pass; valid choices: training.channels_last=false, or a backbone at least "
            f"{CHANNELS_LAST_MIN_WIDTH} channels wide (resnet18 nf >= {CHANNELS_LAST_MIN_WIDTH})"
        )


@dataclass(frozen=True)
class Recipe:
    """What a strategy factory returns: the template class and the keyword arguments to build it with."""

    template: type
    kwargs: dict[str, Any]


StrategyFactory = Callable[["StrategyContext", Any], Recipe]

STRATEGIES: Registry[StrategyFactory] = Registry("strategy", "clbench.strategies", builtin_package="clbench.strategies")
"""Strategies by name: every module of this package is imported on the first look-up, so a
new built-in strategy is one new file here (modules without a registration are harmless)."""


@dataclass
class StrategyContext:
    """What the runner hands to a strategy factory.

    Attributes:
        model: The freshly initialised backbone, already on ``device``.
        optimizer: SGD over the model's parameters with the run's settings.
        criterion: Cross-entropy loss.
        training: The run's optimisation settings.
        memory_budget: Rehearsal buffer size in examples (0 for strategies without one);
            read it as :attr:`buffer_size`.
        device: Where training runs.
        benchmark: The benchmark being run (task classes, input shape, ...).
        seed: The run's seed.
        plugins: The runner's plugins (progress, lr schedule, accuracy collection); they
            must be passed on to the strategy.
        evaluator: The Avalanche evaluation plugin with the configured loggers.
        device_path: Settings of the device data path, or None for Avalanche's loaders.
        uses_buffer: Whether the strategy is registered with ``uses_buffer=True`` (the grid
            then runs it once per buffer size); reading :attr:`buffer_size` without it fails.
        strategy_name: The strategy's registered name (for that error).
    """

    model: nn.Module
    optimizer: Optimizer
    criterion: nn.Module
    training: TrainingConfig
    memory_budget: int
    device: torch.device
    benchmark: Benchmark
    seed: int
    plugins: list[Any] = field(default_factory=list)
    evaluator: Any = None
    device_path: DevicePathOptions | None = None
    uses_buffer: bool = True
    strategy_name: str = "the strategy"

    @property
    def buffer_size(self) -> int:
        """The run's memory budget in examples.

        Raises:
            ConfigError: The strategy is not registered with ``uses_buffer=True``: the grid
                runs it once with a budget of 0, so a buffer built from it would be empty
                and the run silently fine-tuning.
        """
        if not self.uses_buffer:
            raise ConfigError(
                f"{self.strategy_name} reads ctx.buffer_size but is registered without uses_buffer=True, "
                "so the grid runs it once with a budget of 0; register it with "
                f'@STRATEGIES.register("{self.strategy_name}", ..., uses_buffer=True)'
            )
        return self.memory_budget

    @classmethod
    def for_training(
        cls,
        model: nn.Module,
        training: TrainingConfig,
        *,
        benchmark: Benchmark,
        device: torch.device,
        seed: int,
        buffer_size: int,
        plugins: list[Any] | None = None,
        evaluator: Any = None,
        uses_buffer: bool = True,
        strategy_name: str = "the strategy",
    ) -> StrategyContext:
        """The context of ``model`` trained with the ``training`` settings (the one way to build one).

        Puts the model in channels-last layout when asked, and builds SGD with the run's lr,
        momentum and weight decay, the cross-entropy criterion and the device path's settings.
        """
        if training.channels_last:
            _check_channels_last_width(model, device)
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(
            model.parameters(), lr=training.lr, momentum=training.momentum, weight_decay=training.weight_decay
        )
        return cls(
            model=model,
            optimizer=optimizer,
            criterion=nn.CrossEntropyLoss(),
            training=training,
            memory_budget=buffer_size,
            device=device,
            benchmark=benchmark,
            seed=seed,
            plugins=list(plugins or []),
            evaluator=evaluator,
            device_path=device_path_options(training, seed),
            uses_buffer=uses_buffer,
            strategy_name=strategy_name,
        )

    def classifier_of(self, strategy: str) -> nn.Linear:
        """The backbone's linear ``classifier`` over its ``features`` (clbench's backbones have both).

        Raises:
            ConfigError: The backbone lacks them, so ``strategy`` cannot run on it.
        """
        classifier = getattr(self.model, "classifier", None)
        if not isinstance(classifier, nn.Linear) or not callable(getattr(self.model, "features", None)):
            raise ConfigError(
                f"{strategy} needs a backbone with features(x) and a linear classifier; "
                f"{type(self.model).__name__} has not both; valid choices: clbench's resnet18 or mlp backbones"
            )
        return classifier

    def with_model(self, model: nn.Module) -> StrategyContext:
        """This context with ``model`` trained instead (a strategy's own head or wrapper).

        The optimizer is a fresh one of the same settings; this context is left as it is.
        """
        optimizer = torch.optim.SGD(model.parameters(), **self.optimizer.defaults)
        return dataclasses.replace(self, model=model, optimizer=optimizer)

    def recipe(self, template: type, *plugins: Any, train_epochs: int | None = None, **kwargs: Any) -> Recipe:
        """``template`` built with :meth:`template_kwargs` (its ``plugins`` first) plus its own ``kwargs``."""
        return Recipe(template, {**kwargs, **self.template_kwargs(*plugins, train_epochs=train_epochs)})

    def template_kwargs(self, *extra_plugins: Any, train_epochs: int | None = None) -> dict[str, Any]:
        """Keyword arguments every ``SupervisedTemplate`` subclass accepts.

        Args:
            *extra_plugins: The strategy's own plugins, placed before the runner's.
            train_epochs: Epochs per experience when the strategy's protocol has its own
                (Joint, GDumb); default the run's epochs per task.

        Returns:
            model, optimizer, criterion, train_mb_size, train_epochs, eval_mb_size,
            device, plugins and evaluator.
        """
        return {
            "model": self.model,
            "optimizer": self.optimizer,
            "criterion": self.criterion,
            "train_mb_size": self.training.batch_size,
            "train_epochs": self.training.epochs if train_epochs is None else train_epochs,
            "eval_mb_size": self.training.eval_chunk or self.training.eval_batch_size,
            "device": self.device,
            "plugins": [*extra_plugins, *self.plugins],
            "evaluator": self.evaluator,
        }


def build_strategy(entry: Entry[StrategyFactory], context: StrategyContext, args: Any) -> Any:
    """The strategy of ``entry`` with ``args``, on the context's data path (the one way to build one)."""
    recipe = entry.factory(context, args)
    return with_data_path(recipe.template, context.device_path, context.training.iterations)(**recipe.kwargs)
