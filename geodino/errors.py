"""Error types. Every error a user can cause derives from :class:`GeodinoError`.

The CLI prints ``GeodinoError`` messages as one line and exits with code 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class GeodinoError(Exception):
    """Base class for errors caused by input, configuration or files (not bugs)."""


class InputError(GeodinoError, ValueError):
    """An argument or input array that geodino cannot use (e.g. a side not divisible by 16)."""


class SpecError(GeodinoError, KeyError):
    """An unknown model or weights spec name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsError(GeodinoError):
    """A checkpoint that cannot be found, read, verified or matched to a spec."""
