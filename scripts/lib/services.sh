# Throwaway local services shared by scripts/test.sh and the local API: a PostgreSQL
# cluster and the AWS emulator (moto in server mode). Sourced, not run.
# Everything lives under $STATE_DIR and is stopped by stop_services.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV="$ROOT/.venv"
PY_REQUIREMENTS="$ROOT/scripts/requirements-dev.txt"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

free_ports() { # n: n distinct free ports (bound together, so never the same twice)
  python3 -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

wait_for_port() { # port seconds what
  local port=$1 secs=$2 what=$3 i
  for ((i = 0; i < secs * 10; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$what did not start listening on port $port within ${secs}s"
  return 1
}

apt_install() { # packages...
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "installing Debian packages: $*"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

pg_bindir() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

ensure_postgres_installed() {
  if [ -z "$(pg_bindir)" ] || [ ! -x "$(pg_bindir)/initdb" ]; then
    apt_install postgresql
  fi
}

# ensure_venv [dir requirements]: a Python venv with those requirements (default: .venv
# with scripts/requirements-dev.txt), made afresh only when the requirements changed.
ensure_venv() {
  local venv=${1:-$VENV} requirements=${2:-$PY_REQUIREMENTS}
  local stamp="$venv/.requirements.sha" want
  want=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return 0; fi
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then apt_install python3-venv; fi
  log "creating the Python venv ($venv)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
  echo "$want" >"$stamp"
}

# start_postgres: a fresh cluster under $STATE_DIR/pg; sets PG_PORT, PG_PASSWORD, PG_ADMIN_URL.
start_postgres() {
  local bindir data owner=""
  bindir=$(pg_bindir)
  data="$STATE_DIR/pg"
  mkdir -p "$data"
  PG_PASSWORD="local-$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
  (umask 077 && echo "$PG_PASSWORD" >"$STATE_DIR/pgpass")
  if [ "$(id -u)" -eq 0 ]; then
    # initdb refuses to run as root: the cluster belongs to the postgres user.
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
    chown -R postgres "$STATE_DIR"
    chmod 755 "$STATE_DIR"
    owner="runuser -u postgres --"
  fi
  $owner "$bindir/initdb" -D "$data" -U postgres --pwfile="$STATE_DIR/pgpass" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$STATE_DIR/initdb.log" 2>&1 \
    || { cat "$STATE_DIR/initdb.log" >&2; return 1; }
  PG_PORT=$(free_port)
  # Durability off: a throwaway cluster; many connections: parallel tests each own a few.
  $owner "$bindir/pg_ctl" -D "$data" -l "$STATE_DIR/postgres.log" -w -t 60 start -o \
    "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$data -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >/dev/null \
    || { cat "$STATE_DIR/postgres.log" >&2; return 1; }
  PG_ADMIN_URL="postgres://postgres:$PG_PASSWORD@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
  STARTED_PG="$owner $bindir/pg_ctl -D $data -m immediate stop"
  log "PostgreSQL on 127.0.0.1:$PG_PORT"
}

# create_database name: a new database in the cluster of TEST_DATABASE_URL (an admin
# URL), else of start_postgres's cluster; prints its URL.
create_database() {
  local admin=${TEST_DATABASE_URL:-$PG_ADMIN_URL}
  psql -X -q "$admin" -c "CREATE DATABASE $1" >/dev/null
  python3 -c 'import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$admin" "$1"
}

# start_moto: the AWS emulator on a free port; sets MOTO_PORT.
start_moto() {
  MOTO_PORT=$(free_port)
  "$VENV/bin/python" -m moto.server -H 127.0.0.1 -p "$MOTO_PORT" >"$STATE_DIR/moto.log" 2>&1 &
  MOTO_PID=$!
  wait_for_port "$MOTO_PORT" 60 "moto" || { cat "$STATE_DIR/moto.log" >&2; return 1; }
  log "AWS emulator (moto) on 127.0.0.1:$MOTO_PORT"
}

# start_local_api: scripts/run-local.sh in the background on free ports (with
# DATABASE_URL when set, else its own cluster), in a session of its own (terminal
# signals go to the caller, whose stop_local_api stops it). Waits until it serves, at
# most READY_TIMEOUT seconds (default 900: the first start compiles local-api), and
# sets LOCAL_API_PID, LOCAL_API_READY (its ready file), API_PORT, STANDINS_PORT,
# WEB_PORT, API_URL, WEB_URL, STANDINS_URL and API_TOKEN. Its log: LOCAL_API_LOG
# (default $STATE_DIR/local-api.log).
start_local_api() {
  local log_file=${LOCAL_API_LOG:-$STATE_DIR/local-api.log} timeout=${READY_TIMEOUT:-900}
  local started=$SECONDS field
  LOCAL_API_READY="$STATE_DIR/local-api.ready"
  rm -f "$LOCAL_API_READY"
  # Port 0: the local API binds free ports itself and writes them to its ready file.
  # (Picking free ports here and passing them on races with every other process
  # doing the same between our probe and its bind: invoke-events runs four at once.)
  PORT=0 STANDINS_PORT=0 WEB_PORT=0 READY_FILE="$LOCAL_API_READY" \
    setsid bash "$ROOT/scripts/run-local.sh" </dev/null >"$log_file" 2>&1 &
  LOCAL_API_PID=$!
  until [ -s "$LOCAL_API_READY" ]; do
    if ! kill -0 "$LOCAL_API_PID" 2>/dev/null || ((SECONDS - started >= timeout)); then
      log "the local API exited or was not ready within ${timeout}s; the end of its log:"
      tail -n 40 "$log_file" >&2
      return 1
    fi
    sleep 0.2
  done
  field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$LOCAL_API_READY" "$1"; }
  API_URL=$(field api) WEB_URL=$(field web) STANDINS_URL=$(field standins) API_TOKEN=$(field token)
  API_PORT=${API_URL##*:} WEB_PORT=${WEB_URL##*:} STANDINS_PORT=${STANDINS_URL##*:}
  log "local API ready after $((SECONDS - started))s on $API_URL (page $WEB_URL)"
}

stop_local_api() {
  if [ -n "${LOCAL_API_PID:-}" ]; then
    kill -TERM "$LOCAL_API_PID" 2>/dev/null || true
    wait "$LOCAL_API_PID" 2>/dev/null || true
    LOCAL_API_PID=""
  fi
}

stop_services() {
  stop_local_api
  if [ -n "${MOTO_PID:-}" ]; then
    kill "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
  fi
  if [ -n "${STARTED_PG:-}" ]; then $STARTED_PG >/dev/null 2>&1 || true; fi
  if [ -n "${STATE_DIR:-}" ] && [ -d "$STATE_DIR" ] && [ -z "${KEEP_STATE:-}" ]; then rm -rf "$STATE_DIR"; fi
}

# The environment that points the AWS SDK at the emulator (never at real AWS).
export_emulator_env() {
  export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT"
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
  export AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
  unset AWS_PROFILE AWS_SESSION_TOKEN
}
