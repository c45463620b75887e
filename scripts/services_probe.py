#!/usr/bin/env python3
"""Readiness probes for the test services, using only the Python standard library.

    services_probe.py kafka HOST:PORT
        Sends a raw Kafka ApiVersions (v0) request, then a Metadata request in the
        highest version between 1 and 8 the server offers, and checks that the
        answer lists at least one broker. Debian's kcat cannot talk to the local
        broker, so this speaks the wire protocol itself.

    services_probe.py s3 ENDPOINT BUCKET ACCESS_KEY SECRET_KEY REGION [--create-bucket]
        Checks SeaweedFS's `GET /healthz`, then a SigV4-signed
        ListObjectsV2 on BUCKET, so the bucket, the credentials and the signature
        check are all exercised. With --create-bucket a missing bucket is created
        with a signed CreateBucket first.

Exit status: 0 when the service answers as expected, 1 otherwise (the reason goes
to stderr). A probe never waits longer than a few seconds; callers loop.
"""

from __future__ import annotations

import os
import socket
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sigv4 import Client, ProbeError, http_request, run_probe  # noqa: E402 (found through lib/)

IO_TIMEOUT_SECONDS = 3.0
API_VERSIONS_KEY = 18
METADATA_KEY = 3
CLIENT_ID = b"sluice-probe"


# --- Kafka -------------------------------------------------------------------


class Reader:
    """Sequential big-endian decoder over one Kafka response body."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise ProbeError(
                f"truncated kafka response: wanted {size} bytes at offset {self.pos}, "
                f"body has {len(self.data)}"
            )
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def int16(self) -> int:
        return struct.unpack(">h", self.take(2))[0]

    def int32(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def string(self) -> str | None:
        size = self.int16()
        if size < 0:
            return None
        return self.take(size).decode("utf-8", errors="replace")


def kafka_request(sock: socket.socket, api_key: int, version: int, correlation_id: int, body: bytes) -> Reader:
    header = struct.pack(">hhih", api_key, version, correlation_id, len(CLIENT_ID)) + CLIENT_ID
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    if size < 4 or size > 16 * 1024 * 1024:
        raise ProbeError(f"implausible kafka response size {size}: not a kafka broker")
    reader = Reader(recv_exact(sock, size))
    got = reader.int32()
    if got != correlation_id:
        raise ProbeError(f"kafka response correlation id {got}, expected {correlation_id}")
    return reader


def recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = []
    remaining = size
    while remaining > 0:
        chunk = sock.recv(remaining)
        if not chunk:
            raise ProbeError("connection closed before a complete kafka response arrived")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def metadata_request_body(version: int) -> bytes:
    body = struct.pack(">i", 0)  # an empty topic list: brokers only
    if version >= 4:
        body += b"\x00"  # allow_auto_topic_creation = false
    if version >= 8:
        body += b"\x00\x00"  # no authorized-operations lists
    return body


def probe_kafka(address: str) -> str:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ProbeError(f"kafka address {address!r} is not HOST:PORT")
    try:
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=IO_TIMEOUT_SECONDS)
    except OSError as error:
        raise ProbeError(f"cannot connect to {address}: {error}") from error
    with sock:
        sock.settimeout(IO_TIMEOUT_SECONDS)
        try:
            versions = kafka_request(sock, API_VERSIONS_KEY, 0, 1, b"")
            error_code = versions.int16()
            if error_code != 0:
                raise ProbeError(f"ApiVersions answered with error code {error_code}")
            supported = {}
            for _ in range(versions.int32()):
                key, low, high = versions.int16(), versions.int16(), versions.int16()
                supported[key] = (low, high)
            if METADATA_KEY not in supported:
                raise ProbeError("broker does not offer the Metadata api")
            low, high = supported[METADATA_KEY]
            version = min(high, 8)
            if version < max(low, 1):
                raise ProbeError(f"broker offers Metadata v{low}..v{high}, probe speaks v1..v8")

            metadata = kafka_request(sock, METADATA_KEY, version, 2, metadata_request_body(version))
            if version >= 3:
                metadata.int32()  # throttle_time_ms
            brokers = []
            for _ in range(metadata.int32()):
                node_id, broker_host, broker_port = metadata.int32(), metadata.string(), metadata.int32()
                metadata.string()  # rack
                brokers.append(f"{node_id}@{broker_host}:{broker_port}")
        except (OSError, socket.timeout) as error:
            raise ProbeError(f"kafka exchange with {address} failed: {error}") from error
    if not brokers:
        raise ProbeError("Metadata answer lists no brokers")
    return f"kafka {address}: ApiVersions ok ({len(supported)} apis), Metadata v{version} brokers {', '.join(brokers)}"


# --- S3 ----------------------------------------------------------------------

def probe_s3(endpoint: str, bucket: str, credentials: tuple[str, str, str], create_bucket: bool) -> str:
    status, body = http_request(endpoint, "GET", "/healthz", IO_TIMEOUT_SECONDS)
    if status != 200:
        raise ProbeError(f"GET {endpoint}/healthz answered {status}: {body[:200]!r}")
    client = Client(endpoint, *credentials, IO_TIMEOUT_SECONDS)
    list_query = {"list-type": "2", "max-keys": "1"}
    status, body = client.request("GET", f"/{bucket}", list_query)
    if status == 404 and create_bucket and b"NoSuchBucket" in body:
        created, reply = client.request("PUT", f"/{bucket}")
        if created != 200:
            raise ProbeError(f"creating bucket {bucket} answered {created}: {reply[:300]!r}")
        status, body = client.request("GET", f"/{bucket}", list_query)
    if status != 200 or b"ListBucketResult" not in body:
        raise ProbeError(f"signed ListObjectsV2 on bucket {bucket} answered {status}: {body[:300]!r}")
    return f"s3 {endpoint}: healthz ok, bucket {bucket} listed with access key {credentials[0]}"


def probe(argv: list[str]) -> str | None:
    """The command's answer to `argv`, or `None` for arguments it does not take."""
    if len(argv) == 2 and argv[0] == "kafka":
        return probe_kafka(argv[1])
    if len(argv) in (6, 7) and argv[0] == "s3" and argv[6:] in ([], ["--create-bucket"]):
        endpoint, bucket, access_key, secret_key, region = argv[1:6]
        return probe_s3(endpoint.rstrip("/"), bucket, (access_key, secret_key, region), len(argv) == 7)
    return None


if __name__ == "__main__":
    sys.exit(run_probe(__doc__, probe, sys.argv[1:]))
