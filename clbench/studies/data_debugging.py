"""HYDRA's data debugging (Chen et al., AAAI 2021, Table 3 / appendix Table 4), at a size a CPU affords.

r % of the training labels are permuted (HYDRA's setting; :mod:`clbench.datasets.label_noise`).
A LeNet-5 (ReLU) is trained on the noisy set with SGD while HYDRA's fast hypergradients (no
Hessian term; :func:`clbench.influence.hydra.fast_trajectory_influence`, two passes over the
run instead of one parameter-sized tangent per example) follow every training example; each
criterion then scores every training example's harm to the loss of a clean validation set
(positive = removing it should help), the r % most harmful are removed, the network is
retrained from the same initialisation on the rest, and its test accuracy is reported, with
the share of the removed examples that were mislabelled.

Criteria: ``none`` (no filtering), ``hydra_fast`` (the trajectory influence), ``cg``
(influence functions at the end of training, (H + damping I)^-1 by conjugate gradients),
``identity`` (gradient alignment at the end), ``small_loss`` (the loss at the end, the
noisy-label literature's criterion).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clbench.config import config_to_dict, from_mapping
from clbench.datasets.cifar import CIFAR10_STATS

PUBLISHED = {
    # HYDRA Table 3 (80 %) and appendix Table 4 (50 %), final test accuracy (%): Fashion-MNIST with
    # LeNet-5 (20 epochs), CIFAR-10 with DenseNet-40 (150 epochs; clbench runs a LeNet-5, named in the report).
    "fmnist": {
        0.8: {"none": 78.52, "cg": 63.20, "hydra_fast": 86.72},
        0.5: {"none": 87.44, "cg": 76.70, "hydra_fast": 87.28},
    },
    "cifar10": {
        0.8: {"none": 31.36, "cg": 42.12, "hydra_fast": 72.01},
        0.5: {"none": 68.91, "cg": 58.34, "hydra_fast": 75.06},
    },
}
# Per-channel mean and std of each dataset's training images (inputs are standardised).
NORMALISATION = {"fmnist": ((0.2860,), (0.3530,)), "cifar10": CIFAR10_STATS}


CRITERIA = ("none", "hydra_fast", "hydra_aware", "cg", "identity", "small_loss")


@dataclass(frozen=True)
class DebugConfig:
    """One data-debugging experiment (HYDRA's settings where they fit; sizes scaled for a CPU)."""

    name: str = field(default="fmnist_debugging", metadata={"help": "output folder name"})
    dataset: Literal["fmnist", "cifar10"] = field(
        default="fmnist", metadata={"help": "fmnist (IDX files) or cifar10 (image folder: <data_path>/train, /test)"}
    )
    data_path: str = field(
        default="/usr/share/datasets/fashion-mnist",
        metadata={"help": "Fashion-MNIST IDX folder, or CIFAR-10's image folder (e.g. data/cifar10)"},
    )
    n_train: int = field(default=2000, metadata={"help": "training examples (balanced; HYDRA: 50,000)"})
    n_val: int = field(default=1000, metadata={"help": "clean validation examples (HYDRA: 10,000)"})
    n_test: int = field(default=10000, metadata={"help": "test examples"})
    noise_rate: float = field(default=0.8, metadata={"help": "share of permuted training labels, removed again"})
    noise_kind: Literal["permute", "symmetric"] = field(
        default="permute",
        metadata={"help": "permute (HYDRA's Table 3) or symmetric (uniformly wrong labels: its Table 4 clustering)"},
    )
    cluster_points: int = field(
        default=100, metadata={"help": "validation points of each contribution vector (clustering; HYDRA: 1,000)"}
    )
    epochs: int = field(default=20, metadata={"help": "training epochs (HYDRA: 20)"})
    batch_size: int = field(default=64, metadata={"help": "mini-batch (HYDRA: 64)"})
    lr: float = field(default=0.01, metadata={"help": "constant learning rate (HYDRA: 0.01, halved on plateaus)"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum (HYDRA: 0.9)"})
    weight_decay: float = field(default=2e-5, metadata={"help": "SGD weight decay (HYDRA: 2e-5)"})
    hypergradient_weight_decay: float | None = field(
        default=None,
        metadata={
            "help": "weight decay lam of HYDRA's recurrence; null = the training's (HYDRA's equations). HYDRA's "
            "code: 1.0 (its hyper-parameter, of which its SGD gets 1/N)"
        },
    )
    cg_damping: float = field(default=0.01, metadata={"help": "damping of the influence functions' (H + dI)^-1"})
    cg_iterations: int = field(default=30, metadata={"help": "conjugate-gradient iterations at most"})
    retrain: Literal["epochs", "steps"] = field(
        default="epochs",
        metadata={
            "help": "retrain on what is kept for the same epochs (HYDRA) or the same number of updates as the "
            "tracked run (more epochs over the smaller set)"
        },
    )
    criteria: tuple[str, ...] = field(
        default=("none", "hydra_fast", "cg", "identity", "small_loss"),
        metadata={"help": f"what decides the removal, of: {', '.join(CRITERIA)}"},
    )
    seed: int = field(default=0, metadata={"help": "seed of the subset, the noise, the init and the batch order"})


def lenet5(channels: int = 1) -> nn.Module:
    """LeNet-5 with ReLU: 61,706 parameters on 28 x 28 grey images (padded to 32), 62,006 on 32 x 32 colour ones."""
    return nn.Sequential(
        nn.Conv2d(channels, 6, 5, padding=2 if channels == 1 else 0), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )  # fmt: skip


def network(config: DebugConfig) -> nn.Module:
    """The study's LeNet-5 for its dataset."""
    return lenet5(len(NORMALISATION[config.dataset][0]))


def balanced_rows(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count // 10`` rows of each of the ten labels, drawn without replacement, class by class."""
    per_class = count // 10
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)])


def load_splits(config: DebugConfig) -> dict[str, Any]:
    """Balanced train and validation subsets of the training file, the first test images, the noisy labels."""
    from clbench.datasets.label_noise import LabelNoise, corrupt_labels

    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in NORMALISATION[config.dataset])

    def tensors(arrays: Any, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(arrays.images[rows]).float().permute(0, 3, 1, 2) / 255.0
        return (x - mean) / std, torch.from_numpy(arrays.labels[rows])

    pool, test = _read_pool_and_test(config)
    rng = np.random.default_rng(config.seed)
    chosen = balanced_rows(pool.labels, config.n_train + config.n_val, rng)
    rng.shuffle(chosen)
    train_rows, val_rows = chosen[: config.n_train], chosen[config.n_train :]
    x, clean = tensors(pool, train_rows)
    noisy, mask = corrupt_labels(clean.numpy(), 10, LabelNoise(config.noise_kind, config.noise_rate), config.seed)
    return {
        "train": (x, torch.from_numpy(noisy)),
        "noisy": torch.from_numpy(mask),
        "val": tensors(pool, val_rows),
        "test": tensors(test, np.arange(config.n_test)),
    }


def _read_pool_and_test(config: DebugConfig) -> tuple[Any, Any]:
    """The training file's and the test file's images (N, H, W, C) and labels."""
    if config.dataset == "cifar10":
        from pathlib import Path

        from clbench.datasets.cifar import CIFAR10_CLASSES
        from clbench.datasets.sources import read_split_folder

        root = Path(config.data_path)
        # the decoded-image cache the benchmarks keep beside the image folders (<data root>/decoded)
        pool, test = read_split_folder(root, None, root.parent / "decoded", "influence-debug cifar10", CIFAR10_CLASSES)
        # A folder lists its test images class by class; shuffled once (fixed seed) so that the
        # first n_test are a draw over the classes, as in Fashion-MNIST's test file.
        order = np.random.default_rng(0).permutation(len(test.labels))
        return pool, replace(test, images=test.images[order], labels=test.labels[order])
    from clbench.datasets.fashion_mnist import read_idx_pair

    return read_idx_pair(config.data_path, "train"), read_idx_pair(config.data_path, "t10k")


def train_plainly(
    model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], config: DebugConfig, epochs: int | None = None
) -> nn.Module:
    """SGD as the tracked run trains (same batch order rule), on ``train``, for ``epochs`` (default the config's)."""
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(config.seed)
    x, y = train
    for _ in range(config.epochs if epochs is None else epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), config.batch_size):
            index = order[start : start + config.batch_size]
            optimizer.zero_grad()
            F.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
    return model


