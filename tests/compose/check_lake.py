#!/usr/bin/env python3
"""Waits (bounded) until every expected id is in the Parquet files under
s3://lake/PREFIX/, then asserts each is there exactly once.

    check_lake.py PREFIX COLUMN ID_PREFIX COUNT [--timeout SECONDS]

Expected ids: ID_PREFIX0 … ID_PREFIX{COUNT-1} (the sample producer's numbering; for
files, ID_PREFIX names the run and ids are RUN-r-FILE-ROW, see --files/--rows). Objects
under _sluice/ (markers, spool, dead letters) are not output and are skipped. Exits 1
with the missing and duplicated ids on failure. Runs inside the compose network
(S3_ENDPOINT and AWS_* from the environment).
"""
import argparse
import collections
import io
import os
import sys
import time

import boto3
import pyarrow.parquet as pq


def read_ids(s3, prefix, column, seen_objects, counts):
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket="lake", Prefix=prefix + "/"):
        for entry in page.get("Contents", []):
            key = entry["Key"]
            if "/_sluice/" in key or not key.endswith(".parquet") or key in seen_objects:
                continue
            body = s3.get_object(Bucket="lake", Key=key)["Body"].read()
            for value in pq.read_table(io.BytesIO(body), columns=[column]).column(column).to_pylist():
                counts[value] += 1
            seen_objects.add(key)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("prefix")
    parser.add_argument("column")
    parser.add_argument("expected", help="comma-separated ID_PREFIX:COUNT pairs")
    parser.add_argument("--timeout", type=float, default=180)
    args = parser.parse_args()
    expected = set()
    for pair in args.expected.split(","):
        id_prefix, count = pair.rsplit(":", 1)
        expected.update(f"{id_prefix}{i}" for i in range(int(count)))
    s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"])
    seen_objects, counts = set(), collections.Counter()
    deadline = time.monotonic() + args.timeout
    while True:
        read_ids(s3, args.prefix, args.column, seen_objects, counts)
        missing = expected - counts.keys()
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    duplicated = {value: n for value, n in counts.items() if value in expected and n > 1}
    print(f"lake/{args.prefix}: {len(expected)} expected, {len(expected) - len(missing)} found, "
          f"{len(duplicated)} duplicated, in {len(seen_objects)} Parquet objects", flush=True)
    if missing or duplicated:
        print(f"  missing (first 10): {sorted(missing)[:10]}", file=sys.stderr)
        print(f"  duplicated (first 10): {sorted(duplicated.items())[:10]}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    # The verdict is printed by the time main() returns or exits. Leave at once: the
    # interpreter's shutdown with pyarrow's and boto3's threads still about has aborted
    # ("terminate called without an active exception") after a passing check.
    code = 0
    try:
        main()
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
