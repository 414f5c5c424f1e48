#!/usr/bin/env bash
# Nightly re-run of every city config in a folder: each run is independent, outputs replace the
# previous night's atomically, and a failed city does not stop the others. Exit status is the
# number of cities that failed (0 = all good), so a scheduler can alert on it.
#
#   workflows/nightly.sh CONFIG_DIR [LOG_DIR]
#
# Schedule it with cron (see workflows/crontab.example) or any scheduler that runs a command.
set -uo pipefail
config_dir=${1:?usage: nightly.sh CONFIG_DIR [LOG_DIR]}
log_dir=${2:-${config_dir}/logs}
here=$(cd "$(dirname "$0")/.." && pwd)
urbanfusion=${URBANFUSION:-${here}/.venv/bin/urbanfusion}
mkdir -p "$log_dir"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
failed=0
shopt -s nullglob
for config in "$config_dir"/*.yaml; do
  name=$(basename "$config" .yaml)
  if "$urbanfusion" run "$config" --quiet >"$log_dir/$name-$stamp.log" 2>&1; then
    echo "$stamp ok     $name"
  else
    echo "$stamp FAILED $name: $(tail -n 1 "$log_dir/$name-$stamp.log")"
    failed=$((failed + 1))
  fi
done
exit "$failed"
