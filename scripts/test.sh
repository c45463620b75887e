#!/usr/bin/env bash
# The project's one test command. Brings up the test services (scripts/services.sh
# start, and the Ceph RADOS Gateway for bucket notifications with scripts/ceph.sh
# start), exports their settings (`env` of both), then runs every test target with every
# feature on (the `*-tests` features let the tests that need a service run; plain
# `cargo test` runs only the ones that need nothing but this machine) and afterwards the
# doc tests of the whole workspace, then the Python SDK's tests
# (scripts/test-python.sh: pytest in a venv under .services/), then the docker-compose
# stack end to end (scripts/compose-e2e.sh). Extra arguments go to
# both cargo invocations, e.g. `scripts/test.sh kafka -- --nocapture`.
#
# Exit status: cargo's (the doc tests only run when the other targets pass), else
# pytest's, else the compose test's.
# Services found running are left alone; services this run started stay running for
# the next run and are named at the end (stop them with `scripts/services.sh stop` and
# `scripts/ceph.sh stop`).

set -euo pipefail

repo_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$repo_root"

start_output=$(mktemp)
trap 'rm -f "$start_output"' EXIT

scripts/services.sh start | tee "$start_output"
eval "$(scripts/services.sh env)"
scripts/ceph.sh start | tee -a "$start_output"
eval "$(scripts/ceph.sh env)"

started=$(sed -n 's/^\(services\|ceph\): \([a-z0-9]*\): started .*/\2/p' "$start_output" | paste -sd' ' -)
found=$(sed -n 's/^\(services\|ceph\): \([a-z0-9]*\): already .*/\2/p' "$start_output" | paste -sd' ' -)

status=0
cargo test --workspace --all-targets --all-features --no-fail-fast "$@" || status=$?
if ((status == 0)); then
    cargo test --workspace --doc --all-features "$@" || status=$?
fi
python_status=0
scripts/test-python.sh || python_status=$?
if ((status == 0)); then
    status=$python_status
fi
# docker-compose.yml and the Dockerfile, end to end (installs and starts Docker Engine
# when missing; see the script's header). Only in a whole run (no extra arguments);
# SLUICE_SKIP_COMPOSE_E2E=1 skips it.
compose_status=0
if (($# == 0)) && [[ "${SLUICE_SKIP_COMPOSE_E2E:-0}" != 1 ]]; then
    scripts/compose-e2e.sh || compose_status=$?
fi
if ((status == 0)); then
    status=$compose_status
fi

echo "test services: kafka at $SLUICE_TEST_KAFKA_BROKERS, s3 at $SLUICE_TEST_S3_ENDPOINT (bucket $SLUICE_TEST_S3_BUCKET), rgw at $SLUICE_TEST_RGW_ENDPOINT (bucket $SLUICE_TEST_RGW_BUCKET)"
if [[ -n "$started" ]]; then
    echo "test services: started by this run and left running: $started (scripts/services.sh stop and scripts/ceph.sh stop stop them)"
fi
if [[ -n "$found" ]]; then
    echo "test services: were already running, left alone: $found"
fi
exit "$status"
