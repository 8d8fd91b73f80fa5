#!/usr/bin/env bash
# Brings up warmpool's OpenStack testbed on 127.0.0.1 (see README.md):
# MariaDB, RabbitMQ, memcached, Keystone, Glance, Placement, Nova (api,
# conductor, scheduler, 2x nova-compute with the fake virt driver in AZs
# az1/az2), Neutron (neutron-server, ML2 + testbed mechanism driver
# 'ostb_fake' that binds ports without agents), Cinder (api, scheduler,
# volume with cinder's FakeLoggingVolumeDriver), then the generic bootstrap
# (bootstrap.py) and warmpool's own (bootstrap_warmpool.py).
#
# Idempotent: when every service is alive and the last complete run had the
# same scripts (fingerprint in $STATE/up-complete), it only checks the APIs
# answer and exits (a few seconds). Otherwise it installs what is missing,
# starts only what is not running and re-applies config, db syncs and the
# bootstrap objects. Needs root (apt, /etc/<service>, /opt/ostb). Holds
# $STATE/lock exclusive while it runs (down.sh too; scripts/test.sh holds it
# shared while its tests run), and refuses to start a service whose port on
# 127.0.0.1 something else holds.
set -euo pipefail
source "$(dirname "$0")/common.sh"
source "$TB_DIR/write_configs.sh"

