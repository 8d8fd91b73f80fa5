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

# Exclusive: an up.sh starting services meanwhile would otherwise write pid
# files this script then reads, and it would stop services that are not the
# ones it was asked to stop; a scripts/test.sh holds it shared while its
# tests use the testbed.
mkdir -p "$STATE"
exec 9>>"$TB_LOCK"
tb_lock 9 -x down.sh || { echo "deploy/testbed/down.sh: error: gave up waiting ${TESTBED_LOCK_TIMEOUT:-1800}s for $TB_LOCK (open in: $(tb_lock_holders)); nothing stopped" >&2; exit 1; }

# The testbed is no longer complete: the next up.sh must check everything.
rm -f "$UP_STAMP"
# What each pid file said when read, and which of those processes were
# signalled: only those are waited for, killed and forgotten, even if a pid
# file changes meanwhile.
declare -A SEEN=() SIGNALLED=()
for n in $TB_SERVICES; do
  [ -f "$RUN/$n.pid" ] && SEEN[$n]=$(cat "$RUN/$n.pid" 2>/dev/null)
  if pid_alive "$n"; then
    read -r p st <<<"${SEEN[$n]}"
    SIGNALLED[$n]="$p $st"
    kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
    echo "stopping $n (pgid $p)"
  fi
done
# still_runs PID STARTTIME: that very process (not one with a recycled pid) lives.
still_runs() { [ -d "/proc/$1" ] && [ "$(proc_start "$1")" = "$2" ]; }
for n in $TB_SERVICES; do
  if [ -n "${SIGNALLED[$n]:-}" ]; then
    read -r p st <<<"${SIGNALLED[$n]}"
    for ((i = 0; i < 150; i++)); do still_runs "$p" "$st" || break; sleep 0.2; done
    if still_runs "$p" "$st"; then
      echo "  $n still alive after 30s, SIGKILL group $p"
      kill -KILL -- "-$p" 2>/dev/null || true
      sleep 0.5
    fi
  fi
  if [ -n "${SEEN[$n]+set}" ] && [ "$(cat "$RUN/$n.pid" 2>/dev/null)" = "${SEEN[$n]}" ]; then
    rm -f "$RUN/$n.pid"
  fi
done
rm -f "$RUN/rabbitmq-beam.pid"
# rabbitmq's shutdown, finding the testbed's epmd already stopped, starts an
# `epmd -daemon` of its own (seen: one started in the second this script
# stopped the testbed). It would hold port 4369 against the next up.sh, so
# such an epmd, started after this script began, is stopped too; any other
# epmd is left alone.
self_start=$(proc_start $$) || true
for d in /proc/[0-9]*; do
  [ "$(cat "$d/comm" 2>/dev/null)" = epmd ] || continue
  p=${d#/proc/}
  st=$(proc_start "$p") || true
  [ -n "$st" ] && [ "$st" -ge "$self_start" ] || continue
  tr '\0' ' ' <"$d/cmdline" 2>/dev/null | grep -q -- '-daemon' || continue
  kill -TERM "$p" 2>/dev/null && echo "stopping the epmd rabbitmq's shutdown started (pid $p)"
done
if [ "${1:-}" = "--wipe" ]; then
  echo "wiping state under $STATE (keeping logs dir) and /etc/{keystone,glance,placement,nova,neutron,cinder}"
  rm -rf "$STATE/mysql" "$STATE/mysqlrun" "$STATE/rabbitmq" "$STATE/glance" "$STATE/nova" "$STATE/cinder" \
         "$STATE/neutron" "$STATE/keystone" "$STATE/placement"
  rm -rf /etc/keystone /etc/glance /etc/placement /etc/nova /etc/neutron /etc/cinder
fi
echo "down."
