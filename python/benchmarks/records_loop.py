"""Records per second through the SDK's batch loop, stdlib json against orjson.

    python3 benchmarks/records_loop.py [--records 200000] [--batch 10000]

Measures `process_batch` (decode, the user's call, encode, join) on ~285-byte events
with a transform that adds one column, and, for comparison, the same transform as a
hand-written line-by-line loop (``json.loads``/``json.dumps`` per line), in CPU time.
Also the whole stream-mode program through a pipe (read, frame, answer, write) for each
backend: per CPU second of the program (interpreter start included) and per wall second.
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sluice_fn._codec import Codec, orjson  # noqa: E402
from sluice_fn._records import process_batch  # noqa: E402

ACTIONS = ["view", "click", "add_to_cart", "purchase"]


def event(i):
    return {
        "event_id": f"e-{i:010d}",
        "user_id": 1000 + i % 5000,
        "session_id": f"s-{i % 20000:08d}",
        "action": ACTIONS[i % 4],
        "url": f"https://shop.example.com/p/{i % 977}?ref=mail&campaign=winter",
        "referrer": "https://www.example.net/search?q=boots",
        "price": round((i % 1000) * 0.37, 2),
        "quantity": i % 5,
        "ts": "2026-11-27T10:15:00.123Z",
        "country": "DE",
    }


def transform(record):
    record["domain"] = record["url"].split("/", 3)[2]
    return record


def comprehension(lines):
    loads, dumps = orjson.loads, orjson.dumps
    return b"\n".join([dumps(transform(loads(line))) for line in lines]) + b"\n"


def naive(lines):
    out = []
    for line in lines:
        out.append(json.dumps(transform(json.loads(line))))
    return ("\n".join(out) + "\n").encode()


def rate(count, seconds):
    return f"{count / seconds / 1000:8.1f}k rec/s"


def measure(label, run, batches, count, repeat=5):
    # CPU time of this process, best of `repeat`: steadier than wall time on a busy machine
    best = None
    for _ in range(repeat):
        start = time.process_time()
        for lines in batches:
            run(lines)
        elapsed = time.process_time() - start
        best = elapsed if best is None else min(best, elapsed)
    print(f"{label:<44} {rate(count, best)}")


def through_pipe(backend, payload, count):
    env = dict(os.environ, SLUICE_MODE="stream", SLUICE_FN_JSON=backend)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stream_function.py")
    before = os.times()
    start = time.perf_counter()
    result = subprocess.run([sys.executable, script], input=payload, env=env, capture_output=True, check=True)
    elapsed = time.perf_counter() - start
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    rows = result.stdout.count(b"\n") - result.stdout.count(b"\n\n") - 1
    assert rows == count, (rows, count, result.stderr[-500:])
    label = "stream-mode program through a pipe, " + backend
    print(f"{label:<44} {rate(count, cpu)} of its CPU time, {rate(count, elapsed)} wall")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    lines = [json.dumps(event(i)).encode() for i in range(args.records)]
    size = sum(len(line) + 1 for line in lines) / len(lines)
    batches = [lines[i : i + args.batch] for i in range(0, len(lines), args.batch)]
    text_batches = [[line.decode() for line in batch] for batch in batches]
    print(f"{args.records} records of {size:.0f} bytes in batches of {args.batch}, best of 5")
    measure("hand-written loop, json.loads/json.dumps", naive, text_batches, args.records)
    backends = ["json"] + (["orjson"] if orjson is not None else [])
    if orjson is not None:
        measure("floor: one comprehension, orjson, no checks", comprehension, batches, args.records)
    for backend in backends:
        codec = Codec(backend)
        inputs = text_batches if codec.text else batches
        measure(f"sluice_fn process_batch, {backend}", lambda ls: process_batch(transform, ls, codec), inputs, args.records)
    payload = b"".join(b"\n".join(batch) + b"\n\n" for batch in batches)
    for backend in backends:
        through_pipe(backend, payload, args.records)


if __name__ == "__main__":
    main()
