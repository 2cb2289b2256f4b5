"""Request bodies of a fixed size that carry a unique id, built from a template in O(1) per request.

Every body is ``head + b"%010d" % n + tail``: the id ``<run>-<n>`` has a fixed width, so the size is
the same for every request and a pre-encoded frame around the body only needs the digits patched.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

SHAPES = ("json", "pretty-json", "bytes")
DIGITS = 10
# Stands in for the digits while rendering; JSON-safe and absent from keys and padding.
_MARK = "#" * DIGITS
_PAD_CHAR = "x"


@dataclass(frozen=True, slots=True)
class BodyTemplate:
    """Bodies of one run: ``head`` + the request number on DIGITS digits + ``tail``."""

    run_id: str
    shape: str
    head: bytes
    tail: bytes
    content_type: str

    @property
    def size(self) -> int:
        return len(self.head) + DIGITS + len(self.tail)

    def body(self, n: int) -> bytes:
        return self.head + b"%010d" % n + self.tail

    def id_pattern(self) -> re.Pattern[bytes]:
        """Finds this run's ids in a record value (compacted JSON or raw bytes alike)."""
        return re.compile(re.escape(self.run_id.encode()) + rb"-(\d{%d})" % DIGITS)


def make_template(run_id: str, shape: str, size: int) -> BodyTemplate:
    """A template whose bodies are exactly ``size`` bytes; ValueError if ``size`` is too small."""
    if shape not in SHAPES:
        raise ValueError(f"unknown body shape {shape!r}; choose one of {', '.join(SHAPES)}")
    if not re.fullmatch(r"[A-Za-z0-9_]+", run_id):
        raise ValueError("the run id must be letters, digits or '_' (it is matched in records)")
    ident = f"{run_id}-{_MARK}"
    render = _RENDERERS[shape]
    bare = render(ident, "")
    if len(bare.encode()) > size:
        raise ValueError(f"--body-size must be at least {len(bare.encode())} for shape {shape!r}")
    text = render(ident, _PAD_CHAR * (size - len(bare.encode())))
    head, _, tail = text.encode().partition(_MARK.encode())
    content_type = "application/octet-stream" if shape == "bytes" else "application/json"
    template = BodyTemplate(run_id, shape, head, tail, content_type)
    assert template.size == size, (template.size, size)
    return template


def _json(ident: str, pad: str) -> str:
    return json.dumps({"id": ident, "pad": pad})


def _pretty_json(ident: str, pad: str) -> str:
    # Nested values and indentation give the runner's JSON compactor real work to do.
    doc = {"id": ident, "meta": {"shape": "pretty-json", "tags": ["load", "bench"]}, "pad": pad}
    return json.dumps(doc, indent=2)


def _bytes(ident: str, pad: str) -> str:
    return f"{ident}\n{pad}"


_RENDERERS = {"json": _json, "pretty-json": _pretty_json, "bytes": _bytes}
