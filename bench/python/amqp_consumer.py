"""The hand-written AMQP consumer of the comparison benchmark: pika with prefetch 10,000,
json.loads -> pyarrow -> zstd Parquet, one file per 10,000 messages, then one
multiple-ack for them (so every message is acknowledged only once its file is written).

    python amqp_consumer.py AMQP_URL QUEUE OUT_DIR EVENTS
"""

import json
import sys

import pika
import pyarrow as pa
import pyarrow.parquet as pq

from bench_schema import EVENTS

PER_FILE = 10_000


def main():
    url, queue, out_dir, events = sys.argv[1:5]
    events = int(events)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=PER_FILE)
    rows, read, files, last_tag = [], 0, 0, None

    def flush():
        nonlocal rows, files
        pq.write_table(
            pa.Table.from_pylist(rows, EVENTS),
            f"{out_dir}/part-{files:05}.parquet",
            compression="zstd",
        )
        channel.basic_ack(delivery_tag=last_tag, multiple=True)
        rows, files = [], files + 1

    for method, _properties, body in channel.consume(queue, inactivity_timeout=1.0):
        if method is None:
            if rows:
                flush()
            continue
        rows.append(json.loads(body))
        last_tag = method.delivery_tag
        read += 1
        if len(rows) == PER_FILE:
            flush()
        if read == events:
            break
    if rows:
        flush()
    channel.cancel()
    connection.close()


if __name__ == "__main__":
    main()
