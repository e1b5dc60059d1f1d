"""``clbench influence-bench``: how faithful and how costly each influence estimator is.

The MetaSP paper's comparison: a one-hidden-layer network trained on a Fashion-MNIST
subset (default 1,000 training and 500 test examples); for every estimator, the
influence of each training example on the mean test loss, compared with the exact
damped-Hessian influence: sign confusion counts (positive = harmful), Pearson and
Spearman correlation, wall-clock time and peak memory.

The training objective includes an L2 term (``weight_decay``), so the exact reference
uses damping = weight_decay: it is then the Hessian of the objective actually minimised.
"""

from __future__ import annotations

import platform
import resource
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clbench.config import ComponentSpec, config_to_dict, from_mapping
from clbench.influence.estimators import make_estimator


@dataclass(frozen=True)
class FidelityConfig:
    """A fidelity benchmark: data, network, training and the estimators to compare."""

    name: str = field(metadata={"help": "benchmark name; the output folder's name"})
    estimators: tuple[ComponentSpec, ...] = field(metadata={"help": "estimators compared with the reference"})
    reference: ComponentSpec = field(
        default_factory=lambda: ComponentSpec("exact"), metadata={"help": "ground-truth estimator"}
    )
    data: Literal["fmnist", "synthetic"] = field(default="fmnist", metadata={"help": "fmnist or synthetic"})
    data_path: str = field(default="/usr/share/datasets/fashion-mnist", metadata={"help": "Fashion-MNIST IDX folder"})
    n_train: int = field(default=1000, metadata={"help": "training examples"})
    n_test: int = field(default=500, metadata={"help": "test examples"})
    hidden: int = field(default=8, metadata={"help": "hidden units of the one-hidden-layer network"})
    optimizer: Literal["lbfgs", "sgd"] = field(
        default="lbfgs", metadata={"help": "lbfgs: train to a minimum (the reference assumes one); sgd: plain GD"}
    )
    epochs: int = field(default=300, metadata={"help": "full-batch steps (L-BFGS iterations or GD steps)"})
    lr: float = field(default=0.5, metadata={"help": "learning rate (also the meta/identity step)"})
    weight_decay: float = field(default=0.01, metadata={"help": "L2 strength; the reference's damping"})
    seed: int = field(default=0, metadata={"help": "seed of the subset and the initialisation"})
    dtype: Literal["float32", "float64"] = field(default="float64", metadata={"help": "arithmetic precision"})
    mode: Literal["static", "trajectory"] = field(
        default="static",
        metadata={
            "help": "static: influence at a trained minimum vs `reference`; trajectory: HYDRA's comparison, "
            "the Hessian-aware trajectory hypergradient is the reference (small conv net, SGD)"
        },
    )
    momentum: float = field(default=0.9, metadata={"help": "trajectory mode: SGD momentum"})
    batch_size: int = field(default=32, metadata={"help": "trajectory mode: SGD mini-batch"})
    retrain_points: int = field(
        default=0,
        metadata={
            "help": "static mode: training points (largest exact |influence|) whose removal is also "
            "measured by warm-start leave-one-out retraining and by the PBRF (Bae et al. 2022)"
        },
    )
    retrain_iterations: int = field(default=100, metadata={"help": "L-BFGS iterations of each warm-start retraining"})


def _load(config: FidelityConfig) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(config.seed)
    if config.data == "synthetic":
        centers = rng.normal(size=(3, 10))
        total = config.n_train + config.n_test
        labels = rng.integers(0, 3, total)
        inputs = centers[labels] + rng.normal(scale=1.5, size=(total, 10))
        x, y = torch.as_tensor(inputs), torch.as_tensor(labels)
        return (x[: config.n_train], y[: config.n_train]), (x[config.n_train :], y[config.n_train :])
    from clbench.datasets.fashion_mnist import read_idx_pair

    splits = []
    for prefix, count in (("train", config.n_train), ("t10k", config.n_test)):
        arrays = read_idx_pair(config.data_path, prefix)
        chosen = rng.choice(len(arrays.labels), size=count, replace=False)
        images = arrays.images[chosen].reshape(count, -1).astype(np.float64) / 255.0
        splits.append((torch.as_tensor((images - 0.2860) / 0.3530), torch.as_tensor(arrays.labels[chosen])))
    return splits[0], splits[1]


def _objective(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], weight_decay: float) -> torch.Tensor:
    penalty = sum((p**2).sum() for p in model.parameters())
    return F.cross_entropy(model(train[0]), train[1]) + 0.5 * weight_decay * penalty


