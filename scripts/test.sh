#!/usr/bin/env bash
# The project's one test command, for developers and CI alike:
#
#   1. makes sure Prometheus and promtool are installed (Debian's
#      prometheus package; server/tests/prometheus.rs runs a real one);
#   2. brings deploy/testbed up (a real one-machine OpenStack, see
#      deploy/testbed/README.md) in the background, while
#   3. cargo fmt --check, cargo clippy -D warnings, cargo doc -D warnings
#      (private items documented, as the docs are read) and the test build run;
#   4. waits for the testbed and prints how long it took to come up;
#   5. makes sure a MariaDB answers on 127.0.0.1:3306 (the readiness-probe
#      test in server/tests/mariadb_probe.rs needs a real one). When the
#      testbed is up, that is the testbed's own MariaDB: it owns 3306, and
#      the probe test and the e2e suite's probe_address_override use it.
#      Only when the testbed step is not selected does this script install
#      Debian's mariadb-server if needed and start a private instance (data
#      under target/mariadb) if nothing listens there. It also starts, always,
#      a second private MariaDB (data under target/mariadb-hostcache) on the
#      machine's first non-loopback IPv4 address (`hostname -I`), port
#      WARMPOOL_TEST_MARIADB_HOSTCACHE_PORT, with --max-connect-errors=5:
#      MariaDB exempts only 127.0.0.1 from its host cache, so only there can
#      the probe test see a probe that mysqld counts as a connection error
#      (after 5 of them it would refuse warmpoold's address with error 1129);
#      the test checks that it does block this address, then flushes its
#      host cache over the socket (WARMPOOL_TEST_MARIADB_HOSTCACHE_SOCKET).
#      One that a killed earlier run left running there is stopped first.
#      The testbed's MariaDB cannot serve: it skips name resolution, which
#      turns the host cache off. A machine with no such address runs the
#      tests anyway, and the probe test fails saying so; so does one whose
#      reverse DNS for that address fails temporarily (SERVFAIL, timeout:
#      MariaDB then caches nothing for it; an /etc/hosts line for the
#      address fixes it; a plain "no such name" is cached and serves);
#   6. cargo test, whole workspace, including the e2e suite against the
#      testbed (server/tests/e2e_testbed.rs, check_cloud_testbed.rs),
#      holding the testbed's lock shared meanwhile, so that no up.sh or
#      down.sh of another run changes the testbed under the tests.
#
# What this script started is stopped when it exits: the testbed (with
# deploy/testbed/down.sh) only if no testbed service was running before, a
# private MariaDB only if it started one. An already-running testbed is
# left alone (up.sh makes sure it is complete).
#
# Environment:
#   WARMPOOL_TEST_STEPS         steps to run, comma-separated, from
#                               testbed,fmt,clippy,doc,test (default: all of them)
#   WARMPOOL_TEST_CARGO_ARGS    what `cargo test` tests (default --workspace;
#                               e.g. "-p warmpool-server --test e2e_testbed")
#   WARMPOOL_TESTBED_KEEP=1     leave a testbed this run started running
#   WARMPOOL_TEST_MARIADB_ADDR  host:port of the MariaDB (default 127.0.0.1:3306)
#   WARMPOOL_TEST_MARIADB_HOSTCACHE_PORT
#                               port of the host-cache MariaDB on the machine's
#                               non-loopback address (default 3307); the tests
#                               get its address as WARMPOOL_TEST_MARIADB_HOSTCACHE_ADDR
#   MARIADB_START_TIMEOUT       seconds to wait for MariaDB to answer (default 60)
#   TESTBED_UP_TIMEOUT          seconds to wait for deploy/testbed/up.sh (default 1200)
#   TESTBED_LOCK_TIMEOUT        seconds up.sh, down.sh and this script wait for
#                               the testbed's lock (default 1800)
#   CARGO_INCREMENTAL           default 0 here (one full build; its caches cost 4 GB)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