def accuracy(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Test accuracy in percent."""
    with torch.no_grad():
        predicted = torch.cat([model(xs).argmax(1) for xs in data[0].split(1000)])
    return float(100 * (predicted == data[1]).float().mean())


def hydra_args(config: DebugConfig) -> Any:
    """HYDRA's fast recurrence following the study's training run (the same SGD settings and batch order)."""
    from clbench.influence.hydra import HydraArgs

    return HydraArgs(
        hessian_aware=False,
        epochs=config.epochs,
        batch_size=config.batch_size,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        seed=config.seed,
        recurrence_weight_decay=config.hypergradient_weight_decay,
    )


def end_of_training_estimators(config: DebugConfig) -> dict[str, dict[str, Any]]:
    """The estimators scored at the end of training, with their options: influence functions and alignment."""
    return {"cg": {"damping": config.cg_damping, "max_iter": config.cg_iterations}, "identity": {}}


def harm_scores(config: DebugConfig, model: nn.Module, splits: dict[str, Any]) -> dict[str, tuple[Any, float]]:
    """Each criterion's harm of every training example (positive = remove first) and its seconds.

    ``model`` holds the initial weights; it is trained on the noisy set along the way (HYDRA
    follows that run from the start, the other criteria score at its end).
    """
    from clbench.influence.estimators import make_estimator
    from clbench.influence.hydra import fast_trajectory_influence, record_sgd, reverse_trajectory_influence

    train, val = splits["train"], splits["val"]
    scores: dict[str, tuple[Any, float]] = {}
    if "hydra_fast" in config.criteria:
        tic = time.perf_counter()
        scores["hydra_fast"] = (
            fast_trajectory_influence(model, train, config.lr, hydra_args(config), val),
            time.perf_counter() - tic,
        )
    if "hydra_aware" in config.criteria:
        # HYDRA's Hessian-aware hypergradient of every example: one reverse pass over the
        # recorded run (one HVP a step), the same run train_plainly makes.
        tic = time.perf_counter()
        record = record_sgd(model, train, hydra_args(config), config.lr)
        aware = reverse_trajectory_influence(model, train, record, val)["hessian_aware"]
        scores["hydra_aware"] = (aware, time.perf_counter() - tic)
    train_plainly(model, train, config)
    for name, options in end_of_training_estimators(config).items():
        if name in config.criteria:
            tic = time.perf_counter()
            result = make_estimator(name, options)(model, train, [val], config.lr)
            scores[name] = (result.influence[0], time.perf_counter() - tic)
    tic = time.perf_counter()
    with torch.no_grad():
        scores["small_loss"] = (F.cross_entropy(model(train[0]), train[1], reduction="none"), time.perf_counter() - tic)
    return scores


def _retrained_accuracy(
    config: DebugConfig, splits: dict[str, Any], initial: dict[str, torch.Tensor], keep: torch.Tensor
) -> float:
    """Test accuracy after training from ``initial`` on the kept examples (epochs or updates as configured)."""
    n = len(splits["train"][1])
    retrained = network(config)
    retrained.load_state_dict(initial)
    epochs = config.epochs if config.retrain == "epochs" else math.ceil(config.epochs * n / len(keep))
    train_plainly(retrained, (splits["train"][0][keep], splits["train"][1][keep]), config, epochs)
    return accuracy(retrained, splits["test"])


def run_debugging(config: DebugConfig) -> dict[str, Any]:
    """Train on noisy labels, score, remove the r % most harmful by each criterion, retrain, test."""
    splits = load_splits(config)
    torch.manual_seed(config.seed)
    model = network(config)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    scores = harm_scores(config, model, splits)
    noisy_model_accuracy = accuracy(model, splits["test"])
    n, removed = len(splits["train"][1]), round(config.noise_rate * len(splits["train"][1]))
    rows = []
    for criterion in config.criteria:
        # No filtering retrains the tracked run itself (same start, data, order): its accuracy is the tracked one.
        precision, seconds, test_accuracy = None, 0.0, noisy_model_accuracy
        if criterion != "none":
            harm, seconds = scores[criterion]
            dropped = torch.topk(harm.detach().float(), removed).indices
            precision = float(100 * splits["noisy"][dropped].float().mean())
            keep = torch.from_numpy(np.setdiff1d(np.arange(n), dropped.numpy()))
            test_accuracy = _retrained_accuracy(config, splits, initial, keep)
        rows.append(
            {
                "criterion": criterion,
                "removed_noisy_pct": precision,
                "test_accuracy": test_accuracy,
                "published": PUBLISHED[config.dataset].get(config.noise_rate, {}).get(criterion),
                "score_seconds": seconds,
            }
        )
    return {
        "config": config_to_dict(config),
        "noisy_share": float(splits["noisy"].float().mean()),
        "tracked_run_test_accuracy": noisy_model_accuracy,
        "rows": rows,
    }


def _noise_words(config: dict[str, Any]) -> str:
    return "permuted" if config.get("noise_kind", "permute") == "permute" else "uniformly wrong"


def dataset_name(config: dict[str, Any]) -> str:
    """The dataset of a study's saved config, as the reports name it (files from before the option: Fashion-MNIST)."""
    return "CIFAR-10" if config.get("dataset") == "cifar10" else "Fashion-MNIST"


def rows_markdown(rows: list[dict[str, Any]], order: list[str]) -> str:
    """A study's rows as a markdown table, columns in ``order`` also for rows read back from key-sorted JSON."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    columns = [c for c in order if c in frame] + [c for c in frame if c not in order]
    text: str = frame[columns].to_markdown(index=False, floatfmt=".2f")
    return text


def recurrence_note(config: dict[str, Any]) -> str:
    """The reports' words for a recurrence decay other than the training's ("" for the training's)."""
    value = config.get("hypergradient_weight_decay")
    return "" if value is None else f" HYDRA's recurrences with weight decay {value} (HYDRA's code)."


def to_markdown(result: dict[str, Any]) -> str:
    """The result as a table with the paper's values beside."""
    config = result["config"]
    head = (
        f"{dataset_name(config)}, {config['n_train']} training images with {100 * result['noisy_share']:.1f} % "
        f"{_noise_words(config)} labels (rate {config['noise_rate']}), {config['n_val']} clean validation, "
        f"{config['n_test']} test; "
        f"LeNet-5 (ReLU), SGD lr {config['lr']} momentum {config['momentum']} wd {config['weight_decay']}, "
        f"batch {config['batch_size']}, {config['epochs']} epochs (retrained for the same "
        f"{'number of updates' if config.get('retrain') == 'steps' else 'epochs'}), seed {config['seed']}. "
        f"The tracked run's own test accuracy: {result['tracked_run_test_accuracy']:.2f} %."
    )
    head += recurrence_note(config)
    order = ["criterion", "removed_noisy_pct", "test_accuracy", "published", "score_seconds"]
    return f"{head}\n\n{rows_markdown(result['rows'], order)}\n"


def load_debug_config(path: str, overrides: list[str]) -> DebugConfig:
    """The YAML config with ``--set`` overrides applied, validated.

    Raises:
        ConfigError: The file is missing or not YAML, or a key or value is invalid.
    """
    from clbench.config import apply_overrides, read_yaml_file
    from clbench.errors import ConfigError

    raw = apply_overrides(read_yaml_file(path) or {}, overrides)
    config = from_mapping(DebugConfig, raw, "influence-debug")
    unknown = [c for c in config.criteria if c not in CRITERIA]
    if unknown:
        raise ConfigError(f"criteria: unknown {unknown[0]!r}; valid choices: {', '.join(CRITERIA)}")
    return config


def write_study(result: dict[str, Any], out: Path, markdown: str) -> None:
    """A study's ``result.json`` and ``report.md`` in ``out`` (atomic writes)."""
    from clbench.results import write_json_atomic, write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "result.json", result)
    write_text_atomic(out / "report.md", markdown)


def write_debugging(result: dict[str, Any], out: Path) -> None:
    """``result.json`` and ``report.md`` in ``out``."""
    write_study(result, out, to_markdown(result))