def _train(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], config: FidelityConfig) -> dict[str, float]:
    """Minimise mean cross-entropy + (weight_decay / 2) ||theta||^2; report where it ended."""
    if config.optimizer == "lbfgs":
        _minimise(
            model,
            lambda: _objective(model, train, config.weight_decay),
            config.epochs,
            tolerance_grad=1e-10,
            tolerance_change=1e-14,
        )
    else:
        sgd = torch.optim.SGD(model.parameters(), lr=config.lr)
        for _ in range(config.epochs):
            sgd.zero_grad()
            _objective(model, train, config.weight_decay).backward()
            sgd.step()
    model.zero_grad()
    objective = _objective(model, train, config.weight_decay)
    gradients = torch.autograd.grad(objective, list(model.parameters()))
    with torch.no_grad():
        return {
            "train_loss": float(F.cross_entropy(model(train[0]), train[1])),
            "objective": float(objective),
            "gradient_norm": float(torch.cat([g.reshape(-1) for g in gradients]).norm()),
        }


def compare(estimate: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Sign confusion (positive = harmful) and correlations of an estimate with the reference."""
    from scipy import stats

    est, ref = estimate.detach().cpu().double().numpy(), reference.detach().cpu().double().numpy()
    return {
        "TP": int(((est > 0) & (ref > 0)).sum()),
        "TN": int(((est < 0) & (ref < 0)).sum()),
        "FP": int(((est > 0) & (ref < 0)).sum()),
        "FN": int(((est < 0) & (ref > 0)).sum()),
        "pearson": float(stats.pearsonr(est, ref).statistic),
        "spearman": float(stats.spearmanr(est, ref).statistic),
    }


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _label(spec: ComponentSpec) -> str:
    if not spec.args:
        return spec.name
    return spec.name + "(" + ", ".join(f"{k}={v}" for k, v in sorted(spec.args.items())) + ")"


PAPER_SIGN_AGREEMENT = {
    "meta": "96.5 (one-step)",
    "neumann": "92.4",
    "identity": "85.6 (Larsen) / 84.6 (Luketina)",
}
"""Sign agreement with the exact influence that the MetaSP paper reports (appendix Table 6)."""


def _damped_spectrum(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], damping: float) -> dict[str, Any]:
    """Extreme eigenvalues of the reference's matrix, the damped Hessian of the training loss."""
    from clbench.influence.functional import per_example_loss_fn, trainable_params
    from clbench.influence.hessian import dense_matrix, hvp_fn

    params = trainable_params(model)
    matrix = dense_matrix(hvp_fn(per_example_loss_fn(model), params, train), params)
    eigenvalues = torch.linalg.eigvalsh(0.5 * (matrix + matrix.T)) + damping
    smallest, largest = float(eigenvalues.min()), float(eigenvalues.max())
    return {"smallest": smallest, "largest": largest, "positive_definite": smallest > 0}


def _static_estimator(spec: ComponentSpec, weight_decay: float) -> Any:
    args = dict(spec.args)
    if spec.name in ("exact", "cg", "lissa", "neumann") and "damping" not in args:
        args["damping"] = weight_decay  # the Hessian of the objective with its L2 term
    return make_estimator(spec.name, args)


def _measured(fn: Any) -> tuple[Any, float, float]:
    rss_before = _peak_rss_mib()
    tic = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - tic, max(0.0, _peak_rss_mib() - rss_before)


def _network(config: FidelityConfig, inputs: int, dtype: torch.dtype) -> nn.Module:
    if config.mode == "trajectory" and config.data == "fmnist":
        side = round(inputs**0.5)
        channels = config.hidden
        size = (side - 5) // 2 + 1
        return nn.Sequential(
            nn.Unflatten(1, (1, side, side)),
            nn.Conv2d(1, channels, 5, stride=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(channels * size * size, 10),
        ).to(dtype)
    return nn.Sequential(nn.Linear(inputs, config.hidden), nn.Tanh(), nn.Linear(config.hidden, 10)).to(dtype)


class _Rows:
    """The comparison rows; the first influence added is the reference the others are compared with."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.reference: torch.Tensor | None = None

    def add(self, label: str, influence: torch.Tensor, seconds: float, rss: float) -> None:
        if self.reference is None:
            self.reference = influence
        row = {"estimator": label, "seconds": seconds, "peak_rss_growth_mib": rss, **compare(influence, self.reference)}
        self.rows.append(row)


def _trajectory_references(config: FidelityConfig, model: Any, train: Any, test: Any, rows: _Rows) -> dict[str, Any]:
    """HYDRA's Hessian-aware and fast influence along one training run; the model left at its end."""
    from clbench.influence.hydra import HydraArgs, train_with_hypergradients, trajectory_influence

    final_params: dict[str, torch.Tensor] | None = None
    for aware in (True, False):
        hydra = HydraArgs(
            hessian_aware=aware,
            epochs=config.epochs,
            batch_size=config.batch_size,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            seed=config.seed,
        )

        def follow(hydra: HydraArgs = hydra) -> Any:
            return train_with_hypergradients(model, train, config.lr, hydra)

        trajectory, seconds, rss = _measured(follow)
        final_params = final_params or trajectory.params
        label = "hydra(hessian_aware)" if aware else "hydra(fast)"
        rows.add(label, trajectory_influence(model, trajectory, test), seconds, rss)
    assert final_params is not None
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.copy_(final_params[name])
    return {"train_loss": float(F.cross_entropy(model(train[0]), train[1]).detach())}


def _static_training(config: FidelityConfig, model: Any, train: Any) -> dict[str, Any]:
    """Train to (near) a minimum and describe the damped Hessian there, warning when it is indefinite."""
    training: dict[str, Any] = dict(_train(model, train, config))
    training["damped_hessian"] = _damped_spectrum(model, train, config.weight_decay)
    if not training["damped_hessian"]["positive_definite"]:
        warnings.warn(
            f"influence fidelity: the damped Hessian's smallest eigenvalue is "
            f"{training['damped_hessian']['smallest']:.3g} (not positive definite): the exact reference inverts "
            "an indefinite matrix; train longer or raise the damping",
            stacklevel=2,
        )
    return training


def _damping_sensitivity(config: FidelityConfig, model: Any, train: Any, test: Any, reference: Any) -> dict[str, Any]:
    """The exact reference at 1.1 x its damping against itself: near-singular references make signs meaningless."""
    damping = float(config.reference.args.get("damping", config.weight_decay))
    nudged = ComponentSpec("exact", {**config.reference.args, "damping": 1.1 * damping})
    result = _static_estimator(nudged, config.weight_decay)(model, train, [test], config.lr)
    return {"damping": 1.1 * damping, **compare(result.influence[0], reference)}


def run_fidelity(config: FidelityConfig) -> dict[str, Any]:
    """Train the network, run the reference and every estimator, compare them."""
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    torch.manual_seed(config.seed)
    train, test = _load(config)
    train = (train[0].to(dtype), train[1])
    test = (test[0].to(dtype), test[1])
    model = _network(config, train[0].shape[1], dtype)
    rows = _Rows()
    specs: tuple[ComponentSpec, ...]
    if config.mode == "trajectory":
        training = _trajectory_references(config, model, train, test, rows)
        specs = config.estimators
    else:
        training = _static_training(config, model, train)
        specs = (config.reference, *config.estimators)
    influences: dict[str, torch.Tensor] = {}
    for spec in specs:
        estimator = _static_estimator(spec, config.weight_decay)
        result, seconds, rss = _measured(lambda estimator=estimator: estimator(model, train, [test], config.lr))
        rows.add(_label(spec), result.influence[0], seconds, rss)
        influences[_label(spec)] = result.influence[0]
    if config.mode == "static" and config.reference.name == "exact":
        training["damping_sensitivity"] = _damping_sensitivity(config, model, train, test, rows.reference)
    retraining = None
    if config.mode == "static" and config.retrain_points > 0:
        retraining = _retraining_check(model, train, test, config, influences)
    return {
        "retraining": retraining,
        "config": config_to_dict(config),
        "parameters": sum(p.numel() for p in model.parameters()),
        "training": training,
        "environment": {
            "torch": torch.__version__,
            "platform": platform.platform(),
            "threads": torch.get_num_threads(),
        },
        "rows": rows.rows,
    }


def _minimise(
    model: nn.Module,
    objective: Any,
    iterations: int,
    tolerance_grad: float = 1e-12,
    tolerance_change: float = 1e-16,
) -> None:
    """Full-batch L-BFGS with a strong-Wolfe line search on ``objective()``."""
    lbfgs = torch.optim.LBFGS(
        model.parameters(),
        lr=1.0,
        max_iter=iterations,
        tolerance_grad=tolerance_grad,
        tolerance_change=tolerance_change,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        lbfgs.zero_grad()
        loss: torch.Tensor = objective()
        loss.backward()
        return loss

    lbfgs.step(closure)


def _leave_one_out_change(model: nn.Module, train: Any, test: Any, i: int, config: FidelityConfig) -> float:
    """The test-loss change after warm-start retraining without example ``i`` (from theta*)."""
    import copy

    n = train[1].shape[0]
    keep = torch.ones(n, dtype=torch.bool)
    keep[i] = False
    net = copy.deepcopy(model)

    def without_i() -> torch.Tensor:
        penalty = sum((p**2).sum() for p in net.parameters())
        losses = F.cross_entropy(net(train[0]), train[1], reduction="none")
        objective: torch.Tensor = losses[keep].sum() / n + 0.5 * config.weight_decay * penalty
        return objective

    _minimise(net, without_i, config.retrain_iterations)
    with torch.no_grad():
        return float(F.cross_entropy(net(test[0]), test[1])) - float(F.cross_entropy(model(test[0]), test[1]))


def _pbrf_change(model: nn.Module, train: Any, test: Any, i: int, config: FidelityConfig) -> float:
    """The test-loss change at the proximal Bregman response function's minimum for removing ``i``."""
    import copy

    n = train[1].shape[0]
    with torch.no_grad():
        anchor_logits = model(train[0])
    anchor_params = [p.detach().clone() for p in model.parameters()]
    net = copy.deepcopy(model)

    def bregman_response() -> torch.Tensor:
        logits = net(train[0])
        soft = torch.softmax(anchor_logits, dim=1)
        divergence = (
            torch.logsumexp(logits, 1) - torch.logsumexp(anchor_logits, 1) - (soft * (logits - anchor_logits)).sum(1)
        ).mean()
        removed = F.cross_entropy(logits[i : i + 1], train[1][i : i + 1]) / n
        distance = sum(((p - a) ** 2).sum() for p, a in zip(net.parameters(), anchor_params, strict=True))
        response: torch.Tensor = divergence - removed + 0.5 * config.weight_decay * distance
        return response

    _minimise(net, bregman_response, config.retrain_iterations)
    with torch.no_grad():
        return float(F.cross_entropy(net(test[0]), test[1])) - float(F.cross_entropy(model(test[0]), test[1]))


def _retraining_check(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    config: FidelityConfig,
    influences: dict[str, torch.Tensor],
) -> dict[str, Any]:
    """Bae et al. (2022): compare predicted removal effects with two retrained answers.

    Removing example i is up-weighting it by eps = -1/n, so an estimator predicts the test
    loss change -I_i / n. The answers: warm-start leave-one-out retraining (minimise the
    objective without i from theta*), and the proximal Bregman response function (PBRF):
    minimise (1/n) sum_j D(f_theta(x_j), f_theta*(x_j)) - (1/n) l(z_i; theta)
    + (damping / 2) ||theta - theta*||^2 from theta*, D the Bregman divergence of softmax
    cross-entropy on the logits.
    """
    from scipy import stats

    n = train[1].shape[0]
    reference = next(iter(influences.values()))
    chosen = torch.argsort(reference.abs(), descending=True)[: config.retrain_points].tolist()
    loo = [_leave_one_out_change(model, train, test, i, config) for i in chosen]
    pbrf = [_pbrf_change(model, train, test, i, config) for i in chosen]
    rows = []
    for label, influence in influences.items():
        predicted = (-influence[chosen] / n).detach().cpu().double().numpy()
        rows.append(
            {
                "estimator": label,
                "pearson_loo": float(stats.pearsonr(predicted, loo).statistic),
                "spearman_loo": float(stats.spearmanr(predicted, loo).statistic),
                "pearson_pbrf": float(stats.pearsonr(predicted, pbrf).statistic),
                "spearman_pbrf": float(stats.spearmanr(predicted, pbrf).statistic),
            }
        )
    return {"points": chosen, "loo_change": loo, "pbrf_change": pbrf, "rows": rows}


def to_markdown(result: dict[str, Any]) -> str:
    """The comparison as a markdown table."""
    import pandas as pd

    frame = pd.DataFrame(result["rows"]).set_index("estimator")
    frame["sign_error_rate"] = (frame["FP"] + frame["FN"]) / (frame["TP"] + frame["TN"] + frame["FP"] + frame["FN"])
    for column in ("seconds", "peak_rss_growth_mib", "pearson", "spearman", "sign_error_rate"):
        frame[column] = frame[column].map(lambda v: f"{v:.4f}")
    config = result["config"]
    common = (
        "Positive influence = harmful; TP/TN/FP/FN count training examples by the signs of estimate and "
        "reference, sign error rate = (FP + FN) / N. Peak memory is the growth of the process's peak resident "
        "set (0 when it did not exceed an earlier peak).\n\n"
    )
    data = f"{config['data']} ({config['n_train']} train, {config['n_test']} test)"
    if config["mode"] == "trajectory":
        setting = (
            f"{data}, a small network ({result['parameters']} parameters) trained from its initialisation by SGD "
            f"(lr {config['lr']}, momentum {config['momentum']}, weight decay {config['weight_decay']}, batch "
            f"{config['batch_size']}, {config['epochs']} epochs; final training loss "
            f"{result['training']['train_loss']:.4f}). Reference: HYDRA's Hessian-aware trajectory hypergradient "
            "(first row); static estimators are evaluated at the final weights. "
        )
    else:
        setting = (
            f"{data}, one hidden layer of {config['hidden']} ({result['parameters']} parameters), trained by "
            f"{config['optimizer']} ({config['epochs']} full-batch iterations) on cross-entropy + weight decay "
            f"{config['weight_decay']}: training loss {result['training']['train_loss']:.4f}, gradient norm of the "
            f"objective {result['training']['gradient_norm']:.2e}. Reference: the first row, with damping = weight "
            "decay (the Hessian of the objective minimised). "
        )
    header = f"# Influence fidelity: {config['name']}\n\n" + setting + common
    frame["paper_sign_agreement_%"] = [PAPER_SIGN_AGREEMENT.get(label.split("(")[0], "") for label in frame.index]
    table: str = frame.to_markdown()
    text = header + _reference_notes(result) + table + "\n"
    retraining = result.get("retraining")
    if retraining:
        check = pd.DataFrame(retraining["rows"]).set_index("estimator")
        text += (
            f"\n## Removal of {len(retraining['points'])} training points (Bae et al. 2022)\n\n"
            "Each estimator's predicted test-loss change when a point is removed (-I/n), correlated over the "
            "points with warm-start leave-one-out retraining (LOO) and with the proximal Bregman response "
            "function (PBRF).\n\n" + check.to_markdown(floatfmt=".4f") + "\n"
        )
    return text


def _reference_notes(result: dict[str, Any]) -> str:
    """What the reference is worth: its matrix's spectrum and its sign stability under the damping."""
    training = result["training"]
    notes = []
    spectrum = training.get("damped_hessian")
    if spectrum:
        verdict = (
            "positive definite, so the reference is the influence at a minimum"
            if spectrum["positive_definite"]
            else "NOT positive definite: the reference inverts an indefinite matrix"
        )
        notes.append(
            f"The reference's matrix (damped Hessian) has eigenvalues in [{spectrum['smallest']:.4g}, "
            f"{spectrum['largest']:.4g}]: {verdict}."
        )
    sensitivity = training.get("damping_sensitivity")
    if sensitivity:
        total = sum(sensitivity[k] for k in ("TP", "TN", "FP", "FN"))
        flipped = (sensitivity["FP"] + sensitivity["FN"]) / total
        notes.append(
            f"With damping {sensitivity['damping']:.4g} instead, {100 * flipped:.1f}% of the reference's signs flip "
            f"(Pearson {sensitivity['pearson']:.4f}): sign agreement below that is noise."
        )
    notes.append(
        "The last column is the sign agreement the MetaSP paper reports for each approximation (appendix "
        "Table 6; clbench's is 1 - sign_error_rate)."
    )
    return " ".join(notes) + "\n\n"


def load_fidelity_config(path: str | Path, overrides: list[str] | None = None) -> FidelityConfig:
    """Read and validate a fidelity-benchmark YAML file."""
    from clbench.config import apply_overrides, read_yaml_file

    raw = apply_overrides(read_yaml_file(path) or {}, overrides or [])
    raw["estimators"] = [{"name": e} if isinstance(e, str) else e for e in raw.get("estimators", [])]
    if isinstance(raw.get("reference"), str):
        raw["reference"] = {"name": raw["reference"]}
    return from_mapping(FidelityConfig, raw, Path(path).name)


def write_fidelity(result: dict[str, Any], out: Path) -> list[Path]:
    """Write ``fidelity.json`` and ``fidelity.md`` into ``out``."""
    from clbench.results import write_json_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "fidelity.json", result)
    (out / "fidelity.md").write_text(to_markdown(result))
    return [out / "fidelity.json", out / "fidelity.md"]


__all__ = ["FidelityConfig", "compare", "load_fidelity_config", "run_fidelity", "to_markdown", "write_fidelity"]