export WARMPOOL_TEST_MARIADB_ADDR=${WARMPOOL_TEST_MARIADB_ADDR:-127.0.0.1:3306}
MARIADB_HOST=${WARMPOOL_TEST_MARIADB_ADDR%:*}
MARIADB_PORT=${WARMPOOL_TEST_MARIADB_ADDR##*:}
MARIADB_START_TIMEOUT=${MARIADB_START_TIMEOUT:-60}
HOSTCACHE_PORT=${WARMPOOL_TEST_MARIADB_HOSTCACHE_PORT:-3307}
# server/tests/mariadb_probe.rs's MAX_CONNECT_ERRORS: it probes more often than this.
HOSTCACHE_MAX_CONNECT_ERRORS=5
TESTBED_UP_TIMEOUT=${TESTBED_UP_TIMEOUT:-1200}
WARMPOOL_TEST_STEPS=${WARMPOOL_TEST_STEPS:-testbed,fmt,clippy,doc,test}
read -r -a CARGO_TEST_ARGS <<<"${WARMPOOL_TEST_CARGO_ARGS:---workspace}"
T0=$(date +%s)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'scripts/test.sh: error: %s\n' "$*" >&2; exit 1; }

for step in ${WARMPOOL_TEST_STEPS//,/ }; do
    case $step in
        testbed | fmt | clippy | doc | test) ;;
        *) die "unknown step '$step' in WARMPOOL_TEST_STEPS (known: testbed,fmt,clippy,doc,test)" ;;
    esac
