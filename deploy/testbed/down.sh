#!/usr/bin/env bash
# Stops only the processes that up.sh started (pid files under /var/tmp/ostb/run,
# each "<pid> <start time>", so a recycled pid is never signalled). Each was
# started with setsid, so the signal goes to its own process group.
# Usage: down.sh [--wipe]   (--wipe also deletes databases/state and the
#                            /etc/<service> configs; keeps the venv and logs)
set -euo pipefail
source "$(dirname "$0")/common.sh"

case "${1:-}" in
  "" | --wipe) ;;
  *) echo "usage: $0 [--wipe]" >&2; exit 2 ;;
esac
# The processes, pid files and state up.sh made are root's.
[ "$(id -u)" = 0 ] || { echo "deploy/testbed/down.sh: error: must run as root (the testbed's processes and $STATE are root's): sudo $0${1:+ $1}" >&2; exit 1; }

# The testbed is no longer complete: the next up.sh must check everything.
rm -f "$UP_STAMP"
for n in $TB_SERVICES; do
  if pid_alive "$n"; then
    p=$(pid_of "$n")
    kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
    echo "stopping $n (pgid $p)"
  fi
done
for n in $TB_SERVICES; do
  for ((i = 0; i < 150; i++)); do pid_alive "$n" || break; sleep 0.2; done
  if pid_alive "$n"; then
    p=$(pid_of "$n"); echo "  $n still alive after 30s, SIGKILL group $p"
    kill -KILL -- "-$p" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$RUN/$n.pid"
done
rm -f "$RUN/rabbitmq-beam.pid"
if [ "${1:-}" = "--wipe" ]; then
  echo "wiping state under $STATE (keeping logs dir) and /etc/{keystone,glance,placement,nova,neutron,cinder}"
  rm -rf "$STATE/mysql" "$STATE/mysqlrun" "$STATE/rabbitmq" "$STATE/glance" "$STATE/nova" "$STATE/cinder" \
         "$STATE/neutron" "$STATE/keystone" "$STATE/placement"
  rm -rf /etc/keystone /etc/glance /etc/placement /etc/nova /etc/neutron /etc/cinder
fi
echo "down."
