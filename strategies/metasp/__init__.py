"""MetaSP (Sun et al., "Exploring Example Influence in Continual Learning", NeurIPS 2022).

Per task t with E epochs, the last K of which are MetaSP epochs:

- task 1: plain training; the buffer is then filled from it;
- tasks t >= 2, epochs 1..E-K: warm-up, plain fine-tuning on the new task (``warmup:
  finetune``, the paper's code) or ER-style replay (``warmup: replay``);
- the last K epochs: MetaSP steps. Each takes B = B_new ∪ B_old, measures every example's
  influence on the stability loss (V_old, sampled from memory) and the plasticity loss
  (V_new, from the current task) after a shared pseudo-update
  (:func:`clbench.influence.meta.meta_influence`), fuses the two by the MGDA min-norm
  weight and trains on the influence-weighted loss
  (:mod:`clbench.influence.fusion`): beneficial examples (negative influence) weigh more.

The buffer is MetaSP's class-balanced buffer (:mod:`clbench.strategies.metasp.buffer`):
``metasp`` fills it at random (the paper's "Ours"), ``metasp_rehsel`` by RehSel.

The fused step (``influence: meta`` with one pseudo step, and ``meta_lastlayer``) takes
the influence from the training step's own forward: the pseudo gradient is a backward
pass of its graph, the validation gradients of V_old and V_new one pass each, and the
weighted loss a second backward of the same graph; the influence equals the two-pass
computation (tested to 1e-5). Revision 2: this fused step, and under ``precision: bf16``
the influence computed in bf16 too (revision 1 ran it in fp32). Revision 3: in fp32 the
validation gradients are taken one set at a time instead of one ``vmap``-ed pass over
both (1.5x faster on CPU; the influence moves by float rounding, ~1e-8, and each set's
influence is now bit for bit the one it has alone, tested). ``meta_lastlayer`` and the
estimator-based influences compute exactly what revision 2 did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from clbench.buffer_purity import ScoredExamples
from clbench.config import OMIT_AT_DEFAULT, from_mapping
from clbench.data_path import strategy_autocast
from clbench.errors import ConfigError
from clbench.influence.estimators import ESTIMATORS
from clbench.influence.functional import Batch, InfluenceFn, InfluenceResult, gradient_by_name
from clbench.influence.fusion import example_weights, fuse, mgda_weight, normalise_influence
from clbench.influence.lastlayer import classifier_influence, classifier_of
from clbench.influence.meta import one_step_meta_influence
from clbench.strategies.metasp.buffer import FeatureKind, InfluenceLedger, InfluenceWindow, MetaSPBuffer
from clbench.training.context import STRATEGIES, Recipe, StrategyContext
from clbench.training.purify import Purifier, PurifyArgs
from clbench.training.step_template import StepTemplate


@dataclass(frozen=True)
class MetaSPArgs:
    """Arguments of MetaSP (buffer size, replay batch and lr come from the run)."""

    meta_epochs: int = field(default=5, metadata={"help": "the last K epochs of each task t>=2 run MetaSP steps"})
    warmup: Literal["finetune", "replay"] = field(
        default="finetune", metadata={"help": "epochs before the MetaSP ones: new task only, or ER-style replay"}
    )
    pseudo_steps: int = field(default=1, metadata={"help": "SGD pseudo steps differentiated through (paper: 1-5)"})
    val_fraction: float = field(
        default=0.1, metadata={"help": "|V_old| = |V_new| = val_fraction x buffer size (paper: |M|/10)"}
    )
    new_validation: Literal["train_sample", "heldout"] = field(
        default="train_sample",
        metadata={"help": "V_new sampled from the task's training data (paper) or from a held-out split"},
    )
    heldout_fraction: float = field(
        default=0.1, metadata={"help": "share of each task's training data held out when new_validation=heldout"}
    )
    influence: str = field(
        default="meta",
        metadata={
            "help": "influence estimator (clbench list estimators): meta = the paper's, exact; meta_lastlayer = "
            "the same restricted to the classifier (cheap); or identity, neumann, lissa, cg"
        },
    )
    influence_args: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "arguments of the influence estimator"}
    )
    gamma_min: float = field(default=0.001, metadata={"help": "lower clip of the MGDA weight (paper's code)"})
    gamma_max: float = field(default=0.999, metadata={"help": "upper clip of the MGDA weight (paper's code)"})
    replay_forward: Literal["joint", "separate"] = field(
        default="joint",
        metadata={
            "help": "joint: B_new and B_old in one forward, one weighted mean (the paper's code); separate: "
            "forwarded apart, the sum of the two weighted means, the pseudo step on the sum of the two mean "
            "losses (the online replay literature's ER; influence: meta with one pseudo step only)",
            OMIT_AT_DEFAULT: True,
        },
    )
    purify: PurifyArgs | None = field(
        default=None,
        metadata={
            "help": "evict the buffer's most harmful examples after each task (or every n iterations): "
            "{score: small_loss | <estimator>, every: 0 | n, drop: f} (clbench.training.purify)",
            OMIT_AT_DEFAULT: True,
        },
    )

    def __post_init__(self) -> None:
        """Resolve the influence estimator and its typed arguments, once (read as :attr:`estimator_args`).

        ``pseudo_steps`` is the one setting of the number of pseudo steps: it becomes the
        ``meta`` estimator's ``steps``.

        Raises:
            ConfigError: An unknown estimator or estimator argument, ``influence_args.steps``
                disagreeing with ``pseudo_steps``, ``pseudo_steps`` other than 1 for an
                estimator without pseudo steps, or ``replay_forward: separate`` without the
                exact fused step.
        """
        if self.pseudo_steps < 1:
            raise ConfigError(f"metasp: pseudo_steps must be at least 1, got {self.pseudo_steps}")
        raw = dict(self.influence_args)
        if self.influence == "meta":
            if raw.get("steps", self.pseudo_steps) != self.pseudo_steps:
                raise ConfigError(
                    f"metasp: influence_args.steps={raw['steps']} disagrees with pseudo_steps={self.pseudo_steps}; "
                    "set pseudo_steps only"
                )
            raw["steps"] = self.pseudo_steps
        elif self.pseudo_steps != 1:
            raise ConfigError(
                f"metasp: pseudo_steps={self.pseudo_steps} applies to influence=meta only; "
                f"valid choices with influence={self.influence}: 1"
            )
        entry = ESTIMATORS.get(self.influence)
        typed: Any = from_mapping(entry.args, raw, f"metasp influence_args (estimator {self.influence})")
        object.__setattr__(self, "_estimator_args", typed)  # derived, not a field: the run id is unchanged
        if self.replay_forward == "separate" and self.fused_step != "graph":
            raise ConfigError(
                f"metasp: replay_forward=separate needs the exact fused step; valid choices: influence=meta "
                f"with pseudo_steps=1 (got influence={self.influence}, pseudo_steps={self.pseudo_steps})"
            )

    @property
    def estimator_args(self) -> Any:
        """The influence estimator's typed arguments (its registered dataclass), resolved from the two fields."""
        return self._estimator_args  # type: ignore[attr-defined]

    @property
    def influence_lr(self) -> float | None:
        """The pseudo-step size the estimator is given (None: the optimiser's)."""
        lr = getattr(self.estimator_args, "lr", None)
        return None if lr is None else float(lr)

    @property
    def fused_step(self) -> Literal["graph", "lastlayer"] | None:
        """How the influence comes from the training step's own forward, or None (a separate estimator call).

        ``graph``: the exact one-step influence from the step's graph (``meta``, one pseudo
        step); ``lastlayer``: the classifier-only closed form from the step's features.
        """
        if self.influence == "meta_lastlayer":
            return "lastlayer"
        return "graph" if self.influence == "meta" and self.pseudo_steps == 1 else None


