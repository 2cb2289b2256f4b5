"""Batch routes: one request body, many records, one delivery result for each.

A ``batch`` route reads its body as JSON Lines (``ndjson``: every non-empty line is one JSON
text) or as one JSON array (``json-array``: every element is one record). The batch is all or
nothing up to the producer: every record goes through :func:`batch_record` (compacted exactly
like a single JSON body, keyed by the same precedence rules) before the first one is produced,
and the first record that fails refuses the whole batch, naming its 0-based index.
"""

from __future__ import annotations

from dataclasses import replace

from kafkaupstream.plugin.answers import RecordError, RequestError, unsupported_batch_type
from kafkaupstream.plugin.config import RouteConfig
from kafkaupstream.plugin.jsonarray import InvalidElement, NotAnArray, array_elements
from kafkaupstream.plugin.jsonbody import is_json_content_type
from kafkaupstream.plugin.record import Routing, build_record, check_body
from kafkaupstream.producers import KafkaRecord
from kafkaupstream.protocol import Entries

#: Content types each batch format accepts (any parameters); json-array also takes ``+json``.
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/json")
JSON_ARRAY_TYPES = ("application/json", "application/*+json")
#: JSON's whitespace: a line of only these holds no record.
_JSON_WHITESPACE = b" \t\r"


def check_content_type(config: RouteConfig, headers: Entries) -> None:
    """Refuse (415) a content type the route's batch format cannot be read as, before the body."""
    content_type = next((e.value for e in headers if e.name.lower() == "content-type"), None)
    if config.batch == "ndjson":
        media_type = (content_type or "").split(";", 1)[0].strip(" \t").lower()
        if media_type not in NDJSON_TYPES:
            raise unsupported_batch_type("ndjson", NDJSON_TYPES)
    elif not is_json_content_type(content_type):
        raise unsupported_batch_type("json-array", JSON_ARRAY_TYPES)


def build_batch(config: RouteConfig, routing: Routing, body: bytes) -> list[KafkaRecord]:
    """Every record of the batch, in request order; raises :class:`RequestError` for the batch."""
    check_body(config, body)
    raws = _ndjson_records(body) if config.batch == "ndjson" else _array_records(body)
    if not raws:
        raise RequestError(400, "empty_body", "the batch holds no records; send at least one")
    limit = config.max_batch_records
    if len(raws) > limit:
        raise RecordError(
            limit,
            RequestError(
                413,
                "too_many_records",
                f"the batch holds {len(raws)} records; this route takes at most {limit} a request",
            ),
        )
    # Every record of a batch is JSON, whatever the content type said.
    json_routing = routing if routing.json_body else replace(routing, json_body=True)
    records = []
    for index, raw in enumerate(raws):
        records.append(batch_record(config, json_routing, index, raw))
    return records


def batch_record(config: RouteConfig, routing: Routing, index: int, raw: bytes) -> KafkaRecord:
    """One record of a batch: what a single JSON body would become, or the batch's refusal.

    The one step every record takes, so a check per record belongs here.
    """
    try:
        return build_record(config, routing, raw)
    except RequestError as exc:
        raise RecordError(index, exc) from None


def _ndjson_records(body: bytes) -> list[bytes]:
    return [line for line in body.split(b"\n") if line.strip(_JSON_WHITESPACE)]


def _array_records(body: bytes) -> list[bytes]:
    try:
        return array_elements(body)
    except NotAnArray:
        raise RequestError(
            400, "invalid_json", "a json-array batch must be one JSON array of records"
        ) from None
    except InvalidElement as exc:
        error = RequestError(400, "invalid_json", f"the body is not valid JSON: {exc.error}")
        raise (error if exc.index is None else RecordError(exc.index, error)) from None
