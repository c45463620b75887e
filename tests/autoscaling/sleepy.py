"""A stream-mode test function that takes its time: every batch sleeps, then answers one
row per record, built from the envelope input.

argv: JOB_NAME (so the test finds its processes in the process table) and a log path:
each batch appends "start|end <wall ns> <partition> <first offset> <last offset>" lines,
"end" written before the answer (so a batch whose end line is missing is surely
unfinished from the platform's side). Environment: SLEEP_MS (per batch), RANDOM_SLEEP=1
(sleep uniformly 0..2×SLEEP_MS), SLOW_ID (a record id whose batch sleeps SLOW_MS).
"""
import json
import os
import random
import sys
import time

SLEEP = float(os.environ.get("SLEEP_MS", "20")) / 1000
RANDOM = os.environ.get("RANDOM_SLEEP") == "1"
SLOW_ID = os.environ.get("SLOW_ID")
SLOW = float(os.environ.get("SLOW_MS", "0")) / 1000
LOG = sys.argv[2]


def log(kind, records):
    offsets = [r["origin"]["offset"] for r in records]
    line = f"{kind} {time.time_ns()} {records[0]['origin']['partition']} {offsets[0]} {offsets[-1]}\n"
    with open(LOG, "a") as f:
        f.write(line)


def answer(batch, out):
    records = [json.loads(line) for line in batch]
    log("start", records)
    values = [r["value"] for r in records]
    if SLOW_ID is not None and any(str(v.get("id")) == SLOW_ID for v in values):
        time.sleep(SLOW)
    elif RANDOM:
        time.sleep(random.uniform(0, 2 * SLEEP))
    else:
        time.sleep(SLEEP)
    rows = []
    for record, value in zip(records, values):
        rows.append({
            "id": value["id"],
            "key": value["key"],
            "partition": record["origin"]["partition"],
            "offset": record["origin"]["offset"],
            "processed_ns": time.monotonic_ns(),
        })
    log("end", records)
    for row in rows:
        out.write(json.dumps(row) + "\n")
    out.write("\n")
    out.flush()


def main():
    out = sys.stdout
    out.write('{"$ready": true}\n')
    out.flush()
    batch = []
    for line in sys.stdin:
        line = line.rstrip("\n")
        if line:
            batch.append(line)
            continue
        answer(batch, out)
        batch = []


if __name__ == "__main__":
    main()
