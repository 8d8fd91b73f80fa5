#!/usr/bin/env bash
# The project's one test command, for developers and CI alike:
#
#   1. makes sure a MariaDB answers on 127.0.0.1:3306 (the readiness-probe
#      test in server/tests/mariadb_probe.rs needs a real one): installs
#      Debian's mariadb-server if there is none, and starts a private
#      instance (data under target/mariadb) if nothing listens there;
#   2. makes sure Prometheus and promtool are installed (Debian's
#      prometheus package; server/tests/prometheus.rs runs a real one);
#   3. cargo fmt --check, cargo clippy -D warnings, cargo test, whole workspace.
#
# A MariaDB this script started is stopped when it exits; one it found
# running is left alone.
#
# Environment:
#   WARMPOOL_TEST_MARIADB_ADDR  host:port of the MariaDB (default 127.0.0.1:3306)
#   MARIADB_START_TIMEOUT       seconds to wait for MariaDB to answer (default 60)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

export WARMPOOL_TEST_MARIADB_ADDR=${WARMPOOL_TEST_MARIADB_ADDR:-127.0.0.1:3306}
MARIADB_HOST=${WARMPOOL_TEST_MARIADB_ADDR%:*}
MARIADB_PORT=${WARMPOOL_TEST_MARIADB_ADDR##*:}
MARIADB_START_TIMEOUT=${MARIADB_START_TIMEOUT:-60}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'scripts/test.sh: error: %s\n' "$*" >&2; exit 1; }

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

MARIADB_PID=""
MARIADB_RUN=""

stop_mariadb() {
    if [ -n "$MARIADB_PID" ] && kill -0 "$MARIADB_PID" 2>/dev/null; then
        log "stopping the MariaDB this script started (pid $MARIADB_PID)"
        kill -TERM "$MARIADB_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 60); do
            kill -0 "$MARIADB_PID" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$MARIADB_PID" 2>/dev/null; then
            log "MariaDB did not stop in 30s; killing it"
            kill -KILL "$MARIADB_PID" 2>/dev/null || true
        fi
        wait "$MARIADB_PID" 2>/dev/null || true
    fi
    if [ -n "$MARIADB_RUN" ]; then
        rm -rf "$MARIADB_RUN"
    fi
}
trap stop_mariadb EXIT

install_mariadb() {
    log "installing Debian's mariadb-server (no MariaDB server binary found)"
    command -v apt-get >/dev/null || die "no mariadbd/mysqld and no apt-get to install mariadb-server"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends mariadb-server
}

start_mariadb() {
    local mariadbd install_db base data user_args=()
    mariadbd=$(find_mariadbd) || die "mariadb-server is installed but mariadbd was not found"
    install_db=$(find_install_db) || die "mariadb-install-db was not found"
    base="$ROOT/target/mariadb"
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
    MARIADB_RUN=$(mktemp -d "${TMPDIR:-/tmp}/warmpool-mariadb.XXXXXX")
    local errlog="$base/error.log"
    : >"$errlog"
    # No --skip-name-resolve: mysqld greets only hosts some account may
    # connect from, and the only accounts are root@localhost and
    # mysql@localhost, so 127.0.0.1 must resolve to localhost. (Otherwise it
    # answers with error 1130, "Host '127.0.0.1' is not allowed to connect",
    # instead of a greeting.)
    log "starting MariaDB on $MARIADB_HOST:$MARIADB_PORT ($mariadbd, data $data)"
    "$mariadbd" --no-defaults "${user_args[@]}" \
        --datadir="$data" \
        --bind-address="$MARIADB_HOST" --port="$MARIADB_PORT" \
        --socket="$MARIADB_RUN/mysqld.sock" \
        --pid-file="$MARIADB_RUN/mysqld.pid" \
        --tmpdir="$MARIADB_RUN" \
        --log-error="$errlog" \
        --innodb-buffer-pool-size=32M \
        </dev/null >/dev/null 2>&1 &
    MARIADB_PID=$!

    local waited=0
    until listening "$MARIADB_HOST" "$MARIADB_PORT"; do
        if ! kill -0 "$MARIADB_PID" 2>/dev/null; then
            tail -n 30 "$errlog" >&2 || true
            MARIADB_PID=""
            die "MariaDB exited during start-up (last lines of $errlog above)"
        fi
        if [ "$waited" -ge $((MARIADB_START_TIMEOUT * 4)) ]; then
            tail -n 30 "$errlog" >&2 || true
            die "MariaDB did not answer on $MARIADB_HOST:$MARIADB_PORT within ${MARIADB_START_TIMEOUT}s (last lines of $errlog above)"
        fi
        sleep 0.25
        waited=$((waited + 1))
    done
    log "MariaDB answers on $MARIADB_HOST:$MARIADB_PORT"
}

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
        start_mariadb
    fi
fi

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
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends prometheus
}

if ! find_prometheus_tool prometheus >/dev/null || ! find_prometheus_tool promtool >/dev/null; then
    install_prometheus
fi
find_prometheus_tool prometheus >/dev/null || die "the prometheus package is installed but prometheus was not found"
find_prometheus_tool promtool >/dev/null || die "the prometheus package is installed but promtool was not found"
log "using $(find_prometheus_tool prometheus) and $(find_prometheus_tool promtool)"

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

log "cargo test"
cargo test --workspace
