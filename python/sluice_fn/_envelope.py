"""Records read with ``function.input = "envelope"``: the value and its metadata.

The platform writes each record as ``{"value", "value_encoding", "key", "key_encoding",
"headers", "timestamp_ms", "origin"}`` (docs/function-protocol.md, "Input records").
`Envelope` decodes the encodings so a function sees Python values: JSON values as
they are, UTF-8 text as ``str``, other bytes as ``bytes``.
"""

import base64
import datetime


def _decode(value, encoding):
    if encoding == "base64":
        return base64.b64decode(value)
    return value


def _header(value):
    if isinstance(value, dict) and "$binary" in value:
        return base64.b64decode(value["$binary"])
    return value


class Envelope:
    """One input record with its metadata.

    - ``value``: the JSON value, a ``str`` (text that is not JSON) or ``bytes``
    - ``key``: ``None``, a ``str`` or ``bytes``
    - ``headers``: name → ``str``, ``bytes`` (not UTF-8) or ``None`` (no value)
    - ``timestamp_ms``: milliseconds since the epoch or ``None``; ``timestamp`` as a UTC datetime
    - ``origin``: where it came from, e.g. ``{"topic", "partition", "offset"}``
    - ``raw``: the envelope object as the platform sent it
    """

    __slots__ = ("value", "key", "headers", "timestamp_ms", "origin", "raw")

    def __init__(self, raw):
        if not isinstance(raw, dict) or "value" not in raw:
            raise ValueError(
                "record is not an envelope (no 'value' field): is function.input = \"envelope\" set in job.toml?"
            )
        self.raw = raw
        self.value = _decode(raw["value"], raw.get("value_encoding"))
        self.key = _decode(raw.get("key"), raw.get("key_encoding"))
        self.headers = {name: _header(value) for name, value in (raw.get("headers") or {}).items()}
        self.timestamp_ms = raw.get("timestamp_ms")
        self.origin = raw.get("origin") or {}

    @property
    def timestamp(self):
        """The message timestamp as an aware UTC datetime, or None."""
        if self.timestamp_ms is None:
            return None
        return datetime.datetime.fromtimestamp(self.timestamp_ms / 1000, tz=datetime.timezone.utc)

    def __repr__(self):
        return f"Envelope(value={self.value!r}, key={self.key!r}, origin={self.origin!r})"
