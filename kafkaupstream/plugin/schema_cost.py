"""The bound on what validating one body against a route's schema can cost, found at prepare time.

Linear-time patterns are not enough: a schema whose references recurse can make validation time
exponential in the body's nesting (``{"oneOf": [{"items": {"$ref": "#"}}, {"items": {"$ref":
"#"}}]}`` took 14 s on a 40-byte body 18 levels deep), and one without recursion can still apply
very many subschemas to one value (``$defs`` that each reference the next twice, ten levels
deep, apply over a thousand to the same place). So the schema is walked once, its references
followed, and refused if a reference recurses or if more than :data:`MAX_CHECKS_PER_VALUE`
subschemas can apply to any one value of a body. Validating a body then costs at most that many
subschema checks per value (patterns linear in the string, ``uniqueItems`` by hashing): linear
in the body.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn
from urllib.parse import urldefrag, urljoin

import jsonschema_rs

#: Subschemas that may apply to one value of a body. Real schemas stay far below (a ``oneOf`` of
#: 50 event types of 20 properties each applies about 100 to the root and 50 to a property).
MAX_CHECKS_PER_VALUE = 1_000
#: Bytes of body times subschemas per value that a route may reach (its ``max_body_bytes`` times
#: :func:`checks_per_value`). jsonschema-rs holds the GIL while it validates, so a thread does not
#: keep the worker serving meanwhile: the work itself is bounded. The worst body measured (an
#: array of one-digit integers, each checked by 300 subschemas of 4 keywords) cost 15.6 ns per
#: byte and subschema: about 0.26 s at this bound, on the dev machine.
MAX_VALIDATION_WORK = 16 * 1024 * 1024
#: The base of a schema without an absolute ``$id``: hierarchical, so that a relative ``$id``
#: resolves against it; ``.invalid`` names no host, and nothing is ever retrieved anyway.
_ROOT_URI = "https://kafkaupstream.invalid/schema.json"

_SAME_PLACE = ("not", "if", "then", "else")
_SAME_PLACE_LISTS = ("allOf", "anyOf", "oneOf")
_SAME_PLACE_MAPS = ("dependentSchemas", "dependencies")
_DYNAMIC = ("$dynamicRef", "$recursiveRef")


class CostError(ValueError):
    """The schema's validation cost has no bound the runner accepts; the message says why."""


def _refuse(uri: str) -> NoReturn:
    raise LookupError("references outside the schema are not fetched")


def checks_per_value(schema: Any) -> int:
    """The most subschemas that can apply to one value of a body; raises :class:`CostError`.

    ``schema`` must have compiled (so every reference in it resolves inside it).
    """
    widths = _Walk(schema).widths(schema, None)
    return max(widths)


def _add(into: list[int], more: Iterable[int]) -> None:
    for depth, count in enumerate(more):
        if depth < len(into):
            into[depth] += count
        else:
            into.append(count)
    if max(into) > MAX_CHECKS_PER_VALUE:
        raise CostError(
            f"more than {MAX_CHECKS_PER_VALUE} subschemas can apply to one value of a body "
            "(references or combinators multiply them): simplify the schema"
        )


def _widest(alternatives: Iterable[list[int]]) -> list[int]:
    """The worst case of alternatives that never apply to the same value together."""
    out: list[int] = []
    for widths in alternatives:
        for depth, count in enumerate(widths):
            if depth < len(out):
                out[depth] = max(out[depth], count)
            else:
                out.append(count)
    return out


def _schemas(value: Any) -> list[Any]:
    """The subschemas of a keyword's value (a schema, or a list of them)."""
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict | bool)]
    return [value] if isinstance(value, dict | bool) else []