@dataclass(frozen=True)
class MetaSPRehSelArgs(MetaSPArgs):
    """Arguments of MetaSP with RehSel buffer selection."""

    selection: Literal["random", "influence", "cluster", "rehsel"] = field(
        default="rehsel", metadata={"help": "buffer selection (the paper's Table 5 ablations)"}
    )
    features: FeatureKind = field(
        default="pixels", metadata={"help": "K-means features: flattened pixels (paper) or penultimate layer"}
    )
    influence_window: InfluenceWindow = field(
        default="task",
        metadata={
            "help": "rank by influence measured during the latest task (paper's code resets scores per task) "
            "or averaged over all tasks"
        },
    )


@dataclass(frozen=True)
class FusedInfluence:
    """One MetaSP step's influence vectors (normalised), MGDA weight and example weights."""

    stability: torch.Tensor
    plasticity: torch.Tensor
    fused: torch.Tensor
    gamma: float
    weights: torch.Tensor


def influence_weights(
    model: torch.nn.Module,
    batch: Batch,
    stability_set: Batch,
    plasticity_set: Batch,
    lr: float,
    args: MetaSPArgs,
    influence_fn: InfluenceFn | None = None,
) -> FusedInfluence:
    """Steps 3-6 of a MetaSP step up to the loss weights (the optimiser step excluded).

    Args:
        model: The network (not modified).
        batch: B = B_new ∪ B_old.
        stability_set: V_old, sampled from memory.
        plasticity_set: V_new, from the current task.
        lr: The optimiser's learning rate (the pseudo-step size).
        args: MetaSP's arguments (pseudo steps, gamma clip).
        influence_fn: How influence is computed; default the one ``args`` ask for
            (:func:`influence_function`).

    Returns:
        The fused influence and the example weights (negative influence weighs more).
    """
    compute = influence_fn or influence_function(args)
    return fuse_influence(compute(model, batch, [stability_set, plasticity_set], lr), args)


