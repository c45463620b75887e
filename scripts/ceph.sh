#!/usr/bin/env bash
# A real S3 server that sends bucket notifications, for the bucket-notification tests:
# Ceph RADOS Gateway 16.2 from Debian's own packages, unpacked into .services/ceph
# (nothing is installed system-wide), as one monitor, one in-memory OSD and radosgw
# on 127.0.0.1:7480.
#
#   scripts/ceph.sh install   download the Debian packages and unpack them into .services/ceph/root
#   scripts/ceph.sh start     install if needed, start what is not running, wait until S3 answers
#   scripts/ceph.sh stop      stop the daemons this checkout started
#   scripts/ceph.sh status    what runs and whether it answers (exit 3 when something does not)
#   scripts/ceph.sh env       export lines for the tests: eval "$(scripts/ceph.sh env)"
#
# Start creates the S3 user `sluice` (secret `sluice-secret-key`) and the bucket
# `sluice-notify`. Notifications are set up by the tests themselves: an SNS topic on the
# same endpoint whose `push-endpoint` is an HTTP (or amqp://) address of theirs, then
# PutBucketNotificationConfiguration on the bucket (scripts/ceph_probe.py shows the calls).
#
# Pointing the tests at another server: set SLUICE_TEST_RGW_ENDPOINT (with
# SLUICE_TEST_RGW_BUCKET, SLUICE_TEST_RGW_ACCESS_KEY_ID, SLUICE_TEST_RGW_SECRET_ACCESS_KEY,
# SLUICE_TEST_RGW_REGION); nothing is then started here.
#
# Layout under .services/ceph (gitignored): root/ the unpacked packages, cluster/ the
# configuration, monitor and OSD data, logs and admin sockets (emptied at each start, so
# every start begins clean; the OSD keeps objects in memory), *.pid and *.out the daemons'
# pids and console output. Start and stop are idempotent and serialized by a lock shared
# by every checkout on the machine (the ports are the machine's).

set -euo pipefail

repo_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
state_dir="$repo_root/.services/ceph"
root_dir="$state_dir/root"
debs_dir="$state_dir/debs"
cluster_dir="$state_dir/cluster"
conf="$cluster_dir/ceph.conf"
probe="$repo_root/scripts/ceph_probe.py"
python=${SLUICE_SERVICES_PYTHON:-python3}
ready_timeout=${SLUICE_CEPH_TIMEOUT:-90}
lock_file="${TMPDIR:-/tmp}/sluice-test-ceph.lock"

# What radosgw, ceph-mon and ceph-osd need; apt adds whatever libraries the machine
# lacks. Packages that only bring disk tools are downloaded (apt insists) but not
# unpacked: the daemons never run them.
packages=(radosgw ceph-mon ceph-osd ceph-common)
not_unpacked=(sudo lvm2 dmeventd parted smartmontools nvme-cli xfsprogs gdisk hdparm
    cryptsetup-bin dmidecode)
lib_dir="$root_dir/usr/lib/x86_64-linux-gnu"

rgw_ip=127.0.0.1
rgw_port=7480
rgw_endpoint="http://$rgw_ip:$rgw_port"
mon_v2_port=3300
mon_v1_port=6789
access_key=sluice
secret_key=sluice-secret-key
region=us-east-1
bucket=${SLUICE_TEST_RGW_BUCKET:-sluice-notify}

# An override naming the local address is what `env` printed: the local server is still
# the one to run.
rgw_external() { [[ -n "${SLUICE_TEST_RGW_ENDPOINT:-}" && "${SLUICE_TEST_RGW_ENDPOINT%/}" != "$rgw_endpoint" ]]; }

log_prefix=ceph
# shellcheck source=lib/service.sh
source "$repo_root/scripts/lib/service.sh"

# Runs a command from the unpacked packages with their libraries, plugins and Python
# modules.
in_root() {
    env LD_LIBRARY_PATH="$lib_dir:$root_dir/lib/x86_64-linux-gnu:$lib_dir/ceph${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        PYTHONPATH="$root_dir/usr/lib/python3/dist-packages${PYTHONPATH:+:$PYTHONPATH}" \
        PATH="$root_dir/usr/bin:$root_dir/usr/sbin:$PATH" \
        CEPH_CONF="$conf" \
        "$@"
}