die() { echo "deploy/testbed/up.sh: error: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (apt installs, configs in /etc, venv in $OSTB_HOME)"

POLICY_RC=/usr/sbin/policy-rc.d
POLICY_RC_MARK="# written by warmpool's deploy/testbed/up.sh, which removes it when it exits"
MADE_POLICY_RC=0
on_exit() {
  local rc=$?
  # While it exists no package install on this host starts or restarts its
  # services, so it must not outlive this run, whichever way it ends.
  if [ "$MADE_POLICY_RC" = 1 ]; then rm -f "$POLICY_RC"; fi
  # A failure names the step it broke and where its logs are.
  [ "$rc" = 0 ] || echo "deploy/testbed/up.sh: error: step \"${STEP_NAME:-start}\" failed (exit $rc); logs in $LOGS" >&2
}
trap on_exit EXIT
# Spelled out so that the EXIT trap runs with a telling status (bash's own
# handling of a fatal signal runs it too, but says 0).
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP

T_START=$(ts)
mkdir -p "$LOGS" "$RUN"
# Exclusive while anything is checked or changed: a down.sh still running
# (another run's exit trap) would otherwise kill the services started here.
# Every process that outlives this script gets fd 9 closed (start_svc), or
# it would hold the lock for as long as it runs.
exec 9>>"$TB_LOCK"
tb_lock 9 -x up.sh || die "gave up waiting ${TESTBED_LOCK_TIMEOUT:-1800}s for $TB_LOCK (open in: $(tb_lock_holders))"
declare -a TIMINGS=()
step() { STEP_NAME=$1; STEP_T=$(ts); log "== $1"; }
step_done() { local e; e=$(elapsed "$STEP_T"); TIMINGS+=("$STEP_NAME: ${e}s"); log "   done in ${e}s"; }

# APIs answer (any non-5xx HTTP status) within a short patience.
apis_answer() {
  local url code
  for url in "http://$HOST_IP:$P_KEYSTONE/v3" "http://$HOST_IP:$P_GLANCE/" "http://$HOST_IP:$P_PLACEMENT/" \
             "http://$HOST_IP:$P_NOVA/" "http://$HOST_IP:$P_NEUTRON/" "http://$HOST_IP:$P_CINDER/"; do
    code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$url" || true)
    if [ "$code" = 000 ] || [ "${code:0:1}" = 5 ]; then return 1; fi
  done
}

# ------------------------------------------------------------------ already up?
if [ "$(tb_alive_count)" = "$(tb_service_count)" ] && [ -f "$UP_STAMP" ] \
   && [ "$(cat "$UP_STAMP")" = "$(tb_fingerprint)" ] && apis_answer && mariadb_greets; then
  log "== testbed already up (all $(tb_service_count) services alive, same scripts as the last complete run): nothing to do"
  log "== total up.sh wall time: $(elapsed "$T_START")s"
  exit 0
fi
# From here on the testbed is being (re)built: the stamp says complete only
# once the bootstrap has finished again.
rm -f "$UP_STAMP"

# ------------------------------------------------------------------ install
install_apt() {
  local need=""
  # python3-venv, python3-dev and gcc: the venv, and uWSGI, which pip builds from source.
  for p in mariadb-server mariadb-client rabbitmq-server memcached curl jq python3-venv python3-dev gcc; do
    dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
  done
  # One left by an up.sh that was killed (SIGKILL runs no trap): ours to
  # remove, since no other up.sh runs while this one holds the lock.
  if [ -f "$POLICY_RC" ] && grep -qxF "$POLICY_RC_MARK" "$POLICY_RC"; then MADE_POLICY_RC=1; fi
  [ -z "$need" ] && return 0
  # keep Debian's maintainer scripts from auto-starting the daemons (on 0.0.0.0)
  if [ ! -e "$POLICY_RC" ]; then
    MADE_POLICY_RC=1
    printf '#!/bin/sh\n%s\nexit 101\n' "$POLICY_RC_MARK" > "$POLICY_RC"; chmod +x "$POLICY_RC"
  fi
  # apt-get-retry.sh: retries within about 5 minutes and waits for apt's
  # locks (apt-daily on a fresh VM, scripts/test.sh installing prometheus).
  bash "$TB_DIR/apt-get-retry.sh" update -q >"$LOGS/apt.log" 2>&1 \
    || { tail -n 20 "$LOGS/apt.log" >&2; die "apt-get update failed (log $LOGS/apt.log)"; }
  DEBIAN_FRONTEND=noninteractive bash "$TB_DIR/apt-get-retry.sh" install -y -q --no-install-recommends $need >>"$LOGS/apt.log" 2>&1 \
    || { tail -n 20 "$LOGS/apt.log" >&2; die "apt-get install$need failed (log $LOGS/apt.log)"; }
  return 0
}

install_venv() {
  local py=${OSTB_PYTHON:-python3.11}
  local have tools pin
  [ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV"
  # Whenever any differs from its pin, not only in a new venv: the
  # --build-constraint below needs pip 25.3 or later, and a venv made by
  # older scripts (the reference's too) has an older pip, which stopped
  # up.sh with "no such option: --build-constraint".
  tools=$("$VENV/bin/pip" list --disable-pip-version-check --format=freeze 2>/dev/null) || true
  while read -r pin; do
    case $pin in '' | '#'*) continue ;; esac
    grep -qixF "$pin" <<<"$tools" && continue
    log "   $pin wanted in the venv; installing the pinned build tools"
    "$VENV/bin/pip" install -q -r "$TB_DIR/build-constraints.txt" >>"$LOGS/pip.log" 2>&1 \
      || { tail -n 20 "$LOGS/pip.log" >&2; die "pip install of pip, setuptools and wheel failed (log $LOGS/pip.log)"; }
    break
  done <"$TB_DIR/build-constraints.txt"
  # Captured whole, then compared: `pip show | grep -q` let grep exit at the
  # match, pip died of EPIPE, pipefail failed the test, and most runs
  # reinstalled everything for nothing.
  have=$("$VENV/bin/pip" show nova 2>/dev/null | sed -n 's/^Version: //p') || true
  if [ "$have" != "$NOVA_VER" ]; then
    local cons=()
    [ -f "$TB_DIR/constraints.txt" ] && cons=(-c "$TB_DIR/constraints.txt")
    "$VENV/bin/pip" install "${cons[@]}" --build-constraint "$TB_DIR/build-constraints.txt" \
      "nova==$NOVA_VER" "cinder==$CINDER_VER" "neutron==$NEUTRON_VER" \
      "keystone==$KEYSTONE_VER" "openstack-placement==$PLACEMENT_VER" \
      "glance==$GLANCE_VER" "python-openstackclient==$OSC_VER" \
      PyMySQL pymemcache python-memcached uwsgi >>"$LOGS/pip.log" 2>&1 \
      || { tail -n 20 "$LOGS/pip.log" >&2; die "pip install of the OpenStack services failed (log $LOGS/pip.log)"; }
  fi
  if ! "$VENV/bin/pip" show -q ostb-fake-mech >/dev/null 2>&1; then
    local tmp; tmp=$(mktemp -d)   # build outside the testbed folder (no build/ litter)
    cp -r "$TB_DIR/ostb_fake_mech" "$tmp/"
    "$VENV/bin/pip" install --build-constraint "$TB_DIR/build-constraints.txt" "$tmp/ostb_fake_mech" >>"$LOGS/pip.log" 2>&1
    rm -rf "$tmp"
  fi
}

# ------------------------------------------------------------------ process helpers
# start_svc NAME CMD... : start detached in its own session, remember pid.
start_svc() {
  local name=$1; shift
  if pid_alive "$name"; then log "   $name already running (pid $(pid_of "$name"))"; return 0; fi
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
  local pid=$!
  echo "$pid $(proc_start $pid)" > "$RUN/$name.pid"
  log "   started $name (pid $pid)"
}

start_uwsgi() {  # name port module [processes] [threads]
  local name=$1 port=$2 module=$3 procs=${4:-1} threads=${5:-4}
  claim_port "$name" "$port"
  start_svc "$name" "$VENV/bin/uwsgi" --master --http-socket "$HOST_IP:$port" \
    --module "$module" --processes "$procs" --threads "$threads" --enable-threads \
    --lazy-apps --need-app --die-on-term --exit-on-reload --thunder-lock \
    --buffer-size 65535 --add-header "Connection: close" \
    --hook-master-start "unix_signal:15 gracefully_kill_them_all" \
    --worker-reload-mercy 5 --procname-prefix-spaced "ostb-$name" \
    --virtualenv "$VENV"
}

# claim_port NAME PORT: PORT on $HOST_IP must be free unless NAME, the
# testbed's process for it, is alive and so holds it. Something else there
# would make NAME die at start while wait_port/wait_http pass against the
# stranger: the testbed's clients would talk to the wrong server. Waits up to
# 10 s, for a process down.sh just stopped to let go of the port.
claim_port() {
  local name=$1 port=$2 i who hint
  pid_alive "$name" && return 0
  for ((i = 0; i < 50; i++)); do
    (exec 3<>"/dev/tcp/$HOST_IP/$port") 2>/dev/null || return 0
    sleep 0.2
  done
  hint=$(port_hint "$name")
  # || true: without ss (no iproute2 on a minimal image) errexit ended
  # up.sh here, before the message naming the port.
  who=$(ss -ltnpH "sport = :$port" 2>/dev/null | sed -nE 's/.*users:\(\("([^"]+)",pid=([0-9]+).*/\1 (pid \2)/p' | head -1) || true
  die "port $HOST_IP:$port, which the testbed's $name needs, is taken by ${who:-a process ss does not name}; stop it${hint:+ ($hint)} and re-run up.sh"
}

# Every testbed service that listens, as NAME:PORT.
TB_PORTS="mariadb:$P_MYSQL epmd:4369 rabbitmq:$P_RABBIT memcached:$P_MEMCACHED keystone:$P_KEYSTONE placement:$P_PLACEMENT glance:$P_GLANCE nova-api:$P_NOVA neutron:$P_NEUTRON cinder-api:$P_CINDER"
# The packages up.sh installs leave their units enabled, so they start again
# at every boot: the hints disable them, which a stop alone does not.
port_hint() {
  case $1 in
    mariadb) echo "systemctl disable --now mariadb, or the scripts/test.sh run that started it" ;;
    epmd) echo "a system epmd: systemctl disable --now epmd.socket epmd.service" ;;
    rabbitmq) echo "Debian's: systemctl disable --now rabbitmq-server" ;;
    memcached) echo "Debian's: systemctl disable --now memcached" ;;
  esac
}

