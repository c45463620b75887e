"""Sluice functions as one Python ``def``.

::

    from sluice_fn import records

    @records
    def transform(click):            # one input record (a dict) in
        return {"user_id": int(click["user"]), "url": click["url"]}

Run as the job's command (``command = ["python3", "transform.py"]``), the script
speaks the function protocol (docs/function-protocol.md) in the mode the platform set
(``SLUICE_MODE``: ``exec`` or ``stream``): framing, the ``$ready`` line, one
``$error`` line per record that raised, envelopes and NaN are handled. The loop starts
when the script's own top level has finished (or at ``transform.run()``).

``@batches`` does the same for a vectorised function over a ``pyarrow.Table``
(``encoding = "arrow"``). `sluice_fn.testing.run_records` runs a function on sample
records without the platform.
"""

import atexit
import os
import sys

from ._codec import BACKEND as JSON_BACKEND
from ._envelope import Envelope
from ._records import log

__all__ = ["records", "batches", "Envelope", "log", "job", "instance", "mode", "encoding", "JSON_BACKEND"]
__version__ = "0.1.0"

#: The job's name, the instance id (``<job>-<n>``), ``exec``/``stream`` and the encoding,
#: from the ``SLUICE_*`` variables the platform sets (``None`` outside the platform).
job = os.environ.get("SLUICE_JOB")
instance = os.environ.get("SLUICE_INSTANCE")
mode = os.environ.get("SLUICE_MODE")
encoding = os.environ.get("SLUICE_ENCODING")


class _Function:
    """A decorated function: still callable as itself, plus `run` for the protocol loop."""

    kind = None

    def __init__(self, fn, options):
        self.fn = fn
        self.options = options
        self.__name__ = getattr(fn, "__name__", "function")
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn
        self._started = False
        self._top_level = None
        if getattr(fn, "__module__", None) == "__main__":
            self._top_level = _watch_top_level()
            atexit.register(self._run_at_exit)

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def run(self):
        """Serves batches on stdin/stdout until end of input, then exits the process."""
        self._started = True
        if self._top_level is not None:
            self._top_level["stop"]()  # the loop must not run traced
        code = 0
        try:
            self._serve()
        except KeyboardInterrupt:
            code = 130
        except BaseException as error:  # the instance is broken: say why, then fail the batch
            import traceback

            traceback.print_exc()
            code = error.code if isinstance(error, SystemExit) and isinstance(error.code, int) else 1
        sys.stderr.flush()
        os._exit(code)

    def _run_at_exit(self):
        # The script's top level has run; start serving unless it failed or ran the loop.
        if self._started or hasattr(sys, "last_value"):
            return
        if self._top_level is not None and not self._top_level["completed"]:
            return
        self.run()


def _watch_top_level():
    """Notes whether the ``__main__`` script's top level completes without an exception.

    Interpreter exit runs the loop (an atexit handler) both after a normal end and after
    ``sys.exit``; this tells them apart. Tracing covers only the script's remaining
    top-level lines (other frames are not traced) and ends with it. Returns None when a
    tracer (a debugger, coverage) is already active: then only uncaught exceptions
    other than SystemExit keep the loop from starting.
    """
    if sys.gettrace() is not None:
        return None
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__main__"):
        frame = frame.f_back
    if frame is None:
        return None
    state = {"completed": False, "unwinding": False}

    def stop():
        if sys.gettrace() is trace_new_frames:
            sys.settrace(None)
        frame.f_trace = None

    def trace_top_level(frame, event, arg):
        if event == "exception":
            state["unwinding"] = True
        elif event == "line":
            state["unwinding"] = False  # the exception was handled at the top level
        elif event == "return":
            state["completed"] = not state["unwinding"]
            stop()
        return trace_top_level

    def trace_new_frames(frame, event, arg):
        return None  # only the script's top level is traced

    frame.f_trace = trace_top_level
    frame.f_trace_lines = True
    sys.settrace(trace_new_frames)
    state["stop"] = stop
    return state


class _Records(_Function):
    def _serve(self):
        from ._records import serve

        serve(self.fn, envelope=self.options.get("envelope", False))


class _Batches(_Function):
    def _serve(self):
        from ._arrow import serve

        serve(self.fn)


def _decorator(cls, fn, options):
    if fn is None:
        return lambda inner: cls(inner, options)
    return cls(fn, options)


def records(fn=None, *, envelope=False):
    """Marks ``fn(record) -> dict | list[dict] | None`` as the job's function.

    ``record`` is the parsed JSON of one input line; with ``envelope=True`` (for
    ``function.input = "envelope"``) it is an `Envelope` with the value and its key,
    headers, timestamp and origin. Return a dict for one row, a list of dicts for
    several, or None to drop the record. An exception rejects just this record: it
    goes to the dead-letter destination with the exception as the message.
    """
    return _decorator(_Records, fn, {"envelope": envelope})


def batches(fn=None):
    """Marks ``fn(table: pyarrow.Table) -> pyarrow.Table`` as the job's function.

    For ``encoding = "arrow"``: each batch arrives as one Table and the returned Table
    (or RecordBatch) is the answer. Reject single records with `sluice_fn.arrow.reject`.
    An exception fails the whole batch (the platform retries and splits it).
    """
    return _decorator(_Batches, fn, {})
