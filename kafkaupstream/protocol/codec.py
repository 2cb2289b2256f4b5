"""FlatBuffers payloads of the ext-plugin messages (proto v0.6.1), in both directions.

Both halves are hand-written for speed and checked against the ``flatbuffers`` runtime by the unit
tests: ``_readers`` decodes with every offset bounds-checked (arbitrary bytes only ever raise
:class:`MalformedFrame`), ``_writers`` encodes whole frames laid out byte for byte as the runtime's
Builder lays them out.
"""

from kafkaupstream.protocol._readers import decode_apisix_message, decode_runner_message
from kafkaupstream.protocol._writers import encode_message, message_type

__all__ = ["decode_apisix_message", "decode_runner_message", "encode_message", "message_type"]
