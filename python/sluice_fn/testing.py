"""Run a function on sample records without the platform, e.g. in pytest::

    from sluice_fn.testing import run_records
    from transform import transform

    def test_transform():
        result = run_records(transform, [{"user": "7", "url": "/a"}, {"user": "x"}])
        assert result.rows == [{"user_id": 7, "url": "/a"}]
        assert result.errors == {1: "ValueError: invalid literal for int() with base 10: 'x'"}

The records go through the same code as under the platform (JSON encoding, the
function call, the row checks, NaN handling, `$error` lines), and the answer is parsed
back, so what the test sees is what Sluice would receive.
"""

import json

from ._codec import Codec
from ._records import process_batch


class Result:
    """``rows``: the output rows in order; ``errors``: record index → message."""

    def __init__(self, rows, errors, raw):
        self.rows = rows
        self.errors = errors
        self.raw = raw

    def __repr__(self):
        return f"Result(rows={self.rows!r}, errors={self.errors!r})"


def envelope(value, key=None, headers=None, timestamp_ms=None, origin=None):
    """An input record as the platform writes it with ``function.input = "envelope"``."""
    return {
        "value": value,
        "value_encoding": "json",
        "key": key,
        "key_encoding": None if key is None else "utf8",
        "headers": headers or {},
        "timestamp_ms": timestamp_ms,
        "origin": origin or {"line": 1},
    }


def run_records(fn, records, envelope=None, backend=None):
    """Runs ``fn`` (a ``@records`` function or a plain one) on ``records`` as one batch.

    ``records`` are Python values (each encoded as one input line) or ``bytes`` (taken
    as the line itself). ``envelope`` defaults to how the ``@records`` decorator was set;
    ``backend`` is ``"orjson"`` or ``"json"`` (default: orjson when installed).
    """
    options = getattr(fn, "options", {})
    if envelope is None:
        envelope = options.get("envelope", False)
    fn = getattr(fn, "fn", fn)
    codec = Codec(backend)
    data = b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in records)
    lines = codec.lines(data)
    result = process_batch(fn, lines, codec, envelope=envelope)
    rows, errors = [], {}
    for line in result.data.splitlines():
        parsed = json.loads(line)  # also checks that the answer is valid JSON
        if "$error" in parsed:
            errors[parsed["$error"]["record"]] = parsed["$error"]["message"]
        else:
            rows.append(parsed)
    return Result(rows, errors, result.data)


def run_table(fn, table):
    """Runs a ``@batches`` function on a ``pyarrow.Table`` through the IPC framing.

    Returns ``(table, errors)``: the output without the ``$error``/``$record`` columns and
    its rejections as record index → message.
    """
    import pyarrow.compute as pc

    from ._arrow import ERROR, RECORD, answer, encode

    fn = getattr(fn, "fn", fn)
    import pyarrow as pa

    output = pa.ipc.open_stream(answer(fn, encode(table))).read_all()
    if ERROR not in output.column_names:
        return output, {}
    rejected = pc.is_valid(output[ERROR])
    errors = dict(
        zip(output.filter(rejected)[RECORD].to_pylist(), output.filter(rejected)[ERROR].to_pylist())
    )
    rows = output.filter(pc.invert(rejected)).drop_columns([ERROR, RECORD])
    return rows, errors
