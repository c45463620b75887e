"""The job's function: one input event (a dict) in, one row out.

Return a dict for one row, a list of dicts for several, or None to drop the event. An
exception sends just this event to the dead-letter destination with its message.
Test it with `python3 -m pytest` (test_transform.py) or `sluice invoke`.
"""
from sluice_fn import records


@records
def transform(event):
    return {
        "user_id": int(event["user"]),
        "url": event["url"],
        "action": event.get("action", "view"),
        "event_date": event["ts"][:10],
    }
