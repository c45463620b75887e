#!/usr/bin/env bash
# Keeps source files readable in one sitting: fails (exit 1, listing the offenders)
# when a tracked `*.rs` file has more than 600 lines before its first `#[cfg(test)]`
# line, i.e. more than 600 lines of non-test code when the unit tests sit at the
# bottom of the file. Files that are test code through and through — a module's
# `tests.rs` (compiled only under `#[cfg(test)] mod tests;`) and the end-to-end tests
# under a `tests/` folder — are not counted.

set -euo pipefail

limit=600
repo_root=$(git -C "$(dirname -- "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
cd "$repo_root"

offenders=0
while IFS= read -r -d '' file; do
    # A file deleted in the work tree but still tracked has nothing to measure.
    [[ -f "$file" ]] || continue
    case "$file" in
        tests/* | */tests/* | tests.rs | */tests.rs) continue ;;
    esac
    lines=$(awk '/^[[:space:]]*#\[cfg\(test\)\]/ { exit } { count++ } END { print count + 0 }' "$file")
    if ((lines > limit)); then
        echo "$file: $lines lines before its first #[cfg(test)] (limit $limit)"
        offenders=$((offenders + 1))
    fi
done < <(git ls-files -z -- '*.rs')

if ((offenders > 0)); then
    echo "check-file-size: $offenders file(s) over $limit lines of non-test code; split them by concept" >&2
    exit 1
fi
echo "check-file-size: every tracked .rs file has at most $limit lines before #[cfg(test)]"