def fuse_influence(result: InfluenceResult, args: MetaSPArgs, parts: list[int] | None = None) -> FusedInfluence:
    """Normalise the stability and plasticity influence, fuse them by MGDA, weigh the examples.

    With ``parts`` (B_new and B_old forwarded apart) the weights sum to one within each
    part, so uniform influence gives the sum of the two mean losses, as ER's separate forward.
    """
    (stability, plasticity), (loss_old, loss_new) = result.influence, result.measurement_loss
    stability = normalise_influence(stability, loss_old)
    plasticity = normalise_influence(plasticity, loss_new)
    gamma = mgda_weight(stability, plasticity, args.gamma_min, args.gamma_max)
    fused = fuse(stability, plasticity, gamma)
    if parts is None:
        weights = example_weights(fused)
    else:
        weights = torch.cat([example_weights(piece) for piece in fused.split(parts)])
    return FusedInfluence(stability, plasticity, fused, gamma, weights)


def part_means(parts: list[int], device: torch.device) -> torch.Tensor:
    """Per-example weights that make a weighted sum the sum of each part's mean."""
    return torch.cat([torch.full((size,), 1.0 / size, device=device) for size in parts])


def _summary(values: npt.NDArray[np.float64]) -> dict[str, Any]:
    if values.size == 0:
        return {"positive": 0, "negative": 0, "histogram": {"edges": [], "counts": []}}
    counts, edges = np.histogram(values, bins=5, range=(float(values.min()), float(values.max())))
    return {
        "positive": int((values > 0).sum()),
        "negative": int((values < 0).sum()),
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
    }


