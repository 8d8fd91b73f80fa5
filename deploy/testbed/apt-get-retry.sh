#!/usr/bin/env bash
# apt-get ARGS..., tried up to 5 times within about 5 minutes; for up.sh and
# scripts/test.sh, which run it as root.
#
# Why: on a fresh cloud VM apt-daily or unattended-upgrades often hold apt's
# locks at first boot, and a mirror caught mid-sync answers "Hash Sum
# mismatch"; both pass within minutes, and one failed apt call would fail
# the whole CI run. `-o DPkg::Lock::Timeout` makes install wait for dpkg's
# lock, but `apt-get update` on Debian 12 (apt 2.6) does not wait for
# /var/lib/apt/lists/lock: it fails at once, so only trying again helps.
# A dpkg run that was killed (a CI run stopped during its apt step) leaves
# "dpkg was interrupted", which fails every later install until
# `dpkg --configure -a` finishes it: done here before each try that needs it.
#
# Environment: APT_RETRY_TRIES (default 5), APT_RETRY_BUDGET seconds
# (default 300): no try starts after it, and each one's lock wait ends by it
# (or after 30 s, whichever is later).
set -uo pipefail

tries=${APT_RETRY_TRIES:-5}
budget=${APT_RETRY_BUDGET:-300}
start=$(date +%s)
pause=10
for ((try = 1; ; try++)); do
    # dpkg's own test for "interrupted": a journal left in updates/.
    if [ "${1:-}" != update ] && [ -n "$(ls -A /var/lib/dpkg/updates 2>/dev/null)" ]; then
        echo "apt-get-retry.sh: dpkg was interrupted earlier; running dpkg --configure -a" >&2
        DEBIAN_FRONTEND=noninteractive dpkg --configure -a || true
    fi
    left=$((start + budget - $(date +%s)))
    [ "$left" -ge 30 ] || left=30
    apt-get -o DPkg::Lock::Timeout="$left" "$@"
    rc=$?
    [ "$rc" -eq 0 ] && exit 0
    now=$(date +%s)
    if [ "$try" -ge "$tries" ] || [ $((now + pause)) -ge $((start + budget)) ]; then
        echo "apt-get-retry.sh: apt-get $* failed $try time(s) in $((now - start))s (last exit $rc); giving up" >&2
        exit "$rc"
    fi
    echo "apt-get-retry.sh: apt-get $* failed (exit $rc, try $try of $tries); trying again in ${pause}s" >&2
    sleep "$pause"
    pause=$((pause * 2))
done
