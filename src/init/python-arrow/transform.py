"""The job's function: a whole batch as a pyarrow.Table in, a Table of rows out.

Work on columns (pyarrow.compute), not rows. Events that cannot be converted are
rejected one by one with `reject`; an exception fails the whole batch (Sluice retries it
and splits it to find the bad events).
"""
import pyarrow as pa
import pyarrow.compute as pc

from sluice_fn import batches
from sluice_fn.arrow import reject


@batches
def transform(table):
    numeric = pc.fill_null(pc.match_substring_regex(table["user"], r"^[0-9]+$"), False)
    good = table.filter(numeric)
    rows = pa.table({
        "user_id": pc.cast(good["user"], pa.int64()),
        "url": good["url"],
        "action": pc.fill_null(good["action"], "view"),
        "event_date": pc.cast(pc.utf8_slice_codeunits(good["ts"], 0, 10), pa.date32()),
    })
    bad = [index for index, ok in enumerate(numeric.to_pylist()) if not ok]
    return reject(rows, {index: "user is not a number" for index in bad})
