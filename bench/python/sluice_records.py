"""A per-record Python transform as a stream-mode NDJSON function, written by hand
against docs/function-protocol.md: adds `url_length` to each record."""

import json
import sys

out = sys.stdout
out.write('{"$ready": true}\n')
out.flush()
lines = []
for line in sys.stdin:
    if line != "\n":
        record = json.loads(line)
        record["url_length"] = len(record["url"])
        lines.append(json.dumps(record))
        continue
    lines.append("\n")
    out.write("\n".join(lines))
    out.flush()
    lines = []
