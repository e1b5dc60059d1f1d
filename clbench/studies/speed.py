"""``clbench bench``: speed figures printed by a command, never asserted in unit tests.

``clbench bench step`` times one training step of ER and of MetaSP on the same model and
batch (default: CIFAR ResNet-18, 32 new + 32 memory examples, |V| = 50 per objective):
the fused step (influence from the step's own forward, as the strategy runs it), the
classifier-only ``meta_lastlayer`` step, the two-pass step (influence, then a second
forward) and the paper's way (double backward through the pseudo-update).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from clbench.influence.functional import Batch, InfluenceFn, InfluenceResult


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
    precision: str = field(default="fp32", metadata={"help": "fp32, or bf16 autocast of the forward passes"})
    warmup: int = field(default=3, metadata={"help": "untimed steps first"})
    repeats: int = field(default=10, metadata={"help": "timed steps"})
    seed: int = field(default=0, metadata={"help": "random seed"})


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock times cover it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
        _synchronize(device)
        times.append(1000 * (time.perf_counter() - tic))
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return sorted(times)[len(times) // 2], peak


def _double_backward(steps: int) -> InfluenceFn:
    """MetaSP's influence by double backward (the paper code's way), as an estimator."""
    from clbench.influence.meta import meta_influence_autograd

    def compute(model: torch.nn.Module, train: Batch, measurements: list[Batch], lr: float) -> InfluenceResult:
        return meta_influence_autograd(model, train, measurements, lr, steps)

    return compute


def _fused_step_parts(
    model: torch.nn.Module, batch: Batch, measurements: list[Batch], low_precision: bool
) -> list[tuple[str, Callable[[], None]]]:
    """The exact fused step's parts apart: where its time goes (``part:`` rows of ``bench step``).

    The validation gradients at the pseudo-updated weights are timed both ways the library
    can compute them (one ``vmap``-ed pass over the two sets, or one pass each: the step's
    way since MetaSP revision 3), the JVP with one and with two tangents, and the training
    forward.
    """
    from clbench.influence.functional import batchnorm_stats_frozen, per_example_loss_fn, trainable_params
    from clbench.influence.meta import per_example_directional, validation_gradients

    theta = trainable_params(model)
    tangents = {name: torch.stack([value, value]) for name, value in theta.items()}
    loss_vec = per_example_loss_fn(model)

    def gradients(batched: bool) -> Callable[[], None]:
        def run() -> None:
            autocast = torch.autocast(batch[0].device.type, dtype=torch.bfloat16, enabled=low_precision)
            with batchnorm_stats_frozen(model), autocast:
                validation_gradients(loss_vec, theta, measurements, batched=batched)

        return run

    def jvp(count: int) -> Callable[[], None]:
        def run() -> None:
            with batchnorm_stats_frozen(model):
                per_example_directional(model, theta, batch, {k: v[:count] for k, v in tangents.items()}, low_precision)

        return run

    def forward() -> None:
        with torch.no_grad():
            model(batch[0])

    # vmap of a gradient fails under CPU bf16 autocast: the bf16 step computes them apart only
    vmapped = [] if low_precision else [("part: V grads, vmap", gradients(True))]
    return [
        ("part: training forward", forward),
        *vmapped,
        ("part: V grads, apart", gradients(False)),
        # One tangent against two: each costs two convolutions a layer (product rule), the
        # primal forward is shared.
        ("part: JVP, 1 tangent", jvp(1)),
        ("part: JVP, 2 tangents", jvp(2)),
    ]


@dataclass
class _StepProblem:
    """One model, optimizer, batch B and measurement sets V_old, V_new that every timed step shares."""

    model: Any
    optimizer: torch.optim.Optimizer
    batch: Batch
    measurements: list[Batch]
    precision: str
    metasp_args: Any

    def autocast(self) -> Any:
        """The bench's autocast context (bf16 when asked for)."""
        return torch.autocast(self.batch[0].device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")


def _step_problem(args: StepBenchArgs, device: torch.device) -> _StepProblem:
    from clbench.backbones import CifarResNet18
    from clbench.strategies.metasp import MetaSPArgs

    torch.manual_seed(args.seed)
    model = CifarResNet18(3, args.n_classes, nf=args.nf).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def images(count: int) -> Batch:
        return torch.randn(count, 3, 32, 32, device=device), torch.randint(0, args.n_classes, (count,), device=device)

    batch, v_old, v_new = images(args.new + args.memory), images(args.val), images(args.val)
    return _StepProblem(
        model, optimizer, batch, [v_old, v_new], args.precision, MetaSPArgs(pseudo_steps=args.pseudo_steps)
    )


def _er_step(p: _StepProblem) -> None:
    p.optimizer.zero_grad()
    with p.autocast():
        logits = p.model(p.batch[0]).float()
    F.cross_entropy(logits, p.batch[1]).backward()
    p.optimizer.step()


def _fused_step(p: _StepProblem) -> None:
    from clbench.influence.functional import gradient_by_name
    from clbench.influence.meta import one_step_meta_influence
    from clbench.strategies.metasp import fuse_influence

    p.optimizer.zero_grad()
    with p.autocast():
        logits = p.model(p.batch[0]).float()
    losses = F.cross_entropy(logits, p.batch[1], reduction="none")
    gradient = gradient_by_name(losses.mean(), p.model)
    low = p.precision == "bf16"
    result = one_step_meta_influence(p.model, p.batch, p.measurements, 0.1, gradient, low_precision=low)
    (fuse_influence(result, p.metasp_args).weights * losses).sum().backward()
    p.optimizer.step()


def _lastlayer_step(p: _StepProblem) -> None:
    from clbench.influence.lastlayer import classifier_influence
    from clbench.strategies.metasp import fuse_influence

    p.optimizer.zero_grad()
    captured: list[torch.Tensor] = []
    handle = p.model.classifier.register_forward_pre_hook(lambda m, inputs: captured.append(inputs[0]))
    with p.autocast():
        logits = p.model(p.batch[0]).float()
    handle.remove()
    with p.autocast():
        result = classifier_influence(p.model, (captured[0].detach().float(), p.batch[1]), p.measurements, 0.1)
    losses = F.cross_entropy(logits, p.batch[1], reduction="none")
    (fuse_influence(result, p.metasp_args).weights * losses).sum().backward()
    p.optimizer.step()


def _two_pass_step(p: _StepProblem, influence_fn: InfluenceFn) -> Callable[[], None]:
    from clbench.strategies.metasp import influence_weights

    def step() -> None:
        v_old, v_new = p.measurements
        fusion = influence_weights(p.model, p.batch, v_old, v_new, 0.1, p.metasp_args, influence_fn)
        p.optimizer.zero_grad()
        (fusion.weights * F.cross_entropy(p.model(p.batch[0]), p.batch[1], reduction="none")).sum().backward()
        p.optimizer.step()

    return step


def _fisher_parts(p: _StepProblem) -> list[tuple[str, Callable[[], None]]]:
    """Online EWC's per-example Fisher of the step's batch (evaluation mode): one backward, and vmap."""
    from clbench.strategies.ewc import fisher_diagonal, weighted_fisher_diagonal
    from clbench.training.modes import evaluation_mode

    def timed(fisher: Callable[..., Any]) -> Callable[[], None]:
        def step() -> None:
            with evaluation_mode(p.model):
                fisher(p.model, p.batch[0], p.batch[1])

        return step

    return [("ewc_fisher_one_backward", timed(fisher_diagonal)), ("ewc_fisher_vmap", timed(weighted_fisher_diagonal))]


def bench_step(args: StepBenchArgs) -> list[dict[str, Any]]:
    """Time ER, MetaSP and MetaSP by double backward, and EWC's Fisher of the batch; one row per method."""
    from clbench.influence.estimators import MetaArgs, MetaEstimator
    from clbench.runner import resolve_device

    device = resolve_device(args.device)
    p = _step_problem(args, device)
    methods: list[tuple[str, Callable[[], None]]] = [("er", lambda: _er_step(p)), *_fisher_parts(p)]
    if args.pseudo_steps == 1:
        methods += [("metasp_fused", lambda: _fused_step(p)), ("metasp_lastlayer", lambda: _lastlayer_step(p))]
        methods += _fused_step_parts(p.model, p.batch, p.measurements, args.precision == "bf16")
    methods += [
        ("metasp_two_pass", _two_pass_step(p, MetaEstimator(MetaArgs(steps=args.pseudo_steps)))),
        ("metasp_double_backward", _two_pass_step(p, _double_backward(args.pseudo_steps))),
    ]
    rows: list[dict[str, Any]] = []
    for name, step in methods:
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


@dataclass(frozen=True)
class IhvpBenchArgs:
    """Arguments of ``clbench bench ihvp``."""

    examples: int = field(default=200, metadata={"help": "training examples of the curvature"})
    inputs: int = field(default=20, metadata={"help": "input features of the MLP"})
    hidden: int = field(default=16, metadata={"help": "hidden units"})
    damping: float = field(default=0.5, metadata={"help": "added to the diagonal"})
    iterations: tuple[int, ...] = field(default=(20, 100), metadata={"help": "CG / LiSSA iteration counts"})
    seed: int = field(default=0, metadata={"help": "random seed"})


Solver = Callable[[int], Callable[[], torch.Tensor]]
"""An inverse-HVP solver by its iteration count: a thunk returning the flat (H + damping I)^-1 v."""


def _ihvp_solvers(
    args: IhvpBenchArgs, matvec: Any, params: Any, v: torch.Tensor, loss: Any
) -> list[tuple[str, Solver]]:
    """Clbench's CG and LiSSA, and dattri's CG when dattri is installed, on the same problem."""
    from clbench.influence.hessian import flatten_params, ihvp_cg_fn, ihvp_lissa_fn, unflatten_params

    def cg(k: int) -> Callable[[], torch.Tensor]:
        return lambda: flatten_params(ihvp_cg_fn(matvec, args.damping, k, 1e-30)(unflatten_params(v, params)))

    def lissa(k: int) -> Callable[[], torch.Tensor]:
        solve = ihvp_lissa_fn(lambda _: matvec, args.damping, scale=2.0, depth=k)
        return lambda: flatten_params(solve(unflatten_params(v, params)))

    solvers: list[tuple[str, Solver]] = [("clbench cg", cg), ("clbench lissa", lissa)]
    try:
        from dattri.func.hessian import ihvp_cg
    except ImportError:
        return solvers
    theta = flatten_params(params)

    def dattri_cg(k: int) -> Callable[[], torch.Tensor]:
        solve = ihvp_cg(lambda t: loss(unflatten_params(t, params)), max_iter=k, tol=1e-30, regularization=args.damping)
        return lambda: solve((theta,), v)

    return [*solvers, ("dattri ihvp_cg", dattri_cg)]


def bench_ihvp(args: IhvpBenchArgs) -> list[dict[str, Any]]:
    """Clbench's inverse-HVP solvers vs dattri's (if installed), against the exact solve.

    Rows: solver, iterations, seconds, relative error to the exact (H + damping I)^-1 v.
    """
    from torch import nn

    from clbench.influence.functional import per_example_loss_fn, trainable_params
    from clbench.influence.hessian import flatten_params, hvp_fn, ihvp_exact_fn, unflatten_params

    torch.manual_seed(args.seed)
    model = nn.Sequential(nn.Linear(args.inputs, args.hidden), nn.Tanh(), nn.Linear(args.hidden, 5)).double()
    x = torch.randn(args.examples, args.inputs, dtype=torch.float64)
    y = torch.randint(0, 5, (args.examples,))
    params = trainable_params(model)
    loss_vec = per_example_loss_fn(model)
    matvec = hvp_fn(loss_vec, params, (x, y))
    v = torch.randn(sum(p.numel() for p in params.values()), dtype=torch.float64)
    exact = flatten_params(ihvp_exact_fn(matvec, params, args.damping)(unflatten_params(v, params)))
    rows = []
    for name, make in _ihvp_solvers(args, matvec, params, v, lambda theta: loss_vec(theta, x, y).mean()):
        for k in args.iterations:
            tic = time.perf_counter()
            estimate = make(k)()
            seconds = time.perf_counter() - tic
            relative = float((estimate.reshape(-1) - exact).norm() / exact.norm())
            rows.append({"solver": name, "iterations": k, "seconds": seconds, "relative_error": relative})
    return rows


@dataclass(frozen=True)
class LoopBenchArgs:
    """Arguments of ``clbench bench loop``."""

    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    nf: int = field(default=64, metadata={"help": "ResNet-18 width (64 full, 20 reduced)"})
    train_per_class: int = field(default=1000, metadata={"help": "training images per class (10 classes, 5 tasks)"})
    test_images: int = field(default=10000, metadata={"help": "test images (the eval timing covers all of them)"})
    strategies: tuple[str, ...] = field(default=("er", "metasp"), metadata={"help": "strategies to time"})
    influences: tuple[str, ...] = field(
        default=("meta",), metadata={"help": "MetaSP influence estimators to time (one row each)"}
    )
    data_paths: tuple[str, ...] = field(default=("avalanche", "device"), metadata={"help": "data paths to compare"})
    precision: str = field(default="fp32", metadata={"help": "fp32 or bf16 (device path only)"})
    channels_last: bool = field(default=False, metadata={"help": "channels-last (device path only)"})
    batch_size: int = field(default=32, metadata={"help": "current-task examples per step"})
    replay_batch_size: int = field(default=32, metadata={"help": "memory examples per step"})
    buffer_size: int = field(default=500, metadata={"help": "rehearsal buffer size"})
    seed: int = field(default=0, metadata={"help": "random seed"})


def _cifar_shaped(args: LoopBenchArgs) -> Any:
    """Random uint8 images shaped like Split CIFAR-10 (timing needs no real pixels)."""
    import numpy as np

    from clbench.datasets.base import ImageArrays, ImageSplits, build_benchmark

    rng = np.random.default_rng(args.seed)
    names = tuple(f"c{i}" for i in range(10))

    def split(n: int) -> ImageArrays:
        labels = np.arange(n, dtype=np.int64) % 10
        return ImageArrays(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), labels, names)

    splits = ImageSplits(
        train=split(10 * args.train_per_class),
        test=split(args.test_images),
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        augment=True,
    )
    return build_benchmark("cifar_shaped", splits, 5, "fixed", args.seed)


