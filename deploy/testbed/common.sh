# Shared settings for warmpool's OpenStack testbed scripts (sourced, not
# executed). Everything listens on 127.0.0.1 only. Paths and ports are those
# of the reference testbed this one was adapted from (kept outside this
# repository), so either's scripts recognise a testbed the other started.

TB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OSTB_HOME=/opt/ostb                  # venv lives here
VENV=$OSTB_HOME/venv
STATE=/var/tmp/ostb                  # runtime state: db files, images, pids
LOGS=$STATE/logs
RUN=$STATE/run                       # pid files
HOST_IP=127.0.0.1
REGION=RegionOne

# OpenStack release chosen (newest on PyPI with Python 3.11 support;
# all of them are from the same coordinated release series).
NOVA_VER=34.0.0
CINDER_VER=29.0.0
NEUTRON_VER=29.0.0
KEYSTONE_VER=30.0.0
PLACEMENT_VER=16.0.0
GLANCE_VER=33.0.0
OSC_VER=10.5.0

# Credentials (testbed only).
DB_USER=ostb
DB_PASS=ostbdb
RABBIT_URL="rabbit://guest:guest@$HOST_IP:5672/"
ADMIN_PASS=admin
SVC_PASS=ostbsvc          # password of the OpenStack-internal users (nova, neutron, ...)
INFRA_PROJECT=infra       # project holding the OpenStack-internal users
POOL_PROJECT=service      # project of the pool service under test
POOL_USER=pool
POOL_PASS=poolpass
TENANT_PROJECT=tenant
TENANT_USER=tenant
TENANT_PASS=tenantpass

# Ports.
P_KEYSTONE=5000
P_GLANCE=9292
P_PLACEMENT=8778
P_NOVA=8774
P_NEUTRON=9696
P_CINDER=8776
P_MYSQL=3306
P_RABBIT=5672
P_MEMCACHED=11211

MYSQL_SOCK=$RUN/mysqld.sock
DB_URL() { echo "mysql+pymysql://$DB_USER:$DB_PASS@$HOST_IP:$P_MYSQL/$1?charset=utf8"; }

export OS_CLIENT_CONFIG_FILE=$TB_DIR/clouds.yaml
export PATH=$VENV/bin:$PATH

