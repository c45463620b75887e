"""A vectorised pyarrow function in stream mode with `encoding = "arrow"`: adds
`url_length` to each batch as a column (docs/function-protocol.md, "Arrow encoding")."""

import sys

import pyarrow as pa
import pyarrow.compute as pc

stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
stdout.write(b'{"$ready": true}\n')
stdout.flush()
while True:
    try:
        table = pa.ipc.open_stream(stdin).read_all()
    except (pa.ArrowInvalid, EOFError):
        break
    table = table.append_column("url_length", pc.utf8_length(table["url"]))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    stdout.write(sink.getvalue())
    stdout.flush()
