"""Exceptions raised by the MTS method package.

Every error a user can cause derives from `MtsError`, so that a caller (the CLI, a Ray Tune
trainable) can catch the whole family and report it in one line.
"""

from __future__ import annotations


class MtsError(Exception):
    """Base class of every error raised by `mts`."""


class ConfigError(MtsError, ValueError):
    """A configuration value is invalid; the message names the key, the value and what is allowed."""


class TaskError(MtsError, ValueError):
    """A task cannot be built or loaded, for example a malformed user data file."""


class DivergenceError(MtsError, ArithmeticError):
    """Training produced a NaN or infinite loss, so the run cannot continue."""

    def __init__(self, message: str, epoch: int, step: int) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step