# RabbitMQ environment (run as root, state under $STATE, loopback only).
export HOME_RABBIT=$STATE/rabbitmq
rabbit_env() {
  export HOME=$HOME_RABBIT
  export RABBITMQ_NODENAME=ostb@localhost
  export RABBITMQ_NODE_IP_ADDRESS=$HOST_IP
  export RABBITMQ_NODE_PORT=$P_RABBIT
  export RABBITMQ_DIST_PORT=25672
  export RABBITMQ_MNESIA_BASE=$HOME_RABBIT/mnesia
  export RABBITMQ_LOG_BASE=$LOGS/rabbitmq
  export RABBITMQ_ENABLED_PLUGINS_FILE=$HOME_RABBIT/enabled_plugins
  export RABBITMQ_CONFIG_FILE=$HOME_RABBIT/rabbitmq
  export RABBITMQ_PID_FILE=$RUN/rabbitmq-beam.pid
  export ERL_EPMD_ADDRESS=$HOST_IP
  export ERL_EPMD_PORT=4369
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

ts() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(ts)" 'BEGIN{printf "%.1f", b-a}'; }
log() { echo "[$(date +%H:%M:%S)] $*"; }

# pid helpers: a pid file holds "<pid> <starttime>" (starttime = field 22 of
# /proc/<pid>/stat), so a recycled pid is never mistaken for ours. Every
# process is started with setsid, so it leads its own process group and
# down.sh signals exactly that group.
proc_start() { awk '{sub(/^.*\) /, ""); print $20}' /proc/$1/stat 2>/dev/null; }
pid_of() { [ -f "$RUN/$1.pid" ] && awk '{print $1}' "$RUN/$1.pid"; }
pid_alive() {
  local f=$RUN/$1.pid p st
  [ -f "$f" ] || return 1
  read -r p st < "$f" || true
  [ -n "$p" ] && [ -d /proc/$p ] || return 1
  [ "$(proc_start "$p")" = "$st" ]
}

# Every process up.sh starts, in the order down.sh stops them.
TB_SERVICES="nova-compute1 nova-compute2 nova-api nova-conductor nova-scheduler cinder-volume cinder-scheduler cinder-api neutron glance placement keystone memcached rabbitmq epmd mariadb"

# How many of TB_SERVICES are alive.
tb_alive_count() {
  local n c=0
  for n in $TB_SERVICES; do pid_alive "$n" && c=$((c + 1)); done
  echo "$c"
}
tb_service_count() { set -- $TB_SERVICES; echo $#; }

# One lock for whatever starts, stops or uses the testbed: up.sh and down.sh
# hold it exclusive while they run, scripts/test.sh shared while its tests
# use the testbed. Without it a down.sh still stopping one run's testbed
# read the pid files a new up.sh had just written and killed its services.
TB_LOCK=$STATE/lock

# tb_lock FD -x|-s WHO: takes the lock on FD (open on $TB_LOCK), saying who
# holds it while it waits, for at most $TESTBED_LOCK_TIMEOUT s (default 1800).
tb_lock() {
  flock -n "$2" "$1" && return 0
  log "$3: waiting for $TB_LOCK, open in: $(tb_lock_holders) (up.sh and down.sh change the testbed, scripts/test.sh runs tests against it)" >&2
  flock -w "${TESTBED_LOCK_TIMEOUT:-1800}" "$2" "$1"
}
# Who has the lock file open (holders and waiters alike: /proc/locks names
# the flock(1) process that took a lock, long gone once it has).
tb_lock_holders() {
  local pid args out=""
  for pid in $(find /proc/[0-9]*/fd -maxdepth 1 -lname "$TB_LOCK" 2>/dev/null | cut -d/ -f3 | sort -un); do
    [ "$pid" = "$$" ] || [ "$pid" = "$BASHPID" ] || [ "$pid" = "$PPID" ] && continue   # the caller
    args=$(ps -o args= -p "$pid" 2>/dev/null | cut -c1-80)
    [ -n "$args" ] || continue   # gone already (this function's own subshells)
    out="$out${out:+; }pid $pid ($args)"
  done
  echo "${out:-no process this user can see}"
}

# Written by up.sh once everything is up and bootstrapped: the fingerprint of
# the files that decide what the testbed is. A later up.sh that finds every
# service alive and the same fingerprint has nothing to do.
UP_STAMP=$STATE/up-complete
tb_fingerprint() {
  (cd "$TB_DIR" && cat common.sh write_configs.sh up.sh bootstrap.py bootstrap_warmpool.py \
     constraints.txt build-constraints.txt ostb_fake_mech/setup.py ostb_fake_mech/ostb_fake_mech/__init__.py) \
    | sha256sum | awk '{print $1}'
}

# True when MariaDB on $HOST_IP:$P_MYSQL sends its protocol greeting to a TCP
# client from 127.0.0.1 (and not error 1130 "Host ... is not allowed to
# connect", which mysqld sends when no account may connect from that host).
# dd: one read(2), so it returns with the greeting instead of waiting for
# more bytes the server will not send before the client answers.
mariadb_greets() {
  local out
  out=$(timeout 5 bash -c "exec 3<>/dev/tcp/$HOST_IP/$P_MYSQL && dd bs=1024 count=1 status=none <&3" 2>/dev/null \
        | tr -c '[:print:]' ' ') || true
  case $out in
    *"not allowed to connect"*) return 1 ;;
    *MariaDB*) return 0 ;;
    *) return 1 ;;
  esac
}
