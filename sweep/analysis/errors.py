"""The exception of the analysis module, a `SweepError` so that the CLI prints it as one line."""

from __future__ import annotations

from sweep.errors import SweepError


class AnalysisError(SweepError):
    """An invalid analysis request, or an experiment without analysis data; the message names the fix."""
