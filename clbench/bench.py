"""``clbench bench``: speed figures printed by a command, never asserted in unit tests.

``clbench bench step`` times one training step of ER and of MetaSP on the same model and
batch (default: CIFAR ResNet-18, 32 new + 32 memory examples, |V| = 50 per objective),
and MetaSP computed the paper's way (double backward through the pseudo-update).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class StepBenchArgs:
    """Arguments of ``clbench bench step``."""

    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    nf: int = field(default=64, metadata={"help": "ResNet-18 width (64 full, 20 reduced)"})
    new: int = field(default=32, metadata={"help": "current-task examples per step"})
    memory: int = field(default=32, metadata={"help": "memory examples per step"})
    val: int = field(default=50, metadata={"help": "examples in each of V_old and V_new"})
    n_classes: int = field(default=10, metadata={"help": "output classes"})
    pseudo_steps: int = field(default=1, metadata={"help": "MetaSP pseudo steps"})
    warmup: int = field(default=3, metadata={"help": "untimed steps first"})
    repeats: int = field(default=10, metadata={"help": "timed steps"})
    seed: int = field(default=0, metadata={"help": "random seed"})


def _time(step: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> tuple[float, float | None]:
    """Median milliseconds per call and peak CUDA memory in MiB (None on CPU)."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(1000 * (time.perf_counter() - tic))
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return sorted(times)[len(times) // 2], peak


def bench_step(args: StepBenchArgs) -> list[dict[str, Any]]:
    """Time ER, MetaSP and MetaSP by double backward; return one row per method."""
    from clbench.backbones import CifarResNet18
    from clbench.influence.meta import meta_influence, meta_influence_autograd
    from clbench.runner import resolve_device
    from clbench.strategies.metasp import MetaSPArgs, influence_weights

    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    model = CifarResNet18(3, args.n_classes, nf=args.nf).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    n = args.new + args.memory

    def images(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(count, 3, 32, 32, device=device), torch.randint(0, args.n_classes, (count,), device=device)

    batch, v_old, v_new = images(n), images(args.val), images(args.val)
    metasp_args = MetaSPArgs(pseudo_steps=args.pseudo_steps)

    def er_step() -> None:
        optimizer.zero_grad()
        F.cross_entropy(model(batch[0]), batch[1]).backward()
        optimizer.step()

    def metasp_step(influence_fn: Callable[..., Any]) -> Callable[[], None]:
        def step() -> None:
            fusion = influence_weights(model, batch, v_old, v_new, 0.1, metasp_args, influence_fn)
            optimizer.zero_grad()
            (fusion.weights * F.cross_entropy(model(batch[0]), batch[1], reduction="none")).sum().backward()
            optimizer.step()

        return step

    rows: list[dict[str, Any]] = []
    for name, step in (
        ("er", er_step),
        ("metasp", metasp_step(meta_influence)),
        ("metasp_double_backward", metasp_step(meta_influence_autograd)),
    ):
        ms, peak = _time(step, device, args.warmup, args.repeats)
        rows.append({"method": name, "ms_per_step": ms, "peak_mib": peak})
    er_ms = float(rows[0]["ms_per_step"])
    for row in rows:
        row["x_er"] = row["ms_per_step"] / er_ms
    return rows


def format_rows(rows: list[dict[str, Any]], header: str) -> str:
    """A small fixed-width table of benchmark rows."""
    lines = [header, f"{'method':26s} {'ms/step':>10s} {'x ER':>7s} {'peak MiB':>9s}"]
    for row in rows:
        peak = "-" if row["peak_mib"] is None else f"{row['peak_mib']:.0f}"
        lines.append(f"{row['method']:26s} {row['ms_per_step']:10.2f} {row['x_er']:7.2f} {peak:>9s}")
    return "\n".join(lines)
