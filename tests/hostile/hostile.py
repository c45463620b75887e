#!/usr/bin/env python3
"""Test function for the hostile-message corpus (tests/hostile_messages.rs).

Envelope input, stream mode. Every record whose value is a JSON object becomes one row
naming where it came from (`src`: the object key or the topic, `pos`: the line or offset)
and passing its fields `n`, `ts`, `tag` and `text` on *unchanged*, so values of the wrong
type or out of range reach the output schema check (and the record the dead letters).
CSV values are strings, so a CSV `n` is turned into an integer first. Anything else is
rejected with `$error`. The function never crashes on its input.
"""
import json
import os
import sys


def row(line):
    envelope = json.loads(line)
    origin = envelope["origin"]
    value = envelope["value"]
    if envelope.get("value_encoding") != "json" or not isinstance(value, dict):
        raise ValueError("not a JSON object")
    if "key" in origin:
        src, pos = origin["key"], origin["line"]
    else:
        src, pos = origin["topic"], origin["offset"]
    n = value.get("n")
    if src.endswith(".csv") and isinstance(n, str):
        n = int(n)
    return {
        "src": src,
        "pos": pos,
        "n": n,
        "ts": value.get("ts"),
        "tag": value.get("tag"),
        "text": value.get("text"),
    }


def answer(batch, out):
    for index, line in enumerate(batch):
        try:
            text = json.dumps(row(line), separators=(",", ":"))
        except Exception as error:  # noqa: BLE001 - every failure becomes a dead letter
            message = f"{type(error).__name__}: {error}"[:200]
            text = json.dumps({"$error": {"record": index, "message": message}})
        out.write(text + "\n")


def main():
    out = sys.stdout
    assert os.environ.get("SLUICE_MODE") == "stream"
    out.write('{"$ready": true}\n')
    out.flush()
    batch = []
    for line in sys.stdin:
        line = line.rstrip("\n")
        if line:
            batch.append(line)
            continue
        answer(batch, out)
        out.write("\n")
        out.flush()
        batch = []


if __name__ == "__main__":
    main()
