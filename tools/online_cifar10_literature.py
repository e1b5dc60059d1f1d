"""Print the online Split CIFAR-10 table beside the published values (results/online_cifar10/README.md).

Usage: python tools/online_cifar10_literature.py results/online_cifar10/runs

clbench's side is computed from the run files (class-IL A-inf, mean ± sample std over
seeds, runs of the configured precision, bf16); the published side is the literature's
values as printed, each with its table and setting. Only the protocol of
experiments/online/cifar10.yaml is read (5 tasks, batch 10, one pass, reduced ResNet-18).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

MIR = "MIR (Aljundi et al., NeurIPS 2019) Table 2, 15 runs; ± = 95% interval of the mean (std ≈ ±·1.9)"
SCR = "Mai et al. (SCR, CVPRW 2021) Table 1, 10 runs"
ASER = "Shim et al. (ASER, AAAI 2021) Table 1, 15 runs"
AML = "Caccia et al. (ER-AML/ER-ACE, ICLR 2022) Table 6"
GDUMB = "GDumb (Prabhu et al., ECCV 2020)"

SEPARATE = (("replay_forward", "separate"),)

# (strategy, distinguishing arguments, M) -> published values as printed, with their source.
PUBLISHED: dict[tuple[str, tuple[tuple[str, Any], ...], int], list[tuple[str, str]]] = {
    ("finetune", (), 0): [("18.4 ± 0.3", "MIR's fine-tuning row, as tabulated in ER-AML/ER-ACE's appendix (Table 6)")],
    ("joint", (), 0): [("60.8 ± 1.0", "MIR Table 3, iid online, 1 iteration (± = 95% interval)")],
    ("er", SEPARATE, 200): [("27.5 ± 1.2", MIR), ("22.4 ± 1.1", SCR), ("26.4 ± 1.0", ASER), ("26.7 ± 0.3", AML)],
    ("er", SEPARATE, 500): [("33.1 ± 1.7", MIR), ("29.0 ± 2.5", SCR), ("32.2 ± 1.4", ASER), ("36.1 ± 0.6", AML)],
    ("er", SEPARATE, 1000): [("41.3 ± 1.9", MIR), ("37.7 ± 2.0", SCR), ("38.4 ± 1.7", ASER), ("41.5 ± 0.6", AML)],
    ("gem", (), 500): [("17.1 ± 1.0", MIR)],
    ("agem", (), 500): [("18.3 ± 0.2", SCR)],
    ("gss", (), 500): [("28.5 ± 1.5", SCR)],
    ("gdumb", (("buffer_epochs", 30),), 500): [
        ("45.8 ± 0.9", f"{GDUMB} Table 3 (formulation A1): 256 epochs, SGDR, cutmix"),
        ("37.8 (36.7 without cutmix)", f"{GDUMB} supp. Table 2: 32 passes, its tweaked models"),
    ],
    ("gdumb", (("buffer_epochs", 128),), 500): [
        ("43.9 (42.9 without cutmix)", f"{GDUMB} supp. Table 2: 128 passes, its tweaked models")
    ],
}
MIR_VALUES = {
    200: ("29.8 ± 1.1", "23.8 ± 0.9", "28.3 ± 1.6"),
    500: ("40.0 ± 1.1", "33.6 ± 1.7", "35.6 ± 1.2"),
    1000: ("47.6 ± 1.1", "43.0 ± 1.6", "42.4 ± 1.5"),
}
for _size, _values in MIR_VALUES.items():
    _mir = list(zip(_values, (MIR, SCR, ASER), strict=True))
    PUBLISHED[("mir", (("memory", "reservoir"), ("scoring_bn_stats", "update")), _size)] = _mir
    if _size == 500:
        PUBLISHED[("mir", (("memory", "class_balanced"), ("scoring_bn_stats", "frozen")), _size)] = _mir

ORDER = ["finetune", "joint", "er", "mir", "gem", "agem", "gdumb", "gss", "gmed", "hal", "metasp", "metasp_rehsel"]

# Arguments that tell the table's variants of one strategy apart, with their defaults.
DISTINGUISHING = {
    "er": {"replay_forward": "joint"},
    "mir": {"memory": "class_balanced", "scoring_bn_stats": "frozen"},
    "gdumb": {"buffer_epochs": 30},
    "metasp_rehsel": {"selection": "rehsel"},
}


def _key(config: dict[str, Any]) -> tuple[str, tuple[tuple[str, Any], ...], int]:
    name, args = config["strategy"]["name"], config["strategy"].get("args", {})
    defaults = DISTINGUISHING.get(name, {})
    return name, tuple((k, args.get(k, v)) for k, v in defaults.items()), int(config["buffer_size"])


def collect(folder: Path) -> dict[tuple[str, tuple[tuple[str, Any], ...], int], list[float]]:
    """Class-IL A-inf of every bf16 run of the protocol, by strategy variant and buffer size."""
    values: dict[tuple[str, tuple[tuple[str, Any], ...], int], list[float]] = {}
    for path in sorted(folder.glob("*.json")):
        run = json.loads(path.read_text())
        if run["config"]["training"].get("precision") != "bf16":
            continue
        values.setdefault(_key(run["config"]), []).append(run["metrics"]["class_il"]["Ainf"])
    return values


def _label(key: tuple[str, tuple[tuple[str, Any], ...], int]) -> str:
    name, args, _ = key
    return f"{name}({', '.join(f'{k}={v}' for k, v in args)})" if args else name


def _clbench(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f} (1 seed)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)} seeds)"


def table(folder: Path) -> str:
    """The markdown table: one row per strategy variant and size, one line per published value."""
    values = collect(folder)
    lines = ["| strategy | M | clbench | published | source |", "|---|---|---|---|---|"]
    for key in sorted(values, key=lambda k: (ORDER.index(k[0]) if k[0] in ORDER else len(ORDER), k[0], k[1], k[2])):
        published = PUBLISHED.get(key, [("—", "no published value at this protocol")])
        first = f"| {_label(key)} | {key[2]} | {_clbench(values[key])} |"
        lines.append(f"{first} {published[0][0]} | {published[0][1]} |")
        lines.extend(f"| | | | {value} | {source} |" for value, source in published[1:])
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1] if len(sys.argv) > 1 else "results/online_cifar10/runs")))
