"""Builds the compiled core: the per-request modules compiled by Cython, beside their sources.

The same ``.py`` files are the pure-Python build: when Cython or a C compiler is missing, or
``KAFKAUPSTREAM_NO_EXTENSIONS=1`` is set at install time, the package installs without the
extensions (one notice on stderr) and runs interpreted. Everything else is in pyproject.toml.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

#: Compiled for speed: C types come from the augmenting ``.pxd`` beside the source (type hints
#: are never read as C types: the sources stay plain Python, run as such when interpreted).
TYPED = ["kafkaupstream/server/lane.py"]
#: As TYPED, without Cython's index checks: the code checks every index before reading it.
UNCHECKED = ["kafkaupstream/plugin/_jsonscan.py"]
#: Hot modules compiled unchanged, with Python semantics (annotations are not checked at run
#: time, as interpreted): fewer interpreter steps per call, the same behaviour. Not jsonbody.py:
#: its work is already in C (CPython's scanner, bytes methods), and compiled it would hold the
#: GIL through a whole large body on its thread, with no bytecode boundary to switch at.
UNTYPED = [
    "kafkaupstream/protocol/frames.py",
    "kafkaupstream/protocol/_flatreader.py",
    "kafkaupstream/protocol/_readers.py",
    "kafkaupstream/protocol/_writers.py",
    "kafkaupstream/protocol/_stopframes.py",
    "kafkaupstream/plugin/record.py",
    "kafkaupstream/plugin/answers.py",
]
NOTICE = "kafkaupstream: the compiled core was not built ({}); installing pure Python"


def _notice(reason: object) -> None:
    print(NOTICE.format(reason), file=sys.stderr)


class OptionalBuildExt(build_ext):
    """A failed compile is a notice, not a failed install: the sources run as they are."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            _notice(exc)

    def build_extension(self, ext: object) -> None:
        try:
            super().build_extension(ext)  # type: ignore[arg-type]
        except Exception as exc:
            _notice(f"{getattr(ext, 'name', ext)}: {exc}")
            # An in-place rebuild that failed must not leave the previous build shadowing the
            # source it no longer matches.
            stale = self.get_ext_fullpath(ext.name)  # type: ignore[attr-defined]
            if self.inplace and os.path.exists(stale):
                os.remove(stale)


def _extensions() -> list[object]:
    if os.environ.get("KAFKAUPSTREAM_NO_EXTENSIONS", "") not in ("", "0"):
        _notice("KAFKAUPSTREAM_NO_EXTENSIONS is set")
        return []
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError as exc:
        _notice(exc)
        return []

    def modules(paths: list[str]) -> list[Extension]:
        return [Extension(p[: -len(".py")].replace("/", "."), [p]) for p in paths]

    directives = {"language_level": "3", "annotation_typing": False}
    try:
        return [
            *cythonize(modules(TYPED + UNTYPED), compiler_directives=directives, quiet=True),
            *cythonize(
                modules(UNCHECKED),
                compiler_directives={**directives, "boundscheck": False, "wraparound": False},
                quiet=True,
            ),
        ]
    except Exception as exc:  # a Cython error: still install, interpreted
        _notice(exc)
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
