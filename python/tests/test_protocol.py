"""A ``@records`` script as the platform runs it: framing, readiness, modes, stdout hygiene."""

import json

import pytest

from sluice_fn._frames import BatchReader

SCRIPT = """
    import os
    from sluice_fn import records

    @records
    def transform(record):
        print("seen", record)  # must reach stderr, never the protocol
        if "boom" in record:
            raise RuntimeError("boom at " + str(record["boom"]))
        return {"doubled": record["n"] * 2, "mode": os.environ["SLUICE_MODE"]}
"""


def answers(stdout):
    """Stream-mode stdout split into the readiness line and each batch's answer lines."""
    first, _, rest = stdout.partition(b"\n")
    assert rest.endswith(b"\n\n") or rest == b""
    batches, current = [], []
    for line in rest.split(b"\n")[:-1]:
        if line:
            current.append(json.loads(line))
        else:
            batches.append(current)
            current = []
    return json.loads(first), batches


@pytest.mark.parametrize("stdlib_only", [False, True])
def test_stream_mode_answers_each_batch_with_one_empty_line_after_ready(function_script, stdlib_only):
    run = function_script(SCRIPT, stdlib_only=stdlib_only)
    stdin = b'{"n":1}\n{"n":2}\n\n' + b"\n" + b'{"n":3}\n{"boom":1}\n{"n":4}\n\n'
    done = run(stdin, "stream")
    assert done.returncode == 0, done.stderr
    ready, batches = answers(done.stdout)
    assert ready == {"$ready": True}
    assert batches == [
        [{"doubled": 2, "mode": "stream"}, {"doubled": 4, "mode": "stream"}],
        [],
        [{"doubled": 6, "mode": "stream"}, {"doubled": 8, "mode": "stream"},
         {"$error": {"record": 1, "message": "RuntimeError: boom at 1"}}],
    ]
    assert b"seen {'n': 1}" in done.stderr
    assert b"RuntimeError: boom at 1" in done.stderr  # the traceback is logged


def test_exec_mode_reads_to_the_end_and_accepts_a_last_line_without_newline(function_script):
    done = function_script(SCRIPT)(b'{"n":1}\n\n{"boom":2}\n{"n":5}', "exec")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines == [{"doubled": 2, "mode": "exec"}, {"doubled": 10, "mode": "exec"},
                     {"$error": {"record": 1, "message": "RuntimeError: boom at 2"}}]


def test_stream_mode_fails_when_input_ends_inside_a_batch(function_script):
    done = function_script(SCRIPT)(b'{"n":1}\n{"n":2}\n', "stream")
    assert done.returncode == 1
    assert done.stdout == b'{"$ready":true}\n'
    assert b"standard input ended in the middle of a batch" in done.stderr


@pytest.mark.parametrize("failure", ["raise SystemExit('cannot load the model')", "raise OSError('cannot load the model')"])
def test_a_failing_top_level_does_not_start_the_loop(function_script, failure):
    run = function_script(SCRIPT + "\n    " + failure + "\n")
    done = run(b'{"n":1}\n\n', "stream")
    assert done.returncode == 1
    assert done.stdout == b""
    assert b"cannot load the model" in done.stderr


def test_an_exception_handled_at_the_top_level_still_starts_the_loop(function_script):
    run = function_script(SCRIPT + "\n    try:\n        import no_such_module\n    except ImportError:\n        pass\n")
    done = run(b'{"n":1}\n\n', "stream")
    assert done.returncode == 0, done.stderr
    assert answers(done.stdout)[1] == [[{"doubled": 2, "mode": "stream"}]]


def test_an_explicit_run_serves_without_waiting_for_the_script_to_end(function_script):
    run = function_script(SCRIPT + "\n    transform.run()\n    print('never reached')\n")
    done = run(b'{"n":1}\n\n', "stream")
    assert done.returncode == 0, done.stderr
    assert answers(done.stdout)[1] == [[{"doubled": 2, "mode": "stream"}]]
    assert b"never reached" not in done.stderr


@pytest.mark.parametrize("explicit_run", [False, True])
def test_the_loop_never_runs_traced(function_script, explicit_run):
    script = """
    import sys
    from sluice_fn import records

    @records
    def transform(record):
        return {"traced": sys.gettrace() is not None}
"""
    run = function_script(script + ("\n    transform.run()\n" if explicit_run else ""))
    done = run(b'{"n":1}\n\n', "stream")
    assert done.returncode == 0, done.stderr
    assert answers(done.stdout)[1] == [[{"traced": False}]]


def test_batches_are_found_across_every_chunk_boundary():
    stream = b'{"a":1}\n{"b":22}\n\n\n{"c":333}\n\n'
    for size in range(1, len(stream) + 1):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        feed = iter(chunks)
        reader = BatchReader(read=lambda fd, n: next(feed, b""))
        assert list(reader) == [b'{"a":1}\n{"b":22}\n', b"", b'{"c":333}\n'], size


def test_batches_larger_than_a_read_chunk_are_answered_whole(function_script):
    run = function_script(SCRIPT.replace('print("seen", record)', "pass"))
    big = b"".join(b'{"n":%d}\n' % i for i in range(200_000))  # ~2.3 MB, several 1 MiB reads
    done = run(big + b"\n" + b'{"n":1}\n\n' + big + b"\n", "stream")
    assert done.returncode == 0, done.stderr[-2000:]
    _, batches = answers(done.stdout)
    assert [len(b) for b in batches] == [200_000, 1, 200_000]
    assert batches[2][-1] == {"doubled": 399_998, "mode": "stream"}
