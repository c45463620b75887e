"""The per-record transform of the comparison benchmark written with the Python SDK
(`sluice_fn.records`): adds `url_length` to each record, as `kafka_consumer.py
transform` does. The SDK comes from this checkout's `python/` folder."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

from sluice_fn import records  # noqa: E402


@records
def transform(click):
    click["url_length"] = len(click["url"])
    return click
