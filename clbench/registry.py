"""One registry type for every pluggable kind of component.

A component registers itself with a decorator in its own module::

    @STRATEGIES.register("er", args=ERArgs, help="Experience replay ...")
    def build_er(ctx: StrategyContext, args: ERArgs) -> SupervisedTemplate: ...

Built-in modules are imported lazily, on the first look-up, so ``import clbench`` stays
cheap and has no side effects. Third-party packages add components through the Python
entry-point group named by the registry (``clbench.strategies``, ``clbench.benchmarks``,
``clbench.backbones``, ...): each entry point names a module that registers on import.
A single file can be loaded with :func:`load_plugin_file` (the CLI's ``--plugin``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import pkgutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from clbench.errors import ClbenchError, UnknownNameError

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class NoArgs:
    """Arguments of a component that takes none."""


@dataclass(frozen=True)
class Entry(Generic[F]):
    """One registered component.

    Attributes:
        name: The name configs use.
        factory: The callable that builds the component.
        args: Frozen dataclass type of the component's own arguments.
        help: One-line description shown by ``clbench list``.
        traits: Free-form flags a registry's users agree on (e.g. ``uses_buffer``).
    """

    name: str
    factory: F
    args: type
    help: str
    traits: dict[str, Any] = field(default_factory=dict)


def package_modules(package: str | None) -> list[str]:
    """The dotted names of a package's modules, in file-name order (none for None)."""
    if package is None:
        return []
    found = importlib.util.find_spec(package)
    if found is None or found.submodule_search_locations is None:
        raise ClbenchError(f"built-in package {package!r} is not an importable package")
    return [f"{package}.{info.name}" for info in sorted(pkgutil.iter_modules(found.submodule_search_locations))]


class Registry(Generic[F]):
    """A named collection of components of one kind."""

    def __init__(
        self,
        kind: str,
        entry_point_group: str,
        builtin_modules: Sequence[str] = (),
        builtin_package: str | None = None,
    ) -> None:
        """Create an empty registry.

        Args:
            kind: Human name of the kind, used in error messages ("strategy").
            entry_point_group: Python entry-point group scanned for third-party modules.
            builtin_modules: Modules imported on first look-up; they register on import.
            builtin_package: A package every module of which is imported on first look-up
                (Mammoth's ``models/`` folder): a new built-in is one new file there.
        """
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._builtin_modules = tuple(builtin_modules)
        self._builtin_package = builtin_package
        self._entries: dict[str, Entry[F]] = {}
        self._loaded = False

    def register(self, name: str, *, args: type = NoArgs, help: str = "", **traits: Any) -> Callable[[F], F]:
        """Decorator registering ``factory`` under ``name``.

        Args:
            name: The name configs use; must be unique within this registry.
            args: Frozen dataclass of the component's arguments.
            help: One-line description.
            **traits: Extra flags stored on the entry.

        Returns:
            The decorator, which returns the factory unchanged.
        """

        def decorator(factory: F) -> F:
            existing = self._entries.get(name)
            if existing is not None and existing.factory is not factory:
                raise ClbenchError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name=name, factory=factory, args=args, help=help, traits=traits)
            return factory

        return decorator

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in (*self._builtin_modules, *package_modules(self._builtin_package)):
            importlib.import_module(module)
        for entry_point in importlib.metadata.entry_points(group=self.entry_point_group):
            try:
                entry_point.load()
            except Exception as exc:  # a broken third-party plugin must not hide the built-ins
                raise ClbenchError(
                    f"entry point {entry_point.name!r} of group {self.entry_point_group} failed to load: {exc}"
                ) from exc

    def get(self, name: str) -> Entry[F]:
        """Look a component up by name.

        Raises:
            UnknownNameError: ``name`` is not registered; the message lists valid names.
        """
        self._ensure_loaded()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._entries) from None

    def names(self) -> list[str]:
        """Sorted names of all registered components."""
        self._ensure_loaded()
        return sorted(self._entries)

    def __iter__(self) -> Iterator[Entry[F]]:
        self._ensure_loaded()
        return iter([self._entries[name] for name in sorted(self._entries)])

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries


def load_plugin_file(path: str | Path) -> None:
    """Import a Python file so the components it registers become available.

    Raises:
        ClbenchError: The file does not exist or is not a ``.py`` file.
    """
    file = Path(path)
    if not file.is_file() or file.suffix != ".py":
        raise ClbenchError(f"plugin file {str(path)!r} not found (expected an existing .py file)")
    module_name = f"clbench_plugin_{file.stem}_{abs(hash(file.resolve())) % 10**8}"
    if module_name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise ClbenchError(f"plugin file {str(path)!r} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
