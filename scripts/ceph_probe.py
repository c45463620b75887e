#!/usr/bin/env python3
"""Readiness probe and bucket-notification check for the local Ceph RADOS Gateway
(scripts/ceph.sh), using only the Python standard library (pika for the AMQP check).

    ceph_probe.py ready ENDPOINT BUCKET ACCESS_KEY SECRET_KEY REGION [--create-bucket]
        A SigV4-signed ListObjectsV2 on BUCKET, so the gateway, the user, the bucket and
        the signature check are all exercised. With --create-bucket a missing bucket is
        created with a signed CreateBucket first. Never waits longer than a few seconds.

    ceph_probe.py notify ENDPOINT BUCKET ACCESS_KEY SECRET_KEY REGION [--amqp URL EXCHANGE]
        Proves that bucket notifications reach a receiver, doing what a test does:
          1. serves HTTP on a free loopback port and records every POST body;
          2. SNS CreateTopic on ENDPOINT with attribute push-endpoint=http://127.0.0.1:PORT/;
          3. S3 PutBucketNotificationConfiguration on BUCKET: that topic, s3:ObjectCreated:*,
             keys under a fresh prefix;
          4. uploads three objects whose keys hold a space, non-ASCII letters and a '+';
          5. waits (bounded) for one notification per object and prints the bodies;
          6. removes the configuration, the topic and the objects.
        With --amqp the topic pushes to the AMQP broker URL instead (attribute
        amqp-exchange=EXCHANGE, amqp-ack-level=broker); the exchange is declared and a
        queue bound to it with pika, and the messages are read from that queue. Give the
        URL without user:password (amqp://127.0.0.1:5672): over plain HTTP the gateway
        refuses a topic whose endpoint carries a password, and logs in as guest/guest
        when the URL names nobody. Messages are published with the topic's name as
        routing key; the exchange must exist before the first notification.

    ceph_probe.py subscribe ENDPOINT BUCKET ACCESS_KEY SECRET_KEY REGION PUSH_ENDPOINT PREFIX [NAME=VALUE...]
        Creates a persistent SNS topic pushing to PUSH_ENDPOINT and points BUCKET's
        s3:ObjectCreated:* notifications for keys under PREFIX at it; prints the topic ARN.
        Each NAME=VALUE is one more topic attribute, e.g. amqp-exchange=s3 and
        amqp-ack-level=broker for an amqp:// endpoint (the exchange must exist).

    ceph_probe.py unsubscribe ENDPOINT BUCKET ACCESS_KEY SECRET_KEY REGION TOPIC_ARN
        Removes BUCKET's notification configuration and the topic.

Exit status: 0 when the check holds, 1 otherwise (the reason goes to stderr).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import sys
import threading
import time
import urllib.parse
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sigv4 import Client, ProbeError, run_probe  # noqa: E402 (found through lib/)

IO_TIMEOUT_SECONDS = 5.0
NOTIFY_TIMEOUT_SECONDS = 20.0
PROBE_KEYS = ("with space.txt", "ünïcødé-ключ-名前.txt", "a+b=c.txt")


def sns(client: Client, action: str, params: dict[str, str]) -> bytes:
    """An SNS call as RGW takes it: a form-encoded POST to the endpoint's root."""
    form = urllib.parse.urlencode({"Action": action, **params}).encode("ascii")
    return client.expect(
        f"SNS {action}",
        (200,),
        "POST",
        "/",
        body=form,
        headers={"content-type": "application/x-www-form-urlencoded"},
        service="sns",
    )


# --- ready -------------------------------------------------------------------


def probe_ready(client: Client, bucket: str, create_bucket: bool) -> str:
    list_query = {"list-type": "2", "max-keys": "1"}
    status, body = client.request("GET", f"/{bucket}", list_query)
    if status == 404 and create_bucket and b"NoSuchBucket" in body:
        client.expect(f"creating bucket {bucket}", (200,), "PUT", f"/{bucket}")
        status, body = client.request("GET", f"/{bucket}", list_query)
    if status != 200 or b"ListBucketResult" not in body:
        raise ProbeError(f"signed ListObjectsV2 on bucket {bucket} answered {status}: {body[:300]!r}")
    return f"s3 {client.endpoint}: bucket {bucket} listed with access key {client.access_key}"


# --- notify ------------------------------------------------------------------


