#!/usr/bin/env python3
"""Sample events for the three example jobs of the docker-compose stack.

    docker compose --profile tools run --rm tools [--clicks N] [--orders N]
        [--files N] [--rows N] [--rate PER_SECOND] [--run ID]

- clicks: JSON click events to the Kafka topic `clicks` (job `clicks`);
- orders: JSON orders to the RabbitMQ queue `orders`, persistent, with publisher
  confirms and a `message_id` each (job `orders`: exactly once per message_id);
- files: CSV files of sensor readings put into the `landing` bucket under incoming/
  (job `landing`, told by MinIO's bucket notification).
Every id starts with the run id (default: the time), so runs can be told apart in the
lake. Settings come from the environment the compose file gives the service.
"""
import argparse
import json
import os
import random
import sys
import time
from datetime import datetime, timedelta, timezone


def iso(ts):
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def paced(count, rate):
    """0..count, at most `rate` per second (0: as fast as possible)."""
    start = time.monotonic()
    for i in range(count):
        if rate:
            ahead = start + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        yield i


def produce_clicks(run, count, rng, now, rate):
    from confluent_kafka import Producer

    errors = []
    producer = Producer({"bootstrap.servers": os.environ["KAFKA_BROKERS"], "acks": "all",
                         "enable.idempotence": True, "linger.ms": 20})
    for i in paced(count, rate):
        event = {
            "event_id": f"{run}-c-{i}",
            "user_id": rng.randint(1, 500),
            "url": f"https://{rng.choice(['Shop.example.com', 'www.example.net'])}/p/{rng.randint(1, 99)}?ref=mail",
            "ts": iso(now - timedelta(minutes=rng.randint(0, 3 * 24 * 60))),
            "action": rng.choice(["view", "click", "purchase"]),
        }
        producer.produce("clicks", key=str(event["user_id"]), value=json.dumps(event),
                         on_delivery=lambda error, _message: error and errors.append(error))
        producer.poll(0)
    producer.flush(60)
    if errors or len(producer):
        sys.exit(f"clicks: {len(errors)} failed, {len(producer)} undelivered: {errors[:3]}")
    print(f"clicks: {count} events to topic clicks", flush=True)


def publish_orders(run, count, rng, now, rate):
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
    channel = connection.channel()
    channel.queue_declare("orders", durable=True)
    channel.confirm_delivery()
    for i in paced(count, rate):
        order = {
            "order_id": f"{run}-o-{i}",
            "customer": f"c-{rng.randint(1, 200)}",
            "amount": f"{rng.randint(100, 20000) / 100:.2f}",
            "currency": rng.choice(["eur", "usd"]),
            "ts": iso(now - timedelta(minutes=rng.randint(0, 3 * 24 * 60))),
        }
        channel.basic_publish(
            "", "orders", json.dumps(order).encode(), mandatory=True,
            properties=pika.BasicProperties(message_id=order["order_id"], delivery_mode=2,
                                            content_type="application/json"),
        )
    connection.close()
    print(f"orders: {count} messages to queue orders", flush=True)


def put_files(run, files, rows, rng, now):
    import boto3

    s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"])
    for f in range(files):
        lines = ["reading_id,sensor,value,ts"]
        for i in range(rows):
            ts = iso(now - timedelta(minutes=rng.randint(0, 3 * 24 * 60)))
            lines.append(f"{run}-r-{f}-{i},s-{rng.randint(1, 20)},{rng.uniform(-10, 40):.2f},{ts}")
        key = f"incoming/{run}-{f}.csv"
        s3.put_object(Bucket="landing", Key=key, Body=("\n".join(lines) + "\n").encode())
    print(f"files: {files} CSV files of {rows} rows to s3://landing/incoming/", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=100)
    parser.add_argument("--orders", type=int, default=50)
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--rows", type=int, default=20, help="rows per file")
    parser.add_argument("--rate", type=float, default=0,
                        help="most clicks and orders per second (0: as fast as possible)")
    parser.add_argument("--run", default=datetime.now(timezone.utc).strftime("run%Y%m%dT%H%M%S"))
    args = parser.parse_args()
    rng = random.Random(args.run)
    now = datetime.now(timezone.utc)
    print(f"run {args.run}", flush=True)
    if args.clicks:
        produce_clicks(args.run, args.clicks, rng, now, args.rate)
    if args.orders:
        publish_orders(args.run, args.orders, rng, now, args.rate)
    if args.files:
        put_files(args.run, args.files, args.rows, rng, now)
    print("done: Parquet appears in s3://lake/{clicks,orders,landing}/ within seconds "
          f"(started {time.strftime('%H:%M:%S')})", flush=True)


if __name__ == "__main__":
    main()
