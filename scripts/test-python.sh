#!/usr/bin/env bash
# The Python SDK's tests (python/tests) with pytest, in a venv under .services/ that
# this script creates on first use (pytest, orjson and pyarrow from PyPI, pinned in
# scripts/python-test-requirements.txt). Extra arguments go to pytest. Run by
# scripts/test.sh; works as root on a fresh machine with python3 and network access to
# PyPI.

set -euo pipefail

repo_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
venv_dir="$repo_root/.services/python-venv"
requirements="$repo_root/scripts/python-test-requirements.txt"
python=${SLUICE_SERVICES_PYTHON:-python3}
stamp=$(sha256sum "$requirements" | cut -d' ' -f1)

if [[ ! -x "$venv_dir/bin/python" || "$(cat "$venv_dir/.sluice-installed" 2>/dev/null)" != "$stamp" ]]; then
    echo "test-python: creating $venv_dir"
    rm -rf "$venv_dir"
    mkdir -p "$repo_root/.services"
    if "$python" -m venv "$venv_dir" >"$repo_root/.services/python-venv.log" 2>&1; then
        pip=("$venv_dir/bin/python" -m pip)
    else
        # Debian's python3 without python3-venv has no ensurepip: make a venv without
        # pip and let the interpreter's own pip install into it.
        rm -rf "$venv_dir"
        "$python" -m venv --without-pip "$venv_dir"
        pip=("$python" -m pip --python "$venv_dir/bin/python")
    fi
    "${pip[@]}" install --no-input --disable-pip-version-check --quiet -r "$requirements"
    echo "$stamp" >"$venv_dir/.sluice-installed"
fi

cd "$repo_root/python"
exec "$venv_dir/bin/python" -m pytest -q -p no:cacheprovider "$@"
