"""The comparison benchmark's event schema (10 columns, ~285-byte JSON events)."""

import pyarrow as pa

EVENTS = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        ("user_id", pa.int64()),
        ("session_id", pa.string()),
        ("action", pa.string()),
        ("url", pa.string()),
        ("referrer", pa.string()),
        ("country", pa.string()),
        ("device", pa.string()),
        ("amount", pa.float64()),
        ("ts", pa.timestamp("ms", tz="UTC")),
    ]
)

WITH_URL_LENGTH = EVENTS.append(pa.field("url_length", pa.int64()))