wait_port() {  # port timeout
  local i
  for ((i = 0; i < $2 * 5; i++)); do
    (echo >/dev/tcp/$HOST_IP/$1) 2>/dev/null && return 0
    sleep 0.2
  done
  log "port $1 did not open in $2s"; return 1
}

wait_http() {  # url timeout name
  local i code
  for ((i = 0; i < $2 * 4; i++)); do
    code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$1" || true)
    if [ "$code" != "000" ] && [ "${code:0:1}" != "5" ]; then return 0; fi
    sleep 0.25
  done
  log "$3 at $1 not ready after $2s (last code $code); see $LOGS/$3.log"; return 1
}

# ------------------------------------------------------------------ infra
start_mariadb() {
  # 127.0.0.1:3306 is also where scripts/test.sh would start a private
  # MariaDB, and where Debian's own mariadb service listens: the testbed must
  # own the port, or its services would talk to a server without their DBs.
  claim_port mariadb "$P_MYSQL"
  if [ ! -d "$STATE/mysql/mysql" ]; then
    mkdir -p "$STATE/mysql"; chown mysql:mysql "$STATE/mysql"
    mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/mysql" \
      --auth-root-authentication-method=socket --skip-test-db >"$LOGS/mariadb-install.log" 2>&1
  fi
  mkdir -p "$STATE/mysqlrun"; chown mysql:mysql "$STATE/mysqlrun"
  start_svc mariadb /usr/sbin/mariadbd --no-defaults --user=mysql \
    --datadir="$STATE/mysql" --socket="$STATE/mysqlrun/mysqld.sock" \
    --pid-file="$STATE/mysqlrun/mysqld.pid" --port=$P_MYSQL --bind-address=$HOST_IP \
    --skip-name-resolve --max-connections=1000 --innodb-buffer-pool-size=256M \
    --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 --sync-binlog=0 \
    --character-set-server=utf8 --collation-server=utf8_general_ci \
    --skip-log-bin
  local i
  for ((i = 0; i < 120; i++)); do
    mariadb-admin --socket="$STATE/mysqlrun/mysqld.sock" -uroot ping >/dev/null 2>&1 && break
    sleep 0.5
  done
  mariadb --socket="$STATE/mysqlrun/mysqld.sock" -uroot <<SQL
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'127.0.0.1';
CREATE DATABASE IF NOT EXISTS keystone;
CREATE DATABASE IF NOT EXISTS glance;
CREATE DATABASE IF NOT EXISTS placement;
CREATE DATABASE IF NOT EXISTS nova_api;
CREATE DATABASE IF NOT EXISTS nova_cell0;
CREATE DATABASE IF NOT EXISTS nova_cell1;
CREATE DATABASE IF NOT EXISTS neutron;
CREATE DATABASE IF NOT EXISTS cinder;
FLUSH PRIVILEGES;
SQL
}

