"""``@batches`` over Arrow IPC: one stream per batch in, one stream per batch out."""

import io

import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.compute as pc  # noqa: E402
import pyarrow.ipc  # noqa: E402

from sluice_fn.arrow import reject  # noqa: E402
from sluice_fn.testing import run_table  # noqa: E402

SCRIPT = """
    import pyarrow as pa
    import pyarrow.compute as pc
    from sluice_fn import batches
    from sluice_fn.arrow import reject

    @batches
    def transform(table):
        print("rows", table.num_rows)
        negative = pc.less(table["n"], 0)
        good = table.filter(pc.invert(negative))
        out = pa.table({"doubled": pc.multiply(good["n"], 2)})
        bad = [i for i, flag in enumerate(negative.to_pylist()) if flag]
        return reject(out, {i: "negative n" for i in bad}) if bad else out
"""


def stream(table):
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def read_streams(data):
    source = pa.BufferReader(data)
    tables = []
    while source.tell() < len(data):
        tables.append(pa.ipc.open_stream(source).read_all())
    return tables


def test_stream_mode_answers_back_to_back_streams_after_the_ready_line(function_script):
    run = function_script(SCRIPT)
    batches = [pa.table({"n": [1, 2, 3]}), pa.table({"n": pa.array([], pa.int64())}), pa.table({"n": [4, -1, 5]})]
    done = run(b"".join(stream(t) for t in batches), "stream")
    assert done.returncode == 0, done.stderr
    ready, _, rest = done.stdout.partition(b"\n")
    assert ready == b'{"$ready":true}'
    answers = read_streams(rest)
    assert [t.to_pydict() for t in answers] == [
        {"doubled": [2, 4, 6]},
        {"doubled": []},
        {"doubled": [8, 10, None], "$error": [None, None, "negative n"], "$record": [None, None, 1]},
    ]
    assert b"rows 3" in done.stderr


def test_exec_mode_reads_one_stream_and_writes_one(function_script):
    done = function_script(SCRIPT)(stream(pa.table({"n": [7]})), "exec")
    assert done.returncode == 0, done.stderr
    assert [t.to_pydict() for t in read_streams(done.stdout)] == [{"doubled": [14]}]


def test_an_exception_fails_the_batch_so_the_platform_can_split_it(function_script):
    done = function_script(SCRIPT)(stream(pa.table({"m": [1]})), "stream")
    assert done.returncode == 1
    assert done.stdout == b'{"$ready":true}\n'
    assert b"KeyError" in done.stderr


def test_run_table_returns_rows_and_rejections():
    def keep_even(table):
        even = pc.equal(pc.bit_wise_and(table["n"], 1), 0)
        return reject(table.filter(even), {i: "odd" for i, e in enumerate(even.to_pylist()) if not e})

    rows, errors = run_table(keep_even, pa.table({"n": [2, 3, 4, 5]}))
    assert rows.to_pydict() == {"n": [2, 4]}
    assert errors == {1: "odd", 3: "odd"}


def test_streams_larger_than_the_read_buffer_follow_each_other(function_script):
    run = function_script(SCRIPT)
    big = pa.table({"n": pa.array(range(400_000), pa.int64())})  # ~3 MiB per stream
    done = run(stream(big) + stream(pa.table({"n": [1]})) + stream(big), "stream")
    assert done.returncode == 0, done.stderr
    answers = read_streams(done.stdout.partition(b"\n")[2])
    assert [t.num_rows for t in answers] == [400_000, 1, 400_000]
    assert answers[2]["doubled"][399_999].as_py() == 799_998
