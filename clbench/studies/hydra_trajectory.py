"""HYDRA's fidelity along training (Chen et al., AAAI 2021, Figures 4-5), at a size a CPU affords.

LeNet-5 (ReLU) is trained on Fashion-MNIST with HYDRA's Table 3 settings (SGD, batch 64,
lr 0.01 halved when the training plus validation loss has not fallen by 0.01 % of its best
for two epochs, momentum 0.9, weight decay 2e-5). Every few epochs, each training example's
influence on the mean test loss is computed three ways: HYDRA's Hessian-aware hypergradient
(the reference), its fast approximation (no Hessian term) and influence functions at the
weights of that epoch ((H + damping I)^-1 by conjugate gradients). The two estimates are
scored against the reference on 500 tracked examples (50 a class; HYDRA: 500, 1 % a class)
by sign error rate and Spearman correlation.

Scaled to this CPU: the training set (HYDRA: 50,000), not the method. The hypergradients
come from one reverse pass over the recorded run a checkpoint
(:func:`clbench.influence.hydra.reverse_trajectory_influence`) rather than HYDRA's forward
tangents, one HVP a step instead of one per tracked example; they are the same numbers
(tested), for every training example.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from clbench.config import config_to_dict, from_mapping

PUBLISHED = {
    # HYDRA, text beside Figures 4-5: after 100 epochs of LeNet-5 on Fashion-MNIST, mean (std).
    "hydra_fast": {"sign_error_rate": (0.014, 0.002), "spearman": (0.986, 0.002)},
    "influence_functions": {"sign_error_rate": (0.130, 0.013), "spearman": (0.820, 0.024)},
}


@dataclass(frozen=True)
class TrajectoryConfig:
    """HYDRA's fidelity study (its Figures 4-5 settings where they fit; the training set scaled)."""

    name: str = field(default="fmnist_lenet5_trajectory", metadata={"help": "output folder name"})
    data_path: str = field(default="/usr/share/datasets/fashion-mnist", metadata={"help": "Fashion-MNIST IDX files"})
    n_train: int = field(default=2000, metadata={"help": "training examples, balanced (HYDRA: 50,000)"})
    n_val: int = field(default=1000, metadata={"help": "validation examples read by the plateau schedule"})
    n_test: int = field(default=1000, metadata={"help": "test examples: the measured loss is their mean"})
    tracked: int = field(default=500, metadata={"help": "examples scored, balanced (HYDRA: 500, 1 % a class)"})
    epochs: int = field(default=100, metadata={"help": "training epochs (HYDRA: 200; converged after 100)"})
    every: int = field(default=10, metadata={"help": "epochs between checkpoints (HYDRA: 4)"})
    batch_size: int = field(default=64, metadata={"help": "mini-batch (HYDRA: 64)"})
    lr: float = field(default=0.01, metadata={"help": "initial learning rate (HYDRA: 0.01)"})
    plateau_factor: float = field(default=0.5, metadata={"help": "lr multiplier on a plateau (HYDRA: 0.5)"})
    plateau_epochs: int = field(default=2, metadata={"help": "epochs without progress that make a plateau"})
    plateau_tolerance: float = field(
        default=1e-4, metadata={"help": "progress = falling below (1 - tolerance) x best (HYDRA: 0.01 %)"}
    )
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum (HYDRA: 0.9)"})
    weight_decay: float = field(default=2e-5, metadata={"help": "SGD weight decay (HYDRA: 2e-5)"})
    hypergradient_weight_decay: float | None = field(
        default=None,
        metadata={
            "help": "weight decay lam of both hypergradient recurrences; null = the training's (HYDRA's "
            "equations). HYDRA's code: 1.0 (its hyper-parameter, of which its SGD gets 1/N)"
        },
    )
    cg_damping: float = field(default=0.01, metadata={"help": "damping of the influence functions' (H + dI)^-1"})
    cg_iterations: int = field(default=30, metadata={"help": "conjugate-gradient iterations at most"})
    dtype: Literal["float32", "float64"] = field(default="float32", metadata={"help": "arithmetic precision"})
    seed: int = field(default=0, metadata={"help": "seed of the subsets, the initialisation and the batch order"})


class PlateauHalving:
    """HYDRA's schedule: ``lr(epoch, theta)`` multiplied by ``factor`` after ``epochs`` epochs without progress."""

    def __init__(self, config: TrajectoryConfig, objective: Any) -> None:
        """``objective(theta)``: the training plus validation loss the schedule watches."""
        self.config, self.objective = config, objective
        self.rate, self.best, self.stale = config.lr, float("inf"), 0

    def __call__(self, epoch: int, params: dict[str, torch.Tensor]) -> float:
        """The learning rate of ``epoch``, given the weights at its start."""
        if epoch > 0:
            value = float(self.objective(params))
            if value < self.best * (1 - self.config.plateau_tolerance):
                self.best, self.stale = value, 0
            else:
                self.stale += 1
                if self.stale > self.config.plateau_epochs:
                    self.rate, self.stale = self.rate * self.config.plateau_factor, 0
        return self.rate


