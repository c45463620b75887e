#!/usr/bin/env python3
"""Clickstream ETL: raw click events in, one clean row per click out.

Input (one JSON object per line, the Kafka message value):
    {"event_id": "e-1", "user_id": 42, "url": "https://Shop.example.com/p/1?ref=x",
     "ts": "2026-11-27T10:15:00.123Z", "action": "click"}
Output row (matches the schema in job.toml; partitioned by event_date):
    {"event_id": "e-1", "user_id": 42, "action": "click", "domain": "shop.example.com",
     "path": "/p/1", "ts": "2026-11-27T10:15:00.123Z", "event_date": "2026-11-27"}

The Python SDK (`sluice_fn`, installed system-wide in the Sluice image) turns an
exception into a `$error` for that record alone, so a bad click goes to the dead-letter
destination instead of failing the whole batch. See python/README.md.
"""
from datetime import datetime, timezone
from urllib.parse import urlsplit

from sluice_fn import records


@records
def transform(record):
    ts = datetime.fromisoformat(record["ts"].replace("Z", "+00:00"))
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    ts = ts.astimezone(timezone.utc)
    url = urlsplit(record["url"])
    return {
        "event_id": str(record["event_id"]),
        "user_id": int(record["user_id"]),
        "action": record.get("action", "view"),
        "domain": (url.hostname or "").lower(),
        "path": url.path or "/",
        "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "event_date": ts.date().isoformat(),
    }