start_rabbit() {
  claim_port epmd 4369
  start_svc epmd /usr/bin/epmd -address $HOST_IP -port 4369
  wait_port 4369 10
  claim_port rabbitmq "$P_RABBIT"
  (
    rabbit_env
    mkdir -p "$HOME_RABBIT/mnesia" "$LOGS/rabbitmq"
    echo '[].' > "$RABBITMQ_ENABLED_PLUGINS_FILE"
    cat > "$HOME_RABBIT/rabbitmq.conf" <<EOF
listeners.tcp.default = $HOST_IP:$P_RABBIT
loopback_users.guest = true
disk_free_limit.absolute = 50MB
log.console = false
log.file.level = warning
EOF
    start_svc rabbitmq /usr/lib/rabbitmq/bin/rabbitmq-server
  )
  wait_port $P_RABBIT 90
}

# ------------------------------------------------------------------ main
# Before minutes of installs: each port is checked again right before its
# service starts.
step "ports free"
for np in $TB_PORTS; do claim_port "${np%%:*}" "${np#*:}"; done
step_done
step "apt packages";      install_apt;  step_done
step "python venv";       install_venv; step_done
step "config files";      write_configs; step_done
step "mariadb";           start_mariadb; step_done
step "rabbitmq+memcached"
start_rabbit
claim_port memcached "$P_MEMCACHED"
start_svc memcached /usr/bin/memcached -u memcache -l $HOST_IP -p $P_MEMCACHED -U 0 -m 64
wait_port $P_MEMCACHED 10
step_done

step "keystone"
keystone-manage db_sync >>"$LOGS/keystone-manage.log" 2>&1
[ -d /etc/keystone/fernet-keys ] || keystone-manage fernet_setup --keystone-user root --keystone-group root >>"$LOGS/keystone-manage.log" 2>&1
[ -d /etc/keystone/credential-keys ] || keystone-manage credential_setup --keystone-user root --keystone-group root >>"$LOGS/keystone-manage.log" 2>&1
keystone-manage bootstrap --bootstrap-password "$ADMIN_PASS" \
  --bootstrap-admin-url "http://$HOST_IP:$P_KEYSTONE/v3/" \
  --bootstrap-internal-url "http://$HOST_IP:$P_KEYSTONE/v3/" \
  --bootstrap-public-url "http://$HOST_IP:$P_KEYSTONE/v3/" \
  --bootstrap-region-id "$REGION" >>"$LOGS/keystone-manage.log" 2>&1
start_uwsgi keystone $P_KEYSTONE keystone.wsgi.api:application 1 4
wait_http "http://$HOST_IP:$P_KEYSTONE/v3" 60 keystone
step_done

step "identity bootstrap (projects, users, catalog)"
"$VENV/bin/python" "$TB_DIR/bootstrap.py" identity 2>&1 | tee -a "$LOGS/bootstrap.log"
step_done

step "db syncs (parallel)"
pids=()
( glance-manage db_sync >"$LOGS/glance-manage.log" 2>&1 ) & pids+=($!)
( placement-manage db sync >"$LOGS/placement-manage.log" 2>&1 ) & pids+=($!)
( neutron-db-manage --config-file /etc/neutron/neutron.conf \
    --config-file /etc/neutron/plugins/ml2/ml2_conf.ini upgrade head >"$LOGS/neutron-db-manage.log" 2>&1 ) & pids+=($!)
