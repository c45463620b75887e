"""``@records``: a per-record function run over NDJSON batches.

`process_batch` is the whole hot path: for each input line one ``loads``, the user's
call and one ``dumps``; the answer is joined and written once. Everything that can go
wrong with one record (an exception, a return value that is not a row, a row that
cannot be encoded) becomes a ``$error`` control line naming the record's index in the
batch, so the rest of the batch is kept.
"""

import logging
import os
import sys
import traceback
import types
from operator import length_hint

from . import _frames
from ._codec import Codec
from ._envelope import Envelope

log = logging.getLogger("sluice_fn")


def _describe(error):
    message = str(error)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


class BatchResult:
    """What one batch produced: the answer's bytes and the number of rows and errors."""

    __slots__ = ("data", "rows", "errors")

    def __init__(self, data, rows, errors):
        self.data = data
        self.rows = rows
        self.errors = errors


def process_batch(fn, lines, codec, envelope=False):
    """Runs ``fn`` on each line; returns the answer (rows, then ``$error`` lines) as bytes."""
    if envelope:
        user_fn = fn

        def fn(record):
            return user_fn(Envelope(record))

    loads = codec.loads
    dumps = codec.dumps
    out = []
    append = out.append
    errors = []
    # Records that did not produce exactly one row: index -> row count. Kept so a row can
    # be traced back to its record without any bookkeeping for the common one-row case.
    uneven = {}
    total = len(lines)
    # The loop carries no index and sets up no handler per record: the `try` is entered
    # once, a failure resumes the same iterator, and a record's index is worked out from
    # how many lines are left, only when one is needed.
    remaining = iter(lines)
    one_row = dict
    while True:
        try:
            for line in remaining:
                result = fn(loads(line))
                if type(result) is one_row:
                    append(dumps(result))
                elif result is None:
                    uneven[total - length_hint(remaining) - 1] = 0
                else:
                    index = total - length_hint(remaining) - 1
                    uneven[index] = _append_rows(result, dumps, append)
            break
        except Exception as error:  # one bad record must not fail the batch
            index = total - length_hint(remaining) - 1
            if not errors:
                log.warning("record %d of the batch failed:\n%s", index, traceback.format_exc().rstrip())
            uneven[index] = 0
            errors.append((index, _describe(error)))
    data = codec.join(out)
    if data.startswith(b'{"$') or b'\n{"$' in data:
        # A row starting with a `$` field would read as a control line (rare: one scan finds it).
        out = _drop_control_rows(out, total, uneven, codec, errors)
        data = codec.join(out)
    if errors:
        errors.sort()
        data += b"\n".join(codec.control({"$error": {"record": i, "message": m}}) for i, m in errors) + b"\n"
    return BatchResult(data, len(out), errors)


def _append_rows(result, dumps, append):
    """Appends the rows of a non-dict result; returns how many."""
    if isinstance(result, dict):
        append(dumps(result))
        return 1
    if isinstance(result, (list, tuple, types.GeneratorType)):  # several rows, or `yield` them
        rows = []
        for position, row in enumerate(result):
            if not isinstance(row, dict):
                raise TypeError(f"returned a list whose item {position} is a {type(row).__name__}, not a dict")
            rows.append(dumps(row))
        for row in rows:
            append(row)
        return len(rows)
    raise TypeError(f"returned a {type(result).__name__}: return a dict, a list of dicts (or yield them) or None")


def _drop_control_rows(out, records, uneven, codec, errors):
    """Drops every row of a record that produced a ``$``-first row, and reports the record."""
    prefix = '{"$' if codec.text else b'{"$'
    kept = []
    position = 0
    for index in range(records):
        count = uneven.get(index, 1)
        rows = out[position : position + count]
        position += count
        bad = next((row for row in rows if row.startswith(prefix)), None)
        if bad is None:
            kept.extend(rows)
            continue
        field = codec.loads(bad)
        name = next(iter(field)) if isinstance(field, dict) and field else "$"
        errors.append(
            (index, f"ValueError: row field {name!r} starts with '$', which is reserved for control lines")
        )
    return kept


def _configure_logging():
    """Logs (and print) go to stderr, where the platform tags them with job and instance."""
    if not logging.getLogger().handlers:
        level = os.environ.get("SLUICE_FN_LOG", "INFO").upper()
        logging.basicConfig(stream=sys.stderr, level=level, format="%(levelname)s %(name)s: %(message)s")


def serve(fn, envelope=False, codec=None, stdin=0, stdout=None):
    """The function's main loop in the mode the platform chose (``SLUICE_MODE``).

    stdout carries the protocol only: ``print`` and anything else written to
    ``sys.stdout`` goes to stderr while the loop runs.
    """
    codec = codec or Codec()
    _configure_logging()
    sys.stdout.flush()
    if stdout is None:
        # The protocol keeps its own copy of stdout; fd 1 itself (and so print, C code and
        # child processes) now points at stderr.
        out_fd = os.dup(1)
        os.dup2(2, 1)
    else:
        out_fd = stdout
    sys.stdout = sys.stderr
    mode = os.environ.get("SLUICE_MODE", "exec")
    if mode == "stream":
        _frames.write_all(out_fd, codec.control({"$ready": True}) + b"\n")
        for data in _frames.BatchReader(stdin):
            result = process_batch(fn, codec.lines(data), codec, envelope)
            _frames.write_all(out_fd, result.data + b"\n")
    elif mode == "exec":
        data = _frames.read_all(stdin)
        result = process_batch(fn, codec.lines(data), codec, envelope)
        _frames.write_all(out_fd, result.data)
    else:
        raise ValueError(f"SLUICE_MODE is {mode!r}; this SDK speaks 'exec' and 'stream'")