# --- install -------------------------------------------------------------------

installed_stamp() { printf 'packages=%s; not unpacked=%s\n' "${packages[*]}" "${not_unpacked[*]}"; }

is_installed() {
    local binary
    [[ -f "$root_dir/.sluice-installed" && "$(cat "$root_dir/.sluice-installed")" == "$(installed_stamp)" ]] ||
        return 1
    for binary in radosgw radosgw-admin ceph-mon ceph-osd monmaptool ceph; do
        [[ -x "$root_dir/usr/bin/$binary" ]] || return 1
    done
}

# Prints the shared libraries a program of the unpacked tree cannot find.
missing_libraries() { in_root ldd "$1" 2>&1 | sed -n 's/^[[:space:]]*\([^ ]*\) => not found$/\1/p' | sort -u; }

apt_update() {
    apt-get update -q -o DPkg::Lock::Timeout=300 >"$state_dir/apt-update.log" 2>&1 ||
        die "apt-get update failed (see $state_dir/apt-update.log)"
}

# --download-only resolves against what the machine has and only fetches .debs into our
# own cache folder; dpkg never runs, nothing is installed.
download_debs() {
    apt-get install --download-only --no-install-recommends -y -q \
        -o Dir::Cache::archives="$debs_dir" -o DPkg::Lock::Timeout=300 \
        "${packages[@]}" >"$state_dir/apt-download.log" 2>&1
}

download_failed() {
    tail -n 20 "$state_dir/apt-download.log" >&2
    die "apt-get could not download ${packages[*]} (full output in $state_dir/apt-download.log)"
}

