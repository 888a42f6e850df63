#!/usr/bin/env bash
# Bring up the local services Vespid needs: PostgreSQL and Redis, plus the database roles and database.
#
# Idempotent and safe to re-run: it installs only what is missing, starts only what is not running, and
# creates roles/databases only if absent (role attributes and ownership are re-asserted every run).
# Works as root (CI) or as a normal user with sudo. Designed for Debian/Ubuntu (apt, pg_ctlcluster);
# no systemd needed.
#
# Env overrides: PGPORT (default 5432), REDIS_PORT (default 6379).
#
# Progress goes to stderr; the app's env goes to stdout as KEY=value lines, so this works:
#   set -a; eval "$(bash scripts/deps.sh)"; set +a
set -euo pipefail

PGPORT="${PGPORT:-5432}"
REDIS_PORT="${REDIS_PORT:-6379}"
export PGPORT
PG_HOST=127.0.0.1
REDIS_HOST=127.0.0.1
WAIT_SECS=30

OWNER_ROLE=vespid_owner
OWNER_PASS=vespid_owner
APP_ROLE=vespid_app
APP_PASS=vespid_app
DB_NAME=vespid

log() { printf '[deps] %s\n' "$*" >&2; }
die() { printf '[deps] ERROR: %s\n' "$*" >&2; exit 1; }

if [[ "$(id -u)" -eq 0 ]]; then
    SUDO=()
else
    command -v sudo >/dev/null 2>&1 || die "not root and sudo is not installed"
    SUDO=(sudo)
fi

# Run a command as the postgres OS user (peer auth over the local socket).
as_postgres() {
    # cd / so tools run as postgres do not warn about an unreadable current directory.
    if [[ "$(id -u)" -eq 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && sudo -u postgres -- "$@")
    fi
}

# psql as the postgres superuser over the unix socket. Usage: pg_super DBNAME [psql args...]
pg_super() {
    local db="$1"
    shift
    as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PGPORT" -d "$db" "$@"
}

# ---------------------------------------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: $*"
    # Wait (rather than fail) if another apt/dpkg is running.
    local lock=(-o DPkg::Lock::Timeout=600)
    if [[ "$APT_UPDATED" -eq 0 ]]; then
        log "apt-get update"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" update -qq >&2
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" install -y -qq \
        --no-install-recommends "$@" >&2
}

