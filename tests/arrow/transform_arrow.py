"""The clickstream transform as a vectorised pyarrow function (encoding = "arrow"):
clicks of user 5 are rejected with `$error`."""

import sys

import pyarrow as pa
import pyarrow.compute as pc

stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
stdout.write(b'{"$ready": true}\n')
stdout.flush()
while True:
    try:
        clicks = pa.ipc.open_stream(stdin).read_all()
    except (pa.ArrowInvalid, EOFError):
        break
    parts = pc.extract_regex(
        clicks["url"], r"https://(?P<domain>[^/]+)(?P<path>/[^?]*)"
    ).combine_chunks()
    ts = pc.strptime(
        pc.utf8_slice_codeunits(clicks["ts"], 0, 19), format="%Y-%m-%dT%H:%M:%S", unit="ms"
    )
    rejected = pc.equal(clicks["user_id"], 5)
    rows = pa.table(
        {
            "event_id": clicks["event_id"],
            "user_id": clicks["user_id"],
            "action": clicks["action"],
            "domain": pc.utf8_lower(parts.field("domain")),
            "path": parts.field("path"),
            "ts": ts,
            "event_date": pc.cast(ts, pa.date32()),
            "$error": pc.if_else(rejected, "user 5 is not allowed", pa.scalar(None, pa.string())),
            "$record": pa.array(range(clicks.num_rows), pa.int64()),
        }
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rows.schema) as writer:
        writer.write_table(rows)
    stdout.write(sink.getvalue())
    stdout.flush()
