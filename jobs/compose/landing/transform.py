#!/usr/bin/env python3
"""Sensor readings from files in the landing bucket: one CSV row (all strings) or one
NDJSON object in, one typed row out.

Input:  reading_id,sensor,value,ts  →  r-1,s-3,21.5,2026-11-27T10:15:00Z
Output: {"reading_id": "r-1", "sensor": "s-3", "value": 21.5,
         "ts": "2026-11-27T10:15:00.000Z", "reading_date": "2026-11-27"}
"""
from datetime import datetime, timezone

from sluice_fn import records


@records
def transform(reading):
    ts = datetime.fromisoformat(str(reading["ts"]).replace("Z", "+00:00"))
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    ts = ts.astimezone(timezone.utc)
    return {
        "reading_id": str(reading["reading_id"]),
        "sensor": reading.get("sensor"),
        "value": float(reading["value"]),
        "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "reading_date": ts.date().isoformat(),
    }