done
selected() { case ",$WARMPOOL_TEST_STEPS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
since() { echo $(($(date +%s) - $1)); }

# True when something accepts TCP connections on host:port.
listening() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# The MariaDB server binary, also where a non-root PATH lacks /usr/sbin.
find_mariadbd() {
    local name dir
    for name in mariadbd mysqld; do
        if command -v "$name" >/dev/null; then
            command -v "$name"
            return 0
        fi
        for dir in /usr/sbin /usr/libexec /usr/local/sbin; do
            if [ -x "$dir/$name" ]; then
                echo "$dir/$name"
                return 0
            fi
        done
    done
    return 1
}

find_install_db() {
    local name
    for name in mariadb-install-db mysql_install_db; do
        if command -v "$name" >/dev/null; then
            command -v "$name"
            return 0
        fi
        if [ -x "/usr/bin/$name" ]; then
            echo "/usr/bin/$name"
            return 0
        fi
    done
    return 1
}

# The private MariaDBs this script started: their pids and run dirs.
MARIADB_PIDS=()
MARIADB_RUNS=()
MARIADB_SOCKET=""

stop_mariadb() {
    local pid i run
    for pid in "${MARIADB_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || continue
        log "stopping the MariaDB this script started (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 60); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "MariaDB did not stop in 30s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    for run in "${MARIADB_RUNS[@]}"; do
        rm -rf "$run"
    done
}

# ---------------------------------------------------------------- testbed
TESTBED=$ROOT/deploy/testbed
TESTBED_LOG=$ROOT/target/testbed-up.log
TESTBED_UP_PID=""     # the background up.sh, while it runs
TESTBED_OURS=0        # 1: no testbed service ran before this script started it
TESTBED_T0=""
TESTBED_PGID_FILE=""
TESTBED_LOCKED=0      # 1: fd 8 holds deploy/testbed's lock, shared

# Testbed services alive, as "alive total" (deploy/testbed/common.sh keeps
# the list and the pid-file checks; sourced in a subshell because it puts
# the testbed's venv first on PATH).
testbed_alive() {
    bash -c 'source "$1/common.sh"; echo "$(tb_alive_count) $(tb_service_count)"' _ "$TESTBED"
}

start_testbed() {
    local alive total
    read -r alive total < <(testbed_alive)
    if [ "$alive" -eq 0 ]; then
        TESTBED_OURS=1
        log "starting deploy/testbed/up.sh in the background (no testbed running; log $TESTBED_LOG)"
    else
        log "a testbed is running ($alive of $total services): up.sh checks it in the background and this run leaves it running"
    fi
    mkdir -p "$(dirname "$TESTBED_LOG")"
    TESTBED_T0=$(date +%s)
    TESTBED_PGID_FILE=$ROOT/target/testbed-up.pgid
    rm -f "$TESTBED_PGID_FILE"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "deploy/testbed/up.sh needs root (or sudo)"
        sudo=(sudo)
    fi
    # In its own session, so a failing run can stop up.sh and all it runs
    # (pip, db syncs) as one process group; the group id is written to
    # TESTBED_PGID_FILE. setsid -w waits for it and passes on its status.
    "${sudo[@]}" setsid -w bash -c 'echo $$ >"$1"; exec bash "$2"' _ \
        "$TESTBED_PGID_FILE" "$TESTBED/up.sh" >"$TESTBED_LOG" 2>&1 </dev/null &
    TESTBED_UP_PID=$!
}

wait_testbed() {
    local rc=0 waited=0
    log "waiting for deploy/testbed/up.sh"
    while kill -0 "$TESTBED_UP_PID" 2>/dev/null; do
        if [ "$waited" -ge "$TESTBED_UP_TIMEOUT" ]; then
            tail -n 30 "$TESTBED_LOG" >&2 || true
            die "deploy/testbed/up.sh did not finish within ${TESTBED_UP_TIMEOUT}s (log $TESTBED_LOG, last lines above)"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    wait "$TESTBED_UP_PID" || rc=$?
    TESTBED_UP_PID=""
    if [ "$rc" -ne 0 ]; then
        tail -n 30 "$TESTBED_LOG" >&2 || true
        die "deploy/testbed/up.sh failed with exit $rc (log $TESTBED_LOG, last lines above)"
    fi
    local how="was already running" took
    [ "$TESTBED_OURS" = 1 ] && how="started by this run"
    # up.sh's own wall time (it ran beside the build, so the time since it
    # started says more about the build than about the testbed).
    took=$(sed -n 's/.*total up.sh wall time: \([0-9.]*\)s.*/\1/p' "$TESTBED_LOG" | tail -n 1)
    log "testbed up: up.sh took ${took:-?}s ($how), ready $(since "$TESTBED_T0")s after it started; step timings in $TESTBED_LOG"
    grep -E '^ +[a-z].*: [0-9.]+s$|already up' "$TESTBED_LOG" >&2 || true
}

# Holds deploy/testbed's lock shared on fd 8 while the tests use the
# testbed, so that no up.sh or down.sh (another run's, or its exit trap's)
# changes it under them; up.sh and down.sh take it exclusive. Processes this
# script starts get fd 8 closed, or one left running would hold the lock.
lock_testbed() {
    local lock
    lock=$(bash -c 'source "$1/common.sh"; echo "$TB_LOCK"' _ "$TESTBED")
    if [ ! -r "$lock" ]; then
        log "cannot read $lock: the tests run without holding the testbed's lock"
        return 0
    fi
    exec 8<"$lock"
    TESTBED_LOCKED=1
    bash -c 'source "$1/common.sh"; tb_lock 8 -s scripts/test.sh' _ "$TESTBED" \
        || die "gave up waiting for $lock (held by the processes named above)"
}

unlock_testbed() {
    if [ "$TESTBED_LOCKED" = 1 ]; then
        exec 8<&-
        TESTBED_LOCKED=0
    fi
}

# After up.sh: the lock, then the testbed must still be complete. Between
# up.sh's end and the lock another run's down.sh may have stopped it; then
# up.sh runs once more.
hold_testbed() {
    local alive total try
    for try in 1 2; do
        lock_testbed
        read -r alive total < <(testbed_alive)
        [ "$alive" -eq "$total" ] && return 0
        unlock_testbed
        [ "$try" = 1 ] || break
        log "only $alive of $total testbed services are alive after up.sh finished (another run's down.sh?): running up.sh again"
        start_testbed
        wait_testbed
    done
    die "only $alive of $total testbed services are alive after up.sh finished twice (another run's down.sh?); sudo deploy/testbed/status.sh shows which"
}

stop_testbed() {
    # Before down.sh, which waits for every holder.
    unlock_testbed
    if [ -n "$TESTBED_UP_PID" ] && kill -0 "$TESTBED_UP_PID" 2>/dev/null; then
        local pgid
        pgid=$(cat "$TESTBED_PGID_FILE" 2>/dev/null || true)
        log "stopping the unfinished deploy/testbed/up.sh (process group ${pgid:-unknown})"
        if [ -n "$pgid" ]; then
            as_root kill -TERM -- "-$pgid" 2>/dev/null || true
        fi
        wait "$TESTBED_UP_PID" 2>/dev/null || true
    fi
    if [ -n "$TESTBED_PGID_FILE" ]; then
        rm -f "$TESTBED_PGID_FILE"
    fi
    if [ "$TESTBED_OURS" = 1 ]; then
        if [ "${WARMPOOL_TESTBED_KEEP:-0}" = 1 ]; then
            log "leaving the testbed this run started running (WARMPOOL_TESTBED_KEEP=1); stop it with sudo deploy/testbed/down.sh"
        else
            log "stopping the testbed this run started (deploy/testbed/down.sh)"
            as_root bash "$TESTBED/down.sh" >&2 || log "deploy/testbed/down.sh failed"
        fi
    fi
}

on_exit() {
    local rc=$?
    stop_mariadb
    stop_testbed
    log "scripts/test.sh finished in $(since "$T0")s (exit $rc)"
}
trap on_exit EXIT

# apt-get through deploy/testbed's wrapper: it waits for apt's locks and
# tries again within about 5 minutes (a fresh VM's apt-daily, a mirror
# mid-sync).
apt_get() {
    as_root env DEBIAN_FRONTEND=noninteractive bash "$TESTBED/apt-get-retry.sh" "$@"
}

install_mariadb() {
    log "installing Debian's mariadb-server (no MariaDB server binary found)"
    command -v apt-get >/dev/null || die "no mariadbd/mysqld and no apt-get to install mariadb-server"
    apt_get update -q || die "apt-get update failed (output above)"
    apt_get install -y -q --no-install-recommends mariadb-server || die "apt-get install mariadb-server failed (output above)"
}

# True when a socket listens on ip:port (or on the wildcard address and
# port), found without connecting: a TCP connection closed before its
# handshake is a connection error to MariaDB's host cache, which the
# host-cache MariaDB must not count. Without ss it connects after all
# (one error, of the 5 allowed).
listens_quietly() {
    if ! command -v ss >/dev/null; then
        listening "$1" "$2"
        return
    fi
    ss -Hltn "sport = :$2" 2>/dev/null | awk -v a="$1:$2" -v any="0.0.0.0:$2" \
        '$4 == a || $4 == any { found = 1 } END { exit !found }'
}

# Stops a private MariaDB an earlier run of this script left running (it
# was killed before its exit trap ran): stop_stale_mariadb DIR. It is the
# process its pid file (target/DIR/mysqld.pid) names, or else any whose
# command line names target/DIR's data dir, and only such a process.
# Returns 1 if there was none.
stop_stale_mariadb() {
    local base=$ROOT/target/$1 pid="" i cmdline tmpdir stopped=1
    local datadir_arg="--datadir=$base/data"
    local pids=()
    if read -r pid 2>/dev/null <"$base/mysqld.pid" && [[ $pid =~ ^[0-9]+$ ]]; then
        pids+=("$pid")
    fi
    for i in /proc/[0-9]*; do
        pids+=("${i#/proc/}")
    done
    for pid in "${pids[@]}"; do
        cmdline=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null) || continue
        grep -qxF -- "$datadir_arg" <<<"$cmdline" || continue
        tmpdir=$(sed -n 's/^--tmpdir=//p' <<<"$cmdline")
        log "stopping a MariaDB an earlier run left running (pid $pid, data $base/data)"
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 60); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "it did not stop in 30s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        case $tmpdir in
            "${TMPDIR:-/tmp}"/warmpool-mariadb.*) rm -rf "$tmpdir" ;;
        esac
        stopped=0
        break
    done
    return "$stopped"
}

