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


class OutputError(GeodinoError):
    """An output that cannot be written (locked by another run, disk full); nothing was changed."""


class Interrupted(GeodinoError):  # noqa: N818  (a state, not a fault)
    """The run was stopped by a signal; ``exit_code`` is 128 + the signal number (130 for Ctrl-C)."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Terminated(BaseException):
    """Raised in the main thread by the SIGTERM / SIGHUP handler the CLI installs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
