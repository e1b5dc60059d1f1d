"""What the registries hold, kept in a file, so `clbench list` and a config's first checks need no torch.

Loading the registries imports every built-in component, hence torch and Avalanche: 5-10 s
before `clbench list` can print a line or a misspelt strategy name can be reported. The
manifest is what those two need: each component's name, help line and arguments (name,
default, help), by registry. It is written the first time the registries are loaded for
real and read afterwards, as long as its fingerprint matches: the interpreter, and the
path, size and modification time of every source file of clbench (strategies and datasets
included) and the installed entry points of every registry group. Any change, or a
``--plugin`` file, means the registries are imported as before; nothing here changes what
a run computes (the grid still validates every argument through its dataclass).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from clbench.errors import ConfigError, UnknownNameError

REGISTRIES = {
    "strategies": ("clbench.training.context", "STRATEGIES", "clbench.strategies"),
    "benchmarks": ("clbench.datasets.base", "BENCHMARKS", "clbench.benchmarks"),
    "backbones": ("clbench.backbones", "BACKBONES", "clbench.backbones"),
    "loggers": ("clbench.loggers", "LOGGERS", "clbench.loggers"),
    "estimators": ("clbench.influence.estimators", "ESTIMATORS", "clbench.estimators"),
}
"""Registry kind (as `clbench list` names it) -> (module, attribute, entry-point group)."""

SOURCE_PACKAGES = ("clbench", "clbench.strategies", "clbench.datasets")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clbench"


def fingerprint() -> str:
    """A hash of everything that decides what the registries hold (see the module docstring)."""
    parts: list[str] = [sys.version]
    for package in SOURCE_PACKAGES:
        found = importlib.util.find_spec(package)
        for root in (found.submodule_search_locations or []) if found else []:
            for path in sorted(Path(root).rglob("*.py")):
                stat = path.stat()
                parts.append(f"{path}:{stat.st_size}:{stat.st_mtime_ns}")
    for _, _, group in REGISTRIES.values():
        parts += sorted(f"{ep.name}={ep.value}" for ep in importlib.metadata.entry_points(group=group))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _describe(args_type: type) -> list[dict[str, str]]:
    described = []
    for f in dataclasses.fields(args_type):
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "required"
        described.append({"name": f.name, "default": repr(default), "help": str(f.metadata.get("help", ""))})
    return described


def build_manifest() -> dict[str, Any]:
    """Import every registry and describe its components (slow: imports torch and Avalanche)."""
    manifest: dict[str, Any] = {}
    for kind, (module, attribute, _) in REGISTRIES.items():
        registry = getattr(importlib.import_module(module), attribute)
        entries = {entry.name: {"help": entry.help, "args": _describe(entry.args)} for entry in registry}
        manifest[kind] = {"singular": registry.kind, "entries": entries}
    return manifest


def load_manifest(use_cache: bool = True) -> dict[str, Any]:
    """The manifest: from its file when the fingerprint matches, else built and written (best effort).

    A process that has already imported a registry (a ``--plugin`` file, a test registering
    its own components, a caller that went on to run) describes the live registries and
    neither reads nor writes the file: they may hold what no fresh process would.
    """
    if not use_cache or any(module in sys.modules for module, _, _ in REGISTRIES.values()):
        return build_manifest()
    path = _cache_dir() / f"registries-{fingerprint()}.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        pass
    manifest = build_manifest()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(manifest))
        temporary.replace(path)
    except OSError:
        pass  # an unwritable cache only costs the next call the import
    return manifest


def check_components(manifest: dict[str, Any], experiment: Any) -> None:
    """The checks a manifest allows: every component's name, and its arguments' keys.

    Messages are those of the full check (the registry's and ``from_mapping``'s), which runs
    after this one anyway.

    Raises:
        UnknownNameError: A name no registry of its kind holds.
        ConfigError: An argument key the component does not take.
    """
    for name in experiment.loggers:
        _entry(manifest, "loggers", name)
    for spec in experiment.benchmarks:
        _check_keys(_entry(manifest, "benchmarks", spec.name), spec.args, f"benchmark {spec.name}")
    if experiment.backbone is not None:
        backbone = experiment.backbone
        _check_keys(_entry(manifest, "backbones", backbone.name), backbone.args, f"backbone {backbone.name}")
    for strategy in experiment.strategies:
        _check_keys(_entry(manifest, "strategies", strategy.name), strategy.args, f"strategy {strategy.name}")


def _entry(manifest: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    entries = manifest[kind]["entries"]
    if name not in entries:
        raise UnknownNameError(manifest[kind]["singular"], name, entries)
    return dict(entries[name])


def _check_keys(entry: dict[str, Any], args: Any, where: str) -> None:
    if not isinstance(args, dict):
        return  # from_mapping says what is wrong with it
    valid = sorted(arg["name"] for arg in entry["args"])
    unknown = [key for key in args if key not in valid]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(valid) or '(none)'}")


def list_lines(manifest: dict[str, Any], kind: str | None, show_args: bool) -> list[str]:
    """What `clbench list` prints."""
    lines = []
    for registry, described in manifest.items():
        if kind is not None and kind != registry:
            continue
        entries = described["entries"]
        lines.append(f"{registry}:")
        for name in sorted(entries):
            lines.append(f"  {name:22s} {entries[name]['help']}")
            if show_args:
                lines += [f"      {arg['name']} = {arg['default']}  {arg['help']}" for arg in entries[name]["args"]]
    return lines