# Starts a private MariaDB: start_mariadb DIR HOST PORT [mariadbd options...].
# Data under target/DIR (kept between runs), and its pid file, which
# stop_stale_mariadb reads; socket in a temporary dir that stop_mariadb
# deletes (MARIADB_SOCKET names the last one started).
start_mariadb() {
    local dir=$1 host=$2 port=$3
    shift 3
    local mariadbd install_db base data run user_args=()
    mariadbd=$(find_mariadbd) || die "mariadb-server is installed but mariadbd was not found"
    install_db=$(find_install_db) || die "mariadb-install-db was not found"
    base="$ROOT/target/$dir"
    data="$base/data"
    mkdir -p "$base"
    # mariadbd refuses to run as root unless told to; as anyone else it
    # runs as that user.
    if [ "$(id -u)" -eq 0 ]; then
        user_args=(--user=root)
    fi

    if [ ! -f "$data/.warmpool-initialized" ]; then
        log "initialising a MariaDB data dir in $data"
        rm -rf "$data"
        mkdir -p "$data"
        if ! "$install_db" --no-defaults --datadir="$data" "${user_args[@]}" \
            --skip-test-db --auth-root-authentication-method=socket \
            >"$base/install-db.log" 2>&1; then
            cat "$base/install-db.log" >&2
            die "mariadb-install-db failed (log above)"
        fi
        touch "$data/.warmpool-initialized"
    fi

    # The socket path must stay short (108 bytes): keep it under /tmp.
    run=$(mktemp -d "${TMPDIR:-/tmp}/warmpool-mariadb.XXXXXX")
    MARIADB_RUNS+=("$run")
    local errlog="$base/error.log"
    : >"$errlog"
    log "starting MariaDB on $host:$port ($mariadbd, data $data)"
    "$mariadbd" --no-defaults "${user_args[@]}" \
        --datadir="$data" \
        --bind-address="$host" --port="$port" \
        --socket="$run/mysqld.sock" \
        --pid-file="$base/mysqld.pid" \
        --tmpdir="$run" \
        --log-error="$errlog" \
        --innodb-buffer-pool-size=32M \
        "$@" \
        </dev/null >/dev/null 2>&1 8<&- &
    local pid=$!
    MARIADB_PIDS+=("$pid")
    MARIADB_SOCKET=$run/mysqld.sock

    local waited=0
    until listens_quietly "$host" "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$errlog" >&2 || true
            die "MariaDB exited during start-up (last lines of $errlog above)"
        fi
        if [ "$waited" -ge $((MARIADB_START_TIMEOUT * 4)) ]; then
            tail -n 30 "$errlog" >&2 || true
            die "MariaDB did not answer on $host:$port within ${MARIADB_START_TIMEOUT}s (last lines of $errlog above)"
        fi
        sleep 0.25
        waited=$((waited + 1))
    done
    log "MariaDB answers on $host:$port"
}