cmd_install() {
    if is_installed; then
        say "install: already installed in $root_dir"
        return
    fi
    local started=$SECONDS
    command -v apt-get >/dev/null || die "install needs apt-get (Debian 12): this machine has none"
    command -v dpkg-deb >/dev/null || die "install needs dpkg-deb: this machine has none"
    # A fresh machine may have no package lists at all.
    local updated=false
    if ! apt-cache show radosgw >/dev/null 2>&1; then
        say "install: no package list names radosgw, running apt-get update"
        apt_update
        updated=true
    fi
    rm -rf "$debs_dir" "$root_dir"
    mkdir -p "$debs_dir/partial" "$root_dir"
    say "install: downloading ${packages[*]} and the libraries this machine lacks (no system install)"
    if ! download_debs; then
        # Old package lists name versions the archive no longer has.
        [[ "$updated" == false ]] || download_failed
        say "install: download failed, running apt-get update and trying again"
        apt_update
        download_debs || download_failed
    fi
    # A package the machine already has is not downloaded: fetch the daemons' own
    # packages anyway so the tree is complete; their libraries are then the machine's.
    local package
    for package in "${packages[@]}"; do
        compgen -G "$debs_dir/${package}_*.deb" >/dev/null && continue
        (cd "$debs_dir" && apt-get download -q "$package" >>"$state_dir/apt-download.log" 2>&1) ||
            die "apt-get download $package failed (see $state_dir/apt-download.log)"
    done
    local deb name count=0
    for deb in "$debs_dir"/*.deb; do
        name=$(dpkg-deb --field "$deb" Package)
        if [[ " ${not_unpacked[*]} " == *" $name "* ]]; then
            continue
        fi
        dpkg-deb --extract "$deb" "$root_dir"
        count=$((count + 1))
    done
    local download_size
    download_size=$(du -sh "$debs_dir" | cut -f1)
    rm -rf "$debs_dir"
    local binary missing
    for binary in radosgw radosgw-admin ceph-mon ceph-osd; do
        missing=$(missing_libraries "$root_dir/usr/bin/$binary")
        [[ -z "$missing" ]] || die "$binary cannot find $(paste -sd' ' - <<<"$missing") after the unpack"
    done
    in_root "$root_dir/usr/bin/radosgw" --version >/dev/null 2>&1 ||
        die "$root_dir/usr/bin/radosgw does not run on this machine"
    installed_stamp >"$root_dir/.sluice-installed"
    say "install: done in $((SECONDS - started)) s ($count packages, $download_size downloaded, $(du -sh "$root_dir" | cut -f1) unpacked in $root_dir)"
}

# --- process bookkeeping -------------------------------------------------------

# Prints the pid recorded for daemon $1 when that process is alive and still runs the
# unpacked executable $2; fails otherwise.
recorded_pid() { recorded_pid_if "$1" unpacked_executable "$2"; }
unpacked_executable() { [[ "$1" == "$root_dir/usr/bin/$2" ]]; }

# Starts daemon $1 ("$@" after it) in its own session (so its process group can be
# stopped as a whole), detached from stdin, console output in $state_dir/$1.out.
launch() {
    local name=$1
    shift
    # fd 9 is the start/stop lock: the daemon must not keep holding it.
    (cd "$cluster_dir" && exec setsid env \
        LD_LIBRARY_PATH="$lib_dir:$root_dir/lib/x86_64-linux-gnu:$lib_dir/ceph" \
        CEPH_CONF="$conf" \
        "$@" >"$state_dir/$name.out" 2>&1 </dev/null 9>&-) &
    printf '%s\n' "$!" >"$state_dir/$name.pid"
}

# Fails with the daemon's last log lines when daemon $1 (pid $2) has exited.
check_alive() {
    process_alive "$2" && return 0
    rm -f "$state_dir/$1.pid"
    tail -n 20 "$state_dir/$1.out" >&2 || true
    tail -n 30 "$cluster_dir/log/$3.log" >&2 2>/dev/null || true
    die "$1 exited during start-up (logs: $state_dir/$1.out, $cluster_dir/log/$3.log)"
}

# --- start ---------------------------------------------------------------------

probe_rgw() { "$python" "$probe" ready "$rgw_endpoint" "$bucket" "$access_key" "$secret_key" "$region" "$@"; }

# Runs the ceph command-line tool against the local monitor, bounded in time. Its Python
# modules are built for Debian's own python3; another 3.11 also loads them.
ceph_cli() {
    local interpreter=/usr/bin/python3
    [[ -x "$interpreter" ]] || interpreter=$python
    in_root timeout 30 "$interpreter" "$root_dir/usr/bin/ceph" --connect-timeout 20 "$@"
}

write_conf() {
    local fsid=$1
    mkdir -p "$cluster_dir"/{mon,osd,log,run,crash,rgw}
    cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$mon_v2_port,v1:127.0.0.1:$mon_v1_port]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
keyring = $cluster_dir/keyring
run dir = $cluster_dir/run
admin socket = $cluster_dir/run/\$name.asok
log file = $cluster_dir/log/\$name.log
mon cluster log file = $cluster_dir/log/cluster.log
crash dir = $cluster_dir/crash
log to stderr = false
err to stderr = true
osd class dir = $lib_dir/rados-classes
erasure code dir = $lib_dir/ceph/erasure-code
plugin dir = $lib_dir/ceph
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
# Every pool radosgw creates waits for a monitor proposal: propose at once instead of
# once a second (start-up takes half as long).
paxos propose interval = 0.05
paxos min wait = 0.01
# radosgw starts while the OSD boots; an operation sent before the OSD is in the map
# waits for the client's next tick to ask for a newer map (every 5 s by default).
objecter tick interval = 0.5

[mon]
mon data = $cluster_dir/mon/\$cluster-\$id

[osd]
osd data = $cluster_dir/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = 2147483648

[client.rgw]
# radosgw does not get past its monitor handshake without this.
ms mon client mode = crc
rgw frontends = beast endpoint=$rgw_ip:$rgw_port
rgw data = $cluster_dir/rgw
rgw thread pool size = 64
# The OSD keeps objects in memory: collect the tails of deleted large objects after a
# minute, not two hours.
rgw gc obj min wait = 60
rgw gc processor period = 60
EOF
}

start_cluster() {
    local started=$SECONDS fsid osd_uuid pid
    fsid=$(cat /proc/sys/kernel/random/uuid)
    osd_uuid=$(cat /proc/sys/kernel/random/uuid)
    rm -rf "$cluster_dir"
    write_conf "$fsid"
    # An empty keyring: with auth none nothing is checked, but the tools want a file.
    : >"$cluster_dir/keyring"

    in_root monmaptool --create --fsid "$fsid" \
        --addv a "[v2:127.0.0.1:$mon_v2_port,v1:127.0.0.1:$mon_v1_port]" \
        "$cluster_dir/monmap" >"$state_dir/mkfs.out" 2>&1 ||
        die "monmaptool failed (see $state_dir/mkfs.out)"
    in_root ceph-mon --mkfs -i a --monmap "$cluster_dir/monmap" >>"$state_dir/mkfs.out" 2>&1 ||
        die "ceph-mon --mkfs failed (see $state_dir/mkfs.out)"
    launch mon "$root_dir/usr/bin/ceph-mon" -f -i a
    local mon_pid
    mon_pid=$(<"$state_dir/mon.pid")

    # Registers OSD 0 with the monitor (this also waits for the monitor to answer).
    local osd_id
    osd_id=$(ceph_cli osd new "$osd_uuid" 2>>"$state_dir/mkfs.out") || {
        check_alive mon "$mon_pid" mon.a
        die "the monitor did not register the OSD (see $state_dir/mkfs.out, $cluster_dir/log/mon.a.log)"
    }
    [[ "$osd_id" == 0 ]] || die "the monitor gave the OSD id '$osd_id', expected 0"
    mkdir -p "$cluster_dir/osd/ceph-0"
    in_root ceph-osd --mkfs -i 0 --osd-uuid "$osd_uuid" >>"$state_dir/mkfs.out" 2>&1 ||
        die "ceph-osd --mkfs failed (see $state_dir/mkfs.out, $cluster_dir/log/osd.0.log)"
    launch osd "$root_dir/usr/bin/ceph-osd" -f -i 0
    local osd_pid
    osd_pid=$(<"$state_dir/osd.pid")

    launch rgw "$root_dir/usr/bin/radosgw" -f -n client.rgw
    local rgw_pid
    rgw_pid=$(<"$state_dir/rgw.pid")

    # radosgw-admin waits for the OSD like radosgw does; creating the user while
    # radosgw starts saves a few seconds.
    local remaining=$((started + ready_timeout - SECONDS))
    ((remaining > 0)) || remaining=1
    if ! in_root timeout "$remaining" radosgw-admin user info --uid "$access_key" >/dev/null 2>&1; then
        remaining=$((started + ready_timeout - SECONDS))
        ((remaining > 0)) || remaining=1
        in_root timeout "$remaining" radosgw-admin user create --uid "$access_key" \
            --display-name "sluice tests" --access-key "$access_key" --secret-key "$secret_key" \
            >"$state_dir/user.out" 2>&1 || {
            check_alive mon "$mon_pid" mon.a
            check_alive osd "$osd_pid" osd.0
            die "radosgw-admin user create failed (see $state_dir/user.out)"
        }
    fi

    local deadline=$((started + ready_timeout))
    while ! probe_rgw --create-bucket >/dev/null 2>&1; do
        check_alive mon "$mon_pid" mon.a
        check_alive osd "$osd_pid" osd.0
        check_alive rgw "$rgw_pid" client.rgw
        if ((SECONDS >= deadline)); then
            probe_rgw --create-bucket >&2 || true
            die "radosgw (pid $rgw_pid) did not answer within $ready_timeout s (logs in $cluster_dir/log; scripts/ceph.sh stop stops it)"
        fi
        sleep 0.2
    done
    say "rgw: started (mon pid $mon_pid, osd pid $osd_pid, radosgw pid $rgw_pid) on $rgw_endpoint, bucket $bucket, ready in $((SECONDS - started)) s"
}

cmd_start() {
    if rgw_external; then
        say "rgw: not started, the tests use SLUICE_TEST_RGW_ENDPOINT=$SLUICE_TEST_RGW_ENDPOINT"
        return
    fi
    mkdir -p "$state_dir"
    with_lock
    local mon_pid osd_pid rgw_pid
    if rgw_pid=$(recorded_pid rgw radosgw) && mon_pid=$(recorded_pid mon ceph-mon) &&
        osd_pid=$(recorded_pid osd ceph-osd); then
        if probe_rgw --create-bucket >/dev/null 2>&1; then
            say "rgw: already running (radosgw pid $rgw_pid) on $rgw_endpoint, bucket $bucket"
            return
        fi
        say "rgw: daemons run but S3 does not answer, restarting them"
    fi
    # A partial set (one daemon died) is restarted from scratch.
    stop_recorded rgw radosgw >/dev/null
    stop_recorded osd ceph-osd >/dev/null
    stop_recorded mon ceph-mon >/dev/null
    if port_open "$rgw_ip" "$rgw_port"; then
        if probe_rgw >/dev/null 2>&1; then
            say "rgw: already answering on $rgw_endpoint with bucket $bucket (not started by this checkout, left alone)"
            return
        fi
        die "$rgw_ip:$rgw_port is taken by a process that is not an S3 server with bucket $bucket and the test credentials ($(probe_rgw 2>&1 || true)); stop it, or set SLUICE_TEST_RGW_ENDPOINT to a server to test against"
    fi
    local port
    for port in "$mon_v2_port" "$mon_v1_port"; do
        if port_open 127.0.0.1 "$port"; then
            die "127.0.0.1:$port (the local Ceph monitor's port) is taken by another process; stop it, or set SLUICE_TEST_RGW_ENDPOINT to a server to test against"
        fi
    done
    is_installed || cmd_install
    start_cluster
}

cmd_stop() {
    mkdir -p "$state_dir"
    with_lock
    # The gateway first, the monitor last: each still finds the daemons it talks to.
    stop_recorded rgw radosgw
    stop_recorded osd ceph-osd
    stop_recorded mon ceph-mon
}

cmd_status() {
    local healthy=0 name binary pid answer
    if rgw_external; then
        say "rgw: external, SLUICE_TEST_RGW_ENDPOINT=$SLUICE_TEST_RGW_ENDPOINT"
        return 0
    fi
    for name in mon:ceph-mon osd:ceph-osd rgw:radosgw; do
        binary=${name#*:}
        name=${name%%:*}
        if pid=$(recorded_pid "$name" "$binary"); then
            say "$name: running (pid $pid, started by this checkout)"
        else
            say "$name: not running from this checkout"
        fi
    done
    if answer=$(probe_rgw 2>&1); then
        say "rgw: answers: $answer"
    else
        healthy=3
        say "rgw: does not answer: $answer"
    fi
    return "$healthy"
}

cmd_env() {
    if rgw_external; then
        printf 'export %s=%q\n' \
            SLUICE_TEST_RGW_ENDPOINT "$SLUICE_TEST_RGW_ENDPOINT" \
            SLUICE_TEST_RGW_BUCKET "$bucket" \
            SLUICE_TEST_RGW_ACCESS_KEY_ID "${SLUICE_TEST_RGW_ACCESS_KEY_ID:-$access_key}" \
            SLUICE_TEST_RGW_SECRET_ACCESS_KEY "${SLUICE_TEST_RGW_SECRET_ACCESS_KEY:-$secret_key}" \
            SLUICE_TEST_RGW_REGION "${SLUICE_TEST_RGW_REGION:-$region}"
        return
    fi
    printf 'export %s=%q\n' \
        SLUICE_TEST_RGW_ENDPOINT "$rgw_endpoint" \
        SLUICE_TEST_RGW_BUCKET "$bucket" \
        SLUICE_TEST_RGW_ACCESS_KEY_ID "$access_key" \
        SLUICE_TEST_RGW_SECRET_ACCESS_KEY "$secret_key" \
        SLUICE_TEST_RGW_REGION "$region"
}

run_verb 2,11 "$@"
