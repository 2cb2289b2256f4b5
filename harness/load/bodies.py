"""Request bodies of a fixed size that carry a unique id, built from a template in O(1) per request.

Every body is the template's ``pieces`` joined by ``b"%010d" % n``: the id ``<run>-<n>`` has a
fixed width, so the size is the same for every request and a pre-encoded frame around the body
only needs the digits patched. A batch body (``records`` > 1) is NDJSON: one line per record,
each with the id ``<run>-<n>-<k>`` (``k`` on 4 digits), so every record of the run is unique.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

SHAPES = ("json", "pretty-json", "bytes")
DIGITS = 10
RECORD_DIGITS = 4
MAX_RECORDS = 10**RECORD_DIGITS - 1
# Stands in for the digits while rendering; JSON-safe and absent from keys and padding.
_MARK = "#" * DIGITS
_PAD_CHAR = "x"


@dataclass(frozen=True, slots=True)
class BodyTemplate:
    """Bodies of one run: ``pieces`` joined by the request number on DIGITS digits."""

    run_id: str
    shape: str
    pieces: tuple[bytes, ...]
    content_type: str
    #: Records a body holds: 1, or the lines of an NDJSON batch.
    records: int = 1

    @property
    def size(self) -> int:
        return sum(map(len, self.pieces)) + DIGITS * (len(self.pieces) - 1)

    def body(self, n: int) -> bytes:
        return (b"%010d" % n).join(self.pieces)

    def id_pattern(self) -> re.Pattern[bytes]:
        """Finds this run's ids in a record value (compacted JSON or raw bytes alike): group 1 is
        the request number, group 2 (batches only) the record's place in its request."""
        record = rb"-(\d{%d})" % RECORD_DIGITS if self.records > 1 else b"()"
        return re.compile(re.escape(self.run_id.encode()) + rb"-(\d{%d})" % DIGITS + record)


def make_template(run_id: str, shape: str, size: int, records: int = 1) -> BodyTemplate:
    """A template whose bodies are exactly ``size`` bytes (a batch: ``size`` a record, newline
    included); ValueError if ``size`` is too small or a batch is asked of a multi-line shape."""
    if shape not in SHAPES:
        raise ValueError(f"unknown body shape {shape!r}; choose one of {', '.join(SHAPES)}")
    if not re.fullmatch(r"[A-Za-z0-9_]+", run_id):
        raise ValueError("the run id must be letters, digits or '_' (it is matched in records)")
    if not 1 <= records <= MAX_RECORDS:
        raise ValueError(f"records per body must be between 1 and {MAX_RECORDS}")
    if records > 1:
        if shape != "json":
            raise ValueError("batches (NDJSON) need the one-line 'json' shape")
        lines = [
            _render(shape, f"{run_id}-{_MARK}-{k:0{RECORD_DIGITS}d}", size - 1) + "\n"
            for k in range(records)
        ]
        pieces = tuple("".join(lines).encode().split(_MARK.encode()))
        return BodyTemplate(run_id, shape, pieces, "application/x-ndjson", records)
    text = _render(shape, f"{run_id}-{_MARK}", size)
    content_type = "application/octet-stream" if shape == "bytes" else "application/json"
    template = BodyTemplate(run_id, shape, tuple(text.encode().split(_MARK.encode())), content_type)
    assert template.size == size, (template.size, size)
    return template


def _render(shape: str, ident: str, size: int) -> str:
    render = _RENDERERS[shape]
    bare = render(ident, "")
    if len(bare.encode()) > size:
        raise ValueError(f"--body-size must be at least {len(bare.encode())} for shape {shape!r}")
    return render(ident, _PAD_CHAR * (size - len(bare.encode())))


def _json(ident: str, pad: str) -> str:
    return json.dumps({"id": ident, "pad": pad})


def _pretty_json(ident: str, pad: str) -> str:
    # Nested values and indentation give the runner's JSON compactor real work to do.
    doc = {"id": ident, "meta": {"shape": "pretty-json", "tags": ["load", "bench"]}, "pad": pad}
    return json.dumps(doc, indent=2)


def _bytes(ident: str, pad: str) -> str:
    return f"{ident}\n{pad}"


_RENDERERS = {"json": _json, "pretty-json": _pretty_json, "bytes": _bytes}