pg_server_installed() {
    command -v pg_ctlcluster >/dev/null 2>&1 &&
        command -v pg_lsclusters >/dev/null 2>&1 &&
        compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

want=()
pg_server_installed || want+=(postgresql postgresql-contrib)
command -v psql >/dev/null 2>&1 || want+=(postgresql-client)
command -v redis-server >/dev/null 2>&1 || want+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || want+=(redis-tools)
if [[ ${#want[@]} -gt 0 ]]; then
    apt_install "${want[@]}"
fi
pg_server_installed || die "PostgreSQL server binaries still missing after install"

# ---------------------------------------------------------------------------------------------------------
# PostgreSQL server
# ---------------------------------------------------------------------------------------------------------
pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PGPORT" >/dev/null 2>&1; }

if pg_ready; then
    log "PostgreSQL already accepting connections on $PG_HOST:$PGPORT"
else
    # pg_lsclusters -h: "ver cluster port status owner datadir logfile"
    cluster_line="$(pg_lsclusters -h 2>/dev/null | awk -v p="$PGPORT" '$3 == p { print; exit }')"
    if [[ -z "$cluster_line" ]]; then
        ver="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' |
            awk -F/ '{ print $5 }' | sort -n | tail -1)"
        [[ -n "$ver" ]] || die "cannot determine the installed PostgreSQL version"
        name=main
        if pg_lsclusters -h 2>/dev/null | awk -v v="$ver" '$1 == v && $2 == "main" { f = 1 } END { exit !f }'; then
            name="vespid${PGPORT}"
        fi
        log "creating PostgreSQL cluster $ver/$name on port $PGPORT"
        "${SUDO[@]}" pg_createcluster "$ver" "$name" --port "$PGPORT" >&2
        cluster_line="$(pg_lsclusters -h | awk -v v="$ver" -v n="$name" '$1 == v && $2 == n { print; exit }')"
    fi
    read -r ver name _port status _rest <<<"$cluster_line"
    if [[ "$status" == online* ]]; then
        log "PostgreSQL cluster $ver/$name is $status; waiting for it to accept TCP connections"
    else
        log "starting PostgreSQL cluster $ver/$name (port $PGPORT)"
        "${SUDO[@]}" pg_ctlcluster "$ver" "$name" start >&2 ||
            die "pg_ctlcluster $ver $name start failed; see /var/log/postgresql/postgresql-$ver-$name.log"
    fi
    for ((i = 0; i < WAIT_SECS * 2; i++)); do
        pg_ready && break
        sleep 0.5
    done
    pg_ready || die "PostgreSQL did not accept connections on $PG_HOST:$PGPORT within ${WAIT_SECS}s \
(cluster $ver/$name; log: /var/log/postgresql/postgresql-$ver-$name.log)"
    log "PostgreSQL ready on $PG_HOST:$PGPORT (cluster $ver/$name)"
fi

# ---------------------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------------------
redis_ready() {
    [[ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null || true)" == PONG ]]
}

if redis_ready; then
    log "Redis already answering PONG on $REDIS_HOST:$REDIS_PORT"
else
    redis_log="/tmp/vespid-redis-${REDIS_PORT}.log"
    log "starting redis-server on $REDIS_HOST:$REDIS_PORT (log: $redis_log)"
    redis-server --port "$REDIS_PORT" --bind "$REDIS_HOST" --daemonize yes --save '' --appendonly no \
        --dir /tmp --logfile "$redis_log" --pidfile "/tmp/vespid-redis-${REDIS_PORT}.pid" >&2 ||
        die "redis-server failed to start; see $redis_log"
    for ((i = 0; i < WAIT_SECS * 2; i++)); do
        redis_ready && break
        sleep 0.5
    done
    redis_ready || die "Redis did not answer PONG on $REDIS_HOST:$REDIS_PORT within ${WAIT_SECS}s; see $redis_log"
    log "Redis ready on $REDIS_HOST:$REDIS_PORT"
fi

# ---------------------------------------------------------------------------------------------------------
# Roles, database, extensions
# ---------------------------------------------------------------------------------------------------------
log "ensuring roles $OWNER_ROLE, $APP_ROLE and database $DB_NAME"

# Roles: create if absent; re-assert attributes every run (cheap, and repairs drift).
# Passwords are set on creation only; the TCP login check below resets them if they stopped working.
pg_super postgres <<SQL
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$OWNER_ROLE') THEN
        CREATE ROLE $OWNER_ROLE LOGIN PASSWORD '$OWNER_PASS';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$APP_ROLE') THEN
        CREATE ROLE $APP_ROLE LOGIN PASSWORD '$APP_PASS';
    END IF;
END
\$\$;
ALTER ROLE $OWNER_ROLE WITH LOGIN CREATEDB NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER ROLE $APP_ROLE WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
SQL

ext_available="$(pg_super postgres -Atc "SELECT count(*) FROM pg_available_extensions WHERE name = 'pgcrypto'")"
if [[ "$ext_available" == 1 ]]; then
    # template1 first, so every database created afterwards (including per-test ones) has it.
    pg_super template1 -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION IF NOT EXISTS pgcrypto' >&2
else
    log "pgcrypto extension not available (fine on PostgreSQL 13+: gen_random_uuid() is built in)"
fi

if [[ "$(pg_super postgres -Atc "SELECT count(*) FROM pg_database WHERE datname = '$DB_NAME'")" != 1 ]]; then
    log "creating database $DB_NAME owned by $OWNER_ROLE"
    pg_super postgres -c "CREATE DATABASE $DB_NAME OWNER $OWNER_ROLE"
fi
if [[ "$(pg_super postgres -Atc "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '$DB_NAME'")" != "$OWNER_ROLE" ]]; then
    log "setting owner of database $DB_NAME to $OWNER_ROLE"
    pg_super postgres -c "ALTER DATABASE $DB_NAME OWNER TO $OWNER_ROLE"
fi
if [[ "$ext_available" == 1 ]]; then
    pg_super "$DB_NAME" -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION IF NOT EXISTS pgcrypto' >&2
fi

# ---------------------------------------------------------------------------------------------------------
# Password auth over TCP
# ---------------------------------------------------------------------------------------------------------
tcp_login() { # role password
    PGPASSWORD="$2" PGCONNECT_TIMEOUT=5 psql -X -q -w -h "$PG_HOST" -p "$PGPORT" -U "$1" -d "$DB_NAME" \
        -Atc 'select 1' 2>/dev/null | grep -qx 1
}

if ! tcp_login "$OWNER_ROLE" "$OWNER_PASS" || ! tcp_login "$APP_ROLE" "$APP_PASS"; then
    log "TCP password login failed; (re)setting role passwords"
    pg_super postgres <<SQL
SET password_encryption = 'scram-sha-256';
ALTER ROLE $OWNER_ROLE WITH PASSWORD '$OWNER_PASS';
ALTER ROLE $APP_ROLE WITH PASSWORD '$APP_PASS';
SQL
    if ! tcp_login "$OWNER_ROLE" "$OWNER_PASS" || ! tcp_login "$APP_ROLE" "$APP_PASS"; then
        hba="$(pg_super postgres -Atc 'SHOW hba_file')"
        marker='# vespid: password auth over loopback (added by scripts/deps.sh)'
        if ! "${SUDO[@]}" grep -qxF "$marker" "$hba"; then
            log "adding scram-sha-256 loopback rules for $OWNER_ROLE,$APP_ROLE at the top of $hba"
            tmp="$(mktemp)"
            {
                echo "$marker"
                echo "host    all    $OWNER_ROLE,$APP_ROLE    127.0.0.1/32    scram-sha-256"
                echo "host    all    $OWNER_ROLE,$APP_ROLE    ::1/128         scram-sha-256"
                "${SUDO[@]}" cat "$hba"
            } >"$tmp"
            "${SUDO[@]}" cp "$tmp" "$hba"
            rm -f "$tmp"
            pg_super postgres -Atc 'SELECT pg_reload_conf()' >/dev/null
            sleep 1
        fi
        tcp_login "$OWNER_ROLE" "$OWNER_PASS" ||
            die "cannot log in as $OWNER_ROLE over TCP $PG_HOST:$PGPORT (check $hba)"
        tcp_login "$APP_ROLE" "$APP_PASS" ||
            die "cannot log in as $APP_ROLE over TCP $PG_HOST:$PGPORT (check $hba)"
    fi
fi

# The app role must never be able to bypass RLS.
app_attrs="$(pg_super postgres -Atc "SELECT rolsuper::text || ',' || rolbypassrls::text FROM pg_roles WHERE rolname = '$APP_ROLE'")"
[[ "$app_attrs" == "false,false" ]] || die "$APP_ROLE has rolsuper,rolbypassrls = $app_attrs (want false,false)"

pg_version="$(pg_super postgres -Atc 'SHOW server_version')"
log "ok: PostgreSQL $pg_version on $PG_HOST:$PGPORT, Redis on $REDIS_HOST:$REDIS_PORT; $OWNER_ROLE and $APP_ROLE log in over TCP"

cat <<ENV
DATABASE_URL=postgres://$APP_ROLE:$APP_PASS@$PG_HOST:$PGPORT/$DB_NAME
DATABASE_MIGRATE_URL=postgres://$OWNER_ROLE:$OWNER_PASS@$PG_HOST:$PGPORT/$DB_NAME
REDIS_URL=redis://$REDIS_HOST:$REDIS_PORT
ENV
