"""The ``clbench`` command line.

Errors a user can cause are printed as one line, without a traceback, and the command
exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

from clbench.errors import ClbenchError

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _add_overrides(parser: argparse.ArgumentParser, text: str = "override a setting (repeatable)") -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=text)


def _add_run(commands: Commands) -> None:
    run = commands.add_parser("run", help="run every unfinished run of an experiment config")
    run.add_argument("config", help="experiment YAML file (see experiments/)")
    _add_overrides(run, "override a config key, e.g. training.epochs=1 or seeds=[1231] (repeatable)")
    run.add_argument("--out", default=None, help="output folder for run JSONs (default: runs/<name>)")
    run.add_argument("--data-root", default=None, help="dataset root (default: $CLBENCH_DATA_ROOT or ~/.cache/clbench)")
    run.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars: one line a trained epoch instead (a task, online), for logs of long runs",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="list the runs of the grid, their status and (from finished seeds) their time, and exit",
    )
    run.add_argument("--jobs", type=int, default=1, help="runs at once, as separate processes (default 1)")
    run.add_argument(
        "--launcher",
        choices=["inline", "slurm", "local"],
        default="inline",
        help="inline (this process, or --jobs processes), slurm (a submitit job array), local (submitit, no cluster)",
    )


def _add_report(commands: Commands) -> None:
    report = commands.add_parser("report", help="tables, paired t-tests and figures from run results")
    report.add_argument("results_dir", help="folder of run JSON files (searched recursively)")
    report.add_argument("--reference", default=None, help="strategy tested against the others (default metasp_rehsel)")
    report.add_argument("--format", default="md,tex,csv", help="comma-separated: md, tex, csv")
    report.add_argument("--out", default=None, help="output folder (default: RESULTS_DIR/report)")
    report.add_argument("--no-figures", action="store_true", help="skip the figures")
    report.add_argument(
        "--published",
        default=None,
        metavar="FILE.yaml",
        help="published values to put beside the runs (e.g. experiments/online/published/cifar10.yaml)",
    )
    report.add_argument(
        "--pair",
        nargs=2,
        action="append",
        default=[],
        metavar=("FIRST", "SECOND"),
        help="also t-test these two strategies (labels as the tables name them) against each other; repeatable",
    )
    report.add_argument(
        "--readme",
        default=None,
        metavar="FILE.md",
        help="regenerate this README's '<!-- clbench:KIND ... -->' blocks from the report (kinds: published, "
        "sources, cost, table, pairs; see clbench.report.readme)",
    )


def _add_compare(commands: Commands) -> None:
    compare = commands.add_parser(
        "compare", help="paired t-tests of one config setting (e.g. training.precision) over matched seeds"
    )
    compare.add_argument("results_dir", help="folder of run JSONs")
    compare.add_argument("--by", required=True, help="dotted config key, e.g. training.precision")
    compare.add_argument("--out", default=None, help="also write the table as CSV here")


def _add_influence_studies(commands: Commands) -> None:
    fidelity = commands.add_parser("influence-bench", help="compare influence estimators with the exact influence")
    fidelity.add_argument("config", help="fidelity YAML (see experiments/influence/fidelity.yaml)")
    _add_overrides(fidelity)
    fidelity.add_argument("--out", default=None, help="output folder (default runs/influence/<name>)")
    debug = commands.add_parser(
        "influence-debug", help="HYDRA's data debugging: remove the most harmful noisy labels, retrain, test"
    )
    debug.add_argument("config", help="YAML (see experiments/influence/debugging/fmnist.yaml)")
    _add_overrides(debug)
    debug.add_argument("--out", default=None, help="output folder (default runs/influence/<name>)")
    cluster = commands.add_parser(
        "influence-cluster", help="HYDRA's clustering: split each label's examples by contribution signs (Table 4)"
    )
    cluster.add_argument("config", help="YAML (see experiments/influence/debugging/fmnist_clustering.yaml)")
    _add_overrides(cluster)
    cluster.add_argument("--out", default=None, help="output folder (default runs/influence/<name>)")
    trajectory = commands.add_parser(
        "influence-trajectory",
        help="HYDRA's fidelity along training: fast hypergradients and influence functions vs Hessian-aware (Figs 4-5)",
    )
    trajectory.add_argument("config", help="YAML (see experiments/influence/trajectory/fmnist_lenet5.yaml)")
    _add_overrides(trajectory)
    trajectory.add_argument("--out", default=None, help="output folder (default runs/influence/<name>)")
    agreement = commands.add_parser(
        "influence-agreement", help="meta_lastlayer vs exact meta influence at the checkpoints of a MetaSP run"
    )
    _add_overrides(agreement)
    agreement.add_argument("--out", default="runs/influence_agreement", help="output folder (table, checkpoints)")


def _add_bench(commands: Commands) -> None:
    bench = commands.add_parser("bench", help="print speed figures (see clbench.studies.speed)")
    kinds = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    step = kinds.add_parser("step", help="one ER step vs one MetaSP step on the same model and batch")
    _add_overrides(step, "device, nf, new, memory, val, n_classes, pseudo_steps, warmup, repeats, seed")
    loop = kinds.add_parser(
        "loop", help="full training iterations and test-set evaluation: Avalanche data path vs device path"
    )
    _add_overrides(loop)
    _add_overrides(kinds.add_parser("ihvp", help="clbench's inverse-HVP solvers vs dattri's (if installed)"))
    _add_overrides(
        kinds.add_parser("eval", help="the evaluation forward's speed by images forwarded at once (eval_chunk)")
    )
    every = kinds.add_parser(
        "all", help="step, loop, eval and ihvp benches plus a reduced grid, in one dated report (run it on a GPU)"
    )
    every.add_argument("--preset", default="full", help="tiny (a few minutes on a CPU) or full (one large GPU)")
    every.add_argument("--set", dest="overrides", action="append", default=[], metavar="device=NAME")
    every.add_argument("--jobs", type=int, default=1, help="grid runs at once, sharing the device")
    every.add_argument("--out", default="results/bench", help="where the dated report folder goes")
    every.add_argument("--data-root", default=None, help="dataset root of the grid (default as clbench run)")


def _add_list(commands: Commands) -> None:
    listing = commands.add_parser("list", help="list registered strategies, benchmarks, backbones and loggers")
    listing.add_argument("kind", nargs="?", choices=["strategies", "benchmarks", "backbones", "loggers", "estimators"])
    listing.add_argument("--args", action="store_true", help="also show each component's arguments")


COMMAND_BUILDERS = (_add_run, _add_report, _add_influence_studies, _add_compare, _add_bench, _add_list)
"""One builder a command (or a family of them), in the order of ``clbench --help``."""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clbench", description="Continual-learning benchmarks on Avalanche.")
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="FILE.py",
        help="import a Python file that registers strategies, benchmarks or backbones (repeatable)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMAND_BUILDERS:
        add_command(commands)
    return parser


def _cmd_list(kind: str | None, show_args: bool) -> int:
    from clbench.registry_manifest import list_lines, load_manifest

    print("\n".join(list_lines(load_manifest(), kind, show_args)))
    return 0


def _cmd_run(ns: argparse.Namespace) -> int:
    from clbench.config import load_experiment

    if ns.jobs < 1:
        raise ClbenchError(f"invalid --jobs {ns.jobs}; it must be a positive number of processes")
    experiment = load_experiment(ns.config, ns.overrides)  # before torch is imported: a bad file fails at once
    from clbench.registry_manifest import check_components, load_manifest

    check_components(load_manifest(), experiment)  # names and argument keys, still without torch when cached
    from clbench.grid import expand_grid, output_dir_for

    out = output_dir_for(experiment, ns.out)
    if out.exists() and not out.is_dir():
        raise ClbenchError(f"--out {str(out)!r} is a file; valid choices: a folder, new or existing")
    if ns.dry_run:
        from clbench.plan import plan_grid, plan_lines

        print("\n".join(plan_lines(plan_grid(expand_grid(experiment), out))))
        return 0
    _check_writable(out)
    summary = _launch(ns, experiment, out)
    print(
        f"{len(summary.finished)} run(s) finished, {len(summary.skipped)} skipped, "
        f"{len(summary.failed)} failed; results in {out}"
    )
    return _end_of_grid(summary, expand_grid(experiment), out)


def _check_writable(out: Path) -> None:
    """Fail in one line, before any run, when ``--out`` cannot be written (read-only, full, not allowed)."""
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".clbench-probe."):
            pass
    except OSError as exc:
        raise ClbenchError(
            f"--out {str(out)!r} cannot be written ({exc.strerror or exc}); valid choices: a folder you can write to"
        ) from None


def _launch(ns: argparse.Namespace, experiment: Any, out: Path) -> Any:
    """Run the grid with the launcher ``ns`` asks for; its summary (finished, skipped, failed)."""
    from clbench.launch import run_grid, submit_grid

    data_root = Path(ns.data_root) if ns.data_root else None
    if ns.launcher != "inline":
        return submit_grid(experiment, out, cluster=ns.launcher, data_root=data_root, plugin_files=tuple(ns.plugin))
    return run_grid(
        experiment, out, data_root=data_root, progress=not ns.no_progress, jobs=ns.jobs, plugin_files=tuple(ns.plugin)
    )


def _end_of_grid(summary: Any, runs: list[Any], out: Path) -> int:
    """The grid's final accuracies, its failures and what is missing; the exit status (1 unless complete)."""
    from clbench.grid_summary import summary_lines, wait_for_local_claims

    missing = [] if summary.failed else wait_for_local_claims(runs, out)
    lines = summary_lines(runs, out)
    if lines:
        print("\n".join(["final accuracy of the grid's finished runs:", *lines]))
        print(f"next: clbench report {out}")
    if summary.failed:
        for run_id, message in summary.failed.items():
            print(f"  failed: {run_id}: {message}", file=sys.stderr)
        return 1
    if missing:
        from clbench.claims import STALE_AFTER_SECONDS, read_claim

        held = []
        for run in missing:
            info = read_claim(out / f"{run.run_id}.lock")
            holder = f" ({info.describe()})" if info else ""
            held.append(f"{run.run_id}{holder}")
        print(
            f"clbench: the grid ended without {len(missing)} result(s), claimed by another process: "
            f"{', '.join(held)}; re-run when they are done (a claim whose heartbeat is older than "
            f"{STALE_AFTER_SECONDS / 60:.0f} min is taken over by the next run)",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_report(ns: argparse.Namespace) -> int:
    from clbench.report import build_report, write_report
    from clbench.report.published import published_markdown
    from clbench.report.tables import to_markdown

    report = build_report(ns.results_dir, ns.reference, ns.published, [tuple(pair) for pair in ns.pair])
    for message in report.skipped:
        print(f"skipped: {message}", file=sys.stderr)
    if not report.tables:
        raise ClbenchError(f"no run results in {str(ns.results_dir)!r}; valid choices: a folder of run JSONs")
    formats = [f.strip() for f in ns.format.split(",") if f.strip()]
    out = Path(ns.out) if ns.out else Path(ns.results_dir) / "report"
    written = write_report(report, out, formats, figures=not ns.no_figures)
    for table in report.tables:
        print(to_markdown(table))
    if report.published_table is not None and report.collection is not None:
        print(published_markdown(report.published, report.published_table, report.collection.protocols))
    print(f"{len(report.tables)} table(s), {len(written)} file(s) written to {out}")
    if ns.readme:
        from clbench.report.readme import fill_readme

        print(f"{fill_readme(Path(ns.readme), report)} block(s) regenerated in {ns.readme}")
    return 0


def _run_study(ns: argparse.Namespace, load: Any, run: Any, write: Any, to_markdown: Any) -> int:
    """A study command: its config read with ``--set``, run, written to ``--out`` (default runs/influence/<name>)."""
    config = load(ns.config, ns.overrides)
    result = run(config)
    out = Path(ns.out) if ns.out else Path("runs") / "influence" / config.name
    write(result, out)
    print(to_markdown(result))
    print(f"written to {out}")
    return 0


def _cmd_influence_bench(ns: argparse.Namespace) -> int:
    from clbench.studies import influence_fidelity as study

    return _run_study(ns, study.load_fidelity_config, study.run_fidelity, study.write_fidelity, study.to_markdown)


def _cmd_influence_debug(ns: argparse.Namespace) -> int:
    from clbench.studies import data_debugging as study

    return _run_study(ns, study.load_debug_config, study.run_debugging, study.write_debugging, study.to_markdown)


def _cmd_influence_cluster(ns: argparse.Namespace) -> int:
    from clbench.studies import data_clustering as study
    from clbench.studies.data_debugging import load_debug_config

    return _run_study(ns, load_debug_config, study.run_clustering, study.write_clustering, study.to_markdown)


def _cmd_influence_trajectory(ns: argparse.Namespace) -> int:
    from clbench.studies import hydra_trajectory as study

    return _run_study(ns, study.load_trajectory_config, study.run_trajectory, study.write_trajectory, study.to_markdown)


def _cmd_compare(ns: argparse.Namespace) -> int:
    from clbench.report.compare import compare_setting

    table = compare_setting(Path(ns.results_dir), ns.by)
    print(table.to_markdown(index=False, floatfmt=".3g"))
    if ns.out:
        table.to_csv(ns.out, index=False)
    return 0


def _cmd_influence_agreement(ns: argparse.Namespace) -> int:
    import pandas as pd

    from clbench.config import apply_overrides, from_mapping
    from clbench.studies.influence_agreement import AgreementArgs, run_agreement

    args = from_mapping(AgreementArgs, apply_overrides({}, ns.overrides), "influence-agreement")
    out = Path(ns.out)
    table = pd.DataFrame(run_agreement(args, out))
    text = f"clbench influence-agreement: {args}\n\n{table.to_markdown(index=False, floatfmt='.3f')}\n"
    (out / "agreement.md").write_text(text)
    table.to_csv(out / "agreement.csv", index=False)
    print(text)
    return 0


def _device_name(requested: str) -> str:
    import platform

    import torch

    if torch.cuda.is_available() and requested != "cpu":
        return torch.cuda.get_device_name()
    return platform.processor() or "cpu"


def _cmd_bench(ns: argparse.Namespace) -> int:
    import torch

    from clbench.config import from_mapping, parse_override
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

    raw: dict[str, Any] = {}
    for text in ns.overrides:
        path, value = parse_override(text)
        raw[".".join(path)] = value
    if ns.bench == "all":
        return _cmd_bench_all(ns, raw)
    if ns.bench == "ihvp":
        import pandas as pd

        ihvp_args = from_mapping(IhvpBenchArgs, raw, "bench ihvp")
        print(f"clbench bench ihvp: {ihvp_args} (torch {torch.__version__}, {torch.get_num_threads()} threads)")
        print(pd.DataFrame(bench_ihvp(ihvp_args)).to_markdown(index=False, floatfmt=".3g"))
        return 0
    if ns.bench == "eval":
        import pandas as pd

        from clbench.runner import resolve_device

        eval_args = from_mapping(EvalBenchArgs, raw, "bench eval")
        eval_device = resolve_device(eval_args.device)
        print(
            f"clbench bench eval: {eval_args} on {_device_name(eval_args.device)} (torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads)"
        )
        print(pd.DataFrame(bench_eval(eval_args, eval_device)).to_markdown(index=False, floatfmt=".3g"))
        return 0
    if ns.bench == "loop":
        import pandas as pd

        loop_args = from_mapping(LoopBenchArgs, raw, "bench loop")
        print(
            f"clbench bench loop: {loop_args} on {_device_name(loop_args.device)} (torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads)"
        )
        print(pd.DataFrame(bench_loop(loop_args)).to_markdown(index=False, floatfmt=".4g"))
        return 0
    args = from_mapping(StepBenchArgs, raw, "bench step")
    rows = bench_step(args)
    device = _device_name(args.device)
    header = (
        f"clbench bench step: ResNet-18 nf={args.nf}, {args.new} new + {args.memory} memory, |V|={args.val}, "
        f"pseudo_steps={args.pseudo_steps}, median of {args.repeats} on {device} (torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads)"
    )
    print(format_rows(rows, header))
    return 0


def _cmd_bench_all(ns: argparse.Namespace, raw: dict[str, Any]) -> int:
    from clbench.studies.bench_all import run_bench_all

    unknown = sorted(set(raw) - {"device"})
    if unknown:
        raise ClbenchError(f"bench all: unknown setting {unknown[0]!r}; valid keys: device")
    if ns.jobs < 1:
        raise ClbenchError(f"invalid --jobs {ns.jobs}; it must be a positive number of processes")
    data_root = Path(ns.data_root) if ns.data_root else None
    report, ok = run_bench_all(ns.preset, str(raw.get("device", "auto")), ns.jobs, Path(ns.out), data_root)
    print(report.read_text())
    print(f"report written to {report}")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``clbench`` command."""
    parser = _build_parser()
    ns = parser.parse_args(argv)
    try:
        from clbench.registry import load_plugin_file

        for plugin in ns.plugin:
            load_plugin_file(plugin)
        if ns.command == "list":
            return _cmd_list(ns.kind, ns.args)
        if ns.command == "run":
            return _cmd_run(ns)
        if ns.command == "report":
            return _cmd_report(ns)
        if ns.command == "influence-bench":
            return _cmd_influence_bench(ns)
        if ns.command == "influence-debug":
            return _cmd_influence_debug(ns)
        if ns.command == "influence-cluster":
            return _cmd_influence_cluster(ns)
        if ns.command == "influence-trajectory":
            return _cmd_influence_trajectory(ns)
        if ns.command == "compare":
            return _cmd_compare(ns)
        if ns.command == "influence-agreement":
            return _cmd_influence_agreement(ns)
        if ns.command == "bench":
            return _cmd_bench(ns)
    except ClbenchError as exc:
        print(f"clbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clbench: interrupted; finished runs are kept, re-run to resume", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # Leave at once: the interpreter's exit would join worker-pool threads, which can wait
        # on a worker that was killed mid-message; every finished result is already on disk.
        os._exit(130)
    except BrokenPipeError:
        # The reader went away (`clbench run ... --dry-run | head -1`): stop quietly, and keep
        # the interpreter's final flush from raising on the closed pipe again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    parser.error(f"unknown command {ns.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
