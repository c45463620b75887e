#!/usr/bin/env python3
"""Clickstream ETL: raw click events in, one clean row per click out.

Input (one JSON object per line, the Kafka message value):
    {"event_id": "e-1", "user_id": 42, "url": "https://Shop.example.com/p/1?ref=x",
     "ts": "2026-11-27T10:15:00.123Z", "action": "click"}
Output row (matches the schema in job.toml; partitioned by event_date):
    {"event_id": "e-1", "user_id": 42, "action": "click", "domain": "shop.example.com",
     "path": "/p/1", "ts": "2026-11-27T10:15:00.123Z", "event_date": "2026-11-27"}

A record that cannot be transformed is reported with a `$error` control line, so it
goes to the dead-letter destination instead of failing the whole batch.

Works in both function modes (SLUICE_MODE): `exec` (one process per batch: read stdin
to the end) and `stream` (one warm process: batches end with an empty line, and so
does our answer). See docs/function-protocol.md.
"""
import json
import os
import sys
from datetime import datetime, timezone
from urllib.parse import urlsplit


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


def run_batch(lines, out):
    for index, line in enumerate(lines):
        try:
            row = transform(json.loads(line))
        except Exception as error:  # one bad record must not fail the batch
            out.write(json.dumps({"$error": {"record": index, "message": f"{type(error).__name__}: {error}"}}) + "\n")
            continue
        out.write(json.dumps(row, separators=(",", ":")) + "\n")


def main():
    out = sys.stdout
    if os.environ.get("SLUICE_MODE") == "stream":
        out.write('{"$ready": true}\n')
        out.flush()
        batch = []
        for line in sys.stdin:
            line = line.rstrip("\n")
            if line:
                batch.append(line)
                continue
            run_batch(batch, out)
            out.write("\n")
            out.flush()
            batch = []
    else:
        run_batch([line for line in sys.stdin.read().splitlines() if line], out)


if __name__ == "__main__":
    main()
