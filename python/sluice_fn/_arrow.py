"""``@batches``: a vectorised function over Arrow IPC (``encoding = "arrow"``).

Framing (docs/function-protocol.md, "Arrow encoding"): each batch is one complete Arrow
IPC stream on stdin (schema, record batches, end-of-stream marker), streams written
back to back in stream mode; the answer to each is one complete IPC stream on stdout,
written with one ``write``. In stream mode the ``{"$ready": true}`` NDJSON line comes
first, as with NDJSON. Exec mode: one stream in, one stream out.
"""

import io
import os
import sys

from . import _frames
from ._records import _configure_logging

try:
    import pyarrow as pa
    import pyarrow.ipc
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("@batches needs pyarrow: pip install pyarrow (or sluice-fn[arrow])") from error

ERROR = "$error"
RECORD = "$record"


def _as_table(result):
    if result is None:
        return pa.table({})
    if isinstance(result, pa.RecordBatch):
        return pa.Table.from_batches([result])
    if isinstance(result, pa.Table):
        return result
    raise TypeError(f"@batches function returned a {type(result).__name__}: return a pyarrow.Table")


def answer(fn, stream_bytes):
    """Runs ``fn`` on the table in one IPC stream; returns the answer's IPC stream bytes."""
    table = pa.ipc.open_stream(stream_bytes).read_all()
    return encode(_as_table(fn(table)))


def encode(table):
    """One complete IPC stream holding ``table``, as a ``pyarrow.Buffer``.

    The buffer is written to stdout as it is (it supports the buffer protocol): no copy
    into a ``bytes`` object.
    """
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def serve(fn, stdin=0, stdout=None):
    """The main loop in the mode the platform chose (``SLUICE_MODE``)."""
    _configure_logging()
    sys.stdout.flush()
    if stdout is None:
        out_fd = os.dup(1)
        os.dup2(2, 1)  # print, C code and child processes log to stderr
    else:
        out_fd = stdout
    sys.stdout = sys.stderr
    source = io.open(stdin, "rb", buffering=_frames.CHUNK, closefd=False)
    mode = os.environ.get("SLUICE_MODE", "exec")
    if mode == "stream":
        _frames.write_all(out_fd, b'{"$ready":true}\n')
        while source.peek(1):
            table = pa.ipc.open_stream(pa.PythonFile(source, mode="r")).read_all()
            _frames.write_all(out_fd, encode(_as_table(fn(table))))
    elif mode == "exec":
        if source.peek(1):
            table = pa.ipc.open_stream(pa.PythonFile(source, mode="r")).read_all()
            _frames.write_all(out_fd, encode(_as_table(fn(table))))
    else:
        raise ValueError(f"SLUICE_MODE is {mode!r}; this SDK speaks 'exec' and 'stream'")


def reject(table, errors):
    """``table`` plus one rejection row per ``(record index, message)`` in ``errors``.

    The result has the nullable ``$error`` (utf8) and ``$record`` (int64) columns: null on
    the output rows, set on the rejection rows, whose other columns are null.
    """
    errors = sorted(errors.items() if isinstance(errors, dict) else errors)
    count = len(errors)
    rows = table.append_column(ERROR, pa.nulls(table.num_rows, pa.utf8())).append_column(
        RECORD, pa.nulls(table.num_rows, pa.int64())
    )
    columns = [pa.nulls(count, field.type) for field in table.schema]
    columns.append(pa.array([message for _, message in errors], pa.utf8()))
    columns.append(pa.array([index for index, _ in errors], pa.int64()))
    rejected = pa.Table.from_arrays(columns, schema=rows.schema)
    return pa.concat_tables([rows, rejected])
