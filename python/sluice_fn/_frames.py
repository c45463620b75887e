"""Reading batches from stdin and writing answers to stdout, in big pieces.

Stdin is read with ``os.read`` in chunks of `CHUNK` bytes (no per-line syscalls);
in stream mode a batch ends at its empty line, i.e. at the first ``\\n\\n`` (records are
never empty lines) or at a ``\\n`` where a batch begins (an empty batch). Answers go
out with one ``write`` per batch.
"""

import os

CHUNK = 1 << 20


class BatchReader:
    """Splits a byte stream into stream-mode batches; yields each batch's bytes.

    A batch's bytes are its record lines, each ending in ``\\n``, without the empty line.
    """

    def __init__(self, fd=0, chunk=CHUNK, read=os.read):
        self._fd = fd
        self._chunk = chunk
        self._read = read

    def __iter__(self):
        pending = []  # earlier chunks of the current batch
        buffer = b""
        while True:
            if buffer:
                if not pending and buffer[0:1] == b"\n":
                    yield b""
                    buffer = buffer[1:]
                    continue
                if pending and buffer[0:1] == b"\n" and pending[-1][-1:] == b"\n":
                    yield b"".join(pending)
                    pending = []
                    buffer = buffer[1:]
                    continue
                end = buffer.find(b"\n\n")
                if end >= 0:
                    pending.append(buffer[: end + 1])
                    yield b"".join(pending)
                    pending = []
                    buffer = buffer[end + 2 :]
                    continue
                pending.append(buffer)
            buffer = self._read(self._fd, self._chunk)
            if not buffer:
                if pending and any(pending):
                    raise EOFError("standard input ended in the middle of a batch (no empty line after its records)")
                return


def read_all(fd=0, chunk=CHUNK, read=os.read):
    """Everything on stdin until end of file (exec mode)."""
    chunks = []
    while True:
        data = read(fd, chunk)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def write_all(fd, data):
    """Writes all of ``data`` to ``fd`` (a pipe may take it in several pieces)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
