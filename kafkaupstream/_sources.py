"""Import this package's modules from their ``.py`` sources, never from a compiled extension.

The compiled core is the same sources built into extension modules that sit beside them, and
Python's path finder prefers an extension to a source of the same name. This finder, put in
front of it, only ever finds sources (packages included), so the interpreted build can be run
and tested from an install that has the compiled one.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import SOURCE_SUFFIXES, FileFinder, ModuleSpec, SourceFileLoader
from types import ModuleType

_PACKAGE = "kafkaupstream."


class SourcesOnly:
    """A meta path finder for ``kafkaupstream.*`` that knows only ``.py`` files."""

    @classmethod
    def find_spec(
        cls, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if not fullname.startswith(_PACKAGE) or path is None:
            return None
        for entry in path:
            spec = FileFinder(entry, (SourceFileLoader, SOURCE_SUFFIXES)).find_spec(fullname)
            if spec is not None:
                return spec
        return None


def install_sources_only() -> None:
    """Idempotent; must run before the modules it should affect are first imported."""
    if SourcesOnly not in sys.meta_path:
        sys.meta_path.insert(0, SourcesOnly)
