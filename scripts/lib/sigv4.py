"""Path-style requests to an S3-compatible endpoint, signed with AWS Signature Version 4.

The one SigV4 signer of the service scripts (services_probe.py and ceph_probe.py import it
from here), standard library only, so a probe runs before any virtualenv exists.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import sys
import urllib.parse


class ProbeError(Exception):
    """A service did not answer as expected."""


def hmac_sha256(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def quote(value: str, safe: str = "-_.~") -> str:
    return urllib.parse.quote(value, safe=safe)


def http_request(
    endpoint: str,
    method: str,
    target: str,
    timeout: float,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One HTTP(S) request to `endpoint` (scheme://host:port); returns status and body."""
    url = urllib.parse.urlsplit(endpoint)
    connection_type = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    connection = connection_type(url.netloc, timeout=timeout)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    except OSError as error:
        raise ProbeError(f"{method} {endpoint}{target} failed: {error}") from error
    finally:
        connection.close()


class Client:
    """Signed requests to one endpoint with one access key."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, region: str, timeout: float) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        service: str = "s3",
    ) -> tuple[int, bytes]:
        url = urllib.parse.urlsplit(self.endpoint)
        now = datetime.datetime.now(datetime.timezone.utc)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = now.strftime("%Y%m%d")
        payload_hash = hashlib.sha256(body).hexdigest()
        all_headers = {k.lower(): v.strip() for k, v in (headers or {}).items()}
        all_headers.update({"host": url.netloc, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date})
        signed = sorted(all_headers)
        canonical_query = "&".join(f"{quote(k)}={quote(v)}" for k, v in sorted((query or {}).items()))
        canonical_path = quote(path, safe="/-_.~")
        canonical_request = "\n".join(
            [
                method,
                canonical_path,
                canonical_query,
                "".join(f"{name}:{all_headers[name]}\n" for name in signed),
                ";".join(signed),
                payload_hash,
            ]
        )
        scope = f"{day}/{self.region}/{service}/aws4_request"
        string_to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()]
        )
        key = hmac_sha256(("AWS4" + self.secret_key).encode("utf-8"), day)
        for part in (self.region, service, "aws4_request"):
            key = hmac_sha256(key, part)
        signature = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        all_headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
            f"SignedHeaders={';'.join(signed)}, Signature={signature}"
        )
        target = canonical_path + (f"?{canonical_query}" if canonical_query else "")
        return http_request(self.endpoint, method, target, self.timeout, body, all_headers)

    def expect(self, what: str, statuses: tuple[int, ...], *args, **kwargs) -> bytes:
        """`request`, raising ProbeError unless the status is one of `statuses`."""
        status, body = self.request(*args, **kwargs)
        if status not in statuses:
            raise ProbeError(f"{what} answered {status}: {body[:500]!r}")
        return body


def run_probe(doc: str, probe, argv: list[str]) -> int:
    """Runs `probe(argv)` as a command's main: prints the text it returns (exit 0); a
    `ProbeError` is printed as the failure (exit 1); `None`, for arguments it does not
    take, prints the usage in `doc` (exit 2)."""
    try:
        answer = probe(argv)
    except ProbeError as error:
        print(f"probe failed: {error}", file=sys.stderr)
        return 1
    if answer is None:
        print(doc, file=sys.stderr)
        return 2
    if answer:
        print(answer)
    return 0
