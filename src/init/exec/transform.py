"""An exec-mode function without any library: the whole batch on stdin, rows on stdout.

Each input line is one event; each output line is one row, or a `$error` control line
that sends that event (by its 0-based index) to the dead-letter destination. Exit 0
when done. Any program can do this; see docs/function-protocol.md.
"""
import json
import sys

for index, line in enumerate(sys.stdin):
    try:
        event = json.loads(line)
        row = {
            "user_id": int(event["user"]),
            "url": event["url"],
            "action": event.get("action", "view"),
            "event_date": event["ts"][:10],
        }
    except Exception as error:
        print(json.dumps({"$error": {"record": index, "message": f"{type(error).__name__}: {error}"}}))
        continue
    print(json.dumps(row))