( cinder-manage db sync >"$LOGS/cinder-manage.log" 2>&1 ) & pids+=($!)
(
  nova-manage api_db sync
  nova-manage cell_v2 map_cell0 --database_connection "$(DB_URL nova_cell0)"
  # Read the whole list before matching: `list_cells | grep -q` lets grep
  # exit early, nova-manage dies of EPIPE, pipefail fails the pipeline and
  # create_cell then fails on the existing cell1 (a re-run racing to error).
  cells=$(nova-manage cell_v2 list_cells)
  grep -q ' cell1 ' <<<"$cells" || nova-manage cell_v2 create_cell --name cell1
  nova-manage db sync
) >"$LOGS/nova-manage.log" 2>&1 & pids+=($!)
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
[ $rc = 0 ] || { log "a db sync failed; see $LOGS/*-manage.log"; exit 1; }
step_done

step "start services"
start_uwsgi placement $P_PLACEMENT placement.wsgi.api:application 1 4
start_uwsgi glance $P_GLANCE glance.wsgi.api:application 1 4
start_uwsgi nova-api $P_NOVA nova.wsgi.osapi_compute:application 1 4
start_uwsgi neutron $P_NEUTRON neutron.wsgi.api:application 1 4
start_uwsgi cinder-api $P_CINDER cinder.wsgi.api:application 1 4
start_svc nova-conductor "$VENV/bin/nova-conductor" --config-file /etc/nova/nova.conf
start_svc nova-scheduler "$VENV/bin/nova-scheduler" --config-file /etc/nova/nova.conf
start_svc cinder-scheduler "$VENV/bin/cinder-scheduler" --config-file /etc/cinder/cinder.conf
start_svc cinder-volume "$VENV/bin/cinder-volume" --config-file /etc/cinder/cinder.conf
wait_http "http://$HOST_IP:$P_PLACEMENT/" 90 placement
# computes need placement up to register their resource providers quickly
start_svc nova-compute1 "$VENV/bin/nova-compute" --config-file /etc/nova/nova-compute.conf --config-file /etc/nova/compute1.conf
start_svc nova-compute2 "$VENV/bin/nova-compute" --config-file /etc/nova/nova-compute.conf --config-file /etc/nova/compute2.conf
wait_http "http://$HOST_IP:$P_GLANCE/" 120 glance
wait_http "http://$HOST_IP:$P_NOVA/" 120 nova-api
wait_http "http://$HOST_IP:$P_NEUTRON/" 120 neutron
wait_http "http://$HOST_IP:$P_CINDER/" 120 cinder-api
step_done

step "discover compute hosts"
for ((i = 0; i < 90; i++)); do
  nova-manage cell_v2 discover_hosts >>"$LOGS/nova-manage.log" 2>&1 || true
  n=$(nova-manage cell_v2 list_hosts 2>/dev/null | grep -c -E ' compute[12] ' || true)
  [ "$n" -ge 2 ] && break
  sleep 2
done
[ "$n" -ge 2 ] || { log "compute hosts not registered; see $LOGS/nova-compute*.log"; exit 1; }
step_done

step "resource bootstrap (AZs, flavors, image, networks, quotas)"
"$VENV/bin/python" "$TB_DIR/bootstrap.py" resources 2>&1 | tee -a "$LOGS/bootstrap.log"
step_done

step "warmpool bootstrap (projects warmpool-e2e/-bench/-noquota/-member, quotas, image mysql-8.0)"
"$VENV/bin/python" "$TB_DIR/bootstrap_warmpool.py" 2>&1 | tee -a "$LOGS/bootstrap.log"
step_done

step "checks (APIs answer, MariaDB greets TCP clients from 127.0.0.1)"
apis_answer || die "an OpenStack API does not answer; see $LOGS"
# warmpool's readiness probe (and scripts/test.sh's probe test) read this
# greeting; error 1130 instead would fail every probe.
mariadb_greets || die "MariaDB on $HOST_IP:$P_MYSQL does not greet a TCP client from 127.0.0.1 (error 1130?)"
tb_fingerprint > "$UP_STAMP"
step_done

log "== timings"
for t in "${TIMINGS[@]}"; do echo "   $t"; done
log "== total up.sh wall time: $(elapsed "$T_START")s"
log "== pids:"
for f in "$RUN"/*.pid; do n=$(basename "$f" .pid); [ "$n" = rabbitmq-beam ] && continue; printf '   %-18s %s\n' "$n" "$(pid_of "$n")"; done