class _Walk:
    """One walk over a schema; ``widths(node)[d]``: subschemas applying to one value d levels in."""

    def __init__(self, schema: Any) -> None:
        root_id = schema.get("$id", schema.get("id")) if isinstance(schema, dict) else None
        absolute = isinstance(root_id, str) and ":" in root_id.split("/", 1)[0]
        self._root_uri: str = urldefrag(str(root_id)).url if absolute else _ROOT_URI
        try:
            self._registry = jsonschema_rs.Registry([(self._root_uri, schema)], retriever=_refuse)
        except (ValueError, jsonschema_rs.ReferencingError):
            raise CostError("its $id values cannot be followed when bounding its cost") from None
        self._done: dict[str, list[int]] = {}
        self._open: set[str] = set()

    def widths(self, node: Any, resolver: jsonschema_rs.Resolver | None) -> list[int]:
        if not isinstance(node, dict):
            return [1]
        resolver = self._resolver_for(node, resolver)
        if any(key in node for key in _DYNAMIC):
            raise CostError(
                "$dynamicRef and $recursiveRef are not supported (they only serve recursion, "
                "which is refused)"
            )
        here = [1]
        for key in _SAME_PLACE + _SAME_PLACE_LISTS:
            for sub in _schemas(node.get(key)):
                _add(here, self.widths(sub, resolver))
        for key in _SAME_PLACE_MAPS:
            if isinstance(mapping := node.get(key), dict):
                for sub in mapping.values():
                    for schema in () if isinstance(sub, list) else _schemas(sub):
                        _add(here, self.widths(schema, resolver))
        if isinstance(ref := node.get("$ref"), str):
            _add(here, self._follow(ref, resolver))
        child = _widest([self._object_child(node, resolver), self._array_child(node, resolver)])
        if child:
            _add(here, [0, *child])
        return here

    def _object_child(self, node: dict[str, Any], resolver: jsonschema_rs.Resolver) -> list[int]:
        """The worst case for one member of an object (or one of its names)."""
        properties = node.get("properties")
        named = [*properties.values()] if isinstance(properties, dict) else []
        named += _schemas(node.get("additionalProperties"))  # applies where no name matched
        one = _widest(self.widths(s, resolver) for s in named)
        patterns = node.get("patternProperties")
        for sub in patterns.values() if isinstance(patterns, dict) else ():
            _add(one, self.widths(sub, resolver))  # a name may match every pattern at once
        for sub in _schemas(node.get("unevaluatedProperties")):
            _add(one, self.widths(sub, resolver))
        names = [self.widths(s, resolver) for s in _schemas(node.get("propertyNames"))]
        return _widest([one, *names])

    def _array_child(self, node: dict[str, Any], resolver: jsonschema_rs.Resolver) -> list[int]:
        """The worst case for one item of an array."""
        positional = [
            *_schemas(node.get("prefixItems")),
            *_schemas(node.get("items")),
            *_schemas(node.get("additionalItems")),
        ]
        one = _widest(self.widths(s, resolver) for s in positional)
        for key in ("contains", "unevaluatedItems"):  # may apply on top of the positional ones
            for sub in _schemas(node.get(key)):
                _add(one, self.widths(sub, resolver))
        return one

    def _resolver_for(
        self, node: dict[str, Any], resolver: jsonschema_rs.Resolver | None
    ) -> jsonschema_rs.Resolver:
        if resolver is None:
            return self._registry.resolver(self._root_uri)
        # "id" names a resource in draft 4 only; elsewhere it may be anything, even a property.
        strict = "$id" in node
        embedded = node.get("$id", node.get("id"))
        if not isinstance(embedded, str) or embedded.startswith("#"):
            return resolver
        try:
            return self._registry.resolver(urldefrag(urljoin(resolver.base_uri, embedded)).url)
        except (ValueError, jsonschema_rs.ReferencingError):
            if not strict:
                return resolver
            raise CostError("an embedded $id cannot be followed when bounding the cost") from None

    def _follow(self, ref: str, resolver: jsonschema_rs.Resolver) -> list[int]:
        # Two spellings of one target are two keys: a cycle is then found one turn later.
        target = f"{resolver.base_uri} {ref}"
        if target in self._done:
            return self._done[target]
        if target in self._open:
            raise CostError(
                "a $ref recurses (the schema refers to itself): validation time could grow "
                "exponentially with the body's nesting"
            )
        try:
            resolved = resolver.lookup(ref)
        except (ValueError, jsonschema_rs.ReferencingError):
            raise CostError("a $ref cannot be followed when bounding the schema's cost") from None
        self._open.add(target)
        try:
            widths = self.widths(resolved.contents, resolved.resolver)
        finally:
            self._open.discard(target)
        self._done[target] = widths
        return widths
