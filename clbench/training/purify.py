"""A replay memory that cleans itself: score what it holds, evict the most harmful share.

``purify: {score: small_loss | <estimator>, every: 0 | n, drop: f}`` is an argument of the
replay strategies that support it (ER, MetaSP, MetaSP+RehSel). After each task (``every:
0``, the default) or every ``n`` training iterations, :class:`Purifier` scores every example
the memory holds and evicts, in every class, the ``drop`` share with the highest harm; the freed slots are
filled again by the memory's next update (the reservoir takes new examples into them;
MetaSP's buffer adds that many more examples of the next task).

The harm of an example:

- ``small_loss``: its loss under the current model (evaluation mode, no augmentation), the
  criterion most noisy-label methods use (large loss = likely mislabelled);
- an influence estimator (``clbench list estimators``, e.g. ``meta_lastlayer``, ``meta``,
  ``identity``, ``cg``): its influence on the mean loss of the clean-looking examples of the
  *other* half of the memory (two folds, a random split each time, so no example is
  measured on itself; clean-looking: the model predicts their given label), positive =
  up-weighting it raises their loss. The memory is the only data at hand and it is noisy
  itself: measured on all of it, the mean loss is dominated by its mislabelled examples
  once the model fits the clean ones, and an example that helps fit them looks beneficial
  (measured: the identity estimator then ranked none of three flipped labels of a separable
  problem among its top three; ``tests/strategies/test_purify.py``).

Each purification is logged (task, held, evicted, seconds) in the run's ``extras`` under
``purify``; how clean the memory is after it is the result's ``buffer_purity``. Each also
keeps its decision (:class:`Purification`: the training rows scored, their harm, the
positions evicted), which the run's noise-aware measurement audits
(:mod:`clbench.buffer_purity`: how many of the evicted were mislabelled, the AUROC of the
harm score); the purifier itself never sees which labels are noisy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin

from clbench.data_path import resolve_rows
from clbench.errors import ConfigError, DataError
from clbench.training.memory import fetch_all
from clbench.training.modes import evaluation_mode

SMALL_LOSS = "small_loss"


@dataclass(frozen=True)
class PurifyArgs:
    """How a memory purifies itself."""

    score: str = field(
        default=SMALL_LOSS,
        metadata={"help": "small_loss, or an influence estimator (clbench list estimators) on the other half"},
    )
    score_args: dict[str, Any] = field(default_factory=dict, metadata={"help": "arguments of the estimator"})
    every: int = field(default=0, metadata={"help": "0: after each task; n: every n training iterations too"})
    drop: float = field(default=0.1, metadata={"help": "share of the held examples evicted each time, in (0, 1)"})

    def __post_init__(self) -> None:
        """Check the ranges and the estimator with its arguments (at grid expansion).

        Raises:
            ConfigError: ``drop`` outside (0, 1), ``every`` negative, an unknown estimator
                or estimator argument.
        """
        if not 0 < self.drop < 1:
            raise ConfigError(f"purify.drop: must be in (0, 1), got {self.drop}")
        if self.every < 0:
            raise ConfigError(f"purify.every: must be 0 (after each task) or a positive count, got {self.every}")
        if self.score != SMALL_LOSS:
            _estimator(self)
        elif self.score_args:
            raise ConfigError(f"purify.score_args: small_loss takes none, got {sorted(self.score_args)}")


def _estimator(args: PurifyArgs) -> Any:
    from clbench.config import from_mapping
    from clbench.influence.estimators import ESTIMATORS

    entry = ESTIMATORS.get(args.score)
    return entry.factory(from_mapping(entry.args, args.score_args, f"purify.score_args (estimator {args.score})"))


@dataclass(frozen=True)
class Purification:
    """One purification's decision, for auditing: what was scored, how harmful, what was evicted.

    Attributes:
        task: The experience after (or during) which it ran.
        rows: The training-split rows of the held examples in buffer order; None when the
            memory's examples cannot be traced to their rows.
        harm: Each held example's harm score (higher = evicted first), on the CPU.
        evicted: Buffer positions evicted.
    """

    task: int
    rows: Any
    harm: torch.Tensor
    evicted: list[int]


def _traced_rows(memory: EvictableMemory) -> Any:
    """The training-split rows the memory holds, in buffer order, or None if untraceable."""
    try:
        return resolve_rows(memory.buffer)[1]
    except DataError:
        return None


class EvictableMemory(Protocol):
    """A memory a :class:`Purifier` can clean: its examples as a dataset, and eviction by position."""

    buffer: Any

    def __len__(self) -> int: ...

    def evict(self, positions: list[int]) -> None:
        """Remove the examples at ``positions`` (indices into :attr:`buffer`)."""
        ...


def held_examples(strategy: Any, memory: EvictableMemory) -> tuple[torch.Tensor, torch.Tensor]:
    """Every example the memory holds, un-augmented, on the strategy's device, in buffer order."""
    return fetch_all(strategy, memory.buffer, list(range(len(memory))))


