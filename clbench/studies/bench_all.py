"""``clbench bench all``: every speed figure of one machine in one dated report.

Runs the step, loop (training iterations and evaluation) and inverse-HVP benches and a
short reduced-protocol grid (ER, MetaSP, MetaSP+RehSel) whose runs share the device
(``--jobs N``), then writes ``<out>/<date>-<device>/report.md`` naming the device. The
``tiny`` preset finishes in a few minutes on a CPU (and is what the tests run); ``full``
is sized for one large GPU (about 25 minutes on an H100 by our estimate, not yet timed).
"""

from __future__ import annotations

import functools
import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import torch

from clbench.errors import ClbenchError
from clbench.studies.speed import (
    EvalBenchArgs,
    IhvpBenchArgs,
    LoopBenchArgs,
    StepBenchArgs,
    bench_eval,
    bench_ihvp,
    bench_loop,
    bench_step,
    format_rows,
)


@dataclass(frozen=True)
class BenchPreset:
    """Sizes of one ``bench all`` preset."""

    nf: int = field(metadata={"help": "ResNet-18 width of the step and loop benches"})
    train_per_class: int = field(metadata={"help": "training images per class in the loop bench"})
    test_images: int = field(metadata={"help": "test images evaluated once in the loop bench"})
    repeats: int = field(metadata={"help": "timed steps of the step bench"})
    warmup: int = field(metadata={"help": "untimed steps of the step bench first"})
    grid_config: str = field(metadata={"help": "experiment YAML of the reduced grid"})
    grid_overrides: tuple[str, ...] = field(default=(), metadata={"help": "--set overrides of the grid"})


PRESETS = {
    "tiny": BenchPreset(
        nf=8,  # narrower crashes oneDNN's channels-last backward (clbench.training.context.CHANNELS_LAST_MIN_WIDTH)
        train_per_class=10,
        test_images=100,
        repeats=1,
        warmup=1,
        grid_config="experiments/bench/tiny.yaml",
    ),
    "full": BenchPreset(
        nf=64,
        train_per_class=1000,
        test_images=10000,
        repeats=10,
        warmup=3,
        grid_config="experiments/bench/reduced.yaml",
    ),
}


def _device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def _markdown(rows: list[dict[str, Any]]) -> str:
    import pandas as pd

    return str(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4g"))


def _loop_table(args: LoopBenchArgs) -> str:
    return _markdown(bench_loop(args))


def _eval_table(args: EvalBenchArgs, device: torch.device) -> str:
    return _markdown(bench_eval(args, device))


def _step_table(args: StepBenchArgs, header: str) -> str:
    return format_rows(bench_step(args), header)


def _loop_sections(preset: BenchPreset, device: str) -> list[tuple[str, Callable[[], str]]]:
    base = LoopBenchArgs(
        device=device,
        nf=preset.nf,
        train_per_class=preset.train_per_class,
        test_images=preset.test_images,
        strategies=("er", "metasp"),
        influences=("meta", "meta_lastlayer"),
        data_paths=("device",),
    )
    shapes = {
        "offline shape, 32 new + 32 memory": base,
        "online shape, 10 new + 10 memory": replace(base, batch_size=10, replay_batch_size=10),
    }
    sections: list[tuple[str, Callable[[], str]]] = []
    for shape, args in shapes.items():
        for precision, channels_last in (("fp32", False), ("bf16", True)):
            variant = replace(args, precision=precision, channels_last=channels_last)
            title = f"Loop: {shape}, device path, {precision}{' + channels-last' if channels_last else ''}"
            sections.append((title, functools.partial(_loop_table, variant)))
    return sections


def _step_sections(preset: BenchPreset, device: str) -> list[tuple[str, Callable[[], str]]]:
    sections: list[tuple[str, Callable[[], str]]] = []
    for precision in ("fp32", "bf16"):
        args = StepBenchArgs(
            device=device, nf=preset.nf, repeats=preset.repeats, warmup=preset.warmup, precision=precision
        )
        header = f"ResNet-18 nf={args.nf}, {args.new} new + {args.memory} memory, |V|={args.val}, median ms"
        sections.append((f"Step: ER vs MetaSP, {precision}", functools.partial(_step_table, args, header)))
    return sections


def _eval_sections(preset: BenchPreset, device: torch.device) -> list[tuple[str, Callable[[], str]]]:
    sections: list[tuple[str, Callable[[], str]]] = []
    for precision, channels_last in (("fp32", False), ("bf16", True)):
        args = EvalBenchArgs(
            nf=preset.nf, images=min(preset.test_images, 2000), precision=precision, channels_last=channels_last
        )
        title = f"Eval: images forwarded at once, {precision}{' + channels-last' if channels_last else ''}"
        sections.append((title, functools.partial(_eval_table, args, device)))
    return sections


def _grid_section(preset: BenchPreset, out: Path, jobs: int, data_root: Path | None) -> str:
    from clbench.config import load_experiment
    from clbench.launch import run_grid
    from clbench.report import build_report
    from clbench.report.tables import to_markdown

    experiment = load_experiment(preset.grid_config, preset.grid_overrides)
    summary = run_grid(experiment, out / "runs", data_root=data_root, progress=False, jobs=jobs)
    lines = [
        f"`{preset.grid_config}` with {', '.join(preset.grid_overrides) or 'no overrides'}, `--jobs {jobs}`: "
        f"{len(summary.finished)} finished, {len(summary.skipped)} skipped, {len(summary.failed)} failed."
    ]
    lines += [f"- failed: {run_id}: {message}" for run_id, message in summary.failed.items()]
    if summary.finished or summary.skipped:
        lines += [to_markdown(table) for table in build_report(out / "runs").tables]
    return "\n\n".join(lines)


def run_bench_all(
    preset_name: str, device_name: str, jobs: int, out_root: Path, data_root: Path | None
) -> tuple[Path, bool]:
    """Run every bench and the reduced grid; write the report. Returns its path and success.

    Raises:
        ClbenchError: An unknown preset.
    """
    from clbench.runner import resolve_device

    if preset_name not in PRESETS:
        raise ClbenchError(f"unknown bench preset {preset_name!r}; valid choices: {', '.join(PRESETS)}")
    preset = PRESETS[preset_name]
    device = resolve_device(device_name)
    label = _device_label(device)
    out = out_root / f"{date.today().isoformat()}-{_slug(label)}-{preset_name}"
    sections: list[tuple[str, Callable[[], str]]] = [
        *_step_sections(preset, str(device)),
        *_loop_sections(preset, str(device)),
        *_eval_sections(preset, device),
        ("Inverse-HVP solvers", lambda: _markdown(bench_ihvp(IhvpBenchArgs()))),
        ("Reduced grid", lambda: _grid_section(preset, out / "grid", jobs, data_root)),
    ]
    header = [
        f"# clbench bench all: {label}",
        "",
        f"Preset `{preset_name}` ({preset}), device `{device}`, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads, {date.today().isoformat()}.",
        f"Command: `clbench bench all --preset {preset_name} --set device={device_name} --jobs {jobs}`.",
    ]
    body, ok = [], True
    for title, make in sections:
        tic = time.perf_counter()
        try:
            text = make()
        except ClbenchError as exc:
            text, ok = f"failed: {exc}", False
        body += [f"## {title}", "", text, "", f"({time.perf_counter() - tic:.0f} s)", ""]
    out.mkdir(parents=True, exist_ok=True)
    report = out / "report.md"
    report.write_text("\n".join([*header, "", *body]))
    return report, ok
