import os
import subprocess
import sys
import textwrap

import pytest

from sluice_fn._codec import orjson

SDK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ["json"] + (["orjson"] if orjson is not None else [])


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def function_script(tmp_path):
    """Writes a function script; returns a runner ``(stdin bytes, mode) -> CompletedProcess``."""

    def write(source, *, stdlib_only=False):
        path = tmp_path / "transform.py"
        path.write_text(textwrap.dedent(source))

        def run(stdin, mode, timeout=30):
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": SDK, "SLUICE_MODE": mode}
            flags = ["-S"] if stdlib_only else []  # -S: no site-packages, so no orjson
            return subprocess.run(
                [sys.executable, *flags, str(path)],
                input=stdin,
                env=env,
                cwd=tmp_path,
                capture_output=True,
                timeout=timeout,
            )

        return run

    return write