def _evaluation_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model``'s fp32 outputs on ``x`` in evaluation mode (running statistics untouched), 256 at a time."""
    with evaluation_mode(model), torch.no_grad():
        return torch.cat([model(xs).float() for xs in x.split(256)])


def small_loss_harm(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each example's loss under ``model`` in evaluation mode (running statistics untouched)."""
    return F.cross_entropy(_evaluation_logits(model, x), y, reduction="none")


def _agreeing(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Positions whose given label is the model's prediction (evaluation mode): the clean-looking ones."""
    return torch.nonzero(_evaluation_logits(model, x).argmax(1) == y).flatten()


def cross_fold_harm(
    estimator: Any, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float
) -> torch.Tensor:
    """Each example's influence on the loss of the other half's clean-looking examples (two random folds).

    The measurement set is the other fold's examples that the model predicts as labelled
    (all of the fold if none): the mean loss of a noisy set is dominated by its mislabelled
    examples once the model fits the clean ones, and an example that helps fit those would
    look beneficial.
    """
    order = torch.randperm(len(y), device=y.device)
    folds = (order[: len(y) // 2], order[len(y) // 2 :])
    harm = torch.zeros(len(y), device=y.device)
    for scored, measured in (folds, folds[::-1]):
        agreeing = measured[_agreeing(model, x[measured], y[measured])]
        measured = agreeing if len(agreeing) else measured
        result = estimator(model, (x[scored], y[scored]), [(x[measured], y[measured])], lr)
        harm[scored] = result.influence[0].detach().float()
    return harm


class Purifier(SupervisedPlugin):  # type: ignore[misc]
    """Scores the memory and evicts its most harmful share (after the memory's own update)."""

    def __init__(self, memory: EvictableMemory, args: PurifyArgs) -> None:
        """Purify ``memory`` as ``args`` say; place this plugin after the one that updates the memory."""
        super().__init__()
        self.memory = memory
        self.args = args
        self.estimator = None if args.score == SMALL_LOSS else _estimator(args)
        self.log: list[dict[str, Any]] = []
        self.decisions: list[Purification] = []
        self._iterations = 0

    def after_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
        """Purify every ``every`` iterations when asked to."""
        self._iterations += 1
        if self.args.every and self._iterations % self.args.every == 0:
            self.purify(strategy)

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        """Purify once the task's memory update has run."""
        self.purify(strategy)

    def harm(self, strategy: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The harm score of every held example (higher = evicted first) and its given label."""
        x, y = held_examples(strategy, self.memory)
        if self.estimator is None:
            return small_loss_harm(strategy.model, x, y), y
        lr = float(strategy.optimizer.param_groups[0]["lr"])
        return cross_fold_harm(self.estimator, strategy.model, x, y, lr), y

    def purify(self, strategy: Any) -> None:
        """Evict, in every class (by given label), the ``drop`` share of its held examples with the highest harm.

        Per class, because a harm score also grows with forgetting: ranked over the whole
        memory, the small loss would evict the oldest tasks' examples first.
        """
        held = len(self.memory)
        if held < 2:
            return
        tic = time.perf_counter()
        harm, labels = self.harm(strategy)
        worst: list[int] = []
        for label in labels.unique():
            members = torch.nonzero(labels == label).flatten()
            count = int(self.args.drop * len(members))
            if count:
                worst += members[torch.topk(harm[members], count).indices].tolist()
        if not worst:
            return
        task = int(strategy.experience.current_experience)
        decision = Purification(task, _traced_rows(self.memory), harm.detach().cpu(), sorted(worst))
        self.memory.evict(decision.evicted)
        self.log.append({"task": task, "held": held, "evicted": len(worst), "seconds": time.perf_counter() - tic})
        self.decisions.append(decision)

    def clbench_extras(self) -> dict[str, Any]:
        """The purification log, for the run's ``extras``."""
        return {"purify": self.log}
