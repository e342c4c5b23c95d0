"""Exceptions of the sweep layer."""

from __future__ import annotations

from mts.errors import ConfigError, MtsError


class SweepError(MtsError):
    """A sweep cannot start or continue. The message states what to do."""


class ConfigProblems(ConfigError):
    """One or more invalid configuration values, each described on its own line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
