#!/usr/bin/env bash
# Docker Engine for the compose e2e test: installs Debian's docker.io and
# docker-compose when missing, starts dockerd on a fixed private address range
# (so the test's containers live on predictable addresses of their own), and stops
# it again. Sourced by scripts/compose-e2e.sh; `engine.sh start|stop` works alone.
#
# dockerd keeps its images in its own data root, /var/lib/docker, across runs: the
# locally built images are that cache.

engine_dir=${SLUICE_COMPOSE_STATE:-/var/lib/sluice-compose}
engine_sock=/var/run/docker.sock
# Debian's client (20.10) matches Debian's engine and has BuildKit built in.
docker_cli=/usr/bin/docker

engine_log() { echo "compose-e2e: $*" >&2; }

engine_install() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if ((${#missing[@]})); then
        engine_log "installing ${missing[*]} from Debian's packages"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null ||
            { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
    fi
}

engine_up() {
    "$docker_cli" -H "unix://$engine_sock" info >/dev/null 2>&1
}

engine_start() {
    engine_install
    if engine_up; then
        engine_log "dockerd already running"
        return 0
    fi
    mkdir -p "$engine_dir"
    engine_log "starting dockerd (log $engine_dir/dockerd.log)"
    # 10.213.0.0/24 for the default bridge, compose networks from 10.214.0.0/16.
    setsid dockerd --host "unix://$engine_sock" --bip 10.213.0.1/24 \
        --default-address-pool base=10.214.0.0/16,size=24 \
        --pidfile "$engine_dir/dockerd.pid" >"$engine_dir/dockerd.log" 2>&1 </dev/null &
    local i
    for ((i = 0; i < 120; i++)); do
        engine_up && return 0
        sleep 0.5
    done
    engine_log "dockerd did not answer within 60 s; its log:"
    tail -n 30 "$engine_dir/dockerd.log" >&2
    return 1
}

engine_stop() {
    [[ -f "$engine_dir/dockerd.pid" ]] || return 0
    local pid
    pid=$(cat "$engine_dir/dockerd.pid")
    kill "$pid" 2>/dev/null || return 0
    local i
    for ((i = 0; i < 60; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    # The default bridge outlives dockerd; the next start makes it again.
    ip link delete docker0 2>/dev/null || true
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    case "${1:-}" in
    start) engine_start ;;
    stop) engine_stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
    esac
fi
