#!/usr/bin/env bash
# The comparison benchmark (bench/compare.rs) in one command: builds the release binaries,
# makes the Python venv (target/py-venv, pinned versions from bench/python/requirements.txt)
# and runs every program on the same topic.
#
#   scripts/services.sh start && eval "$(scripts/services.sh env)"
#   bench/compare.sh [EVENTS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/py-venv
system_python=$(readlink -f /usr/bin/python3)
if [[ "$(readlink -f "$venv/bin/python3")" != "$system_python" ]] ||
    ! "$venv/bin/python3" -c "import pyarrow, orjson, confluent_kafka, pika" 2>/dev/null; then
    # Sluice runs the functions as a user of their own, which cannot enter root's home
    # (where a pyenv interpreter may live): the venv is made for the system's python3.
    rm -rf "$venv"
    python3 -m pip install --quiet --disable-pip-version-check virtualenv==21.15.14
    python3 -m virtualenv --quiet -p /usr/bin/python3 "$venv"
    "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check \
        -r bench/python/requirements.txt
fi
cargo build --release --bin sluice --example compare --example bare_kafka_parquet
exec target/release/examples/compare "$@"
