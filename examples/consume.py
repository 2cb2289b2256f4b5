"""Print the records a kafkaupstream route produced.

    python examples/consume.py --bootstrap localhost:29092 --topic kafkaupstream

It assign()s every partition of the topic from the beginning and stops after ``--idle`` seconds
without a new record: no consumer group is joined and no offset is committed, so it shows the
whole topic every time. A long-running service would instead subscribe() with its own group.id
and commit offsets, letting Kafka balance partitions between its instances (that costs a group
join, a few seconds, before the first record arrives).
"""

from __future__ import annotations

import argparse
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="localhost:29092", help="bootstrap.servers")
    parser.add_argument("--topic", default="kafkaupstream")
    parser.add_argument(
        "--idle",
        type=float,
        default=3.0,
        help="stop after this many seconds without a record (default 3)",
    )
    args = parser.parse_args()

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": "kafkaupstream-example",  # required by librdkafka, unused with assign()
            "enable.auto.commit": False,
        }
    )
    try:
        topic = consumer.list_topics(args.topic, timeout=10).topics[args.topic]
        if topic.error is not None:
            raise KafkaException(topic.error)
        consumer.assign(
            [TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in sorted(topic.partitions)]
        )
        last = time.monotonic()
        while time.monotonic() - last < args.idle:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                raise KafkaException(msg.error())
            last = time.monotonic()
            headers = {
                k: v.decode(errors="replace") if v is not None else None
                for k, v in msg.headers() or ()
            }
            key = msg.key()
            value = msg.value()
            print(
                f"{msg.topic()}[{msg.partition()}]@{msg.offset()} "
                f"key={key.decode(errors='replace') if key is not None else None!r} "
                f"headers={headers} value={value.decode(errors='replace') if value else value!r}"
            )
    except KafkaException as exc:
        print(f"consume.py: {exc}", file=sys.stderr)
        return 1
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