class _IterationClock:
    """Wall time between consecutive training iterations (so data fetching is included)."""

    def __init__(self, device: torch.device) -> None:
        from avalanche.core import SupervisedPlugin

        self.device = device
        self.gaps: list[float] = []
        self._last: float | None = None
        clock = self

        class Plugin(SupervisedPlugin):  # type: ignore[misc]
            def before_training_epoch(self, strategy: Any, **kwargs: Any) -> None:
                _synchronize(clock.device)
                clock._last = time.perf_counter()

            def after_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
                _synchronize(clock.device)
                now = time.perf_counter()
                if clock._last is not None:
                    clock.gaps.append(1000 * (now - clock._last))
                clock._last = now

        self.plugin = Plugin()

    def take_median(self, skip: int = 3) -> float:
        """Median ms per iteration since the last call, without the first ``skip`` ones."""
        gaps = self.gaps[skip:] or self.gaps
        self.gaps = []
        return sorted(gaps)[len(gaps) // 2]


def _loop_row(
    args: LoopBenchArgs, benchmark: Any, device: torch.device, name: str, influence: str, data_path: str
) -> dict[str, Any]:
    """One strategy on one data path: median ms an iteration on tasks 1 and 2, seconds of one evaluation."""
    from clbench.backbones import CifarResNet18
    from clbench.config import TrainingConfig, from_mapping
    from clbench.training.context import STRATEGIES, StrategyContext, build_strategy

    settings = {
        "epochs": 1,
        "batch_size": args.batch_size,
        "replay_batch_size": args.replay_batch_size,
        "data_path": data_path,
        "precision": args.precision if data_path == "device" else "fp32",
        "channels_last": args.channels_last and data_path == "device",
    }
    training = from_mapping(TrainingConfig, settings, "bench loop")
    torch.manual_seed(args.seed)
    model = CifarResNet18(3, 10, nf=args.nf).to(device)
    clock = _IterationClock(device)
    entry = STRATEGIES.get(name)
    strategy_args: dict[str, Any] = {"meta_epochs": 1, "influence": influence} if influence else {}
    context = StrategyContext.for_training(
        model,
        training,
        benchmark=benchmark,
        device=device,
        seed=args.seed,
        buffer_size=args.buffer_size,
        plugins=[clock.plugin],
    )
    strategy = build_strategy(entry, context, from_mapping(entry.args, strategy_args, f"strategy {name}"))
    stream = benchmark.scenario.train_stream
    strategy.train(stream[0], eval_streams=[])
    first = clock.take_median()
    strategy.train(stream[1], eval_streams=[])
    second = clock.take_median()
    strategy.eval(benchmark.scenario.test_stream[:1])  # warm-up of the eval path
    _synchronize(clock.device)
    tic = time.perf_counter()
    strategy.eval(benchmark.scenario.test_stream)
    _synchronize(clock.device)
    return {
        "strategy": f"{name} ({influence})" if influence else name,
        "data_path": data_path,
        "ms_per_iter_task1": first,
        "ms_per_iter_task2": second,
        "eval_s": time.perf_counter() - tic,
    }


def bench_loop(args: LoopBenchArgs) -> list[dict[str, Any]]:
    """Full training iterations and evaluation through the strategy template, per data path.

    For each strategy and data path: ms per iteration on task 1 (no memory yet) and on
    task 2 (with replay; MetaSP runs MetaSP steps there), and seconds to evaluate the whole
    test set once. Every iteration includes fetching its mini-batch.
    """
    from clbench.runner import resolve_device

    device = resolve_device(args.device)
    benchmark = _cifar_shaped(args)
    variants = [
        (name, influence)
        for name in args.strategies
        for influence in (args.influences if name.startswith("metasp") else ("",))
    ]
    return [
        _loop_row(args, benchmark, device, name, influence, data_path)
        for name, influence in variants
        for data_path in args.data_paths
    ]


@dataclass(frozen=True)
class EvalBenchArgs:
    """Arguments of ``clbench bench eval``."""

    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    nf: int = field(default=20, metadata={"help": "ResNet-18 width (64 full, 20 reduced)"})
    chunks: tuple[int, ...] = field(
        default=(50, 100, 250, 500, 1000), metadata={"help": "images forwarded at once (training.eval_chunk)"}
    )
    images: int = field(default=2000, metadata={"help": "32x32 test images forwarded per timing"})
    precision: str = field(default="fp32", metadata={"help": "fp32 or bf16 (autocast)"})
    channels_last: bool = field(default=False, metadata={"help": "channels-last memory format"})
    repeats: int = field(default=3, metadata={"help": "timings per chunk size (the median is kept)"})
    seed: int = field(default=0, metadata={"help": "random seed"})

    def __post_init__(self) -> None:
        """Raises: ClbenchError: a precision other than fp32 / bf16, or a chunk size below 1."""
        from clbench.errors import ClbenchError

        if self.precision not in ("fp32", "bf16"):
            raise ClbenchError(f"bench eval: precision {self.precision!r}; valid choices: fp32, bf16")
        if not self.chunks or min(self.chunks) < 1 or self.images < 1:
            raise ClbenchError(f"bench eval: chunks {list(self.chunks)} and images {self.images} must be at least 1")


def bench_eval(args: EvalBenchArgs, device: torch.device) -> list[dict[str, Any]]:
    """Seconds per 10,000 images of the evaluation forward (eval mode, no grad) at each chunk size.

    The figure ``training.eval_chunk`` is chosen by: on a CPU the convolutions of a large batch
    run slower per image than those of a few hundred.
    """
    from clbench.backbones import CifarResNet18

    torch.manual_seed(args.seed)
    model = CifarResNet18(3, 10, nf=args.nf).to(device).eval()
    images = torch.randn(args.images, 3, 32, 32, device=device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def forward_all(chunk: int) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad(), autocast:
                for part in images.split(chunk):
                    model(part)

        return run

    rows = []
    for chunk in args.chunks:
        ms, _ = _time(forward_all(chunk), device, warmup=1, repeats=args.repeats)
        rows.append({"eval_chunk": chunk, "s_per_10k_images": ms / 1000 * 10000 / args.images})
    fastest = min(row["s_per_10k_images"] for row in rows)
    for row in rows:
        row["vs_fastest"] = row["s_per_10k_images"] / fastest
    return rows
