"""Helpers for ``@batches`` functions (needs pyarrow)."""

from ._arrow import ERROR, RECORD, reject

__all__ = ["ERROR", "RECORD", "reject"]
