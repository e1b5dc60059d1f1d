"""HYDRA's clustering of training data by contribution (Chen et al., AAAI 2021, Table 4), at a CPU's size.

Half of the training labels are made uniformly wrong (symmetric noise). After training, each
training example gets a vector of its contributions to K validation points (HYDRA: 1,000),
reduced to their signs; the examples of each given label are split in two by k-means on
those vectors, and the two clusters are compared with the clean / mislabelled partition by
their Jaccard index (intersection over union; each cluster matched to the part it overlaps
best). The table is the mean over the ten labels, for the clean and the mislabelled part.

Contributions: ``hydra_fast`` (HYDRA's fast trajectory influence on each point:
:func:`clbench.influence.hydra.fast_trajectory_influence_per_point`), ``cg`` (influence
functions at the end of training, one conjugate-gradient solve a point), ``identity``
(gradient alignment at the end). The network, data and training are those of
:mod:`clbench.studies.data_debugging`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from clbench.config import config_to_dict
from clbench.studies.data_debugging import (
    DebugConfig,
    dataset_name,
    end_of_training_estimators,
    hydra_args,
    load_splits,
    network,
    recurrence_note,
    rows_markdown,
    train_plainly,
    write_study,
)

PUBLISHED = {
    # HYDRA Table 4, Fashion-MNIST: mean Jaccard index (%) of the clean and of the randomly labelled part.
    "hydra_fast": (78.06, 77.73),
    "cg": (41.26, 33.22),
}

METHODS = ("hydra_fast", "cg", "identity")


def contributions(config: DebugConfig, splits: dict[str, Any]) -> dict[str, tuple[torch.Tensor, float]]:
    """(N, K) influence of every training example on each validation point, by method, and its seconds."""
    from clbench.influence.estimators import make_estimator
    from clbench.influence.hydra import fast_trajectory_influence_per_point

    train = splits["train"]
    points = (splits["val"][0][: config.cluster_points], splits["val"][1][: config.cluster_points])
    torch.manual_seed(config.seed)
    model = network(config)
    found: dict[str, tuple[torch.Tensor, float]] = {}
    if "hydra_fast" in config.criteria:
        tic = time.perf_counter()
        found["hydra_fast"] = (
            fast_trajectory_influence_per_point(model, train, config.lr, hydra_args(config), points),
            time.perf_counter() - tic,
        )
    train_plainly(model, train, config)
    singles = [(points[0][k : k + 1], points[1][k : k + 1]) for k in range(len(points[1]))]
    for name, estimator_options in end_of_training_estimators(config).items():
        if name in config.criteria:
            tic = time.perf_counter()
            result = make_estimator(name, estimator_options)(model, train, singles, config.lr)
            found[name] = (torch.stack(list(result.influence), dim=1).detach(), time.perf_counter() - tic)
    return found


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def cluster_overlap(signs: np.ndarray, labels: np.ndarray, noisy: np.ndarray, seed: int) -> tuple[float, float]:
    """Mean Jaccard index over the given labels of 2-means clusters with the clean and the noisy part."""
    from sklearn.cluster import KMeans

    clean_scores, noisy_scores = [], []
    for label in np.unique(labels):
        rows = labels == label
        assigned = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(signs[rows])
        truth = noisy[rows]
        straight = (jaccard(assigned == 0, ~truth), jaccard(assigned == 1, truth))
        swapped = (jaccard(assigned == 1, ~truth), jaccard(assigned == 0, truth))
        best = max(straight, swapped, key=sum)
        clean_scores.append(best[0])
        noisy_scores.append(best[1])
    return 100 * float(np.mean(clean_scores)), 100 * float(np.mean(noisy_scores))


def run_clustering(config: DebugConfig) -> dict[str, Any]:
    """Train on half-mislabelled data, compute contribution signs, cluster each label in two, score."""
    splits = load_splits(config)
    labels, noisy = splits["train"][1].numpy(), splits["noisy"].numpy().astype(bool)
    rows = []
    for method, (influence, seconds) in contributions(config, splits).items():
        signs = np.sign(-influence.double().numpy())  # contribution = -influence (HYDRA's sign)
        clean_jaccard, noisy_jaccard = cluster_overlap(signs, labels, noisy, config.seed)
        published = PUBLISHED.get(method, (None, None))
        rows.append(
            {
                "method": method,
                "jaccard_clean": clean_jaccard,
                "jaccard_mislabelled": noisy_jaccard,
                "published_clean": published[0],
                "published_mislabelled": published[1],
                "score_seconds": seconds,
            }
        )
    return {"config": config_to_dict(config), "noisy_share": float(noisy.mean()), "rows": rows}


def to_markdown(result: dict[str, Any]) -> str:
    """The result as a table with the paper's values beside."""
    config = result["config"]
    head = (
        f"{dataset_name(config)}, {config['n_train']} training images, {100 * result['noisy_share']:.1f} % with "
        f"a uniformly wrong label (rate {config['noise_rate']}); contributions to {config['cluster_points']} clean "
        f"validation points (HYDRA: 1,000), signs clustered by 2-means within each given label; LeNet-5 (ReLU), SGD lr "
        f"{config['lr']} momentum {config['momentum']} wd {config['weight_decay']}, batch {config['batch_size']}, "
        f"{config['epochs']} epochs, seed {config['seed']}. Jaccard index (%), mean over the ten labels."
    ) + recurrence_note(config)
    order = ["method", "jaccard_clean", "jaccard_mislabelled", "published_clean", "published_mislabelled"]
    return f"{head}\n\n{rows_markdown(result['rows'], [*order, 'score_seconds'])}\n"


def write_clustering(result: dict[str, Any], out: Any) -> None:
    """``result.json`` and ``report.md`` in ``out``."""
    write_study(result, out, to_markdown(result))
