"""Error types. Every error a user can cause derives from :class:`GeodinoError`.

The CLI prints ``GeodinoError`` messages as one line and exits with code 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


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


# --- the Python API's wording ------------------------------------------------------------------------------------------
# Library messages name the command line's options (``--sensor generic``); the top-level Python API re-words them as
# keyword arguments (``sensor='generic'``) in one place: :func:`speaks_python` on each API function.

_QUOTED_COMMAND = re.compile(r"('geodino [^']*')")  # a whole command in quotes (e.g. geodino download) stays a command
_EXAMPLE_COMMAND = re.compile(r"geodino [a-z][a-z-]* (?:[^\s']+ )*?OUT\.[a-z]+ ")  # "geodino encode a.tif OUT.tif --bands .."
_OPTION = re.compile(r"--(no-)?([a-z][a-z0-9]*(?:-[a-z0-9]+)*)(?:[ =]('[^']*'|\"[^\"]*\"|[^\s;()'\"]+))?")
_FLAGS = frozenset({"overwrite", "allow-clipping", "check-hash", "profile", "estimate"})
_WORDS = frozenset(
    ["a", "agrees", "an", "and", "are", "as", "at", "but", "for", "from", "gives", "if", "in", "is", "must", "of", "on",
     "only", "or", "overrides", "replaces", "selects", "so", "takes", "the", "then", "to", "was", "when", "with"]
)  # fmt: skip


def _keyword(m: re.Match[str]) -> str:
    """One ``--option [value]`` as ``option=value`` (``--no-check-hash``: ``check_hash=False``)."""
    negated, name, value = m.groups()
    key = name.replace("-", "_")
    if negated or name in _FLAGS:
        return f"{key}={not negated}" + (f" {value}" if value else "")
    if value is None or value.lower() in _WORDS:
        return f"{key}=" + (f" {value}" if value else "")
    body = value.rstrip(".,:")
    trail = value[len(body) :]
    plain = body[:1] in "'\"" or re.fullmatch(r"[A-Z_]+|-?\d+(\.\d+)?", body) is not None
    return f"{key}={body if plain else repr(body)}{trail}"


def api_words(message: str) -> str:
    """``message`` with command-line options written as the API's keyword arguments: ``--sensor generic`` ->
    ``sensor='generic'``, ``--overwrite`` -> ``overwrite=True``, ``--bands`` -> ``bands=``; an example command
    line (``geodino encode a.tif OUT.tif --bands 3,2,1``) keeps only its keywords."""
    parts = _QUOTED_COMMAND.split(message)
    return "".join(p if i % 2 else _OPTION.sub(_keyword, _EXAMPLE_COMMAND.sub("", p)) for i, p in enumerate(parts))


def speaks_python(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` with the messages of the :class:`GeodinoError` it raises in :func:`api_words` (same exception, same type)."""

    @functools.wraps(fn)
    def api_call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except GeodinoError as exc:
            if exc.args and isinstance(exc.args[0], str):
                exc.args = (api_words(exc.args[0]), *exc.args[1:])
            raise

    return api_call
