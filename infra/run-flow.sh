#!/bin/sh
# Start one process of the Kairos feature flow under Bytewax, with recovery.
#
#   docker compose (one process):   run-flow.sh
#   Kubernetes StatefulSet of N:    KAIROS_FLOW_PROCESSES=N KAIROS_FLOW_SERVICE=<headless service> run-flow.sh
#   the learning flow (one process, its own recovery directory):
#       KAIROS_FLOW_IMPORT='flows.dataflow:learning_flow_from_env()' KAIROS_RECOVERY_DIR=/recovery-learners run-flow.sh
#
# In a cluster the process id is the pod ordinal (host name kairos-flow-3 -> 3) and the addresses
# are the pods' stable DNS names behind the headless service, port KAIROS_FLOW_PORT.
#
# Recovery partitions are created on first start. Bytewax needs the complete set across the
# cluster, not on every process: each process keeps partitions i with i mod N == its id on its own
# volume. Changing N later needs the partitions redistributed (or a fresh start).
#
# KAIROS_FLOW_DRY_RUN=1 prints the command instead of running it (the tests use this).
set -eu

recovery_dir="${KAIROS_RECOVERY_DIR:-/recovery}"
partitions="${KAIROS_RECOVERY_PARTITIONS:-4}"
processes="${KAIROS_FLOW_PROCESSES:-1}"
workers="${KAIROS_FLOW_WORKERS:-1}"
port="${KAIROS_FLOW_PORT:-2101}"
snapshot_s="${KAIROS_SNAPSHOT_INTERVAL_S:-10}"
backup_s="${KAIROS_BACKUP_INTERVAL_S:-0}"
flow="${KAIROS_FLOW_IMPORT:-flows.dataflow:flow_from_env()}"

host="$(hostname)"
if [ "$processes" -gt 1 ]; then
  process_id="${KAIROS_FLOW_PROCESS_ID:-${host##*-}}"
  case "$process_id" in
    ''|*[!0-9]*) echo "run-flow.sh: cannot tell the process id from host name '$host'; set KAIROS_FLOW_PROCESS_ID" >&2
                 exit 2 ;;
  esac
  if [ -z "${KAIROS_FLOW_ADDRESSES:-}" ]; then
    service="${KAIROS_FLOW_SERVICE:?set KAIROS_FLOW_SERVICE to the flow headless service}"
    stateful_set="${KAIROS_FLOW_STATEFULSET:-${host%-*}}"
    addresses=""
    i=0
    while [ "$i" -lt "$processes" ]; do
      addresses="${addresses:+$addresses;}${stateful_set}-${i}.${service}:${port}"
      i=$((i + 1))
    done
  else
    addresses="$KAIROS_FLOW_ADDRESSES"
  fi
else
  process_id=0
fi
if [ "$process_id" -ge "$processes" ]; then
  echo "run-flow.sh: process id $process_id is not below KAIROS_FLOW_PROCESSES=$processes" >&2
  exit 2
fi

mkdir -p "$recovery_dir"
if [ -z "$(ls -A "$recovery_dir")" ]; then
  # Build the share aside and move it in last, so a crash here leaves an empty directory.
  scratch="$(mktemp -d)"
  python -m bytewax.recovery "$scratch" "$partitions"
  i=0
  while [ "$i" -lt "$partitions" ]; do
    if [ $((i % processes)) -ne "$process_id" ]; then rm -f "$scratch/part-$i.sqlite3"; fi
    i=$((i + 1))
  done
  mv "$scratch"/part-*.sqlite3 "$recovery_dir"/ 2>/dev/null || {
    echo "run-flow.sh: process $process_id got no recovery partition: set KAIROS_RECOVERY_PARTITIONS >= $processes" >&2
    exit 2
  }
  rmdir "$scratch"
fi

set -- python -m bytewax.run "$flow" -r "$recovery_dir" -s "$snapshot_s" -b "$backup_s"
if [ "$processes" -gt 1 ]; then
  set -- "$@" -i "$process_id" -a "$addresses"
fi
if [ "$workers" -gt 1 ]; then
  set -- "$@" -w "$workers"
fi
if [ "${KAIROS_FLOW_DRY_RUN:-0}" = "1" ]; then
  printf '%s\n' "$*"
  exit 0
fi
exec "$@"
