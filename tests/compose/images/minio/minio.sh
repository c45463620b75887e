#!/bin/sh
# `minio server DIR [--console-address ADDR]` on the JuiceFS gateway: a JuiceFS volume
# whose metadata (SQLite) and blocks live in DIR, served on :9000, top-level folders
# as buckets. There is no console.
set -eu
[ "${1:-}" = minio ] && shift
[ "${1:-}" = server ] || exec "$@"
dir=$2
mkdir -p "$dir"
if [ ! -s "$dir/meta.db" ]; then
    juicefs format --no-update --storage file --bucket "$dir/blocks/" "sqlite3://$dir/meta.db" minio >/dev/null
fi
exec juicefs gateway --multi-buckets --keep-etag --no-usage-report "sqlite3://$dir/meta.db" 0.0.0.0:9000
