"""Hand-made run result files, for tests of what reads them (reports, comparisons)."""

from clbench.results import SCHEMA_VERSION


def run_record(strategy, buffer_size, seed, final, epochs=5, args=None, joint=False, influence=None):
    """A two-task run whose class-IL final row averages to ``final``."""
    config = {
        "experiment": "t",
        "benchmark": {"name": "synthetic", "args": {"n_tasks": 2}},
        "strategy": {"name": strategy, "args": args or {}},
        "backbone": {"name": "mlp", "args": {}},
        "buffer_size": buffer_size,
        "seed": seed,
        "training": {
            "epochs": epochs,
            "lr": 0.1,
            "momentum": 0.0,
            "batch_size": 32,
            "replay_batch_size": 32,
            "lr_milestones": [],
            "lr_gamma": 0.1,
        },
        "device": "cpu",
        "deterministic": True,
    }
    if joint:
        matrix = [[final, final]]
        metrics = {"A1": None, "Ainf": final, "Am": None, "BWT": None}
        after = [1]
    else:
        matrix = [[90.0, 0.0], [final - 5, final + 5]]
        metrics = {"A1": (90 + final + 5) / 2, "Ainf": final, "Am": (90 + final) / 2, "BWT": final - 5 - 90}
        after = [0, 1]
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": f"synthetic-{strategy}-{args}-m{buffer_size}-s{seed}-e{epochs}",
        "config": config,
        "task_classes": [[0, 1], [2, 3]],
        "evaluated_after_task": after,
        "accuracy": {"class_il": matrix, "task_il": matrix},
        "metrics": {"class_il": metrics, "task_il": metrics},
        "extras": {"influence": influence} if influence else {},
    }


# Three seeds of ER both ways, and values published for them by two imaginary papers.
ER_SEPARATE = {1231: 30.0, 1232: 34.0, 1233: 32.0}  # mean 32, std 2
ER_JOINT = {1231: 36.0, 1232: 36.0, 1233: 36.0}

PUBLISHED = {
    "benchmark": "synthetic",
    "sources": {
        "paper A": {"citation": "A et al., Table 2", "runs": 15, "spread": "ci95"},
        "paper B": {"citation": "B et al., Table 1"},
    },
    "values": [
        {
            "strategy": "er",
            "args": {"replay_forward": "separate"},
            "buffer_size": 500,
            "mean": 33.0,
            "plus_minus": 1.7,
            "source": "paper A",
        },
        {"strategy": "er", "buffer_size": 500, "mean": 29.0, "plus_minus": 2.5, "source": "paper B"},
        {"strategy": "er", "buffer_size": 200, "mean": 27.5, "plus_minus": 1.2, "source": "paper A"},
        {"strategy": "gem", "buffer_size": 500, "mean": 17.1, "source": "paper B", "note": "not run"},
    ],
}
