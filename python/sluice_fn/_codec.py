"""JSON in and out of the function: orjson when installed, else the standard library.

Both backends produce the same text for the same row, within what JSON allows:
compact separators, dates and times as ISO 8601, and NaN or ±Infinity written as
``null`` (JSON has no such numbers; a not-null column then sends the record to the
dead-letter destination with the schema error). Nothing here is per-record overhead
beyond the one ``loads`` and one ``dumps`` call.
"""

import datetime
import json
import math

try:  # the fast path; any orjson 3.x
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None

BACKEND = "orjson" if orjson is not None else "json"


def _default(value):
    """Types the standard library cannot encode but orjson does natively."""
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def without_non_finite(value):
    """The value with every NaN and ±Infinity replaced by None (JSON's null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: without_non_finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_non_finite(item) for item in value]
    return value


class Codec:
    """``loads(bytes) -> object`` and ``dumps(row) -> bytes | str`` plus ``join``.

    ``dumps`` may return ``str`` (standard library) or ``bytes`` (orjson); ``join``
    turns a list of what it returned into the bytes of NDJSON lines.
    """

    def __init__(self, backend=None):
        backend = backend or BACKEND
        self.backend = backend
        if backend == "orjson":
            if orjson is None:
                raise ImportError("orjson is not installed")
            self.loads = orjson.loads
            self.dumps = orjson.dumps
            self.text = False
        elif backend == "json":
            self.loads = json.loads
            # allow_nan=True on the hot path: NaN becomes the token NaN, found afterwards in
            # one scan of the joined batch and rewritten as null (see `finish_lines`).
            self.dumps = json.JSONEncoder(separators=(",", ":"), default=_default).encode
            self.text = True
        else:
            raise ValueError(f"unknown JSON backend {backend!r}: use 'orjson' or 'json'")

    def lines(self, data):
        """A batch's bytes as the lines ``loads`` takes fastest (str for the standard library)."""
        if self.text:
            data = data.decode("utf-8", "surrogateescape")
            lines = data.split("\n")
            empty = ""
        else:
            lines = data.split(b"\n")
            empty = b""
        if lines and not lines[-1]:
            lines.pop()
        if empty in lines:  # exec-mode input may hold blank lines; stream batches never do
            lines = [line for line in lines if line.strip()]
        return lines

    def control(self, obj):
        """One control line's bytes, without the newline."""
        line = self.dumps(obj)
        return line.encode() if self.text else line

    def join(self, lines):
        """The lines' bytes, each followed by a newline; NaN and ±Infinity become null."""
        if not lines:
            return b""
        if self.text:
            text = "\n".join(lines)
            if "NaN" in text or "Infinity" in text:
                text = "\n".join(_finite_line(line) for line in lines)
            return text.encode() + b"\n"
        return b"\n".join(lines) + b"\n"


_strict = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_default).encode


def _finite_line(line):
    """A line written with allow_nan, rewritten without NaN/Infinity tokens if it has any."""
    if "NaN" not in line and "Infinity" not in line:
        return line
    return _strict(without_non_finite(json.loads(line)))