class Receiver(http.server.ThreadingHTTPServer):
    """Records the body of every POST it gets."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.bodies: list[bytes] = []
        self.changed = threading.Condition()

    def wait_for(self, count: int, timeout: float) -> list[bytes]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.bodies) < count and time.monotonic() < deadline:
                self.changed.wait(deadline - time.monotonic())
            return list(self.bodies)


class ReceiverHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (the stdlib's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        server = self.server
        assert isinstance(server, Receiver)
        with server.changed:
            server.bodies.append(body)
            server.changed.notify_all()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass


def xml_text(body: bytes, tag: str) -> str:
    match = re.search(rf"<{tag}>([^<]*)</{tag}>".encode(), body)
    if not match:
        raise ProbeError(f"no <{tag}> in {body[:500]!r}")
    return match.group(1).decode("utf-8")


def notification_configuration(config_id: str, topic_arn: str, prefix: str) -> bytes:
    return (
        '<NotificationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        "<TopicConfiguration>"
        f"<Id>{config_id}</Id>"
        f"<Topic>{topic_arn}</Topic>"
        "<Event>s3:ObjectCreated:*</Event>"
        "<Filter><S3Key><FilterRule><Name>prefix</Name>"
        f"<Value>{prefix}</Value>"
        "</FilterRule></S3Key></Filter>"
        "</TopicConfiguration>"
        "</NotificationConfiguration>"
    ).encode("utf-8")


class AmqpQueue:
    """A server-named queue bound to EXCHANGE (declared as a durable topic exchange)."""

    def __init__(self, url: str, exchange: str) -> None:
        try:
            import pika  # noqa: PLC0415 (only the AMQP check needs it)
        except ImportError as error:
            raise ProbeError("the AMQP check needs pika (pip install pika)") from error
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
        self.queue = self.channel.queue_declare(queue="", exclusive=True).method.queue
        self.channel.queue_bind(queue=self.queue, exchange=exchange, routing_key="#")

    def wait_for(self, count: int, timeout: float) -> list[bytes]:
        bodies: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(bodies) < count and time.monotonic() < deadline:
            method, properties, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                self.connection.sleep(0.05)
                continue
            print(f"amqp message: routing key {method.routing_key!r}, properties {properties}")
            bodies.append(body)
        return bodies

    def close(self) -> None:
        self.connection.close()


def probe_notify(client: Client, bucket: str, amqp: tuple[str, str] | None) -> str:
    run = uuid.uuid4().hex[:8]
    topic = f"sluice-probe-{run}"
    prefix = f"probe-{run}/"
    keys = [prefix + key for key in PROBE_KEYS]

    receiver: Receiver | None = None
    queue: AmqpQueue | None = None
    if amqp is None:
        receiver = Receiver()
        threading.Thread(target=receiver.serve_forever, daemon=True).start()
        push_endpoint = f"http://127.0.0.1:{receiver.server_address[1]}/"
        attributes = {"push-endpoint": push_endpoint}
    else:
        url, exchange = amqp
        queue = AmqpQueue(url, exchange)
        push_endpoint = url
        attributes = {"push-endpoint": url, "amqp-exchange": exchange, "amqp-ack-level": "broker"}

    params: dict[str, str] = {"Name": topic}
    for index, (name, value) in enumerate(attributes.items(), start=1):
        params[f"Attributes.entry.{index}.key"] = name
        params[f"Attributes.entry.{index}.value"] = value
    print(f"SNS CreateTopic {params}")
    reply = sns(client, "CreateTopic", params)
    topic_arn = xml_text(reply, "TopicArn")
    print(f"  -> TopicArn {topic_arn}")
    try:
        config = notification_configuration(f"sluice-probe-{run}", topic_arn, prefix)
        print(f"S3 PUT /{bucket}?notification {config.decode()}")
        client.expect("PutBucketNotificationConfiguration", (200,), "PUT", f"/{bucket}", {"notification": ""}, config)
        current = client.expect("GetBucketNotificationConfiguration", (200,), "GET", f"/{bucket}", {"notification": ""})
        print(f"S3 GET /{bucket}?notification -> {current.decode()}")
        try:
            started = time.monotonic()
            for key in keys:
                client.expect(f"PutObject {key}", (200,), "PUT", f"/{bucket}/{key}", body=f"probe {key}\n".encode())
            if receiver is not None:
                bodies = receiver.wait_for(len(keys), NOTIFY_TIMEOUT_SECONDS)
            else:
                assert queue is not None
                bodies = queue.wait_for(len(keys), NOTIFY_TIMEOUT_SECONDS)
            elapsed = time.monotonic() - started
            for body in bodies:
                print(f"notification body: {body.decode('utf-8', errors='replace')}")
            received = []
            for body in bodies:
                for record in json.loads(body)["Records"]:
                    received.append(record["s3"]["object"]["key"])
            missing = [key for key in keys if key not in received]
            if missing:
                raise ProbeError(
                    f"{len(bodies)} notification(s) within {NOTIFY_TIMEOUT_SECONDS} s, keys {received}; "
                    f"missing {missing} (as sent, not URL-encoded)"
                )
            if len(received) != len(keys):
                raise ProbeError(f"expected one record per object, got keys {received}")
        finally:
            for key in keys:
                client.request("DELETE", f"/{bucket}/{key}")
            # RGW rejects an empty configuration (MalformedXML); its own DELETE removes
            # the bucket's notifications.
            client.expect(
                "DeleteBucketNotification", (200, 204), "DELETE", f"/{bucket}", {"notification": ""}
            )
    finally:
        sns(client, "DeleteTopic", {"TopicArn": topic_arn})
        if receiver is not None:
            receiver.shutdown()
        if queue is not None:
            queue.close()
    return (
        f"notifications: {len(keys)} objects put, {len(received)} records received at {push_endpoint} "
        f"within {elapsed:.2f} s, keys as sent (not URL-encoded)"
    )


def subscribe(
    client: Client, bucket: str, push_endpoint: str, prefix: str, extra: dict[str, str] | None = None
) -> str:
    """Points BUCKET's ObjectCreated notifications under PREFIX at PUSH_ENDPOINT (a
    persistent topic: RGW retries while the endpoint is down), with EXTRA topic
    attributes. Returns the topic ARN."""
    topic = f"sluice-{uuid.uuid4().hex[:8]}"
    attributes = {"push-endpoint": push_endpoint, "persistent": "true", **(extra or {})}
    params: dict[str, str] = {"Name": topic}
    for index, (name, value) in enumerate(attributes.items(), start=1):
        params[f"Attributes.entry.{index}.key"] = name
        params[f"Attributes.entry.{index}.value"] = value
    topic_arn = xml_text(sns(client, "CreateTopic", params), "TopicArn")
    config = notification_configuration(topic, topic_arn, prefix)
    client.expect("PutBucketNotificationConfiguration", (200,), "PUT", f"/{bucket}", {"notification": ""}, config)
    return topic_arn


def unsubscribe(client: Client, bucket: str, topic_arn: str) -> None:
    client.expect("DeleteBucketNotification", (200, 204), "DELETE", f"/{bucket}", {"notification": ""})
    sns(client, "DeleteTopic", {"TopicArn": topic_arn})


def probe(argv: list[str]) -> str | None:
    """The command's answer to `argv`, or `None` for arguments it does not take."""
    if len(argv) >= 8 and argv[0] == "subscribe" and all("=" in a for a in argv[8:]):
        endpoint, bucket, access_key, secret_key, region, push_endpoint, prefix = argv[1:8]
        extra = dict(a.split("=", 1) for a in argv[8:])
        client = Client(endpoint, access_key, secret_key, region, IO_TIMEOUT_SECONDS)
        return subscribe(client, bucket, push_endpoint, prefix, extra)
    if len(argv) == 7 and argv[0] == "unsubscribe":
        endpoint, bucket, access_key, secret_key, region, topic_arn = argv[1:7]
        unsubscribe(Client(endpoint, access_key, secret_key, region, IO_TIMEOUT_SECONDS), bucket, topic_arn)
        return ""
    if len(argv) >= 6 and argv[0] in ("ready", "notify"):
        endpoint, bucket, access_key, secret_key, region = argv[1:6]
        client = Client(endpoint, access_key, secret_key, region, IO_TIMEOUT_SECONDS)
        options = argv[6:]
        if argv[0] == "ready" and options in ([], ["--create-bucket"]):
            return probe_ready(client, bucket, options == ["--create-bucket"])
        if argv[0] == "notify" and (options == [] or (len(options) == 3 and options[0] == "--amqp")):
            amqp = (options[1], options[2]) if options else None
            return probe_notify(client, bucket, amqp)
    return None


if __name__ == "__main__":
    sys.exit(run_probe(__doc__, probe, sys.argv[1:]))
