#!/usr/bin/env python3
"""Orders from RabbitMQ: one JSON order per message in, one typed row out.

Input:  {"order_id": "o-1", "customer": "c-7", "amount": "19.90", "currency": "eur",
         "ts": "2026-11-27T10:15:00Z"}
Output: {"order_id": "o-1", "customer": "c-7", "amount": 19.9, "currency": "EUR",
         "ts": "2026-11-27T10:15:00.000Z", "order_date": "2026-11-27"}
An order that cannot be read (bad amount or time) becomes a dead letter.
"""
from datetime import datetime, timezone

from sluice_fn import records


@records
def transform(order):
    ts = datetime.fromisoformat(order["ts"].replace("Z", "+00:00"))
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    ts = ts.astimezone(timezone.utc)
    return {
        "order_id": str(order["order_id"]),
        "customer": order.get("customer"),
        "amount": float(order["amount"]),
        "currency": str(order.get("currency", "EUR")).upper(),
        "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "order_date": ts.date().isoformat(),
    }
