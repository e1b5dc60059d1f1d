"""Errors a user can cause.

Every one of them carries a one-line message naming the bad value and, where there is a
finite set of valid values, the valid choices. The CLI prints the message without a
traceback and exits with status 2.
"""

from __future__ import annotations

from collections.abc import Iterable


class ClbenchError(Exception):
    """Base class for every error a user can cause."""


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss: the run fails instead of recording chance-level accuracies.

    A failure of one run, not a user error that would fail every run alike (not a
    :class:`ClbenchError`): the grid writes the run's ``.error.txt``, goes on, and ends
    with exit status 1.
    """


class ConfigError(ClbenchError):
    """A config file or a ``--set`` override is malformed."""


class UnknownNameError(ClbenchError):
    """A name was looked up in a registry that does not hold it."""

    def __init__(self, kind: str, name: str, choices: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.choices = sorted(choices)
        super().__init__(f"unknown {kind} {name!r}; valid choices: {', '.join(self.choices)}")


class DataError(ClbenchError):
    """A data root is missing, incomplete or corrupt."""


class ResultsError(ClbenchError):
    """A results file cannot be read as a run result."""


def choices_message(what: str, value: object, choices: Iterable[object]) -> str:
    """Format the one-line message for a value outside a finite set of choices.

    Args:
        what: What the value is, e.g. ``"class_order"``.
        value: The value that was given.
        choices: The valid values.

    Returns:
        A single line naming the bad value and the valid choices.
    """
    listed = ", ".join(str(c) for c in choices)
    return f"invalid {what} {value!r}; valid choices: {listed}"
