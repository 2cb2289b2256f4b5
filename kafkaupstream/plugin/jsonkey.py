"""A route's ``jsonkey``: a JMESPath expression compiled once, evaluated per request.

``jmespath``'s own ``ParsedResult.search`` builds a new interpreter (and its options and function
table) on every call; here the interpreter is made once per route, so a request only walks the
parsed tree. A plain dotted path of names (``user.id``, ``"user-id".name``: the common case) is
not walked at all but looked up directly, with JMESPath's meaning: a value that is not an object
on the way, or a missing name, gives ``None``; a dotted path never indexes an array.
"""

from __future__ import annotations

from typing import Any

import jmespath
from jmespath import visitor


class JsonKey:
    """A compiled jsonkey; :meth:`search` is ``jmespath.search(source, document)``.

    Raises what JMESPath raises (``JMESPathError`` at compile time for a bad expression; at
    evaluation for a bad function argument, ``RecursionError`` for a too deep expression).
    """

    __slots__ = ("_interpreter", "_parsed", "path", "source")

    def __init__(self, source: str) -> None:
        parsed = jmespath.compile(source).parsed
        self.source = source
        #: The names of a plain dotted path, or None: the expression needs the interpreter.
        self.path: tuple[str, ...] | None = _dotted_path(parsed)
        self._parsed = parsed
        self._interpreter = visitor.TreeInterpreter()

    def search(self, document: object) -> Any:
        """The expression's value on a parsed JSON document (``None``: nothing found)."""
        path = self.path
        if path is None:
            return self._interpreter.visit(self._parsed, document)
        value: Any = document
        for name in path:
            # JMESPath's field step is ``value.get(name)``, None where there is no ``get``: of
            # the values a JSON document holds, only objects (dicts) have one.
            if not isinstance(value, dict):
                return None
            value = value.get(name)
        return value

    def __repr__(self) -> str:
        return f"JsonKey({self.source!r})"


def _dotted_path(node: dict[str, Any]) -> tuple[str, ...] | None:
    """The field names of a tree made of field and subexpression nodes only, else None."""
    kind = node["type"]
    if kind == "field":
        return (node["value"],)
    if kind != "subexpression":
        return None
    names: list[str] = []
    for child in node["children"]:
        part = _dotted_path(child)
        if part is None:
            return None
        names.extend(part)
    return tuple(names)
