"""The functions `sluice init` writes (src/init/) work with this SDK."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SDK

TEMPLATES = Path(SDK).parent / "src" / "init"


def test_the_python_templates_own_test_passes(tmp_path):
    for name in ("transform.py", "test_transform.py"):
        shutil.copy(TEMPLATES / "python" / name, tmp_path / name)
    env = dict(os.environ, PYTHONPATH=SDK)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, timeout=60,
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert b"1 passed" in done.stdout


def test_the_python_arrow_template_rejects_what_it_cannot_convert(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    shutil.copy(TEMPLATES / "python-arrow" / "transform.py", tmp_path / "transform.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("transform", None)
    import transform

    from sluice_fn.testing import run_table

    events = [json.loads(line) for line in (TEMPLATES / "python-arrow" / "events.ndjson").read_text().splitlines()]
    table = pa.Table.from_pylist(events)
    rows, errors = run_table(transform.transform, table)
    sys.modules.pop("transform", None)
    assert rows.column("user_id").to_pylist() == [7, 7, 12, 12]
    assert rows.column("action").to_pylist() == ["view", "add_to_cart", "view", "purchase"]
    assert errors == {4: "user is not a number"}
