"""Route schemas: a JSON Schema compiled once when the route is prepared, checked per record.

Validation is jsonschema-rs (Rust), chosen by measurement against fastjsonschema and jsonschema
(``harness/bench/schema_bench.py``). The compiled schema is safe by construction:

- ``$ref`` resolves inside the schema only: the retriever refuses every URI, so a reference to
  the network or to a file is a configuration error when the route is prepared, never a fetch;
- ``pattern`` and ``patternProperties`` run on Rust's ``regex`` engine (finite automata, no
  backtracking: time linear in the input); a pattern it cannot run (look-around,
  back-references) is a configuration error rather than a backtracking fallback;
- ``format`` is an annotation, as draft 2020-12 defines it by default, for every draft;
- validation time is linear in the body: a schema whose references recurse, or that applies
  too many subschemas to one value, is refused (``schema_cost.py``).

What a violation reports is the JSON pointer into the body and the failing keyword: never the
schema's own values (a pattern, an enum, a bound). Only the first one is reported: the
library's error iterator builds every error before it yields the first (100,000 wrong items:
2 s), while stopping at the first error costs no more than validating.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn

import jsonschema_rs

from kafkaupstream.plugin.schema_cost import CostError, checks_per_value

#: A pointer is built from the body's own keys: one that is longer is cut (and marked so).
MAX_POINTER_CHARS = 200

#: What Python strings hold for bytes that are not UTF-8 (surrogateescape) and for lone ``\\ud800``
#: escapes: valid in a JSON body (Go accepts both), but no Rust string can hold them.
_SURROGATE = re.compile("[\ud800-\udfff]")

_DRAFTS = MappingProxyType(
    {
        jsonschema_rs.Draft4Validator: "draft-04",
        jsonschema_rs.Draft6Validator: "draft-06",
        jsonschema_rs.Draft7Validator: "draft-07",
        jsonschema_rs.Draft201909Validator: "2019-09",
        jsonschema_rs.Draft202012Validator: "2020-12",
    }
)


class SchemaError(ValueError):
    """The route's schema cannot be used; the reason names where in it, never its values."""


@dataclass(frozen=True, slots=True)
class Violation:
    """One place where a record breaks the schema."""

    pointer: str  # RFC 6901, into the record ("" is the whole record)
    keyword: str  # the schema keyword that failed ("minimum", "required", ...)


#: A violation the library cannot describe: its error carries the failing value, which it
#: refuses to build when that value nests more than 255 levels deep.
UNLOCATED = Violation("", "unknown")


@dataclass(frozen=True, slots=True)
class RouteSchema:
    """A compiled schema and what it was compiled from (``check-config`` prints both)."""

    source: Any
    draft: str
    validator: jsonschema_rs.Validator
    #: The most subschemas that can apply to one value of a body: the bound on validation time.
    checks_per_value: int


def _refuse(uri: str) -> NoReturn:
    raise LookupError("references outside the schema are not fetched")


def compile_schema(raw: Any) -> RouteSchema:
    """Compile a schema (a JSON object or boolean, as parsed); raises :class:`SchemaError`."""
    if not isinstance(raw, dict | bool):
        raise SchemaError("must be a JSON Schema: an object (or true / false)")
    try:
        validator = jsonschema_rs.validator_for(
            raw,
            retriever=_refuse,
            pattern_options=jsonschema_rs.RegexOptions(),
            validate_formats=False,
        )
    except jsonschema_rs.ValidationError as exc:
        raise SchemaError(_reason(exc)) from None
    except ValueError:  # what the library says of a lone surrogate escape (\ud800) in a string
        raise SchemaError("holds a string that is not valid Unicode (a lone surrogate)") from None
    try:
        checks = checks_per_value(raw)
    except CostError as exc:
        raise SchemaError(str(exc)) from None
    return RouteSchema(raw, _DRAFTS.get(type(validator), "2020-12"), validator, checks)


def _reason(exc: jsonschema_rs.ValidationError) -> str:
    path = exc.instance_path
    if len(path) >= 2 and path[-2] == "patternProperties":  # the key is the pattern itself
        path = path[:-1]
    where = pointer(path) or "the root"
    if isinstance(exc.kind, jsonschema_rs.ValidationErrorKind.Referencing):
        return (
            "a $ref (or $schema) does not resolve inside the schema; nothing is fetched from the "
            "network or from files: put the referenced schema under $defs"
        )
    if isinstance(exc.kind, jsonschema_rs.ValidationErrorKind.Format):  # "format": "regex"
        return (
            f"the regular expression at {where} is invalid or needs backtracking (look-around, "
            "back-references): patterns run on a linear-time engine"
        )
    return f"not a valid JSON Schema at {where} (fails its meta-schema's {exc.kind.name!r})"


def violations(schema: RouteSchema, record: Any) -> tuple[Violation, ...]:
    """Where the parsed ``record`` breaks the schema (its first violation); empty when valid.

    A string that is not valid Unicode is validated as Go's decoder reads it, each bad byte or
    lone surrogate a U+FFFD; the record produced keeps its bytes.
    """
    try:
        return _first_violation(schema.validator, record)
    except UnicodeEncodeError:
        return _first_violation(schema.validator, _replace_surrogates(record))


def _first_violation(validator: jsonschema_rs.Validator, record: Any) -> tuple[Violation, ...]:
    if validator.is_valid(record):  # the common case, without building any error
        return ()
    try:
        validator.validate(record)
    except jsonschema_rs.ValidationError as error:
        return (Violation(pointer(error.instance_path), error.kind.name),)
    except UnicodeEncodeError:
        raise  # a ValueError too: violations() retries without surrogates
    except ValueError:  # the failing value nests too deep for the library to describe it
        return (UNLOCATED,)
    return ()  # pragma: no cover - is_valid and validate agree


def _replace_surrogates(record: Any) -> Any:
    """A copy of ``record`` with U+FFFD for every surrogate in its strings and keys.

    Iterative: a record may nest 10,000 levels deep.
    """
    root = [record]
    pending: list[tuple[Any, Any]] = [(root, 0)]
    while pending:
        container, key = pending.pop()
        item = container[key]
        if isinstance(item, str):
            container[key] = _SURROGATE.sub("\ufffd", item)
        elif isinstance(item, list):
            container[key] = items = list(item)
            pending.extend((items, i) for i in range(len(items)))
        elif isinstance(item, dict):
            container[key] = members = {_SURROGATE.sub("\ufffd", k): v for k, v in item.items()}
            pending.extend((members, k) for k in members)
    return root[0]


def pointer(path: list[str | int]) -> str:
    """The RFC 6901 pointer of a location, cut to :data:`MAX_POINTER_CHARS` (ending in "...")."""
    text = "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)
    if len(text) > MAX_POINTER_CHARS:
        return text[: MAX_POINTER_CHARS - 3] + "..."
    return text
