"""The benchmark's function: the same transform as a stream-mode SDK program."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sluice_fn import _codec, _records  # noqa: E402


def transform(record):
    record["domain"] = record["url"].split("/", 3)[2]
    return record


if __name__ == "__main__":
    _records.serve(transform, codec=_codec.Codec(os.environ.get("SLUICE_FN_JSON")))
