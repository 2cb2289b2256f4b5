"""``${NAME}`` placeholders in routes files, so one recorded sample serves any broker address.

Only ``${UPPER_CASE}`` is a placeholder; any other ``$`` is left alone. Every placeholder needs a
value: a routes file pointing at a literal ``${BOOTSTRAP}`` would only time out, much later.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


class TemplateError(ValueError):
    """A placeholder without a value; the message lists them."""


def placeholders(text: str) -> list[str]:
    return sorted(set(PLACEHOLDER.findall(text)))


def render(text: str, values: Mapping[str, str], *, where: str = "routes") -> str:
    missing = [name for name in placeholders(text) if name not in values]
    if missing:
        given = " ".join(f"--var {name}=..." for name in missing)
        raise TemplateError(f"{where} needs a value for {', '.join(missing)} ({given})")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def render_file(
    path: str | os.PathLike[str], values: Mapping[str, str], into: str | os.PathLike[str]
) -> Path:
    """``path`` rendered into the directory ``into``, same name (its suffix picks the format)."""
    source = Path(path)
    text = render(source.read_text(encoding="utf-8"), values, where=str(source))
    target = Path(into) / source.name
    target.write_text(text, encoding="utf-8")
    return target


def parse_var(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` (for ``--var``)."""
    name, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
        raise ValueError(f"{text!r}: expected NAME=VALUE with an upper-case NAME")
    return name, value