# Prometheus and promtool (Debian's `prometheus` package): a real Prometheus
# scrapes warmpoold in server/tests/prometheus.rs, and promtool checks the
# alert rules and config in deploy/prometheus/. The tests start their own
# Prometheus on a free port; one the package may have started is not used.
find_prometheus_tool() {
    if command -v "$1" >/dev/null; then
        command -v "$1"
    elif [ -x "/usr/bin/$1" ]; then
        echo "/usr/bin/$1"
    else
        return 1
    fi
}

install_prometheus() {
    log "installing Debian's prometheus (prometheus or promtool not found)"
    command -v apt-get >/dev/null || die "no prometheus/promtool and no apt-get to install prometheus"
    apt_get update -q || die "apt-get update failed (output above)"
    apt_get install -y -q --no-install-recommends prometheus || die "apt-get install prometheus failed (output above)"
}

if ! find_prometheus_tool prometheus >/dev/null || ! find_prometheus_tool promtool >/dev/null; then
    install_prometheus
fi
find_prometheus_tool prometheus >/dev/null || die "the prometheus package is installed but prometheus was not found"
find_prometheus_tool promtool >/dev/null || die "the prometheus package is installed but promtool was not found"
log "using $(find_prometheus_tool prometheus) and $(find_prometheus_tool promtool)"

ensure_mariadb() {
    if listening "$MARIADB_HOST" "$MARIADB_PORT"; then
        log "something already listens on $MARIADB_HOST:$MARIADB_PORT; using it as the test MariaDB"
    else
        case "$MARIADB_HOST" in
            127.0.0.1 | localhost) ;;
            *) die "nothing listens on $WARMPOOL_TEST_MARIADB_ADDR, and this script only starts MariaDB on 127.0.0.1" ;;
        esac
        if [ "$MARIADB_HOST" = localhost ]; then
            MARIADB_HOST=127.0.0.1
        fi
        if ! find_mariadbd >/dev/null; then
            install_mariadb
        fi
        # The package's own service may have started on install.
        if listening "$MARIADB_HOST" "$MARIADB_PORT"; then
            log "MariaDB started by its package answers on $MARIADB_HOST:$MARIADB_PORT"
        else
            # No --skip-name-resolve: mysqld greets only hosts some account
            # may connect from, and the only accounts are root@localhost and
            # mysql@localhost, so 127.0.0.1 must resolve to localhost.
            # (Otherwise it answers with error 1130, "Host '127.0.0.1' is not
            # allowed to connect", instead of a greeting.)
            start_mariadb mariadb "$MARIADB_HOST" "$MARIADB_PORT"
        fi
    fi
}

