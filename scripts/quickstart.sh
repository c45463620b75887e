#!/usr/bin/env bash
# The embedded quickstart: no broker and no S3 needed. Drops the sample CSV and NDJSON
# files of jobs/quickstart into its inbox/ folder, runs the job until every file is
# processed (`sluice run --once`), then shows where the Parquet went and a few rows.
set -euo pipefail

repo_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$repo_root"
job=jobs/quickstart

echo "::: building sluice"
cargo build --quiet --bin sluice
sluice() { cargo run --quiet --bin sluice -- "$@"; }

rm -rf "$job/inbox" "$job/lake"
mkdir -p "$job/inbox"
cp "$job"/samples/* "$job/inbox/"
echo "::: dropped into $job/inbox: $(cd "$job/inbox" && echo *)"

echo "::: running the job until the inbox is processed"
SLUICE_LOG="${SLUICE_LOG:-warn}" sluice run --once "$job"

mapfile -t files < <(find "$job/lake" -name '*.parquet' | sort)
if ((${#files[@]} == 0)); then
    echo "quickstart: no Parquet was written under $job/lake" >&2
    exit 1
fi
echo "::: Parquet written under $job/lake (Hive-partitioned by event_date):"
printf '  %s\n' "${files[@]}"
echo "::: first rows of ${files[0]}:"
sluice head -n 5 "${files[0]}"
echo "::: done: drop more files into $job/inbox and run 'sluice run $job' to keep watching"
