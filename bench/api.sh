#!/usr/bin/env bash
# API benchmark: throughput and latency with wrk against `vespid serve --role=all` on loopback, plus memory:
# RSS idle, after a burst of concurrent signups and after a batch of runs.
#
#   bench/api.sh                 # defaults: 64 connections, 1 wrk thread, 15 s per endpoint; 50 signups, 10k runs
#   CONNS=64 DURATION=30s bench/api.sh
#   PHASES=mem bench/api.sh      # only the memory phase (PHASES="wrk mem" is the default)
#   PHASES=keys bench/api.sh     # only bearer token vs API key on the two org GETs, side by side
#                                  (ROUNDS=2 alternations of the settings GET)
#   SIGNUPS=50 SIGNUP_BURSTS=1 RUNS=10000 RUN_CLIENTS=32 MEM_SETTLE=2 PHASES=mem bench/api.sh
#   VESPID_BIN=/tmp/vespid-old bench/api.sh   # measure a prebuilt binary instead of building this tree
#   BENCH_DATABASE=vespid_bench BENCH_PORT=3911 bench/api.sh   # a database and port of its own
#
# Endpoints: GET /v1/meta/capabilities (public), GET /v1/orgs/{org}/settings (bearer + X-Org-Id: the
# org-scoped authenticated path; session, membership and settings come from the in-process caches),
# GET /v1/orgs/{org}/secrets (same auth path plus a tenant transaction in PostgreSQL on every request),
# POST /v1/auth/login (argon2id on purpose: it is CPU-bound by design). The two org GETs run twice: with the
# session's bearer token (+ X-Org-Id) and with an API key of that org (`Authorization: Bearer vsk_…`, no
# X-Org-Id; key, membership and settings from the in-process caches, last use noted in memory).
# The memory phase (bench/mem.py) runs on a fresh server after the wrk phase, so neither disturbs the other:
# RSS idle; after SIGNUPS concurrent POST /v1/auth/signup (distinct emails, all in flight at once); after
# RUNS runs of a 3-node workflow of cheap nodes created by RUN_CLIENTS clients and all finished.
# Everything runs on this machine (wrk shares the cores with the server and PostgreSQL); traffic goes to
# 127.0.0.1 only, and every run is bounded by DURATION.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CONNS="${CONNS:-64}"
THREADS="${THREADS:-1}"
DURATION="${DURATION:-15s}"
PHASES="${PHASES:-wrk mem}"
PORT="${BENCH_PORT:-3901}"
BASE="http://127.0.0.1:${PORT}"

command -v wrk >/dev/null || { echo "installing wrk" >&2; apt-get install -y -qq wrk >/dev/null; }
set -a; eval "$(bash scripts/deps.sh)"; set +a
# BENCH_DATABASE=name: measure on that database (created if missing, migrated by the server) instead of the
# shared development database, with its own Redis key prefix, so a bench never touches anyone's data.
if [[ -n "${BENCH_DATABASE:-}" ]]; then
    [[ "$BENCH_DATABASE" =~ ^[a-z0-9_]+$ ]] || { echo "BENCH_DATABASE: lowercase letters, digits and _ only" >&2; exit 1; }
    psql "${DATABASE_MIGRATE_URL%/*}/postgres" -Atqc "SELECT 1 FROM pg_database WHERE datname = '$BENCH_DATABASE'" | grep -q 1 ||
        psql "${DATABASE_MIGRATE_URL%/*}/postgres" -qc "CREATE DATABASE $BENCH_DATABASE"
    DATABASE_URL="${DATABASE_URL%/*}/$BENCH_DATABASE"
    DATABASE_MIGRATE_URL="${DATABASE_MIGRATE_URL%/*}/$BENCH_DATABASE"
    export DATABASE_URL DATABASE_MIGRATE_URL REDIS_KEY_PREFIX="bench:$BENCH_DATABASE:"
fi

BIN="${VESPID_BIN:-}" # a prebuilt binary to measure instead of building this tree (to compare builds)
if [[ -z "$BIN" ]]; then
    echo "==> building release binary" >&2
    cargo build --release --locked --quiet
    BIN="${CARGO_TARGET_DIR:-target}/release/vespid"
fi

export API_PORT="$PORT" API_HOST=127.0.0.1 API_LOG_LEVEL=warn
PID=
trap 'if [[ -n "$PID" ]]; then kill "$PID" 2>/dev/null || true; fi' EXIT
start_server() { # log file
    "$BIN" serve --role=all >"$1" 2>&1 &
    PID=$!
    for _ in $(seq 1 100); do curl -fs "$BASE/healthz" >/dev/null 2>&1 && return; sleep 0.1; done
    echo "server did not start (see $1)" >&2
    exit 1
}
stop_server() {
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=
}

# CPU time (user + system, in clock ticks) the server has used so far.
server_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }

run() { # name, then wrk args
    local name=$1; shift
    local out t0 t1
    t0=$(server_ticks)
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$@")
    t1=$(server_ticks)
    local rps p50 p99 non2xx total cpu
    rps=$(printf '%s\n' "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(printf '%s\n' "$out" | awk '$1=="50%" {print $2}')
    p99=$(printf '%s\n' "$out" | awk '$1=="99%" {print $2}')
    non2xx=$(printf '%s\n' "$out" | awk '/Non-2xx/ {print $4}')
    total=$(printf '%s\n' "$out" | awk '/requests in/ {print $1}')
    # Server CPU per request: less disturbed than req/s when other work shares the cores.
    cpu=$(awk -v t="$((t1 - t0))" -v n="${total:-0}" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "-" }')
    printf '%-28s %12s req/s   p50 %-9s p99 %-9s non-2xx %-4s server CPU %s us/req\n' \
        "$name" "$rps" "$p50" "$p99" "${non2xx:-0}" "$cpu"
}

# A fresh account on the running server: EMAIL, TOKEN, ORG (its personal workspace) and KEY, an API key of
# that org with the scopes of the two org GETs.
setup_account() {
EMAIL="bench-$(date +%s%N)@example.com"
SIGNUP=$(curl -fs -X POST "$BASE/v1/auth/signup" -H 'content-type: application/json' \
    -d "{\"email\":\"$EMAIL\",\"password\":\"Password123\"}")
TOKEN=$(printf '%s' "$SIGNUP" | python3 -c 'import json,sys; print(json.load(sys.stdin)["session"]["token"])')
# One login first: the bench client is one that has logged in to this account before, as a real client
# logging in repeatedly is (the login limiter counts an unknown client's attempts ahead of the password
# check, so 64 parallel first-time logins from one address would mostly be throttled).
curl -fs -X POST "$BASE/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$EMAIL\",\"password\":\"Password123\"}" >/dev/null
ORG=$(curl -fs "$BASE/v1/me" -H "authorization: Bearer $TOKEN" | python3 -c 'import json,sys; print(json.load(sys.stdin)["defaultOrgId"])')
KEY=$(curl -fs -X POST "$BASE/v1/orgs/$ORG/api-keys" -H "authorization: Bearer $TOKEN" -H "x-org-id: $ORG" \
    -H 'content-type: application/json' -d '{"name":"bench","scopes":["org:read","secrets:read"]}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
}

if [[ " $PHASES " == *" wrk "* ]]; then
start_server /tmp/vespid-bench.log
sleep 1
RSS_IDLE_KB=$(ps -o rss= -p "$PID" | tr -d ' ')
setup_account

LUA=$(mktemp --suffix .lua)
cat >"$LUA" <<LUA
wrk.method = "POST"
wrk.body = '{"email":"$EMAIL","password":"Password123"}'
wrk.headers["Content-Type"] = "application/json"
LUA

echo "== vespid api bench: $CONNS connections, $THREADS wrk thread(s), $DURATION each, $(nproc) cores"
run "GET /v1/meta/capabilities" "$BASE/v1/meta/capabilities"
run "GET org settings (authed)" -H "authorization: Bearer $TOKEN" -H "x-org-id: $ORG" "$BASE/v1/orgs/$ORG/settings"
run "GET org settings (API key)" -H "authorization: Bearer $KEY" "$BASE/v1/orgs/$ORG/settings"
run "GET org secrets (authed, DB)" -H "authorization: Bearer $TOKEN" -H "x-org-id: $ORG" "$BASE/v1/orgs/$ORG/secrets"
run "GET org secrets (API key, DB)" -H "authorization: Bearer $KEY" "$BASE/v1/orgs/$ORG/secrets"
run "POST /v1/auth/login" -s "$LUA" "$BASE/v1/auth/login"
RSS_AFTER_KB=$(ps -o rss= -p "$PID" | tr -d ' ')
echo "idle RSS of serve --role=all: $((RSS_IDLE_KB / 1024)) MiB (after load: $((RSS_AFTER_KB / 1024)) MiB)"
rm -f "$LUA"
stop_server
fi

if [[ " $PHASES " == *" keys "* ]]; then
start_server /tmp/vespid-bench-keys.log
sleep 1
setup_account
echo "== bearer token vs API key: $CONNS connections, $THREADS wrk thread(s), $DURATION each, $(nproc) cores"
# Warm both paths once, then alternate.
curl -fs -o /dev/null -H "authorization: Bearer $TOKEN" -H "x-org-id: $ORG" "$BASE/v1/orgs/$ORG/settings"
curl -fs -o /dev/null -H "authorization: Bearer $KEY" "$BASE/v1/orgs/$ORG/settings"
# The order flips every round, so neither side always runs on the warmer (or busier) half.
token_run() { run "settings token (round $1)" -H "authorization: Bearer $TOKEN" -H "x-org-id: $ORG" "$BASE/v1/orgs/$ORG/settings"; }
key_run() { run "settings API key (round $1)" -H "authorization: Bearer $KEY" "$BASE/v1/orgs/$ORG/settings"; }
for round in $(seq 1 "${ROUNDS:-2}"); do
    if (( round % 2 )); then token_run "$round"; key_run "$round"; else key_run "$round"; token_run "$round"; fi
done
run "secrets token (DB)" -H "authorization: Bearer $TOKEN" -H "x-org-id: $ORG" "$BASE/v1/orgs/$ORG/secrets"
run "secrets API key (DB)" -H "authorization: Bearer $KEY" "$BASE/v1/orgs/$ORG/secrets"
stop_server
fi

if [[ " $PHASES " == *" mem "* ]]; then
echo "== memory of serve --role=all (fresh process): ${SIGNUPS:-50} concurrent signups, then ${RUNS:-10000} runs"
start_server /tmp/vespid-bench-mem.log
timeout 900 python3 bench/mem.py "$PID" "$BASE" "$DATABASE_MIGRATE_URL"
stop_server
fi
