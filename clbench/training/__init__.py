"""The contract a strategy is written against, and the machinery behind it.

A strategy is one module of ``strategies/`` (``clbench.strategies``): a frozen dataclass of
its arguments (with help text), a factory ``(ctx, args) -> Recipe`` and its registration::

    @STRATEGIES.register("er", args=ERArgs, help="...", uses_buffer=True)
    def build_er(ctx: StrategyContext, args: ERArgs) -> Recipe:
        return ctx.recipe(Naive, ReplayPlugin(...))

What an author uses, all importable from here:

- :class:`StrategyContext` (``context.py``): the model, optimizer, criterion, the run's
  training settings, seed, device, benchmark and the runner's plugins; ``ctx.buffer_size``
  (the memory budget: readable only by a strategy registered ``uses_buffer=True``),
  ``ctx.recipe(template, *plugins, **kwargs)``, ``ctx.with_model(model)`` (a head or wrapper
  of the strategy's own, with a fresh optimizer), ``ctx.classifier_of(name)``.
- :data:`STRATEGIES` and its traits (``uses_buffer``, ``trains_jointly``, ``revision``).
- :class:`StepTemplate` (``step_template.py``) for a strategy with its own training step.
  An author overrides these and nothing else of Avalanche's template: ``before_epoch``,
  ``training_indices`` (train on a subset of the experience, each batch carrying the
  examples' dataset indices as ``mb_index``), ``prepare_batch``, ``loss_weights``,
  ``criterion``, ``after_loss_backward``, ``after_step``, ``after_experience``,
  ``clbench_extras``; every Avalanche ``_before_*``/``_after_*`` hook keeps firing.
- :class:`ReplayMemory` (``memory.py``), the interface every rehearsal memory answers
  (``len``, ``draw``, ``update``), and the stores behind it: ``tensor_buffer``
  (:class:`StreamReservoir`, :class:`TensorReservoirBuffer`) and ``ncm`` (the nearest-mean
  classifier and the replay template iCaRL and SCR share).

Avalanche's own plugins and strategies are used as they are; ``build_strategy`` puts the
run's data path in front of the recipe's template, so no factory can forget it.
"""

from clbench.training.context import STRATEGIES, Recipe, StrategyContext, build_strategy
from clbench.training.memory import ReplayMemory
from clbench.training.step_template import StepTemplate

__all__ = ["STRATEGIES", "Recipe", "ReplayMemory", "StepTemplate", "StrategyContext", "build_strategy"]
