"""Which build serves requests: the compiled core, or the pure-Python modules it is built from.

The compiled core is the fast lane (``server/lane.py``) and the per-request modules it calls,
compiled by Cython at install time beside their sources. ``KAFKAUPSTREAM_NO_EXTENSIONS=1`` (read
when the package is first imported) runs everything from source through the general handler;
so does an install that could not compile. The runner logs its choice at start, says it in
``--version`` and in the ``runner_info`` metric.
"""

from __future__ import annotations

import importlib.util
import os
from importlib.machinery import EXTENSION_SUFFIXES
from types import ModuleType
from typing import Final, Literal

from kafkaupstream import NO_EXTENSIONS_ENV

CoreName = Literal["compiled", "python"]
COMPILED: Final = "compiled"
PYTHON: Final = "python"
_LANE = "kafkaupstream.server.lane"


def core() -> CoreName:
    """``compiled`` when the lane's extension module is installed and not turned off."""
    if forced_python():
        return PYTHON
    spec = importlib.util.find_spec(_LANE)
    origin = spec.origin if spec is not None else None
    if origin is not None and origin.endswith(tuple(EXTENSION_SUFFIXES)):
        return COMPILED
    return PYTHON


def is_compiled(module: ModuleType) -> bool:
    """Whether ``module`` was loaded from a compiled extension rather than its source."""
    origin = getattr(module, "__file__", None) or ""
    return origin.endswith(tuple(EXTENSION_SUFFIXES))


def forced_python() -> bool:
    """Whether ``KAFKAUPSTREAM_NO_EXTENSIONS`` asks for the pure-Python build."""
    return os.environ.get(NO_EXTENSIONS_ENV, "") not in ("", "0")


def describe() -> str:
    """One line for ``--version`` and the start-up log."""
    if core() == COMPILED:
        return "compiled core (Cython)"
    if forced_python():
        return f"pure Python ({NO_EXTENSIONS_ENV} is set)"
    return "pure Python (the compiled core is not installed)"