class MetaSP(StepTemplate):
    """MetaSP as an Avalanche strategy; every plugin hook fires as in ``SupervisedTemplate``."""

    extra_batch_fields = ("index",)  # its train loader's IndexedSubset: the dataset index, as mb_index

    def __init__(
        self,
        *,
        args: MetaSPArgs,
        storage: MetaSPBuffer,
        ledger: InfluenceLedger,
        replay_batch_size: int,
        influence_fn: InfluenceFn,
        **template_kwargs: Any,
    ) -> None:
        """Create the strategy.

        Args:
            args: MetaSP's arguments.
            storage: The rehearsal buffer, updated after each task.
            ledger: Where each example's fused influence is accumulated (read by RehSel).
            replay_batch_size: Size of B_old.
            influence_fn: The influence estimator, ``(model, batch, measurements, lr)`` -> result.
            **template_kwargs: Passed to ``SupervisedTemplate``.
        """
        super().__init__(**template_kwargs)
        self.args = args
        self.storage = storage
        self.ledger = ledger
        self.replay_batch_size = replay_batch_size
        self.influence_fn = influence_fn
        self.val_size = max(1, round(args.val_fraction * storage.max_size))
        self.mb_index: torch.Tensor | None = None
        self._memory_positions: torch.Tensor | None = None
        self._heldout: list[int] = []
        self._train_indices: list[int] = []
        self._task_values: dict[str, list[npt.NDArray[np.float64]]] = {"S": [], "P": [], "SP": []}
        self._gammas: list[float] = []
        self.influence_log: list[dict[str, Any]] = []
        self._epoch_phase: Literal["plain", "replay", "meta"] = "plain"
        self._pending: tuple[int, Batch, Batch] | None = None
        self._captured_features: list[torch.Tensor] = []
        self._parts: list[int] | None = None  # sizes of B_new and B_old when forwarded apart
        self.scored_examples: ScoredExamples | None = None

    # --- data ------------------------------------------------------------------------
    def training_indices(self) -> list[int]:
        """The current task's examples less the held-out part that V_new is drawn from (if any)."""
        indices = list(range(len(self.adapted_dataset)))
        self._heldout = []
        if self.args.new_validation == "heldout":
            order = torch.randperm(len(indices)).tolist()
            n_heldout = max(1, int(self.args.heldout_fraction * len(indices)))
            self._heldout = sorted(order[:n_heldout])
            indices = sorted(order[n_heldout:])
        self._train_indices = indices
        return indices

    def sample_memory(self, count: int, train: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``count`` memory examples (augmented when ``train``) and their buffer positions."""
        return self.storage.draw(self, count, augment=train)

    def _sample_new_validation(self) -> tuple[torch.Tensor, torch.Tensor]:
        pool = self._heldout if self._heldout else self._train_indices
        chosen = torch.randperm(len(pool))[: self.val_size]
        return self.fetch_examples(self.experience.dataset, [pool[int(c)] for c in chosen], augment=False)

    # --- schedule --------------------------------------------------------------------
    def phase(self) -> Literal["plain", "replay", "meta"]:
        """What this epoch's steps are: plain (task 1, empty buffer), replay (warm-up) or meta."""
        if self.experience.current_experience == 0 or len(self.storage) == 0:
            return "plain"
        first_meta_epoch = max(0, self.train_epochs - self.args.meta_epochs)
        if self.clock.train_exp_epochs >= first_meta_epoch:
            return "meta"
        return "replay" if self.args.warmup == "replay" else "plain"

    # --- one step --------------------------------------------------------------------
    def _meta_weights(self, n_new: int) -> torch.Tensor:
        old_x, old_y, _ = self.sample_memory(self.val_size, train=False)
        fusion = influence_weights(
            self.model,
            (self.mb_x, self.mb_y),
            stability_set=(old_x, old_y),
            plasticity_set=self._sample_new_validation(),
            lr=float(self.optimizer.param_groups[0]["lr"]),
            args=self.args,
            influence_fn=self.influence_fn,
        )
        self._record(fusion, n_new)
        return fusion.weights

    def _record(self, fusion: FusedInfluence, n_new: int) -> None:
        self._gammas.append(fusion.gamma)
        for name, values in (("S", fusion.stability), ("P", fusion.plasticity), ("SP", fusion.fused)):
            self._task_values[name].append(values.detach().cpu().numpy())
        harm = fusion.fused.detach().cpu().tolist()
        task = int(self.experience.current_experience)
        assert self.mb_index is not None and self._memory_positions is not None
        new_indices = self.mb_index.tolist()
        memory_keys = [self.storage.keys[int(p)] for p in self._memory_positions]
        self.ledger.add(
            [task] * n_new + [k[0] for k in memory_keys],
            new_indices + [k[1] for k in memory_keys],
            harm,
        )

    def before_epoch(self) -> None:
        """Plain, replay or MetaSP steps this epoch, as the schedule says."""
        self._epoch_phase = self.phase()

    def prepare_batch(self) -> torch.Tensor | None:
        """Append B_old (replay and MetaSP phases); MetaSP steps return influence weights."""
        self._parts = None
        if self._epoch_phase == "plain":
            return None
        n_new = int(self.mb_x.shape[0])
        old_x, old_y, self._memory_positions = self.sample_memory(self.replay_batch_size, train=True)
        self.append_to_batch(old_x, old_y)
        if self.args.replay_forward == "separate":
            self._parts = [n_new, int(old_y.shape[0])]
        if self._epoch_phase != "meta":
            return None if self._parts is None else part_means(self._parts, self.mb_x.device)
        if self.args.fused_step is None:
            return self._meta_weights(n_new)
        # The same draws in the same order as the two-pass step: B_old, V_old, V_new.
        stability_x, stability_y, _ = self.sample_memory(self.val_size, train=False)
        self._pending = (n_new, (stability_x, stability_y), self._sample_new_validation())
        if self.args.fused_step == "lastlayer":
            self._capture_classifier_input()
        return None

    def forward(self) -> Any:
        """The template's forward; B_new and B_old each through the network alone when forwarded apart."""
        if self._parts is None or not self.is_training:
            return super().forward()
        n_new = self._parts[0]
        return torch.cat([self.model(self.mb_x[:n_new]), self.model(self.mb_x[n_new:])])

    def loss_weights(self, weights: torch.Tensor | None) -> torch.Tensor | None:
        """The fused step: influence from this step's own forward, then the weighted loss.

        The pseudo step and the real step share the batch, theta and the batch's BatchNorm
        statistics, so the pseudo gradient is a backward pass of the training forward's
        graph (kept for the weighted backward that follows) instead of a second forward.
        """
        if self._pending is None:
            return weights
        n_new, stability_set, plasticity_set = self._pending
        self._pending = None
        lr = self.args.influence_lr or float(self.optimizer.param_groups[0]["lr"])
        if self.args.fused_step == "lastlayer":
            result = self._last_layer_influence(stability_set, plasticity_set, lr)
        else:
            result = self._graph_influence(stability_set, plasticity_set, lr)
        fusion = fuse_influence(result, self.args, self._parts)
        self._record(fusion, n_new)
        return fusion.weights

    def _low_precision(self) -> bool:
        options = getattr(self, "device_path", None)
        return options is not None and options.precision == "bf16"

    def _graph_influence(self, stability_set: Batch, plasticity_set: Batch, lr: float) -> InfluenceResult:
        # The pseudo step follows the training loss at uniform weights: the batch mean, or
        # the sum of the two parts' means when they are forwarded apart.
        if self._parts is None:
            pseudo_loss = F.cross_entropy(self.mb_output, self.mb_y)
        else:
            per_example = F.cross_entropy(self.mb_output, self.mb_y, reduction="none")
            pseudo_loss = (part_means(self._parts, per_example.device) * per_example).sum()
        pseudo_gradient = gradient_by_name(pseudo_loss, self.model)
        return one_step_meta_influence(
            self.model,
            (self.mb_x, self.mb_y),
            [stability_set, plasticity_set],
            lr,
            pseudo_gradient,
            low_precision=self._low_precision(),
            parts=self._parts,
        )

    def _capture_classifier_input(self) -> None:
        """Keep the classifier's input of the coming training forward (the batch's features)."""
        classifier = classifier_of(self.model)

        def keep(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            self._captured_features.append(inputs[0].detach().float())
            handle.remove()

        handle = classifier.register_forward_pre_hook(keep)

    def _last_layer_influence(self, stability_set: Batch, plasticity_set: Batch, lr: float) -> InfluenceResult:
        train = (self._captured_features.pop(), self.mb_y)
        with strategy_autocast(self):
            return classifier_influence(self.model, train, [stability_set, plasticity_set], lr)

    def after_experience(self) -> None:
        """Update the buffer (before the plugins' ``after_training_exp``), log the task's influence."""
        # What the task's steps made of its own examples, kept before the buffer update
        # clears the ledger: a label-noise audit asks whether the mislabelled ones weighed less.
        indices, harm = self.ledger.recorded(int(self.experience.current_experience))
        self.scored_examples = ScoredExamples(self.experience.dataset, indices, harm)
        self.storage.update(self)
        values = {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in self._task_values.items()}
        self.influence_log.append(
            {
                "task": int(self.experience.current_experience),
                "meta_steps": len(self._gammas),
                "gamma_mean": float(np.mean(self._gammas)) if self._gammas else None,
                **{name: _summary(v) for name, v in values.items()},
            }
        )
        self._task_values = {"S": [], "P": [], "SP": []}
        self._gammas = []

    def clbench_extras(self) -> dict[str, Any]:
        """Influence statistics per task and the final buffer's class counts."""
        counts: dict[int, int] = {}
        for label in self.storage.labels:
            counts[label] = counts.get(label, 0) + 1
        return {"influence": self.influence_log, "buffer_class_counts": {str(k): v for k, v in sorted(counts.items())}}


def influence_function(args: MetaSPArgs) -> InfluenceFn:
    """The influence estimator MetaSP's arguments ask for (``clbench list estimators``).

    ``meta`` is the paper's pseudo-update influence (exact, ``pseudo_steps`` steps); any
    other registered estimator is evaluated with the batch B as its training set, so its
    curvature is that of the batch loss.
    """
    return ESTIMATORS.get(args.influence).factory(args.estimator_args)


def _build(
    ctx: StrategyContext,
    args: MetaSPArgs,
    selection: str,
    features: FeatureKind,
    window: InfluenceWindow = "task",
) -> Recipe:
    ledger = InfluenceLedger()
    storage = MetaSPBuffer(
        ctx.buffer_size, selection, ledger, seed=ctx.seed, features=features, influence_window=window
    )
    purifier = [Purifier(storage, args.purify)] if args.purify else []  # after the buffer's update
    return ctx.recipe(
        MetaSP,
        *purifier,
        args=args,
        storage=storage,
        ledger=ledger,
        replay_batch_size=ctx.training.replay_batch_size,
        influence_fn=influence_function(args),
    )


@STRATEGIES.register(
    "metasp",
    args=MetaSPArgs,
    help="MetaSP: influence-weighted rehearsal by MGDA fusion of stability and plasticity (paper 'Ours')",
    uses_buffer=True,
    revision=3,
)
def build_metasp(ctx: StrategyContext, args: MetaSPArgs) -> Recipe:
    """MetaSP with the class-balanced random buffer."""
    return _build(ctx, args, "random", "pixels")


@STRATEGIES.register(
    "metasp_rehsel",
    args=MetaSPRehSelArgs,
    help="MetaSP + RehSel: buffer filled by K-means clusters ranked by influence (paper 'Ours+RehSel')",
    uses_buffer=True,
    revision=3,
)
def build_metasp_rehsel(ctx: StrategyContext, args: MetaSPRehSelArgs) -> Recipe:
    """MetaSP with RehSel (or one of its ablations) filling the buffer."""
    return _build(ctx, args, args.selection, args.features, args.influence_window)
