#!/usr/bin/env bash
# Nightly re-run of every city config in a folder: a thin wrapper over `urbanfusion batch`, which
# isolates the cities, locks each output folder (an overlapping night waits, or with --no-wait
# skips), publishes each city's outputs as one set and writes a summary. Exit status: 0 when every
# city succeeded, 1 otherwise (2 for a bad folder).
#
#   workflows/nightly.sh CONFIG_DIR [LOG_DIR] [batch options, e.g. --jobs 2 --no-wait]
#
# Schedule it with the systemd timer in workflows/systemd/ or the line in workflows/crontab.example.
set -uo pipefail
config_dir=${1:?usage: nightly.sh CONFIG_DIR [LOG_DIR] [batch options]}
log_dir=${2:-${config_dir}/logs}
shift $(($# < 2 ? $# : 2))
here=$(cd "$(dirname "$0")/.." && pwd)
urbanfusion=${URBANFUSION:-${here}/.venv/bin/urbanfusion}
mkdir -p "$log_dir"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
"$urbanfusion" batch "$config_dir" --report "$log_dir/batch-$stamp.json" "$@" \
  2>&1 | tee "$log_dir/batch-$stamp.log"
exit "${PIPESTATUS[0]}"
