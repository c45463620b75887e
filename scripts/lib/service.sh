# Helpers shared by scripts/services.sh and scripts/ceph.sh (sourced, not run): messages,
# the start/stop lock, and the bookkeeping of daemons started in process groups of their
# own. The sourcing script sets:
#   log_prefix   the word messages start with ("services", "ceph")
#   lock_file    the lock every checkout on the machine shares
#   state_dir    where each daemon NAME has NAME.pid
# and defines `recorded_pid NAME BINARY` (prints NAME's pid when that process still runs
# the script's BINARY; see `recorded_pid_if`).

say() { printf '%s: %s\n' "$log_prefix" "$*"; }
die() {
    printf '%s: error: %s\n' "$log_prefix" "$*" >&2
    exit 1
}

# Exits the current (sub)shell with 0 when something accepts TCP connections on host:port.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

with_lock() {
    exec 9>"$lock_file"
    flock -w 300 9 || die "another ${0##*/} holds $lock_file for more than 300 s"
}

# Prints the pid recorded for daemon $1 when that process is alive and its executable
# passes check $2 (called as `$2 EXECUTABLE "${@:3}"`), so a recycled pid is never taken
# for the daemon; fails otherwise.
recorded_pid_if() {
    local pidfile="$state_dir/$1.pid" check=$2 pid exe
    [[ -f "$pidfile" ]] || return 1
    pid=$(<"$pidfile")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
    exe=${exe% (deleted)}
    "$check" "$exe" "${@:3}" || return 1
    process_alive "$pid" || return 1
    printf '%s\n' "$pid"
}

# Succeeds while process $1 exists and is not a zombie.
process_alive() {
    local line state
    { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
    read -r state _ <<<"${line##*) }"
    [[ "$state" != Z ]]
}

# Succeeds while process group $1 has a member that is not a zombie. Reads /proc
# directly: minimal images have no procps, and a zombie left to a non-reaping pid 1
# must not count as running.
group_alive() {
    local stat line state pgrp
    for stat in /proc/[0-9]*/stat; do
        { read -r line <"$stat"; } 2>/dev/null || continue
        read -r state _ pgrp _ <<<"${line##*) }"
        [[ "$pgrp" == "$1" && "$state" != Z ]] && return 0
    done
    return 1
}

# Prints the process group of process $1.
process_group() {
    local line pgrp
    { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
    read -r _ _ pgrp _ <<<"${line##*) }"
    printf '%s\n' "$pgrp"
}

# Stops daemon $1 (running executable $2) when it runs from this checkout: SIGTERM to
# its process group, SIGKILL after 20 s, then forgets its pid.
stop_recorded() {
    local name=$1 binary=$2 pid
    if ! pid=$(recorded_pid "$name" "$binary"); then
        rm -f "$state_dir/$name.pid"
        say "$name: not running from this checkout"
        return
    fi
    # A daemon is launched as the leader of its own process group: stop the group, or
    # only the process should it have left its group.
    local -a target=(-"$pid") alive=(group_alive "$pid")
    if [[ "$(process_group "$pid")" != "$pid" ]]; then
        target=("$pid")
        alive=(process_alive "$pid")
    fi
    kill -TERM -- "${target[@]}" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while "${alive[@]}" && ((SECONDS < deadline)); do sleep 0.1; done
    if "${alive[@]}"; then
        say "$name: still running 20 s after SIGTERM, sending SIGKILL"
        kill -KILL -- "${target[@]}" 2>/dev/null || true
        deadline=$((SECONDS + 10))
        while "${alive[@]}" && ((SECONDS < deadline)); do sleep 0.1; done
        if "${alive[@]}"; then die "$name (pid $pid) survived SIGKILL"; fi
    fi
    rm -f "$state_dir/$name.pid"
    say "$name: stopped (pid $pid)"
}

# Runs verb $2 of the sourcing script with its cmd_* functions (install under the lock);
# anything else prints lines $1 (a sed range) of the script's header as its usage.
run_verb() {
    case "${2:-}" in
    install)
        mkdir -p "$state_dir"
        with_lock
        cmd_install
        ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *)
        sed -n "$1p" "${BASH_SOURCE[1]}" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
    esac
}