# The first non-loopback IPv4 address of this machine, if any.
first_non_loopback_ipv4() {
    local address
    for address in $(hostname -I 2>/dev/null); do
        case $address in
            *:* | 127.*) ;;
            *)
                echo "$address"
                return 0
                ;;
        esac
    done
    return 1
}

# The host-cache MariaDB (see the header): the probe test probes it from
# this machine's own non-loopback address more than
# HOSTCACHE_MAX_CONNECT_ERRORS times.
ensure_hostcache_mariadb() {
    local address
    if ! address=$(first_non_loopback_ipv4); then
        log "WARNING: this machine has no non-loopback IPv4 address (hostname -I: '$(hostname -I 2>/dev/null)'): no host-cache MariaDB, and server/tests/mariadb_probe.rs will fail saying so"
        return 0
    fi
    if ! find_mariadbd >/dev/null; then
        install_mariadb
    fi
    if listens_quietly "$address" "$HOSTCACHE_PORT" && ! stop_stale_mariadb mariadb-hostcache; then
        die "something already listens on $address:$HOSTCACHE_PORT, where the host-cache MariaDB goes; stop it or set WARMPOOL_TEST_MARIADB_HOSTCACHE_PORT"
    fi
    if listens_quietly "$address" "$HOSTCACHE_PORT"; then
        die "$address:$HOSTCACHE_PORT is still listened on after stopping the MariaDB an earlier run left there; stop what listens or set WARMPOOL_TEST_MARIADB_HOSTCACHE_PORT"
    fi
    # An account for any host, locked (nobody logs in with it): without an
    # account matching this machine's address mysqld would refuse it with
    # error 1130 instead of greeting. Name resolution stays on, as in a
    # default MariaDB: with skip_name_resolve there is no host cache.
    local init=$ROOT/target/mariadb-hostcache/init.sql
    mkdir -p "$(dirname "$init")"
    echo "CREATE USER IF NOT EXISTS 'warmpool-test'@'%' ACCOUNT LOCK;" >"$init"
    start_mariadb mariadb-hostcache "$address" "$HOSTCACHE_PORT" \
        --max-connect-errors="$HOSTCACHE_MAX_CONNECT_ERRORS" --init-file="$init"
    export WARMPOOL_TEST_MARIADB_HOSTCACHE_ADDR="$address:$HOSTCACHE_PORT"
    # For its `mariadb-admin flush-hosts`, as this OS user (mariadb-install-db
    # gave the user an account that logs in over the socket).
    export WARMPOOL_TEST_MARIADB_HOSTCACHE_SOCKET=$MARIADB_SOCKET
}

# Prometheus first: its apt run must not race the testbed's (up.sh waits
# on apt's lock anyway).
if selected testbed; then
    start_testbed
fi

# One build of everything, so incremental compilation's caches (4 GB of
# target/debug/incremental for this workspace) buy nothing but disk; set
# CARGO_INCREMENTAL=1 to keep them between runs.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

# While the testbed comes up: the cargo steps, and the test build, which is
# most of `cargo test`'s time. On 2 cores this overlaps the testbed's pip
# downloads, db syncs and waits with compiling.
if selected fmt; then
    log "cargo fmt --check"
    cargo fmt --all -- --check
fi
if selected clippy; then
    log "cargo clippy"
    cargo clippy --workspace --all-targets -- -D warnings
fi
if selected doc; then
    log "cargo doc"
    # --keep-going: every crate's broken docs are listed, not only the first's.
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --document-private-items --keep-going
fi
if selected test; then
    log "cargo test --no-run ${CARGO_TEST_ARGS[*]} (building while the testbed comes up)"
    cargo test "${CARGO_TEST_ARGS[@]}" --no-run
fi

if selected testbed; then
    wait_testbed
    hold_testbed
fi

if selected test; then
    # After the testbed: its MariaDB owns 127.0.0.1:3306 and serves the probe test.
    ensure_mariadb
    ensure_hostcache_mariadb
    log "cargo test ${CARGO_TEST_ARGS[*]}"
    T_TEST=$(date +%s)
    # --no-fail-fast: every test binary runs (the e2e suite too) even when
    # an earlier one fails; the exit status still says something failed.
    cargo test --no-fail-fast "${CARGO_TEST_ARGS[@]}" 8<&-
    log "cargo test took $(since "$T_TEST")s"
fi
