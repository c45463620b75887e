"""The hand-written Python consumer of the comparison benchmark: what a data engineer
would write without a platform. confluent-kafka -> json.loads (or orjson) -> pyarrow ->
zstd Parquet (one file, row groups of 10,000) -> one commit at the end.

    python kafka_consumer.py BROKERS TOPIC GROUP OUT.parquet EVENTS [json|orjson|transform]

`transform` is `json` plus one per-record Python transform that adds a column
(`url_length`), the same as the Sluice function it is compared with.
"""

import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Consumer

from bench_schema import EVENTS, WITH_URL_LENGTH


def main():
    brokers, topic, group, out, events = sys.argv[1:6]
    variant = sys.argv[6] if len(sys.argv) > 6 else "json"
    events = int(events)
    if variant == "orjson":
        import orjson

        loads = orjson.loads
    else:
        loads = json.loads
    transform = variant == "transform"
    schema = WITH_URL_LENGTH if transform else EVENTS
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "fetch.queue.backoff.ms": 20,
        }
    )
    # Says when the group join has assigned the partitions, for the comparison's "after
    # the join" time.
    consumer.subscribe([topic], on_assign=lambda _consumer, _partitions: print("kafka partitions assigned", file=sys.stderr, flush=True))
    writer = pq.ParquetWriter(out, schema, compression="zstd")
    rows, read = [], 0
    while read < events:
        for message in consumer.consume(10_000, 0.5):
            if message.error():
                raise RuntimeError(message.error())
            record = loads(message.value())
            if transform:
                record["url_length"] = len(record["url"])
            rows.append(record)
            read += 1
        if len(rows) >= 10_000:
            writer.write_table(pa.Table.from_pylist(rows, schema))
            rows = []
    if rows:
        writer.write_table(pa.Table.from_pylist(rows, schema))
    writer.close()
    consumer.commit(asynchronous=False)
    consumer.close()


if __name__ == "__main__":
    main()