def _splits(config: TrajectoryConfig) -> dict[str, Any]:
    from clbench.studies.data_debugging import DebugConfig, balanced_rows, load_splits

    debug = DebugConfig(
        data_path=config.data_path, n_train=config.n_train, n_val=config.n_val, n_test=config.n_test, noise_rate=0.0
    )
    splits = load_splits(debug)
    dtype = getattr(torch, config.dtype)
    labels = splits["train"][1].numpy()
    tracked = balanced_rows(labels, config.tracked, np.random.default_rng(config.seed))
    cast = {name: (splits[name][0].to(dtype), splits[name][1]) for name in ("train", "val", "test")}
    return {**cast, "tracked": torch.from_numpy(np.sort(tracked))}


def _mean_loss(model: Any, params: dict[str, torch.Tensor], data: tuple[torch.Tensor, torch.Tensor]) -> float:
    from torch.func import functional_call

    with torch.no_grad():
        return float(F.cross_entropy(functional_call(model, params, (data[0],)), data[1]))


def _scores(estimate: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    from scipy import stats

    est, ref = estimate.detach().double().numpy(), reference.detach().double().numpy()
    return {
        "sign_error_rate": float(np.mean(np.sign(est) != np.sign(ref))),
        "spearman": float(stats.spearmanr(est, ref).statistic),
    }


def _influence_functions(
    model: Any, params: dict[str, torch.Tensor], splits: dict[str, Any], config: Any, curvature: str
) -> Any:
    """Influence functions at ``params``: -grad L_test (C + dI)^-1 grad l_i for every training example.

    C is the Hessian (HYDRA's) or the Gauss-Newton matrix: on the initial plateau of the loss
    the Hessian's curvature along the shared gradient direction is negative and flips every
    sign (seen on the toy test data), which the positive semi-definite Gauss-Newton does not.
    """
    from clbench.influence.estimators import make_estimator

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.copy_(params[name])
    options = {"damping": config.cg_damping, "max_iter": config.cg_iterations, "hessian": curvature}
    return make_estimator("cg", options)(model, splits["train"], [splits["test"]], config.lr).influence[0]


def _checkpoint(
    model: Any, record: Any, splits: dict[str, Any], config: TrajectoryConfig, epoch: int
) -> dict[str, Any]:
    """The three influences at the end of ``epoch``, scored against the Hessian-aware one on the tracked examples."""
    from clbench.influence.hydra import reverse_trajectory_influence
    from clbench.studies.data_debugging import accuracy

    steps = epoch * -(-config.n_train // config.batch_size)
    tic = time.perf_counter()
    hydra = reverse_trajectory_influence(model, splits["train"], record, splits["test"], steps)
    hydra_seconds = time.perf_counter() - tic
    tic = time.perf_counter()
    functions = _influence_functions(model, record.params[steps], splits, config, "full")
    functions_seconds = time.perf_counter() - tic
    gauss_newton = _influence_functions(model, record.params[steps], splits, config, "gauss_newton")
    tracked, reference = splits["tracked"], hydra["hessian_aware"]
    return {
        "epoch": epoch,
        "lr": record.lrs[steps - 1],
        "train_loss": _mean_loss(model, record.params[steps], splits["train"]),
        "test_accuracy": accuracy(model, splits["test"]),  # the model holds theta of this epoch (set above)
        **{f"hydra_fast_{k}": v for k, v in _scores(hydra["fast"][tracked], reference[tracked]).items()},
        **{f"if_{k}": v for k, v in _scores(functions[tracked], reference[tracked]).items()},
        **{f"if_gn_{k}": v for k, v in _scores(gauss_newton[tracked], reference[tracked]).items()},
        # the spread of each hypergradient: the curvature term shrinks old contributions
        "hydra_aware_std": float(reference[tracked].std()),
        "hydra_fast_std": float(hydra["fast"][tracked].std()),
        **{f"all_hydra_fast_{k}": v for k, v in _scores(hydra["fast"], reference).items()},
        **{f"all_if_{k}": v for k, v in _scores(functions, reference).items()},
        "hydra_seconds": hydra_seconds,
        "if_seconds": functions_seconds,
    }


def run_trajectory(config: TrajectoryConfig) -> dict[str, Any]:
    """Train once, recording the run; score the estimators at every checkpoint."""
    from clbench.influence.hydra import HydraArgs, record_sgd
    from clbench.studies.data_debugging import lenet5

    splits = _splits(config)
    torch.manual_seed(config.seed)
    model = lenet5().to(getattr(torch, config.dtype))
    schedule = PlateauHalving(
        config, lambda p: _mean_loss(model, p, splits["train"]) + _mean_loss(model, p, splits["val"])
    )
    args = HydraArgs(
        epochs=config.epochs,
        batch_size=config.batch_size,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        seed=config.seed,
        recurrence_weight_decay=config.hypergradient_weight_decay,
    )
    tic = time.perf_counter()
    record = record_sgd(model, splits["train"], args, schedule)
    training_seconds = time.perf_counter() - tic
    epochs = list(range(config.every, config.epochs + 1, config.every))
    rows = [_checkpoint(model, record, splits, config, epoch) for epoch in epochs]
    return {
        "config": config_to_dict(config),
        "training_seconds": training_seconds,
        "lr_halvings": sum(1 for a, b in zip(record.lrs, record.lrs[1:], strict=False) if b < a),
        "rows": rows,
        "published": PUBLISHED,
    }


def to_markdown(result: dict[str, Any]) -> str:
    """The checkpoints as a table, HYDRA's values beside."""
    import pandas as pd

    from clbench.studies.data_debugging import recurrence_note

    c = result["config"]
    head = (
        f"Fashion-MNIST, LeNet-5 (ReLU), {c['n_train']} training images (HYDRA: 50,000), {c['tracked']} tracked "
        f"(balanced); SGD batch {c['batch_size']}, lr {c['lr']} x{c['plateau_factor']} on plateaus of "
        f"{c['plateau_epochs']} epochs ({result['lr_halvings']} halvings), momentum {c['momentum']}, wd "
        f"{c['weight_decay']}, {c['epochs']} epochs, {c['dtype']}, seed {c['seed']}.{recurrence_note(c)} "
        "Influence on the mean loss of "
        f"{c['n_test']} test images; reference: HYDRA's Hessian-aware hypergradient. Influence functions: CG "
        f"({c['cg_iterations']} iterations, damping {c['cg_damping']}) at that epoch's weights, with the Hessian "
        f"(`if_`, HYDRA's) or the Gauss-Newton matrix (`if_gn_`). `all_` columns: every training example."
    )
    columns = ["epoch", "lr", "train_loss", "test_accuracy", "hydra_fast_sign_error_rate", "hydra_fast_spearman"]
    columns += ["if_sign_error_rate", "if_spearman", "if_gn_sign_error_rate", "if_gn_spearman"]
    columns += ["all_hydra_fast_spearman", "all_if_spearman", "hydra_aware_std", "hydra_fast_std"]
    frame = pd.DataFrame(result["rows"])
    table = frame[[c for c in columns if c in frame]].to_markdown(index=False, floatfmt=".4g")
    published = result["published"]
    paper = (
        "HYDRA (after 100 epochs, mean (std)): fast sign error "
        f"{published['hydra_fast']['sign_error_rate'][0]} ({published['hydra_fast']['sign_error_rate'][1]}), "
        f"Spearman {published['hydra_fast']['spearman'][0]} ({published['hydra_fast']['spearman'][1]}); "
        "influence functions sign error "
        f"{published['influence_functions']['sign_error_rate'][0]} "
        f"({published['influence_functions']['sign_error_rate'][1]}), Spearman "
        f"{published['influence_functions']['spearman'][0]} ({published['influence_functions']['spearman'][1]})."
    )
    return f"{head}\n\n{table}\n\n{paper}\n"


def load_trajectory_config(path: str, overrides: list[str]) -> TrajectoryConfig:
    """The YAML config with ``--set`` overrides applied, validated."""
    from clbench.config import apply_overrides, read_yaml_file
    from clbench.errors import ConfigError

    raw = apply_overrides(read_yaml_file(path) or {}, overrides)
    config = from_mapping(TrajectoryConfig, raw, "influence-trajectory")
    if config.every < 1 or config.epochs % config.every:
        raise ConfigError(f"every={config.every}: must be >= 1 and divide epochs={config.epochs}")
    if config.tracked % 10 or not 0 < config.tracked <= config.n_train:
        raise ConfigError(f"tracked={config.tracked}: must be a multiple of 10 in (0, n_train={config.n_train}]")
    if config.hypergradient_weight_decay is not None and config.hypergradient_weight_decay < 0:
        raise ConfigError(
            f"hypergradient_weight_decay={config.hypergradient_weight_decay}: must be >= 0, or null for the training's"
        )
    return config


def write_trajectory(result: dict[str, Any], out: Path) -> None:
    """``result.json`` and ``report.md`` in ``out``."""
    from clbench.studies.data_debugging import write_study

    write_study(result, out, to_markdown(result))
